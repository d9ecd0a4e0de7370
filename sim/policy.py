"""Scripted collection policies: BAIR-style random pushing, and planning-matched segments (:class:`PlanningPolicy`).

BAIR's own policy is a uniform random walk of the hand (``dx, dy ~ U(-0.07, 0.07)`` m per action, a new action every
two frames, occasional lifts). In a bin of 5-10 cm objects that walk alone moves an object in about two thirds of the
episodes, so segments of the walk are mixed with object-directed pushes: approach an object
from the far side at a lifted height, lower the hand, push through it for 8-20 cm at a random speed, lift again. The
mix keeps the action distribution broad while making most episodes contain contact.

The policy acts on the environment's ``info`` (object positions and the current end-effector target) and returns the
displacement action of :class:`imagine_ros.sim.env.PushEnv`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from imagine_ros.errors import ConfigError


@dataclass(frozen=True)
class PolicyConfig:
    push_probability: float = 0.5  # chance that a new segment is an object-directed push (else a random walk)
    walk_step: float = 0.07  # BAIR: dx, dy ~ U(-walk_step, walk_step) per action
    walk_repeat: int = 2  # BAIR: a new action every 2 frames
    walk_segment: tuple[int, int] = (4, 10)  # frames per random-walk segment
    lift_probability: float = 0.1  # chance per walk action of a lift event
    lift_height: tuple[float, float] = (0.04, 0.12)
    push_distance: tuple[float, float] = (0.08, 0.20)
    push_speed: tuple[float, float] = (0.025, 0.07)  # metres per frame while pushing
    travel_height: tuple[float, float] = (0.06, 0.11)  # above the pushing height while approaching

    def __post_init__(self) -> None:
        if not 0.0 <= self.push_probability <= 1.0 or not 0.0 <= self.lift_probability <= 1.0:
            raise ConfigError("push_probability and lift_probability must be in [0, 1]")
        for name in ("walk_segment", "lift_height", "push_distance", "push_speed", "travel_height"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"policy {name} must be a range 0 < low <= high, got {(lo, hi)}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class BairPushPolicy:
    """Random walk + object-directed pushes (module docstring). Deterministic given its ``rng``."""

    def __init__(
        self, hand_low, hand_high, max_step: float, rng: np.random.Generator, config: PolicyConfig | None = None
    ):
        self.low = np.asarray(hand_low, dtype=np.float64)
        self.high = np.asarray(hand_high, dtype=np.float64)
        self.max_step = float(max_step)
        self.rng = rng
        self.config = config or PolicyConfig()
        self._plan: list[tuple[np.ndarray, float]] = []  # waypoints (xyz) with the speed to reach each

    @classmethod
    def for_env(cls, env, rng: np.random.Generator, config: PolicyConfig | None = None) -> BairPushPolicy:
        base = env.unwrapped
        return cls(base.hand_low, base.hand_high, base.config.max_step, rng, config)

    def reset(self) -> None:
        self._plan = []

    def act(self, info: dict) -> np.ndarray:
        """info: the env's info dict (``ee_target`` (3,), ``object_pos`` (K, 3)) -> action (3,) float32 metres."""
        target = np.asarray(info["ee_target"], dtype=np.float64)
        while not self._plan:
            self._new_segment(target, np.asarray(info["object_pos"], dtype=np.float64))
        goal, speed = self._plan[0]
        delta = goal - target
        dist = float(np.linalg.norm(delta))
        step = min(speed, self.max_step)
        if dist <= step + 1e-9:
            self._plan.pop(0)
            action = delta
        else:
            action = delta * (step / dist)
        return np.clip(action, -self.max_step, self.max_step).astype(np.float32)

    # ------------------------------------------------------------------------------------------------ segments
    def _clip(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self.low, self.high)

    def _new_segment(self, target: np.ndarray, objects: np.ndarray) -> None:
        c, rng = self.config, self.rng
        if len(objects) and rng.random() < c.push_probability:
            self._plan_push(target, objects)
        else:
            self._plan_walk(target)

    def _plan_walk(self, target: np.ndarray) -> None:
        """BAIR's walk: new xy offsets every ``walk_repeat`` frames at the pushing height, occasional lifts."""
        c, rng = self.config, self.rng
        n = int(rng.integers(c.walk_segment[0], c.walk_segment[1] + 1))
        pos = target.copy()
        pos[2] = self.low[2]
        lift_left, lift = 0, 0.0
        for i in range(n):
            if i % c.walk_repeat == 0:
                d = rng.uniform(-c.walk_step, c.walk_step, 2)
                if lift_left == 0 and rng.random() < c.lift_probability:
                    lift_left, lift = int(rng.integers(1, 5)), float(rng.uniform(*c.lift_height))
            pos = pos.copy()
            pos[:2] += d / c.walk_repeat
            pos[2] = self.low[2] + (lift if lift_left > 0 else 0.0)
            lift_left = max(0, lift_left - 1)
            pos = self._clip(pos)
            self._plan.append((pos, self.max_step))

    def _plan_push(self, target: np.ndarray, objects: np.ndarray) -> None:
        """Approach object k from the far side at travel height, lower, push through, lift."""
        c, rng = self.config, self.rng
        k = int(rng.integers(len(objects)))
        obj = objects[k]
        angle = rng.uniform(-math.pi, math.pi)
        direction = np.array([math.cos(angle), math.sin(angle), 0.0])
        travel = self.low[2] + rng.uniform(*c.travel_height)
        start = obj - direction * rng.uniform(0.07, 0.10)
        start[2] = self.low[2]
        end = start + direction * (rng.uniform(*c.push_distance) + 0.07)
        speed = float(rng.uniform(*c.push_speed))
        above = start.copy()
        above[2] = travel
        lift_here = target.copy()
        lift_here[2] = max(target[2], travel)
        for waypoint, v in ((lift_here, self.max_step), (above, self.max_step), (start, self.max_step), (end, speed)):
            self._plan.append((self._clip(waypoint), v))
        up = self._plan[-1][0].copy()
        up[2] = travel
        self._plan.append((self._clip(up), self.max_step))


# ----------------------------------------------------------------------------------------------------------------------
# planning-matched policy

#: Names ``imagine-ros collect --policy`` accepts.
POLICIES = ("bair", "planning", "mixed")


@dataclass(frozen=True)
class PlanningPolicyConfig:
    """Settings of :class:`PlanningPolicy` (metres, degrees)."""

    horizon: int = 10  # frames per segment: the models' horizon (one η per segment)
    push_probability: float = 0.65  # a segment through an object
    approach_probability: float = 0.25  # a segment to a pre-push spot behind an object; the rest move freely
    push_beyond: tuple[float, float] = (0.0, 0.15)  # how far past the object's centre a push's target lies
    push_angle: float = 25.0  # std of a push direction around the hand -> object line
    behind: tuple[float, float] = (0.09, 0.13)  # pre-push spot: distance behind the object's centre
    push_lift: tuple[float, float] = (0.0, 0.01)  # target height above the pushing height, pushes and approaches
    bair_probability: float = 0.0  # "mixed": share of whole episodes run by the BAIR-style policy instead

    def __post_init__(self) -> None:
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise ConfigError(f"planning policy horizon must be a positive integer, got {self.horizon!r}")
        probs = (self.push_probability, self.approach_probability, self.bair_probability)
        if not all(0.0 <= v <= 1.0 for v in probs) or self.push_probability + self.approach_probability > 1.0:
            raise ConfigError(
                "planning policy probabilities must be in [0, 1] and push + approach at most 1, got "
                f"push={self.push_probability}, approach={self.approach_probability}, bair={self.bair_probability}"
            )
        for name in ("push_beyond", "behind", "push_lift"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConfigError(f"planning policy {name} must be a range 0 <= low <= high, got {(lo, hi)}")
        if not 0 <= self.push_angle <= 90:
            raise ConfigError(f"planning policy push_angle must be in [0, 90] degrees, got {self.push_angle}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class PlanningPolicy:
    """Segments of exactly what the planner executes: every ``horizon`` frames a new target η is drawn, and the hand
    moves from its current target towards η with :func:`imagine_ros.sim.motion.eta_actions` (the planner's
    executor), reaching it at the segment's last frame. A segment is

    - a **push** (``push_probability``): η lies beyond a random object on the line from the hand through it (the
      direction turned by a random angle, std ``push_angle``), ``push_beyond`` past its centre, at pushing height;
    - an **approach** (``approach_probability``): η is a pre-push spot ``behind`` metres behind a random object,
      seen from a random direction, at pushing height (the planner's tasks start there);
    - a **free** move: η uniform in the hand's workspace box (any height).

    The first segment of an episode is an approach or a free move. After :meth:`act`, :attr:`segment_started` says
    whether this frame began a segment and :attr:`eta` is that segment's target (the clip's condition).
    """

    def __init__(
        self, hand_low, hand_high, max_step: float, rng: np.random.Generator, config: PlanningPolicyConfig | None = None
    ):
        from imagine_ros.sim.motion import eta_actions

        self._eta_actions = eta_actions
        self.low = np.asarray(hand_low, dtype=np.float64)
        self.high = np.asarray(hand_high, dtype=np.float64)
        self.max_step = float(max_step)
        self.rng = rng
        self.config = config or PlanningPolicyConfig()
        self._actions: list[np.ndarray] = []
        self.eta = np.zeros(3)
        self.segment_started = False
        self.kind = ""
        self._first = True

    @classmethod
    def for_env(cls, env, rng: np.random.Generator, config: PlanningPolicyConfig | None = None) -> PlanningPolicy:
        base = env.unwrapped
        return cls(base.hand_low, base.hand_high, base.config.max_step, rng, config)

    def reset(self) -> None:
        self._actions, self._first, self.segment_started = [], True, False

    def act(self, info: dict) -> np.ndarray:
        """info: the env's info dict (``ee_target`` (3,), ``object_pos`` (K, 3)) -> action (3,) float32 metres."""
        self.segment_started = not self._actions
        if self.segment_started:
            target = np.asarray(info["ee_target"], dtype=np.float64)
            self.eta = self._draw_eta(target, np.asarray(info["object_pos"], dtype=np.float64))
            self._actions = list(self._eta_actions(target, self.eta, self.config.horizon, self.max_step))
        return np.asarray(self._actions.pop(0), dtype=np.float32)

    def _draw_eta(self, hand: np.ndarray, objects: np.ndarray) -> np.ndarray:
        c, rng = self.config, self.rng
        u = rng.random()
        if self._first:  # never push from the raised start: get into place first
            u = c.push_probability + u * (1.0 - c.push_probability)
            self._first = False
        low_z = self.low[2]
        if len(objects) and u < c.push_probability:
            self.kind = "push"
            obj = objects[int(rng.integers(len(objects)))]
            d = obj[:2] - hand[:2]
            base = math.atan2(d[1], d[0]) if np.linalg.norm(d) > 1e-6 else rng.uniform(-math.pi, math.pi)
            ang = base + math.radians(rng.normal(0.0, c.push_angle))
            xy = obj[:2] + rng.uniform(*c.push_beyond) * np.array([math.cos(ang), math.sin(ang)])
            eta = np.array([xy[0], xy[1], low_z + rng.uniform(*c.push_lift)])
        elif len(objects) and u < c.push_probability + c.approach_probability:
            self.kind = "approach"
            obj = objects[int(rng.integers(len(objects)))]
            ang = rng.uniform(-math.pi, math.pi)
            xy = obj[:2] - rng.uniform(*c.behind) * np.array([math.cos(ang), math.sin(ang)])
            eta = np.array([xy[0], xy[1], low_z + rng.uniform(*c.push_lift)])
        else:
            self.kind = "free"
            eta = rng.uniform(self.low, self.high)
        return np.clip(eta, self.low, self.high)
