"""Dense ground truth from the simulator: instance ids, depth, part poses, and the flows and visibility they imply.

Every check runs the real renderer (pybullet TinyRenderer) and compares with what is known by construction: a body
moved by a known displacement, a static background, frames warped along the flows, an arm put over an object.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagine_ros.errors import DatasetError
from imagine_ros.sim.collect import collect_push, policy_settings
from imagine_ros.sim.env import PushEnv
from imagine_ros.sim.ground_truth import (
    NO_INSTANCE,
    backward_warp,
    forward_flow,
    instance_ids,
    part_index,
    split_instance,
)
from imagine_ros.sim.storage import EpisodeStore
from imagine_ros.training.clips import GT_FLOW, VISIBLE, ClipDataset

#: Measured on 48 planning-matched clips (README "Ground truth"): frame s + t sampled at x + flow(x) reproduces frame s
#: at visible moving pixels with a mean absolute error of ~10 grey levels (0-255; shading changes as links turn),
#: against ~65 for a zero flow on the same pixels; visible static pixels reproduce to ~0.06.
WARP_TOLERANCE = 16.0


@given(st.integers(-1, 254), st.integers(-1, 254))
def test_instance_ids_round_trip(body, link):
    ids = instance_ids(np.array([body]), np.array([link]))
    b, k = split_instance(ids)
    if body < 0:
        assert ids[0] == NO_INSTANCE and b[0] == -1
    else:
        assert (b[0], k[0]) == (body, link)


def _env(seed: int = 3) -> PushEnv:
    env = PushEnv(ground_truth=True)
    env.reset(seed=seed)
    return env


def _flow_between(env: PushEnv, before: dict, after: dict):
    return forward_flow(
        before["depth"],
        before["instance"],
        before["part_pose"],
        after["part_pose"][None],
        after["depth"][None],
        env.parts,
        env.camera.K,
        env.camera.T_cam_world,
    )


def test_a_translated_body_flows_by_its_projected_displacement_and_the_background_stays():
    env = _env()
    try:
        before = env.ground_truth()
        body = env.scene.objects[0]
        c = env.scene.client
        pos, orn = c.getBasePositionAndOrientation(body)
        shift = np.array([0.03, -0.02, 0.0])
        c.resetBasePositionAndOrientation(body, (np.asarray(pos) + shift).tolist(), orn)
        env._render()
        after = env.ground_truth()
        flow, visible = _flow_between(env, before, after)
        idx = part_index(before["instance"], env.parts)
        on_body = idx == len(env.parts) - len(env.scene.objects)  # the first object's part
        assert on_body.sum() > 5
        # every pixel of the body: its lifted surface point moved by the shift and projected again
        v, u = np.nonzero(on_body)
        uv = np.stack([u, v], -1).astype(float)
        point = env.camera.unproject(uv, before["depth"][v, u])
        expected = env.camera.project(point + shift) - uv
        np.testing.assert_allclose(flow[0][v, u], expected, atol=1e-3)
        # and on average what the body's centre does in the image (perspective spreads it by a fraction of a pixel)
        centre = env.camera.project(np.asarray(pos) + shift) - env.camera.project(np.asarray(pos))
        np.testing.assert_allclose(flow[0][on_body].mean(0), centre, atol=0.35)
        # static bodies (bin, table) and everything else that did not move: exactly zero
        static = idx < 0
        assert np.all(flow[0][static] == 0)
        assert visible[0][static & (after["instance"] == before["instance"])].all()
    finally:
        env.close()


def test_warping_the_later_frame_along_the_flow_reproduces_the_start_frame_where_visible():
    env = _env(seed=11)
    try:
        first = env.ground_truth()
        frame0 = env._image.copy()
        errors, zero_errors = [], []
        for action in ([0.05, 0.03, -0.04], [0.05, 0.0, -0.03], [0.0, 0.05, 0.0]):
            env.step(np.array(action))
            later = env.ground_truth()
            flow, visible = _flow_between(env, first, later)
            warped = backward_warp(env._image, flow[0])
            moving = visible[0] & (np.linalg.norm(flow[0], axis=-1) > 0.5)
            assert moving.sum() > 20
            err = np.abs(warped - frame0.astype(float)).mean(-1)
            errors.append(err[moving].mean())
            zero_errors.append(np.abs(env._image.astype(float) - frame0).mean(-1)[moving].mean())
            static = visible[0] & ~moving
            assert err[static].mean() < 1.0
        assert max(errors) < WARP_TOLERANCE
        assert np.mean(zero_errors) > 2.5 * np.mean(errors)
    finally:
        env.close()


def test_visibility_turns_off_where_the_arm_covers_an_object():
    env = _env(seed=7)
    try:
        before = env.ground_truth()
        body = env.scene.objects[0]
        pos = np.asarray(env.scene.client.getBasePositionAndOrientation(body)[0])
        # put the hand right above the object (reset joints: nothing else moves)
        env._target = np.array([pos[0], pos[1], pos[2] + 0.06])
        env._place_arm()
        env._render()
        after = env.ground_truth()
        flow, visible = _flow_between(env, before, after)
        on_object = part_index(before["instance"], env.parts) == len(env.parts) - len(env.scene.objects)
        robot_now = split_instance(after["instance"])[0] == env.scene.robot
        covered = on_object & robot_now
        still_seen = on_object & ~robot_now
        assert covered.sum() >= 3 and still_seen.sum() >= 1
        assert not visible[0][covered].any()
        assert visible[0][still_seen].mean() > 0.9
        assert np.abs(flow[0][on_object]).max() < 1e-6  # the object itself did not move
    finally:
        env.close()


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = tmp_path_factory.mktemp("gt") / "data"
    collect_push(out, episodes=3, frames=9, shard_size=3, policy=policy_settings("planning", 4), progress=False)
    return out


def test_collected_ground_truth_has_compact_dtypes_and_gives_clip_flows(planned):
    store = EpisodeStore(planned)
    ep = store.episode(0)
    assert ep["depth"].dtype == np.float16 and ep["depth"].shape == (9, 64, 64)
    assert ep["instance"].dtype == np.uint16 and ep["part_pose"].shape == (9, len(ep["part_ids"]), 7)
    assert 0.3 < float(np.nanmedian(ep["depth"])) < 1.5  # metres from a camera 0.75 m from the bin's centre
    ds = ClipDataset(planned, "all", horizon=4, keys=("x0", GT_FLOW, VISIBLE))
    clip = ds[0]
    assert clip[GT_FLOW].shape == (4, 2, 64, 64) and clip[VISIBLE].shape == (4, 64, 64)
    assert clip[GT_FLOW].abs().max() > 1.0  # the arm moves
    small = ClipDataset(planned, "all", horizon=4, image_size=32, keys=(GT_FLOW, VISIBLE))
    # area-resized flows are in the small image's pixels: half as large
    ratio = small[0][GT_FLOW].abs().mean() / clip[GT_FLOW].abs().mean()
    assert 0.4 < float(ratio) < 0.6


def test_a_dataset_without_ground_truth_loads_and_says_what_it_lacks(tmp_path):
    out = tmp_path / "d"
    collect_push(out, episodes=2, frames=4, env_options={"ground_truth": False}, progress=False)
    ds = ClipDataset(out, "all", horizon=2)
    assert ds[0]["x0"].shape == (3, 64, 64)
    with pytest.raises(DatasetError, match="no ground truth.*depth, instance, part_ids, part_pose"):
        ClipDataset(out, "all", horizon=2, keys=("x0", GT_FLOW))


def test_other_ground_truth_settings_are_refused(planned):
    with pytest.raises(DatasetError, match="ground_truth"):
        collect_push(
            planned,
            episodes=3,
            frames=9,
            shard_size=3,
            policy=policy_settings("planning", 4),
            env_options={"ground_truth": False},
            progress=False,
        )
