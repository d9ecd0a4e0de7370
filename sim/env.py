"""Gymnasium environments of the BAIR-style pushing scene.

``ImagineRos/Push-v0``       free pushing (data collection): reward 0, never terminates.
``ImagineRos/PushTask-v0``   task mode for planning experiments: a designated object and a goal position; reward is
                             minus the object's distance to the goal; terminates on success (within a tolerance).

Observation: ``{"image": (H, W, 3) uint8, "ee_pos": (3,) float32}`` (metres, robot base frame).
Action: end-effector displacement ``(dx, dy, dz)`` in metres for one control step (one camera frame), each clipped
to ``[-max_step, max_step]``; the target is clipped to the hand's workspace box; the hand's orientation is fixed
(pointing down); inverse kinematics runs inside.
Info: ``object_pos (K, 3)``, ``object_quat (K, 4)``, ``ee_target (3,)``, ``respawned`` (objects put back into the
bin this step), and in task mode ``target_object``, ``goal_pos``, ``goal_pixel``, ``object_pixel``, ``distance``,
``is_success``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as p

from imagine_ros.errors import ConfigError
from imagine_ros.sim.camera import CameraConfig
from imagine_ros.sim.ground_truth import part_poses, scene_parts
from imagine_ros.sim.scene import ARM_JOINTS, DOWN, EE_LINK, PALETTE, PANDA_HOME, ObjectSpec, Scene, SceneConfig

HAND_BEHIND = 0.10  # task reset option hand="behind": metres from the object's centre (objects are <= 10 cm)
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)  # Franka's joint torque limits, N m
JOINT_LOW = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
JOINT_HIGH = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)


@dataclass
class EnvState:
    """A snapshot of a :class:`PushEnv` (see :meth:`PushEnv.save_state`)."""

    state_id: int
    target: np.ndarray
    goal: np.ndarray
    target_object: int
    rng_state: dict
    specs: list
    image: np.ndarray | None
    gt: tuple | None


@dataclass(frozen=True)
class PushEnvConfig:
    """Every option of the pushing environments (``gymnasium.make(id, **options)`` takes these names)."""

    image_size: int | tuple[int, int] = 64  # H = W, or (H, W)
    num_objects: int = 3
    shapes: tuple[str, ...] = ("box", "cylinder", "triangle", "hexagon")
    object_size: tuple[float, float] = (0.05, 0.10)
    frame_dt: float = 0.2  # seconds of simulated time per step (one camera frame)
    physics_hz: int = 120  # 120 Hz with 10 solver iterations pushes stably and renders ~1.6x faster than 240
    ik_every: int = 6  # physics substeps between inverse-kinematics updates
    solver_iterations: int = 10  # pybullet constraint-solver iterations per physics step
    max_step: float = 0.07  # largest |displacement| per axis and step, metres (BAIR: 0.07)
    renderer: str = "tiny"  # "tiny" (CPU TinyRenderer, headless) or "egl" (GPU, needs pybullet's EGL plugin)
    camera_distance: float = 0.75
    camera_yaw: float = 90.0
    camera_pitch: float = -65.0
    camera_fov: float = 45.0
    camera_target: tuple[float, float, float] = (0.55, 0.0, 0.0)
    task: bool = False
    ground_truth: bool = False  # render depth + instance segmentation with every frame (see ground_truth())
    success_tolerance: float = 0.03  # task mode: metres between object and goal (xy)
    goal_distance: tuple[float, float] = (0.08, 0.20)  # task mode: how far the goal is from the object's start

    def __post_init__(self) -> None:
        size = self.image_size
        hw = (size, size) if isinstance(size, int | np.integer) else tuple(size)
        if len(hw) != 2 or not all(isinstance(v, int | np.integer) for v in hw):
            raise ConfigError(f"image_size must be an int or (height, width), got {size!r}")
        object.__setattr__(self, "image_size", (int(hw[0]), int(hw[1])))
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "camera_target", tuple(float(v) for v in self.camera_target))
        object.__setattr__(self, "object_size", tuple(float(v) for v in self.object_size))
        object.__setattr__(self, "goal_distance", tuple(float(v) for v in self.goal_distance))
        if not 30 <= self.physics_hz <= 2000:
            raise ConfigError(f"physics_hz must be in [30, 2000], got {self.physics_hz}")
        if not 1.0 / self.physics_hz <= self.frame_dt <= 2.0:
            raise ConfigError(f"frame_dt must be in [1/physics_hz, 2] seconds, got {self.frame_dt}")
        if not 0 < self.max_step <= 0.2:
            raise ConfigError(f"max_step must be in (0, 0.2] metres, got {self.max_step}")
        if self.ik_every < 1:
            raise ConfigError(f"ik_every must be >= 1, got {self.ik_every}")
        if not 0 < self.success_tolerance:
            raise ConfigError(f"success_tolerance must be positive, got {self.success_tolerance}")
        self.camera_config()  # validates the image size and camera
        self.scene_config()  # validates the objects

    @classmethod
    def from_options(cls, **options: Any) -> PushEnvConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown env option {unknown[0]!r}; known options: {', '.join(sorted(known))}")
        return cls(**options)

    @property
    def substeps(self) -> int:
        return max(1, round(self.frame_dt * self.physics_hz))

    def camera_config(self) -> CameraConfig:
        h, w = self.image_size
        return CameraConfig(
            width=w,
            height=h,
            target=self.camera_target,
            distance=self.camera_distance,
            yaw=self.camera_yaw,
            pitch=self.camera_pitch,
            fov=self.camera_fov,
        )

    def scene_config(self) -> SceneConfig:
        return SceneConfig(num_objects=self.num_objects, shapes=self.shapes, object_size=self.object_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class PushEnv(gym.Env):
    """A Franka Panda (fingers closed) pushes objects in a bin; a fixed camera looks on (see module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, render_mode: str | None = None, config: PushEnvConfig | None = None, **options: Any):
        if config is not None and options:
            raise ConfigError("give either config or options, not both")
        self.config = config or PushEnvConfig.from_options(**options)
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        cfg = self.config
        self.metadata = {**self.metadata, "render_fps": round(1.0 / cfg.frame_dt)}
        self.scene = Scene(
            cfg.scene_config(),
            cfg.camera_config(),
            physics_hz=cfg.physics_hz,
            solver_iterations=cfg.solver_iterations,
            renderer=cfg.renderer,
        )
        self.camera = self.scene.camera
        h, w = cfg.image_size
        sc = self.scene.config
        z0 = self.scene.floor_z + sc.push_height
        self.hand_low = np.array([sc.hand_low[0], sc.hand_low[1], z0 + sc.hand_low[2]])
        self.hand_high = np.array([sc.hand_high[0], sc.hand_high[1], z0 + sc.hand_high[2]])
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (h, w, 3), np.uint8),
                "ee_pos": gym.spaces.Box(-2.0, 2.0, (3,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-cfg.max_step, cfg.max_step, (3,), np.float32)
        self._target = np.zeros(3)
        self._image: np.ndarray | None = None
        self._goal = np.zeros(3)
        self._target_object = 0
        self._gt: tuple[np.ndarray, np.ndarray] | None = None
        self._render_enabled = True
        self.parts = np.zeros((0, 2), np.int16)

    # ---------------------------------------------------------------------------------------------------- episode
    def _sample_specs(self, rng: np.random.Generator) -> list[ObjectSpec]:
        sc = self.scene.config
        specs: list[ObjectSpec] = []
        colours = rng.permutation(len(PALETTE))
        for k in range(sc.num_objects):
            shape = sc.shapes[int(rng.integers(len(sc.shapes)))]
            rgb = np.clip(PALETTE[colours[k % len(PALETTE)]] + rng.uniform(-0.08, 0.08, 3), 0, 1)
            specs.append(
                ObjectSpec(
                    shape=shape,
                    size=float(rng.uniform(*sc.object_size)),
                    height=float(rng.uniform(*sc.object_height)),
                    mass=float(rng.uniform(*sc.object_mass)),
                    rgba=(*map(float, rgb), 1.0),
                    yaw=float(rng.uniform(-math.pi, math.pi)),
                )
            )
        for k, s in enumerate(specs):
            s.xy = self._free_spot(rng, s.radius, [(o.xy, o.radius) for o in specs[:k]])
        return specs

    def _free_spot(
        self, rng: np.random.Generator, radius: float, taken: list, shrink: float = 0.0
    ) -> tuple[float, float]:
        """A spot in the hand's reach (less ``shrink`` metres on every side), clear of ``taken`` [(xy, radius)] and of
        the hand."""
        sc = self.scene.config
        lo = np.array(sc.hand_low[:2]) + sc.spawn_margin + shrink
        hi = np.array(sc.hand_high[:2]) - sc.spawn_margin - shrink
        hand = self._target[:2]
        xy = rng.uniform(lo, hi)
        for _ in range(200):
            clear = all(np.linalg.norm(xy - np.asarray(o)) > radius + r + 0.01 for o, r in taken)
            if clear and np.linalg.norm(xy - hand) > radius + 0.05:
                break
            xy = rng.uniform(lo, hi)
        return float(xy[0]), float(xy[1])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(f"reset options must be a dict, got {type(options).__name__}")
        options = dict(options or {})
        if self.config.task:
            self._check_task_options(options)  # before anything changes: a refused reset leaves the env as it was
        super().reset(seed=seed)
        rng = self.np_random
        self._target = np.array([0.55, 0.0, self.hand_low[2] + 0.10]) + np.r_[rng.uniform(-0.1, 0.1, 2), 0.0]
        self._target = np.clip(self._target, self.hand_low, self.hand_high)
        self.scene.build(self._sample_specs(rng))
        self.parts = scene_parts(self.scene)
        self._settle_arm()
        if self.config.task:
            self._setup_task(rng, options)
        elif options:
            raise ConfigError(f"unknown reset option(s) {sorted(options)}; only task mode takes options")
        self._render()
        return self._obs(), self._info(respawned=0)

    # ---------------------------------------------------------------------------------------------- snapshots
    def save_state(self) -> EnvState:
        """Snapshot of everything that determines the future: pybullet's own state (``saveState``: poses,
        velocities, contacts and solver caches, so restoring is bit-exact), the hand target, the task, the random
        generator (respawns) and the object specs. Release it with :meth:`discard_state`."""
        return EnvState(
            state_id=self.scene.client.saveState(),
            target=self._target.copy(),
            goal=self._goal.copy(),
            target_object=self._target_object,
            rng_state=copy.deepcopy(self.np_random.bit_generator.state),
            specs=[(s.xy, s.yaw) for s in self.scene.specs],
            image=None if self._image is None else self._image.copy(),
            gt=self._gt,
        )

    def restore_state(self, state: EnvState) -> None:
        """Return to a :meth:`save_state` snapshot (the same pybullet world: no reset in between)."""
        self.scene.client.restoreState(state.state_id)
        self._target = state.target.copy()
        self._goal = state.goal.copy()
        self._target_object = state.target_object
        self.np_random.bit_generator.state = copy.deepcopy(state.rng_state)
        for spec, (xy, yaw) in zip(self.scene.specs, state.specs):
            spec.xy, spec.yaw = xy, yaw
        self._image = None if state.image is None else state.image.copy()
        self._gt = state.gt

    def discard_state(self, state: EnvState) -> None:
        self.scene.client.removeState(state.state_id)

    @contextmanager
    def physics_only(self):
        """Within this context :meth:`step` renders nothing (the observation keeps the last image): for planners
        that simulate candidates and need only the physics."""
        old, self._render_enabled = self._render_enabled, False
        try:
            yield self
        finally:
            self._render_enabled = old

    def _render(self) -> None:
        if not self._render_enabled:
            return
        if self.config.ground_truth:
            self._image, depth, instance = self.scene.render_ground_truth()
            self._gt = (depth, instance)
        else:
            self._image = self.scene.render()

    def ground_truth(self) -> dict[str, np.ndarray]:
        """The ground truth of the current frame (env option ``ground_truth=True``): ``depth (H, W) float32`` metres,
        ``instance (H, W) uint16``, ``part_pose (P, 7) float32`` of the parts in :attr:`parts` (see
        :mod:`imagine_ros.sim.ground_truth`)."""
        if not self.config.ground_truth or self._gt is None:
            raise ConfigError("ground truth is recorded only with the env option ground_truth=True, after reset()")
        depth, instance = self._gt
        return {"depth": depth, "instance": instance, "part_pose": part_poses(self.scene, self.parts)}

    def _settle_arm(self) -> None:
        """Put the arm at the hand target and let everything come to rest before the first frame.

        Inverse kinematics is iterated on reset joint states (no dynamics) until the hand sits within a millimetre of
        the target, then the physics runs a quarter of a second with the arm driven to hold it, so that the first
        frame shows a hand at rest where the episode says it starts (no-op actions then move nothing)."""
        q = self._place_arm()
        self._drive(q)
        for _ in range(max(1, self.config.physics_hz // 4)):
            self.scene.client.stepSimulation()

    def _place_arm(self) -> list[float]:
        """Reset the arm's joints (no dynamics) so that the hand is at the target; returns the joint angles."""
        c = self.scene.client
        for _ in range(30):
            q = self._ik(self._target)
            for j, v in zip(ARM_JOINTS, q):
                c.resetJointState(self.scene.robot, j, v)
            if np.linalg.norm(self.scene.ee_position() - self._target) < 1e-3:
                break
        return q

    def goal_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) xy of the goals a task may have, metres: the bin's floor (an object cannot rest elsewhere;
        one that leaves the bin is put back)."""
        sc = self.scene.config
        centre, half = np.asarray(sc.bin_center, float), np.asarray(sc.bin_size, float) / 2
        return centre - half, centre + half

    def _check_task_options(self, options: dict) -> None:
        """Raise :class:`ConfigError` naming the allowed values unless the task reset ``options`` are possible:
        ``goal`` 2 (x, y) or 3 (x, y, z; z is ignored, the goal lies at the object's height) finite numbers with x, y
        on the bin's floor (:meth:`goal_range`), ``target_object`` an integer in [0, num_objects), ``hand``
        ``"default"`` or ``"behind"``; no other keys."""
        known = ("goal", "target_object", "hand")
        unknown = sorted(str(k) for k in options if k not in known)
        if unknown:
            raise ConfigError(f"unknown reset option(s) {unknown}; known: {', '.join(known)}")
        lo, hi = self.goal_range()
        where = f"x in [{lo[0]:.3f}, {hi[0]:.3f}], y in [{lo[1]:.3f}, {hi[1]:.3f}] m (the bin's floor)"
        if "goal" in options:
            raw = options["goal"]
            try:
                goal = np.asarray(raw, dtype=np.float64)
            except (TypeError, ValueError):
                goal = np.full(0, np.nan)
            if goal.ndim != 1 or goal.shape[0] not in (2, 3) or not np.all(np.isfinite(goal)):
                raise ConfigError(
                    f"reset option goal must be 2 or 3 finite numbers (x, y[, z]) with {where}, got {raw!r:.80}"
                )
            if np.any(goal[:2] < lo) or np.any(goal[:2] > hi):
                raise ConfigError(f"reset option goal {goal[:2].tolist()} is outside the workspace: {where}")
        n = self.config.num_objects
        if "target_object" in options:
            k = options["target_object"]
            if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k < n:
                raise ConfigError(
                    f"target_object {k!r} out of range: it must be an integer in [0, {n - 1}] (the scene has {n} "
                    "objects)"
                )
        hand = options.get("hand", "default")
        if not isinstance(hand, str) or hand not in ("default", "behind"):
            raise ConfigError(f"reset option hand must be 'default' or 'behind', got {hand!r:.80}")

    def _setup_task(self, rng: np.random.Generator, options: dict) -> None:
        k = int(options.get("target_object", 0))
        if not 0 <= k < len(self.scene.objects):
            raise ConfigError(f"target_object {k} out of range: the scene has {len(self.scene.objects)} objects")
        hand = options.get("hand", "default")
        self._target_object = k
        start = np.asarray(self.scene.object_poses()[0][k])
        if "goal" in options:
            goal_xy = np.asarray(options["goal"], dtype=float)[:2]
        else:
            goal_xy = None
            for attempt in range(4):
                goal_xy, ok = self._sample_goal(rng, start, hand == "behind")
                if ok:
                    break
                # no reachable pre-push spot for any goal direction (the object sits at the workspace's edge):
                # move the object towards the middle and try again
                others = [
                    (xy[:2], o.radius)
                    for j, (xy, o) in enumerate(zip(self.scene.object_poses()[0], self.scene.specs))
                    if j != k
                ]
                spec = self.scene.specs[k]
                self.scene.place(k, self._free_spot(rng, spec.radius, others, shrink=0.08 + 0.02 * attempt), spec.yaw)
                start = np.asarray(self.scene.object_poses()[0][k])
        self._goal = np.array([goal_xy[0], goal_xy[1], start[2]])
        if hand == "behind":
            self._hand_behind(start, self._goal)
            # the designated object must be in view at the start (a user designates it by clicking on it): where the
            # arm hides its centre, push it from another side (up to 8 goal directions; kept when none works)
            for _ in range(8 if "goal" not in options else 0):
                if self._designated_visible():
                    break
                goal_xy, ok = self._sample_goal(rng, start, True)
                if ok:
                    self._goal = np.array([goal_xy[0], goal_xy[1], start[2]])
                    self._hand_behind(start, self._goal)
                    start = np.asarray(self.scene.object_poses()[0][k])

    def _designated_visible(self, min_fraction: float = 10 / 4096) -> bool:
        """Whether the designated object's projected centre shows the object, with at least ``min_fraction`` of the
        image's pixels of it in view (10 pixels at 64 x 64)."""
        _, seg = self.scene.render(segmentation=True)
        body = self.scene.objects[self._target_object]
        u, v = self.camera.project(self.scene.object_poses()[0][self._target_object])
        h, w = seg.shape
        if not (np.isfinite(u) and np.isfinite(v) and 0 <= round(v) < h and 0 <= round(u) < w):
            return False
        return seg[int(round(v)), int(round(u))] == body and (seg == body).sum() >= min_fraction * h * w

    def _sample_goal(self, rng: np.random.Generator, start: np.ndarray, behind: bool) -> tuple[np.ndarray, bool]:
        """A goal ``goal_distance`` away from the object in a random direction, inside the reach box less 3 cm, and
        (``behind``) with the pre-push spot behind the object reachable too. Returns (goal xy, found)."""
        lo = np.array(self.scene.config.hand_low[:2]) + 0.03
        hi = np.array(self.scene.config.hand_high[:2]) - 0.03
        goal_xy = start[:2]
        for _ in range(100):
            ang = rng.uniform(-math.pi, math.pi)
            unit = np.array([math.cos(ang), math.sin(ang)])
            goal_xy = start[:2] + rng.uniform(*self.config.goal_distance) * unit
            spot = start[:2] - (HAND_BEHIND + 0.02) * unit
            reach = not behind or bool(np.all(spot >= self.hand_low[:2]) and np.all(spot <= self.hand_high[:2]))
            if np.all(goal_xy >= lo) and np.all(goal_xy <= hi) and reach:
                return goal_xy, True
        return np.clip(goal_xy, lo, hi), False

    def _hand_behind(self, start: np.ndarray, goal: np.ndarray) -> None:
        """Set the hand's target at push height ``HAND_BEHIND`` metres behind the object, on the side away from the
        goal (a pre-push pose: one straight motion through the object pushes it towards the goal). Other objects
        that stand where the hand goes are moved to free spots first; when the hand would still touch an object
        there it goes back 1 cm at a time (up to 6 cm). The hand is settled before the first frame
        (:meth:`_settle_arm`), so no-op actions move nothing."""
        d = goal[:2] - start[:2]
        d = d / max(float(np.linalg.norm(d)), 1e-9)
        for extra in (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06):
            xy = start[:2] - (HAND_BEHIND + extra) * d
            self._target = np.clip(np.array([xy[0], xy[1], self.hand_low[2]]), self.hand_low, self.hand_high)
            pos, _ = self.scene.object_poses()
            for k, s in enumerate(self.scene.specs):
                if k != self._target_object and np.linalg.norm(pos[k, :2] - self._target[:2]) < s.radius + 0.04:
                    others = [(pos[j][:2], o.radius) for j, o in enumerate(self.scene.specs) if j != k]
                    self.scene.place(k, self._free_spot(self.np_random, s.radius, others), s.yaw)
                    pos, _ = self.scene.object_poses()
            self._place_arm()
            if not self._hand_touches_object():
                break
        self._settle_arm()

    def _hand_touches_object(self, margin: float = 0.01) -> bool:
        c = self.scene.client
        return any(c.getClosestPoints(self.scene.robot, body, margin) for body in self.scene.objects)

    def step(self, action):
        a = _action(action)
        cfg = self.config
        a = np.clip(a, -cfg.max_step, cfg.max_step)
        start = self._target.copy()
        self._target = np.clip(start + a, self.hand_low, self.hand_high)
        c = self.scene.client
        n = cfg.substeps
        for k in range(n):
            if k % cfg.ik_every == 0:
                frac = min(1.0, (k + cfg.ik_every) / n)
                self._drive(self._ik(start + frac * (self._target - start)))
            c.stepSimulation()
        respawned = self._respawn_strays()
        self._render()
        obs, info = self._obs(), self._info(respawned)
        reward, terminated = 0.0, False
        if cfg.task:
            reward, terminated = -info["distance"], bool(info["is_success"])
        return obs, reward, terminated, False, info

    def render(self):
        return None if self.render_mode is None or self._image is None else self._image.copy()

    def close(self) -> None:
        self.scene.close()

    # -------------------------------------------------------------------------------------------------- internals
    def _ik(self, target: np.ndarray) -> list[float]:
        c = self.scene.client
        q = c.calculateInverseKinematics(
            self.scene.robot,
            EE_LINK,
            target.tolist(),
            DOWN,
            lowerLimits=JOINT_LOW,
            upperLimits=JOINT_HIGH,
            jointRanges=[h - lo for lo, h in zip(JOINT_LOW, JOINT_HIGH)],
            restPoses=PANDA_HOME,
            maxNumIterations=5,
            residualThreshold=1e-4,
        )
        return list(q[:7])

    def _drive(self, q: list[float]) -> None:
        self.scene.client.setJointMotorControlArray(
            self.scene.robot,
            ARM_JOINTS,
            p.POSITION_CONTROL,
            targetPositions=q,
            forces=ARM_FORCES,
            positionGains=[0.3] * 7,
        )

    def _respawn_strays(self) -> int:
        """Put objects that left the bin, were lifted or went unstable back to a free spot. Returns how many."""
        sc = self.scene.config
        pos, _ = self.scene.object_poses()
        cx, cy = sc.bin_center
        half = np.array(sc.bin_size) / 2
        count = 0
        for k, s in enumerate(self.scene.specs):
            x = pos[k]
            rest_z = self.scene.rest_position(s)[2]
            inside = abs(x[0] - cx) < half[0] and abs(x[1] - cy) < half[1]
            lin, ang = self.scene.client.getBaseVelocity(self.scene.objects[k])
            wild = not np.all(np.isfinite(x)) or np.linalg.norm(lin) > 3.0 or np.linalg.norm(ang) > 60.0
            if wild or not inside or x[2] > rest_z + 0.08 or x[2] < self.scene.floor_z - 0.01:
                others = [(pos[j][:2], o.radius) for j, o in enumerate(self.scene.specs) if j != k]
                self.scene.place(k, self._free_spot(self.np_random, s.radius, others), s.yaw)
                count += 1
        return count

    def _obs(self) -> dict:
        ee = self.scene.ee_position().astype(np.float32)
        if not np.all(np.isfinite(ee)):  # never hand out NaN: the physics diverged, the episode cannot go on
            raise RuntimeError(f"the simulation diverged: the end effector is at {ee.tolist()}; reset the environment")
        return {"image": self._image.copy(), "ee_pos": ee}

    def _info(self, respawned: int) -> dict:
        pos, quat = self.scene.object_poses()
        info = {
            "object_pos": pos.astype(np.float32),
            "object_quat": quat.astype(np.float32),
            "ee_target": self._target.astype(np.float32),
            "respawned": respawned,
        }
        if self.config.task:
            k = self._target_object
            dist = float(np.linalg.norm(pos[k, :2] - self._goal[:2]))
            info.update(
                target_object=k,
                goal_pos=self._goal.astype(np.float32),
                goal_pixel=self.camera.project(self._goal).astype(np.float32),
                object_pixel=self.camera.project(pos[k]).astype(np.float32),
                distance=dist,
                is_success=dist <= self.config.success_tolerance,
            )
        return info

    @property
    def ee_target(self) -> np.ndarray:
        return self._target.copy()


def _action(action: Any) -> np.ndarray:
    """``action`` as a (3,) float64 array; raises ValueError naming the action and the expected shape."""
    want = "action must be (dx, dy, dz) metres: 3 finite numbers, shape (3,)"
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{want}, got {action!r:.80}") from None
    if a.size != 3 or a.squeeze().shape != (3,):
        raise ValueError(f"{want}, got shape {a.shape}")
    a = a.reshape(3)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{want}, got {a.tolist()}")
    return a
