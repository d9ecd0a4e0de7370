"""The simulator node's logic without rclpy: a real PyBullet scene driven towards commanded targets."""

from __future__ import annotations

import time

import numpy as np
import pytest

from imagine_ros import ros_msgs
from imagine_ros.errors import ConfigError
from imagine_ros.sim_bridge import SimBridge, SimBridgeConfig


@pytest.fixture
def bridge():
    b = SimBridge(SimBridgeConfig(image_size=32, seed=3))
    yield b
    b.close()


def test_hand_moves_to_the_target_by_at_most_max_step(bridge):
    s0 = bridge.state
    assert s0.image.shape == (32, 32, 3) and s0.image.dtype == np.uint8 and s0.target is None
    target = bridge.set_target(s0.ee_command + [0.10, -0.05, 0.0])
    np.testing.assert_allclose(target, s0.ee_command + [0.10, -0.05, 0.0])
    commands = [s0.ee_command]
    for _ in range(4):
        commands.append(bridge.step().ee_command)
    steps = np.abs(np.diff(commands, axis=0))
    assert steps.max() <= 0.07 + 1e-9, "the hand moves at most max_step per axis and frame"
    np.testing.assert_allclose(commands[2], target)  # 0.10 m at 0.07 m per step: there after 2 steps
    s = bridge.state
    assert np.linalg.norm(s.ee_pos - target) < 0.02, f"measured hand {s.ee_pos} far from target {target}"
    np.testing.assert_array_equal(s.target, target)
    assert s.step == 4 and s.sim_time_s == pytest.approx(0.8)


def test_without_target_the_hand_holds_and_targets_are_clipped(bridge):
    command = bridge.state.ee_command
    for _ in range(2):
        np.testing.assert_allclose(bridge.step().ee_command, command)
    low, high = bridge.workspace
    clipped = bridge.set_target([5.0, -5.0, 0.1])
    np.testing.assert_allclose(clipped, [high[0], low[1], 0.1])
    with pytest.raises(ValueError, match="3 finite numbers"):
        bridge.set_target([0.5, np.nan, 0.1])
    with pytest.raises(ValueError, match="3 finite numbers"):
        bridge.set_target([0.5, 0.1])
    bridge.clear_target()
    assert bridge.target is None


def test_new_scene_after_episode_steps_and_determinism():
    cfg = SimBridgeConfig(image_size=32, seed=5, episode_steps=2)
    a, b = SimBridge(cfg), SimBridge(cfg)
    try:
        first = a.state.object_pos.copy()
        for bridge in (a, b):
            bridge.set_target(bridge.state.ee_command + [0.05, 0.05, 0.0])
        for _ in range(2):
            sa, sb = a.step(), b.step()
            np.testing.assert_array_equal(sa.image, sb.image)  # same seed, same targets: the same pictures
        assert sa.episode == 0 and sa.step == 2
        s = a.step()
        assert (s.episode, s.step) == (1, 1) and s.target is None
        assert not np.allclose(s.object_pos, first), "episode 1 draws a new scene (seed + 1)"
    finally:
        a.close()
        b.close()
    with pytest.raises(ConfigError, match="episode_steps"):
        SimBridgeConfig(episode_steps=-1)


def test_task_mode_pixels_and_camera_info():
    with SimBridge(SimBridgeConfig(image_size=48, task=True, seed=1)) as bridge:
        s = bridge.state
        for px in (s.object_pixel, s.goal_pixel):
            assert px.shape == (2,) and np.all((px >= 0) & (px < 48))
        assert s.distance > 0
        info = bridge.camera_info()
        k = np.array(info["k"]).reshape(3, 3)
        np.testing.assert_allclose(k, bridge.env.camera.K)
        assert (info["width"], info["height"], info["distortion_model"]) == (48, 48, "plumb_bob")
        assert len(info["p"]) == 12 and info["p"][3] == 0.0 and len(info["d"]) == 5
        # the fields fit a real sensor_msgs/CameraInfo (CDR round trip with rosbags)
        ts = ros_msgs.get_typestore("humble")
        types = ts.types
        msg = types["sensor_msgs/msg/CameraInfo"](
            header=ros_msgs.header_msg(0, "camera", ts),
            height=info["height"],
            width=info["width"],
            distortion_model=info["distortion_model"],
            d=np.array(info["d"]),
            k=np.array(info["k"]),
            r=np.array(info["r"]),
            p=np.array(info["p"]),
            binning_x=0,
            binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )
        back = ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
        np.testing.assert_array_equal(back.k, info["k"])


# ----------------------------------------------------------------------------------------------------------------------
# frames: the camera's static transform, pixel frames, stamps


def _gl_pixels(camera, points: np.ndarray) -> np.ndarray:
    """Where the renderer draws world points: pybullet's own OpenGL view and projection matrices (column-major) ->
    normalised device coordinates -> pixel centres (u right, v down). Independent of ``K`` and ``T_cam_world``."""
    view = np.asarray(camera.view_matrix, np.float64).reshape(4, 4).T
    proj = np.asarray(camera.projection_matrix, np.float64).reshape(4, 4).T
    clip = np.c_[points, np.ones(len(points))] @ (proj @ view).T
    ndc = clip[:, :2] / clip[:, 3:4]
    return np.c_[(ndc[:, 0] + 1) / 2 * camera.width - 0.5, (1 - ndc[:, 1]) / 2 * camera.height - 0.5]


def test_static_camera_transform_and_intrinsics_project_to_the_renderers_pixels():
    import pybullet

    with SimBridge(SimBridgeConfig(image_size=48, task=True, seed=2)) as bridge:
        s = bridge.state
        ts = ros_msgs.get_typestore("humble")
        tf = ts.types[ros_msgs.TF_MESSAGE](
            transforms=[ros_msgs.transform_stamped_msg(bridge.camera_pose(), "panda_link0", "camera_optical_frame",
                                                       s.stamp_ns, ts)]
        )  # fmt: skip
        back = ros_msgs.cdr_to_msg(ros_msgs.msg_to_cdr(tf, ts), ros_msgs.TF_MESSAGE, ts).transforms[0]
        assert (back.header.frame_id, back.child_frame_id) == ("panda_link0", "camera_optical_frame")
        t, q = back.transform.translation, back.transform.rotation
        # the pose as a TF user rebuilds it, the rotation with pybullet's quaternion code (x, y, z, w as in ROS)
        pose = np.eye(4)
        pose[:3, :3] = np.asarray(pybullet.getMatrixFromQuaternion([q.x, q.y, q.z, q.w])).reshape(3, 3)
        pose[:3, 3] = [t.x, t.y, t.z]
        k = np.asarray(bridge.camera_info()["k"]).reshape(3, 3)
        points = np.vstack([s.object_pos, s.ee_pos, [0.55, 0.0, 0.0], [0.45, 0.12, 0.05]])
        cam = (np.c_[points, np.ones(len(points))] @ np.linalg.inv(pose).T)[:, :3]  # base -> optical frame
        assert np.all(cam[:, 2] > 0), "the points are in front of the camera (z forward)"
        uv = (cam[:, :2] / cam[:, 2:]) @ k[:2, :2].T + k[:2, 2]
        np.testing.assert_allclose(uv, _gl_pixels(bridge.env.camera, points), atol=1e-6)
        # the designated object's pixel (the env's own projection) is one of the objects' projections
        assert np.min(np.linalg.norm(uv[: len(s.object_pos)] - s.object_pixel, axis=1)) < 1e-3
        np.testing.assert_allclose(uv[len(s.object_pos) + 1], [23.5, 23.5], atol=1e-6)  # the camera's look-at point
        # optical convention: z (forward) looks down at the table; x right = y down x z forward (right-handed)
        x_axis, y_axis, z_axis = pose[:3, 0], pose[:3, 1], pose[:3, 2]
        assert z_axis[2] < -0.5
        np.testing.assert_allclose(np.cross(y_axis, z_axis), x_axis, atol=1e-9)


def test_quaternion_from_matrix_agrees_with_pybullet():
    import pybullet

    rng = np.random.default_rng(0)
    quats = [q / np.linalg.norm(q) for q in rng.normal(size=(200, 4))]
    quats += [
        np.array(q, float)
        for q in ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0.7071068, 0.7071068, 0, 0])
    ]
    for q in quats:
        m = np.asarray(pybullet.getMatrixFromQuaternion(q.tolist())).reshape(3, 3)
        got = np.asarray(ros_msgs.quaternion_from_matrix(m))
        want = q if q[3] >= 0 else -q
        np.testing.assert_allclose(got, want, atol=1e-7)
    with pytest.raises(ValueError, match="rotation matrix"):
        ros_msgs.quaternion_from_matrix(np.diag([1.0, 1.0, -1.0]))


def test_states_are_stamped_when_their_image_is_rendered():
    ticks = []

    def clock() -> int:
        ticks.append(len(ticks) * 1_000_000)
        return ticks[-1]

    with SimBridge(SimBridgeConfig(image_size=32), clock=clock) as bridge:
        assert bridge.state.stamp_ns == 0 and len(ticks) == 1  # reset: rendered, then stamped once
        for i in range(1, 4):
            assert bridge.step().stamp_ns == i * 1_000_000  # one reading per rendered frame, none at publish time
    with SimBridge(SimBridgeConfig(image_size=32)) as bridge:  # default: wall-clock nanoseconds after the render
        before = time.time_ns()
        s = bridge.step()
        assert before < s.stamp_ns <= time.time_ns()


def test_frame_parameters_follow_the_conventions():
    from imagine_ros import pipeline as pl
    from imagine_ros.node_params import SIM_PARAMS, validate

    params = {p.name: p for p in SIM_PARAMS}
    assert params["camera_frame"].default.endswith("_optical_frame")
    assert params["pixel_frame"].suffix == pl.PIXEL_FRAME_SUFFIX and params["pixel_frame"].default.endswith("_pixels")
    with pytest.raises(ConfigError, match="'camera_frame': expected a name that ends with _optical_frame"):
        validate(SIM_PARAMS, {"camera_frame": "camera"})
    with pytest.raises(ConfigError, match="'pixel_frame': expected a name that ends with _pixels"):
        validate(SIM_PARAMS, {"pixel_frame": "camera_optical_frame"})
    assert validate(SIM_PARAMS, {"camera_frame": "wrist_camera_optical_frame"})["camera_frame"].startswith("wrist")
