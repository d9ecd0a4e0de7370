"""Collect BAIR-style pushing episodes into a dataset folder (see :mod:`imagine_ros.sim.storage`).

Each episode: reset the environment with the episode's seed, run the scripted policy (seeded from the same seed) for
``frames`` frames, record ``frames (T, H, W, 3) uint8``, ``ee_pos (T, 3)``, ``actions (T, 3)`` (``actions[t]`` moves
the hand from frame t to frame t + 1; the last one is the policy's next action, never executed), ``object_pos
(T, K, 3)``, ``object_quat (T, K, 4)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from imagine_ros.constants import ACTIONS, EE_POS, FRAMES, OBJECT_POS, OBJECT_QUAT
from imagine_ros.errors import ConfigError
from imagine_ros.sim.env import PushEnv, PushEnvConfig
from imagine_ros.sim.policy import BairPushPolicy, PolicyConfig
from imagine_ros.sim.storage import CollectReport, new_meta, write_dataset

#: BAIR: 30 frames per trajectory.
DEFAULT_FRAMES = 30
_ENV_CACHE: dict[str, PushEnv] = {}


def _env_for(env_options: dict) -> PushEnv:
    """One environment per process and option set (building pybullet clients per episode would be wasted work)."""
    key = json.dumps(env_options, sort_keys=True)
    env = _ENV_CACHE.get(key)
    if env is None:
        env = _ENV_CACHE[key] = PushEnv(**env_options)
    return env


def run_episode(env: PushEnv, policy: BairPushPolicy, seed: int, frames: int) -> dict[str, np.ndarray]:
    """Run one episode of ``frames`` frames and return its arrays (module docstring)."""
    obs, info = env.reset(seed=seed)
    policy.reset()
    h, w, _ = env.observation_space["image"].shape
    k = len(info["object_pos"])
    out = {
        FRAMES: np.zeros((frames, h, w, 3), np.uint8),
        EE_POS: np.zeros((frames, 3), np.float32),
        ACTIONS: np.zeros((frames, 3), np.float32),
        OBJECT_POS: np.zeros((frames, k, 3), np.float32),
        OBJECT_QUAT: np.zeros((frames, k, 4), np.float32),
        "respawned": np.zeros((frames,), np.int16),
    }
    for t in range(frames):
        out[FRAMES][t] = obs["image"]
        out[EE_POS][t] = obs["ee_pos"]
        out[OBJECT_POS][t] = info["object_pos"]
        out[OBJECT_QUAT][t] = info["object_quat"]
        out["respawned"][t] = info["respawned"]
        action = policy.act(info)
        out[ACTIONS][t] = action
        if t + 1 < frames:
            obs, _, _, _, info = env.step(action)
    return out


def push_episode(config: dict, index: int, seed: int) -> dict[str, np.ndarray]:
    """Episode function for :func:`imagine_ros.sim.storage.write_dataset` (top-level, picklable, deterministic)."""
    env = _env_for(config["env"])
    rng = np.random.default_rng([seed, 1])
    policy = BairPushPolicy.for_env(env, rng, PolicyConfig(**_tuples(config["policy"])))
    return run_episode(env, policy, seed, int(config["frames"]))


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
    policy: PolicyConfig | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    progress: bool = True,
) -> CollectReport:
    """Collect ``episodes`` pushing episodes into ``out`` (resumes a killed run; refuses other settings)."""
    if frames < 2:
        raise ConfigError(f"--frames must be at least 2, got {frames}")
    env_cfg = PushEnvConfig.from_options(**(env_options or {}))  # validates options before anything is written
    if env_cfg.task:
        raise ConfigError("collect records free pushing; the env option task=True is for planning experiments")
    pol = policy or PolicyConfig()
    probe = PushEnv(config=env_cfg)
    camera = probe.camera.to_dict()
    scene = {"hand_low": probe.hand_low.tolist(), "hand_high": probe.hand_high.tolist(), "floor_z": probe.scene.floor_z}
    probe.close()
    config = {"env": env_cfg.to_dict(), "policy": pol.to_dict(), "frames": int(frames)}
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
