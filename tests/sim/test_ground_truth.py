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

#: Measured on 48 planning-matched clips (docs/simulator-and-data.md, "Ground truth"): frame s + t sampled at
#: x + flow(x) reproduces frame s at visible moving pixels with a mean absolute error of ~10 grey levels
#: (0-255; shading changes as links turn), against ~65 for a zero flow on the same pixels; visible static
#: pixels reproduce to ~0.06.
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
def planned(push_planned):
    return push_planned  # tests/conftest.py


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


def test_planned_clips_start_at_segments_and_eta_is_the_commanded_target(planned):
    store = EpisodeStore(planned)
    ds = ClipDataset(planned, "all", horizon=4)
    assert ds.eta == "commanded"
    starts = {(e, s) for e, s in ds.window_starts}
    assert starts == {(e, s) for e in range(3) for s in (0, 4)}  # 9 frames, segments of 4: starts 0 and 4
    end, begin = [], []
    for i in range(len(ds)):
        clip = ds[i]
        e, s = clip["episode"], clip["start"]
        target = store.read(e, "eta_target", s, s + 1)[0]
        np.testing.assert_allclose(clip["condition"].numpy(), target)
        ee = store.read(e, "ee_pos", s, s + 5)
        begin.append(np.linalg.norm(ee[0] - target))
        end.append(np.linalg.norm(ee[-1] - target))
    # the hand goes there (it lags its target by a few cm at 4-frame segments; 7 mm median at the default 10)
    assert np.median(end) < 0.04 and np.median(end) < 0.5 * np.median(begin)
    reached = ClipDataset(planned, "all", horizon=4, eta="reached")
    assert len(reached) == 3 * 5  # every window, eta = where the hand is at the clip's end
    with pytest.raises(Exception, match="planned segments .* last 4 frames but the horizon is 3"):
        ClipDataset(planned, "all", horizon=3)


def test_unknown_policy_lists_the_known_ones(tmp_path, capsys):
    from imagine_ros.cli import main as cli_main

    code = cli_main(["collect", "--out", str(tmp_path / "d"), "--episodes", "2", "--policy", "greedy", "--no-progress"])
    assert code != 0
    assert "unknown --policy 'greedy'; known policies: bair, planning, mixed" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # nothing was written


class _FlowPredictor:
    """Returns given flows for the clips of a ClipDataset, in the order dense_eval asks for them."""

    image_size, horizon, condition_dim, method, condition_kind = 64, 4, 3, "fixed", "eta"

    def __init__(self, flows_by_image):
        self.flows_by_image = flows_by_image

    def predict(self, images, conditions=None, num_samples=1, seed=None):
        from imagine_ros.prediction import Prediction

        flows = np.stack([self.flows_by_image(img) for img in images])[:, None].repeat(num_samples, 1)
        frames = np.repeat(images[:, None, None], 4, 2).repeat(num_samples, 1)
        return Prediction(frames, flows.astype(np.float32), "native", self.method)


def test_dense_eval_scores_true_flows_zero_and_no_motion_at_the_zero_flow_floor(planned):
    from imagine_ros.evaluation.flow_eval import dense_eval
    from imagine_ros.models.frames import tensor_to_frames

    ds = ClipDataset(planned, "all", horizon=4, keys=("x0", GT_FLOW))
    truth = {tensor_to_frames(c["x0"]).tobytes(): c[GT_FLOW].numpy().transpose(0, 2, 3, 1) for c in ds}
    exact = dense_eval(_FlowPredictor(lambda im: truth[im.tobytes()]), planned, "all", clips=6, samples=2)
    still = dense_eval(_FlowPredictor(lambda im: np.zeros((4, 64, 64, 2))), planned, "all", clips=6, samples=2)
    assert exact.moving_epe_mean < 1e-4 and exact.static_epe_mean < 1e-4
    assert still.moving_epe_mean == pytest.approx(still.moving_zero) and still.moving_zero > 1.0
    assert exact.push_pairs == still.push_pairs
    if exact.push_pairs:  # carrying the centre with the true flows is the floor; zero flow scores the displacement
        assert exact.push_mean == pytest.approx(exact.push_gt_mean)
        assert still.push_mean == pytest.approx(still.push_zero_mean)


def test_dense_eval_with_shuffled_eta_tells_flows_that_follow_eta_from_flows_that_ignore_it(planned):
    from imagine_ros.evaluation.flow_eval import dense_eval
    from imagine_ros.models.frames import tensor_to_frames

    ds = ClipDataset(planned, "all", horizon=4, keys=("x0", "condition", GT_FLOW))
    by_image = {tensor_to_frames(c["x0"]).tobytes(): c[GT_FLOW].numpy().transpose(0, 2, 3, 1) for c in ds}
    by_eta = {c["condition"].numpy().astype(np.float32).tobytes(): by_image[tensor_to_frames(c["x0"]).tobytes()]
              for c in ds}  # fmt: skip

    class FollowsEta(_FlowPredictor):
        """Returns the true flows of the clip whose η it is given."""

        def __init__(self):
            super().__init__(lambda im: None)

        def predict(self, images, conditions=None, num_samples=1, seed=None):
            eta_of = {im.tobytes(): np.asarray(e, np.float32).tobytes() for im, e in zip(images, conditions)}
            self.flows_by_image = lambda im: by_eta[eta_of[im.tobytes()]]
            return super().predict(images, conditions, num_samples, seed)

    follows, ignores = FollowsEta(), _FlowPredictor(lambda im: by_image[im.tobytes()])
    own = dense_eval(follows, planned, "all", clips=6, samples=1)
    other = dense_eval(follows, planned, "all", clips=6, samples=1, shuffle_eta=True)
    blind = dense_eval(ignores, planned, "all", clips=6, samples=1, shuffle_eta=True)
    assert own.moving_epe_mean < 1e-4 < 1.0 < other.moving_epe_mean  # another clip's flows
    assert blind.moving_epe_mean < 1e-4 and blind.name == "fixed (shuffled η)"


def test_part_kinds_label_the_arm_and_the_objects(planned):
    from imagine_ros.sim.ground_truth import split_instance
    from imagine_ros.training.clips import PART_KIND

    store = EpisodeStore(planned)
    ds = ClipDataset(planned, "all", horizon=4, keys=(PART_KIND,))
    clip = ds[0]
    body, _ = split_instance(store.read(clip["episode"], "instance", clip["start"], clip["start"] + 1)[0])
    parts = store.read(clip["episode"], "part_ids")
    robot, objects = int(parts[0][0]), {int(b) for b, link in parts if b != parts[0][0]}
    kind = clip[PART_KIND].numpy()
    assert np.array_equal(kind == 1, body == robot)
    assert np.array_equal(kind == 2, np.isin(body, list(objects)))
    assert (kind == 2).any() and (kind == 1).any()


@pytest.mark.slow
def test_imagineflow_trains_on_ground_truth_and_fine_tunes_with_other_loss_weights(planned, tmp_path, capsys):
    import json

    from imagine_ros.cli import main as cli_main

    base = ["train", "--method", "imagineflow", "--config", "tiny", "--data", str(planned), "--steps", "2",
            "--batch-size", "2", "--val-clips", "2", "--workers", "0", "--no-progress", "--set", "horizon=4",
            "--set", "gt_flow_weight=0.1", "--set", "gt_mask_weight=0.1"]  # fmt: skip
    assert cli_main([*base, "--out", str(tmp_path / "a")]) == 0
    logs = (tmp_path / "a" / "config.json").read_text()
    assert "gt_flow_weight" in logs
    # a fine-tune may change loss weights (here: objects weighted more), not the architecture
    tuned = [*base, "--set", "gt_object_boost=20", "--init", str(tmp_path / "a"), "--out", str(tmp_path / "b")]
    assert cli_main(tuned) == 0
    assert "training with other settings (gt_object_boost)" in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "model.json").read_text())["config"]["gt_object_boost"] == 20
    wider = [*base, "--set", "z_dim=4", "--init", str(tmp_path / "a"), "--out", str(tmp_path / "c")]
    assert cli_main(wider) != 0
    assert "another model config (z_dim" in capsys.readouterr().err
    # switching condition maps on widens the generator: it starts from the checkpoint and trains the new inputs
    maps = [*base, "--set", "condition_maps=true", "--init", str(tmp_path / "a"), "--out", str(tmp_path / "d")]
    assert cli_main(maps) == 0
    assert "training with other settings (condition_maps)" in capsys.readouterr().err
    # the generator may grow wider (new channels start with zero weight into the layers they feed), not narrower
    widen = [*base, "--set", "condition_maps=true", "--set", "gen_channels=[16,16]", "--init", str(tmp_path / "d")]
    assert cli_main([*widen, "--out", str(tmp_path / "w")]) == 0
    assert "training with other settings (gen_channels)" in capsys.readouterr().err
    narrow = [*base, "--set", "condition_maps=true", "--set", "gen_channels=[8,4]", "--init", str(tmp_path / "d")]
    assert cli_main([*narrow, "--out", str(tmp_path / "n")]) != 0
    assert "another model config (gen_channels" in capsys.readouterr().err
    back = [*base, "--init", str(tmp_path / "d"), "--out", str(tmp_path / "e")]
    assert cli_main(back) != 0  # maps cannot be switched off again: their weights would be dropped
    assert "another model config (condition_maps" in capsys.readouterr().err
