"""The pushing environments: gymnasium API, determinism, safety under any actions, task mode, bad options."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagine_ros.errors import ConfigError
from imagine_ros.sim import ENV_IDS
from imagine_ros.sim.env import PushEnv


@pytest.fixture(scope="module")
def env():
    e = PushEnv(image_size=32)
    yield e
    e.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id):
    env = gym.make(env_id, image_size=32, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    obs, info = env.reset(seed=3)
    assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
    assert obs["ee_pos"].shape == (3,) and info["object_pos"].shape == (3, 3)
    assert env.render().shape == (32, 32, 3)
    env.close()


def rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    frames, ee, objs = [obs["image"]], [obs["ee_pos"]], [info["object_pos"]]
    for a in actions:
        obs, _, _, _, info = env.step(a)
        frames.append(obs["image"])
        ee.append(obs["ee_pos"])
        objs.append(info["object_pos"])
    return np.stack(frames), np.stack(ee), np.stack(objs)


def test_same_seed_is_bit_identical_whatever_came_before(env):
    actions = np.random.default_rng(0).uniform(-0.07, 0.07, (12, 3)).astype(np.float32)
    first = rollout(env, 7, actions)
    rollout(env, 8, actions[::-1])  # other history in the same client
    again = rollout(env, 7, actions)
    fresh_env = PushEnv(image_size=32)
    fresh = rollout(fresh_env, 7, actions)
    fresh_env.close()
    for a, b, c in zip(first, again, fresh):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    other = rollout(env, 9, actions)
    assert not np.array_equal(first[0][0], other[0][0])


def test_hand_follows_the_target_and_is_clipped_to_the_workspace(env):
    env.reset(seed=1)
    for _ in range(4):
        obs, _, _, _, info = env.step(np.array([0.0, 0.0, 0.07]))  # lift clear of the objects
    assert np.linalg.norm(obs["ee_pos"] - info["ee_target"]) < 0.01
    for _ in range(10):
        obs, _, _, _, info = env.step(np.array([1.0, 1.0, 1.0]))  # beyond max_step and beyond the workspace
    assert np.allclose(info["ee_target"], env.hand_high, atol=1e-6)
    assert np.linalg.norm(obs["ee_pos"] - info["ee_target"]) < 0.02
    before = info["ee_target"].copy()
    _, _, _, _, info = env.step(np.array([-1.0, 0.0, 0.0]))
    assert np.isclose(before[0] - info["ee_target"][0], env.config.max_step, atol=1e-6)


def assert_safe(env, obs, info):
    sc = env.scene.config
    half = np.array(sc.bin_size) / 2
    pos = info["object_pos"]
    assert np.all(np.isfinite(pos)) and np.all(np.isfinite(obs["ee_pos"]))
    assert np.all(np.abs(pos[:, :2] - sc.bin_center) <= half + 1e-3), pos
    assert np.all(pos[:, 2] > env.scene.floor_z - 0.01) and np.all(pos[:, 2] < 0.2), pos
    assert np.all(obs["ee_pos"] > env.hand_low - 0.05) and np.all(obs["ee_pos"] < env.hand_high + 0.05)


ADVERSARIAL = {
    "slam_down_and_sweep": [[0, 0, -1]] * 3 + [[1, 0, -1]] * 8 + [[-1, 0, -1]] * 8 + [[0, 1, -1]] * 6,
    "zigzag_max": [[(-1) ** i, (-1) ** (i // 2), (-1) ** (i // 3)] for i in range(30)],
    "corner_grind": [[1, 1, -1]] * 12 + [[-1, -1, -1]] * 12,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_actions_keep_everything_finite_and_in_the_bin(env, name):
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        for a in ADVERSARIAL[name]:
            obs, _, _, _, info = env.step(np.asarray(a, dtype=np.float32) * env.config.max_step * 1.5)
            assert_safe(env, obs, info)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31 - 1),
    actions=st.lists(st.tuples(*[st.floats(-0.2, 0.2, allow_nan=False)] * 3), min_size=1, max_size=15),
)
def test_random_actions_keep_everything_finite_and_in_the_bin(env, seed, actions):
    obs, info = env.reset(seed=seed)
    for a in actions:
        obs, _, _, _, info = env.step(np.asarray(a, dtype=np.float32))
        assert_safe(env, obs, info)


def test_non_finite_action_is_refused(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0]))


def test_objects_that_leave_the_bin_are_respawned(env):
    env.reset(seed=2)
    env.scene.client.resetBasePositionAndOrientation(env.scene.objects[0], (2.0, 2.0, 0.5), (0, 0, 0, 1))
    obs, _, _, _, info = env.step(np.zeros(3))
    assert info["respawned"] == 1
    assert_safe(env, obs, info)


def test_task_mode_reports_goal_and_success():
    env = PushEnv(image_size=32, task=True)
    obs, info = env.reset(seed=4)
    k = info["target_object"]
    sc = env.scene.config
    assert np.all(info["goal_pos"][:2] >= np.array(sc.hand_low[:2])) and np.all(
        info["goal_pos"][:2] <= sc.hand_high[:2]
    )
    assert info["distance"] > env.config.success_tolerance
    assert info["goal_pixel"].shape == (2,) and not info["is_success"]
    _, reward, terminated, _, info = env.step(np.zeros(3))
    assert reward == pytest.approx(-info["distance"]) and not terminated
    env.scene.place(k, tuple(info["goal_pos"][:2]), 0.0)  # put the object on the goal by hand
    _, reward, terminated, _, info = env.step(np.zeros(3))
    assert info["is_success"] and terminated and reward > -env.config.success_tolerance
    _, info = env.reset(seed=4, options={"goal": (0.5, 0.1), "target_object": 1})
    assert info["target_object"] == 1 and np.allclose(info["goal_pos"][:2], (0.5, 0.1))
    with pytest.raises(ConfigError, match="target_object 9 out of range"):
        env.reset(seed=4, options={"target_object": 9})
    env.close()


def test_task_reset_can_put_the_hand_behind_the_object_away_from_the_goal():
    """hand="behind": the hand starts at push height, HAND_BEHIND (plus up to 6 cm where the hand would touch the
    object) from the object on the line from the goal through it, so one straight motion towards the goal pushes
    the object (the planners' default tasks). It is settled there before the first frame."""
    from imagine_ros.sim.env import HAND_BEHIND

    env = PushEnv(image_size=32, task=True)
    for seed in (0, 1, 2):
        obs, info = env.reset(seed=seed, options={"hand": "behind"})
        start = env.scene.object_poses()[0][info["target_object"]][:2]
        away = (start - info["goal_pos"][:2]) / np.linalg.norm(start - info["goal_pos"][:2])
        offset = env.ee_target[:2] - start
        assert abs(offset @ np.array([-away[1], away[0]])) < 2e-3  # on the line through the object from the goal
        assert HAND_BEHIND - 2e-3 < offset @ away < HAND_BEHIND + 0.062
        assert env.ee_target[2] == pytest.approx(env.hand_low[2])  # push height (the default start is 10 cm up)
        assert np.linalg.norm(obs["ee_pos"] - env.ee_target) < 5e-3  # already there in the first frame
        assert info["distance"] > env.config.success_tolerance  # the object was not pushed to its goal
    _, default = env.reset(seed=0)
    assert env.ee_target[2] > env.hand_low[2] + 0.05
    with pytest.raises(ConfigError, match="hand must be 'default' or 'behind'"):
        env.reset(seed=0, options={"hand": "above"})
    env.close()


def test_no_object_moves_under_no_op_actions_after_a_task_reset():
    """Before the settled reset, no-op actions moved objects by 0.9-5.6 cm in 5 of 15 seeds (the hand swept down from
    a few cm above its start). Measured now over 160 seeds: at most 1.2 mm."""
    env = PushEnv(task=True, goal_distance=(0.10, 0.20))
    worst = 0.0
    for seed in range(300, 320):
        _, info = env.reset(seed=seed, options={"hand": "behind"})
        start = info["object_pos"].copy()
        for _ in range(5):
            _, _, _, _, info = env.step(np.zeros(3))
        worst = max(worst, float(np.linalg.norm(info["object_pos"][:, :2] - start[:, :2], axis=-1).max()))
    env.close()
    assert worst < 2e-3


def test_saved_state_restores_bit_exactly():
    """The oracle and the simulator-backed predictor simulate candidates from a snapshot of the environment's own
    pybullet state: restoring it and replaying the same actions gives identical frames and object poses."""
    env = PushEnv(task=True)
    env.reset(seed=4, options={"hand": "behind"})
    actions = [np.array([0.03, 0.01, 0.0]), np.array([0.02, -0.02, 0.0]), np.array([0.0, 0.03, -0.01])]
    snap = env.save_state()
    first = [env.step(a) for a in actions]
    env.step(np.array([-0.05, 0.05, 0.05]))  # wander off
    env.restore_state(snap)
    second = [env.step(a) for a in actions]
    env.discard_state(snap)
    for (o1, _, _, _, i1), (o2, _, _, _, i2) in zip(first, second):
        assert np.array_equal(o1["image"], o2["image"]) and np.array_equal(i1["object_pos"], i2["object_pos"])
    env.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": "red"}, "unknown env option 'colour'"),
        ({"image_size": 8}, "camera width must be an integer in"),
        ({"image_size": 100000}, "camera width must be an integer in"),
        ({"image_size": (64, 64, 3)}, "image_size must be an int or"),
        ({"num_objects": 20}, "num_objects must be in"),
        ({"shapes": ("sphere",)}, "unknown object shape"),
        ({"renderer": "vulkan"}, "renderer must be"),
        ({"max_step": 0}, "max_step must be"),
    ],
)
def test_bad_options_give_one_line_errors(options, message):
    with pytest.raises(ConfigError, match=message) as e:
        PushEnv(**options)
    assert "\n" not in str(e.value)


def test_non_square_images_and_object_count():
    env = PushEnv(image_size=(48, 64), num_objects=5)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (48, 64, 3) and info["object_pos"].shape == (5, 3)
    assert env.observation_space.contains(obs)
    env.close()
