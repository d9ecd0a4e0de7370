"""The simulator node's logic without rclpy: a real PyBullet scene driven towards commanded targets."""

from __future__ import annotations

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
