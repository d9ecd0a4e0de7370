"""Collect BAIR-style pushing episodes into a dataset folder (see :mod:`imagine_ros.sim.storage`).

Each episode: reset the environment with the episode's seed, run the scripted policy (seeded from the same seed) for
``frames`` frames, record ``frames (T, H, W, 3) uint8``, ``ee_pos (T, 3)``, ``actions (T, 3)`` (``actions[t]`` moves
the hand from frame t to frame t + 1; the last one is the policy's next action, never executed), ``object_pos
(T, K, 3)``, ``object_quat (T, K, 4)``; with ground truth (the default) ``depth``, ``instance``, ``part_ids``,
``part_pose`` (:mod:`imagine_ros.sim.ground_truth`); with the planning-matched policy ``eta_start (T,) bool`` (a
segment of ``horizon`` frames that moves the hand to a commanded target begins at this frame) and ``eta_target
(T, 3)`` (that target, NaN where no segment begins).

Policies (``--policy``): ``bair`` (:class:`~imagine_ros.sim.policy.BairPushPolicy`, random walk + pushes, η = where
the hand is at a clip's last frame), ``planning`` (:class:`~imagine_ros.sim.policy.PlanningPolicy`, segments that
execute a target η exactly as the planner does) and ``mixed`` (each episode is ``planning`` or, with probability
``bair_probability``, ``bair``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from imagine_ros.constants import ACTIONS, EE_POS, FRAMES, OBJECT_POS, OBJECT_QUAT
from imagine_ros.errors import ConfigError
from imagine_ros.sim.env import PushEnv, PushEnvConfig
from imagine_ros.sim.ground_truth import DEPTH, INSTANCE, PART_IDS, PART_POSE
from imagine_ros.sim.policy import POLICIES, BairPushPolicy, PlanningPolicy, PlanningPolicyConfig, PolicyConfig
from imagine_ros.sim.storage import CollectReport, check_sizes, new_meta, write_dataset

#: BAIR: 30 frames per trajectory.
DEFAULT_FRAMES = 30
ETA_START = "eta_start"
ETA_TARGET = "eta_target"
_ENV_CACHE: dict[str, PushEnv] = {}


def _env_for(env_options: dict) -> PushEnv:
    """One environment per process and option set (building pybullet clients per episode would be wasted work)."""
    key = json.dumps(env_options, sort_keys=True)
    env = _ENV_CACHE.get(key)
    if env is None:
        env = _ENV_CACHE[key] = PushEnv(**env_options)
    return env


def run_episode(env: PushEnv, policy, seed: int, frames: int, segments: bool = False) -> dict[str, np.ndarray]:
    """Run one episode of ``frames`` frames and return its arrays (module docstring). ``segments``: record the
    policy's segment starts and targets (``eta_start``, ``eta_target``; a :class:`PlanningPolicy` has them, any other
    policy gives none)."""
    obs, info = env.reset(seed=seed)
    policy.reset()
    h, w, _ = env.observation_space["image"].shape
    k = len(info["object_pos"])
    gt = env.config.ground_truth
    out = {
        FRAMES: np.zeros((frames, h, w, 3), np.uint8),
        EE_POS: np.zeros((frames, 3), np.float32),
        ACTIONS: np.zeros((frames, 3), np.float32),
        OBJECT_POS: np.zeros((frames, k, 3), np.float32),
        OBJECT_QUAT: np.zeros((frames, k, 4), np.float32),
        "respawned": np.zeros((frames,), np.int16),
    }
    if segments:
        out[ETA_START] = np.zeros((frames,), bool)
        out[ETA_TARGET] = np.full((frames, 3), np.nan, np.float32)
    if gt:
        out[DEPTH] = np.zeros((frames, h, w), np.float16)
        out[INSTANCE] = np.zeros((frames, h, w), np.uint16)
        out[PART_IDS] = np.asarray(env.parts, np.int16)
        out[PART_POSE] = np.zeros((frames, len(env.parts), 7), np.float32)
    for t in range(frames):
        out[FRAMES][t] = obs["image"]
        out[EE_POS][t] = obs["ee_pos"]
        out[OBJECT_POS][t] = info["object_pos"]
        out[OBJECT_QUAT][t] = info["object_quat"]
        out["respawned"][t] = info["respawned"]
        if gt:
            g = env.ground_truth()
            out[DEPTH][t], out[INSTANCE][t], out[PART_POSE][t] = g["depth"], g["instance"], g["part_pose"]
        action = policy.act(info)
        if segments and getattr(policy, "segment_started", False):
            out[ETA_START][t] = True
            out[ETA_TARGET][t] = policy.eta
        out[ACTIONS][t] = action
        if t + 1 < frames:
            obs, _, _, _, info = env.step(action)
    if segments:  # a segment needs its whole horizon inside the episode to be a clip
        horizon = int(policy.config.horizon) if isinstance(policy, PlanningPolicy) else frames
        late = np.arange(frames) + horizon > frames - 1
        out[ETA_START][late] = False
        out[ETA_TARGET][late] = np.nan
    return out


def push_episode(config: dict, index: int, seed: int) -> dict[str, np.ndarray]:
    """Episode function for :func:`imagine_ros.sim.storage.write_dataset` (top-level, picklable, deterministic)."""
    env = _env_for(config["env"])
    rng = np.random.default_rng([seed, 1])
    pol = dict(config["policy"])
    name = pol.pop("name", "bair")  # datasets of imagine_ros <= 0.1 hold the BAIR policy's settings only
    if name == "bair":
        policy = BairPushPolicy.for_env(env, rng, PolicyConfig(**_tuples(pol)))
        return run_episode(env, policy, seed, int(config["frames"]))
    bair = PolicyConfig(**_tuples(pol.pop("bair", {})))
    planning = PlanningPolicyConfig(**_tuples(pol))
    if name == "mixed" and rng.random() < planning.bair_probability:
        policy = BairPushPolicy.for_env(env, rng, bair)
    else:
        policy = PlanningPolicy.for_env(env, rng, planning)
    return run_episode(env, policy, seed, int(config["frames"]), segments=True)


def policy_settings(name: str, horizon: int = 10, bair: PolicyConfig | None = None, **planning) -> dict:
    """The ``policy`` entry of a collection's config for policy ``name`` (one of :data:`POLICIES`)."""
    if name not in POLICIES:
        raise ConfigError(f"unknown --policy {name!r}; known policies: {', '.join(POLICIES)}")
    bair_cfg = (bair or PolicyConfig()).to_dict()
    if name == "bair":
        return {"name": "bair", **bair_cfg}
    if name == "planning":
        planning.setdefault("bair_probability", 0.0)
    elif "bair_probability" not in planning:
        planning["bair_probability"] = 0.2
    cfg = PlanningPolicyConfig(horizon=int(horizon), **planning)
    return {"name": name, **cfg.to_dict(), "bair": bair_cfg}


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def collect_push(
    out: str | Path,
    episodes: int,
    workers: int = 1,
    seed: int = 0,
    frames: int = DEFAULT_FRAMES,
    shard_size: int = 16,
    env_options: dict[str, Any] | None = None,
    policy: PolicyConfig | dict | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    progress: bool = True,
) -> CollectReport:
    """Collect ``episodes`` pushing episodes into ``out`` (resumes a killed run; refuses other settings).

    policy: a :class:`PolicyConfig` (the BAIR-style policy) or a dict from :func:`policy_settings`. Ground truth is
    recorded unless ``env_options`` says ``ground_truth=False``.
    """
    check_sizes(episodes, shard_size, frames)  # absurd sizes: one line, before anything is built or allocated
    if frames < 2:
        raise ConfigError(f"--frames must be at least 2, got {frames}")
    env_options = {"ground_truth": True, **(env_options or {})}
    env_cfg = PushEnvConfig.from_options(**env_options)  # validates options before anything is written
    check_sizes(episodes, shard_size, frames, env_cfg.image_size)
    if env_cfg.task:
        raise ConfigError("collect records free pushing; the env option task=True is for planning experiments")
    if isinstance(policy, dict):
        pol_dict = dict(policy)
    else:
        pol_dict = {"name": "bair", **(policy or PolicyConfig()).to_dict()}
    horizon = pol_dict.get("horizon")
    if horizon is not None and horizon > frames - 1:
        raise ConfigError(f"the planning policy's horizon ({horizon}) needs episodes of at least {horizon + 1} frames")
    probe = PushEnv(config=env_cfg)
    camera = probe.camera.to_dict()
    scene = {"hand_low": probe.hand_low.tolist(), "hand_high": probe.hand_high.tolist(), "floor_z": probe.scene.floor_z}
    probe.close()
    config = {"env": env_cfg.to_dict(), "policy": pol_dict, "frames": int(frames)}
    meta = new_meta(
        kind="push",
        config=config,
        num_episodes=episodes,
        episodes_per_shard=shard_size,
        seed=seed,
        frames_per_episode=frames,
        image_size=env_cfg.image_size,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        extra={
            "camera": camera,
            "scene": scene,
            "frame_period_s": env_cfg.frame_dt,
            "action": "end-effector displacement (dx, dy, dz) in metres, actions[t] moves frame t to t+1",
            "ee_frame": "panda_link0 (robot base), metres",
        },
    )
    return write_dataset(Path(out), meta, push_episode, workers=workers, progress=progress, desc="collect")


def moved_fraction(store, threshold: float = 0.02, indices=None) -> float:
    """Fraction of episodes in which at least one object moves more than ``threshold`` metres from its start."""
    indices = range(len(store)) if indices is None else indices
    moved = []
    for i in indices:
        pos = store.read(i, OBJECT_POS)
        moved.append(bool(np.any(np.linalg.norm(pos[:, :, :2] - pos[:1, :, :2], axis=-1) > threshold)))
    return float(np.mean(moved)) if moved else 0.0


def clip_moved_fraction(store, threshold: float = 0.02, indices=None) -> tuple[float, int]:
    """(fraction, count) of the planned clips (windows that start a segment) in which an object moves more than
    ``threshold`` metres between the clip's first and last frame."""
    indices = range(len(store)) if indices is None else indices
    horizon = int(store.meta["config"]["policy"].get("horizon", 0))
    moved = []
    for i in indices:
        starts = np.flatnonzero(store.read(i, ETA_START))
        if not len(starts):
            continue
        pos = store.read(i, OBJECT_POS)
        for s in starts:
            d = np.linalg.norm(pos[s + horizon, :, :2] - pos[s, :, :2], axis=-1)
            moved.append(bool(d.max() > threshold))
    return (float(np.mean(moved)) if moved else 0.0), len(moved)
