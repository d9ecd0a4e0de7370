"""The simulator node's logic without rclpy: the PyBullet pushing scene driven by commanded end-effector targets.

:class:`SimBridge` owns a :class:`imagine_ros.sim.env.PushEnv`. Each :meth:`SimBridge.step` moves the hand towards the
last commanded target by at most ``max_step`` metres per axis (the environment's own action limit), renders the
camera and returns a :class:`SimState`. Without a target the hand holds still. Targets are clipped to the hand's
workspace box. After ``episode_steps`` steps (0 = never) a new scene is drawn with the next seed.

Frames: the simulator's world is the robot base frame (``panda_link0``, the base at the origin).
:meth:`SimBridge.camera_pose` is the pose of the camera's *optical* frame (x right, y down, z forward, REP-103's
``_optical_frame`` convention) in that frame, the transform the simulator node publishes on ``/tf_static``; with
:meth:`SimBridge.camera_info` it projects base-frame points to the pixels the renderer draws them at. Every state
carries ``stamp_ns``, read from the bridge's clock the moment the environment has rendered its image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from imagine_ros.errors import ConfigError
from imagine_ros.ros_msgs import camera_info_fields


@dataclass(frozen=True)
class SimBridgeConfig:
    """The simulator node's parameters of the same names (see ``imagine_ros.node_params.SIM_PARAMS``)."""

    image_size: int = 64
    num_objects: int = 3
    frame_dt: float = 0.2
    max_step: float = 0.07
    seed: int = 0
    task: bool = False
    episode_steps: int = 0
    renderer: str = "tiny"

    def __post_init__(self) -> None:
        if self.episode_steps < 0:
            raise ConfigError(f"episode_steps must be >= 0 (0 = never reset), got {self.episode_steps}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")

    def env_options(self) -> dict[str, Any]:
        return {
            "image_size": int(self.image_size),
            "num_objects": int(self.num_objects),
            "frame_dt": float(self.frame_dt),
            "max_step": float(self.max_step),
            "task": bool(self.task),
            "renderer": str(self.renderer),
        }


@dataclass
class SimState:
    """One simulator frame.

    image: (H, W, 3) uint8 RGB; ee_pos: (3,) float64 metres (robot base frame), the hand's measured position;
    ee_command: (3,) the IK target the hand is driven to this step; target: (3,) the commanded goal (clipped to the
    workspace) or None; object_pos: (K, 3) metres; sim_time_s: simulated seconds since the bridge started;
    object_pixel / goal_pixel: (2,) pixels (x right, y down) of the designated object and its goal (task mode);
    stamp_ns: the bridge's clock (integer nanoseconds) when the image had been rendered.
    """

    image: np.ndarray
    ee_pos: np.ndarray
    ee_command: np.ndarray
    target: np.ndarray | None
    object_pos: np.ndarray
    step: int
    episode: int
    sim_time_s: float
    object_pixel: np.ndarray | None = None
    goal_pixel: np.ndarray | None = None
    distance: float | None = None
    stamp_ns: int = 0


class SimBridge:
    """PushEnv + target tracking (see module docstring). Close it (or use ``with``) to free the physics server.

    ``clock`` returns integer nanoseconds (the ROS node passes its ROS clock; default wall time) and stamps each state
    when its image is rendered."""

    def __init__(self, config: SimBridgeConfig | None = None, clock: Callable[[], int] = time.time_ns):
        from imagine_ros.sim.env import PushEnv

        self.clock = clock
        self.config = config or SimBridgeConfig()
        self.env = PushEnv(**self.config.env_options())
        self.episode = 0
        self.steps_in_episode = 0
        self.total_steps = 0
        self._target: np.ndarray | None = None
        self._state: SimState | None = None
        self.reset()

    @property
    def workspace(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) corners (3,) of the box the hand can be commanded to, metres."""
        return self.env.hand_low.copy(), self.env.hand_high.copy()

    def reset(self, seed: int | None = None) -> SimState:
        """Draw a new scene (seed = config.seed + episode unless given); the target is forgotten."""
        seed = self.config.seed + self.episode if seed is None else int(seed)
        obs, info = self.env.reset(seed=seed)
        stamp_ns = int(self.clock())  # the image was rendered at the end of reset
        self.steps_in_episode = 0
        self._target = None
        self._state = self._make_state(obs, info, stamp_ns)
        return self._state

    def set_target(self, xyz: Any) -> np.ndarray:
        """Command the hand towards ``xyz`` (3,) metres; returns the target actually used (clipped to the workspace)."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1)
        if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
            raise ValueError(f"a target must be 3 finite numbers (metres), got {xyz.tolist()}")
        low, high = self.workspace
        self._target = np.clip(xyz, low, high)
        return self._target.copy()

    def clear_target(self) -> None:
        self._target = None

    @property
    def target(self) -> np.ndarray | None:
        return None if self._target is None else self._target.copy()

    @property
    def state(self) -> SimState:
        return self._state

    def step(self) -> SimState:
        """Advance one frame (``frame_dt`` simulated seconds) and return the new state."""
        if self.config.episode_steps and self.steps_in_episode >= self.config.episode_steps:
            self.episode += 1
            self.reset()
        action = np.zeros(3)
        if self._target is not None:
            step = self.config.max_step
            action = np.clip(self._target - self.env.ee_target, -step, step)
        obs, _, _, _, info = self.env.step(action)
        stamp_ns = int(self.clock())  # the image was rendered at the end of the step
        self.steps_in_episode += 1
        self.total_steps += 1
        self._state = self._make_state(obs, info, stamp_ns)
        return self._state

    def _make_state(self, obs: dict, info: dict, stamp_ns: int) -> SimState:
        task = self.config.task
        return SimState(
            image=obs["image"],
            ee_pos=np.asarray(obs["ee_pos"], dtype=np.float64),
            ee_command=np.asarray(self.env.ee_target, dtype=np.float64),
            target=self.target,
            object_pos=np.asarray(info["object_pos"], dtype=np.float64),
            step=self.steps_in_episode,
            episode=self.episode,
            sim_time_s=self.total_steps * self.config.frame_dt,
            object_pixel=np.asarray(info["object_pixel"], np.float64) if task else None,
            goal_pixel=np.asarray(info["goal_pixel"], np.float64) if task else None,
            distance=float(info["distance"]) if task else None,
            stamp_ns=stamp_ns,
        )

    def camera_pose(self) -> np.ndarray:
        """(4, 4) pose of the camera's optical frame in the robot base frame: maps optical-frame points (x right,
        y down, z forward, metres) to base-frame points, the transform base_frame -> camera_frame of ``/tf_static``."""
        return np.asarray(self.env.camera.T_world_cam, dtype=np.float64).copy()

    def camera_info(self) -> dict[str, Any]:
        """The fields of a ``sensor_msgs/CameraInfo`` for the scene camera (no distortion): width, height,
        distortion_model, d (5,), k (9,), r (9,), p (12,), all row-major float lists."""
        cam = self.env.camera
        return camera_info_fields(cam.K, cam.width, cam.height)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> SimBridge:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
