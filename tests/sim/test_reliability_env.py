"""The environment refuses impossible tasks (issue 18): ``PushTask-v0`` reset options are validated (non-finite or
out-of-workspace goals, bad target objects and hands, unknown keys) with the allowed ranges in the message, a refused
reset changes nothing, no NaN reaches an observation, and action shape errors say "action" and the shape. Real
PyBullet through ``gymnasium.make``."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import imagine_ros.sim  # noqa: F401  (registers the ids)
from imagine_ros.errors import ConfigError

WHERE = r"x in \[0\.300, 0\.800\], y in \[-0\.250, 0\.250\] m \(the bin's floor\)"


@pytest.fixture(scope="module")
def env():
    e = gym.make("ImagineRos/PushTask-v0", image_size=32)
    e.reset(seed=0)  # gymnasium's checker wrapper checks the first reset and steps: let them be valid ones
    e.step(np.zeros(3, np.float32))
    e.step(np.zeros(3, np.float32))
    yield e
    e.close()


def finite(obs: dict, info: dict) -> bool:
    values = [obs["ee_pos"], *(v for v in info.values() if isinstance(v, (np.ndarray, float)))]
    return all(np.all(np.isfinite(v)) for v in values) and obs["image"].dtype == np.uint8


@pytest.mark.parametrize(
    "goal, message",
    [
        ((np.nan, 0.0), "goal must be 2 or 3 finite numbers"),
        ((0.5, np.inf), "goal must be 2 or 3 finite numbers"),
        ((0.5, 0.0, np.nan), "goal must be 2 or 3 finite numbers"),
        ((0.5,), "goal must be 2 or 3 finite numbers"),
        ((0.5, 0.0, 0.0, 0.0), "goal must be 2 or 3 finite numbers"),
        ([[0.5, 0.0]], "goal must be 2 or 3 finite numbers"),
        ("here", "goal must be 2 or 3 finite numbers"),
        (None, "goal must be 2 or 3 finite numbers"),
        ((1.5, 0.0), r"goal \[1\.5, 0\.0\] is outside the workspace"),
        ((0.5, -0.3), r"goal \[0\.5, -0\.3\] is outside the workspace"),
        ((1e300, 1e300), "outside the workspace"),
    ],
)
def test_impossible_goals_are_refused_with_the_allowed_ranges(env, goal, message):
    with pytest.raises(ConfigError, match=message) as e:
        env.reset(seed=1, options={"goal": goal})
    assert re.search(WHERE, str(e.value)), str(e.value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"target_object": 3}, r"target_object 3 out of range: it must be an integer in \[0, 2\]"),
        ({"target_object": -1}, r"target_object -1 out of range: it must be an integer in \[0, 2\]"),
        ({"target_object": 1.7}, r"target_object 1\.7 out of range"),
        ({"target_object": True}, r"target_object True out of range"),
        ({"target_object": "1"}, r"target_object '1' out of range"),
        ({"hand": ["behind"]}, "hand must be 'default' or 'behind'"),
        ({"hand": 3}, "hand must be 'default' or 'behind'"),
        ({"colour": "red"}, r"unknown reset option\(s\) \['colour'\]; known: goal, target_object, hand"),
        ({"goal": (0.5, 0.0), "gaol": (0.5, 0.0)}, r"unknown reset option\(s\) \['gaol'\]"),
    ],
)
def test_bad_target_objects_hands_and_unknown_keys_are_refused(env, options, message):
    with pytest.raises(ConfigError, match=message):
        env.reset(seed=1, options=options)


def test_options_must_be_a_dict_and_a_refused_reset_changes_nothing(env):
    obs, info = env.reset(seed=2, options={"goal": (0.5, 0.1), "target_object": 1})
    before = (env.unwrapped.ee_target, info["goal_pos"], env.unwrapped.scene.object_poses()[0])
    with pytest.raises(ConfigError, match="reset options must be a dict"):
        env.reset(seed=3, options=[("goal", (0.5, 0.1))])
    with pytest.raises(ConfigError):
        env.reset(seed=3, options={"goal": (np.nan, 0.1)})
    after = (env.unwrapped.ee_target, env.unwrapped._goal, env.unwrapped.scene.object_poses()[0])
    assert np.array_equal(before[0], after[0]) and np.allclose(before[1], after[1][:3])
    assert np.array_equal(before[2], after[2])
    obs, _, _, _, info = env.step(np.zeros(3, np.float32))  # the env goes on where it was
    assert finite(obs, info) and info["target_object"] == 1


def test_valid_goals_anywhere_on_the_bin_floor_work_and_observations_stay_finite(env):
    for goal, k in [((0.78, 0.23), 0), ((0.32, -0.24, 0.5), 2), (np.array([0.55, 0.0]), np.int64(1))]:
        obs, info = env.reset(seed=5, options={"goal": goal, "target_object": k, "hand": "default"})
        assert np.allclose(info["goal_pos"][:2], np.asarray(goal)[:2]) and info["target_object"] == k
        assert finite(obs, info)
    rng = np.random.default_rng(0)
    for a in [np.full(3, 1e30), np.full(3, -1e30), *rng.normal(0, 1, (6, 3))]:  # clipped, never NaN
        obs, _, _, _, info = env.step(a.astype(np.float32))
        assert finite(obs, info)


@pytest.mark.parametrize(
    "action, shown",
    [
        (np.zeros(2), r"got shape \(2,\)"),
        (np.zeros(4), r"got shape \(4,\)"),
        (np.zeros((2, 3)), r"got shape \(2, 3\)"),
        (0.0, r"got shape \(\)"),
        ("left", "got 'left'"),
        ([0.0, None, 0.0], r"got \[0\.0, nan, 0\.0\]"),
        (np.array([np.nan, 0.0, 0.0]), r"got \[nan, 0\.0, 0\.0\]"),
    ],
)
def test_action_errors_say_action_and_the_expected_shape(env, action, shown):
    base = env.unwrapped  # gymnasium's checker wrapper asserts on NaN itself; the env's own message is the point
    base.reset(seed=6)
    with pytest.raises(ValueError, match=r"action must be \(dx, dy, dz\) metres: 3 finite numbers, shape \(3,\), "):
        base.step(action)
    with pytest.raises(ValueError, match=shown):
        base.step(action)
    obs, *_ = base.step(np.zeros((1, 3)))  # a single (1, 3) row still works, as before
    assert np.all(np.isfinite(obs["ee_pos"]))


def test_a_diverged_simulation_raises_instead_of_returning_nan(env):
    base = env.unwrapped
    base.reset(seed=7)
    c = base.scene.client
    c.resetBasePositionAndOrientation(base.scene.robot, [float("nan")] * 3, [0, 0, 0, 1])
    with pytest.raises(RuntimeError, match="the simulation diverged: the end effector is at"):
        base.step(np.zeros(3))
    obs, info = base.reset(seed=7)  # a reset builds a fresh scene
    assert finite(obs, info)
