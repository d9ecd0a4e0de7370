"""Simulated pushing experiments (``imagine-ros plan-eval``): planners compared on the same seeded tasks.

Task ``i`` is ``ImagineRos/PushTask-v0`` reset with seed ``seed + i``: a designated object (object 0) and a goal
``goal_distance`` (10-20 cm) away. A planner chooses η (the end-effector target at the end of the horizon), the hand
executes ``execute_steps`` frames of the motion towards η (:func:`imagine_ros.planning.oracle.eta_actions`), and the
planner replans (MPC) until the object is within ``tolerance`` (3 cm) of the goal or ``budget`` frames have run.
Success = within the tolerance when the episode ends.

Planners: ``random`` (η uniform in the workspace), one CEM planner per checkpoint and flow source (the model's native
flows, and DIS flows estimated from its frames; models without native flows use the flow network of ``--flow-net``
instead of DIS when one is given), and ``oracle`` (CEM that simulates candidates in a cloned simulator).
Model planners start from the object's projected pixel and carry the designated pixel's predicted position from plan
to plan, re-acquiring the object by its colour in the camera image around that position (``designated="track"``,
the default; :class:`~imagine_ros.planning.costs.DesignatedTracker`), or only carry it (``"carry"``, Visual
Foresight), or re-read it from the simulator each plan (``"true"``). Each plan records how far the designated pixel
is from the object's true projected centre (``drift``).

The ``simulator`` planner is the same CEM and designated-pixel cost on a
:class:`~imagine_ros.planning.oracle.SimPredictor`, which executes every candidate in the environment from a snapshot
and returns rendered frames with ground-truth flows: the upper bound of the learned planners through the same cost.
The same planner on flows estimated from those true frames (DIS, or the flow network) measures what the flow estimator
alone costs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from imagine_ros.constants import DESIGNATED_MODES, SIMULATOR_FLOWS
from imagine_ros.errors import ConfigError
from imagine_ros.flow import FLOW_SOURCES, dis_flows
from imagine_ros.flownet import FlowNet
from imagine_ros.planning.cem import CEMPlanner, PlannerConfig, PlanResult
from imagine_ros.planning.costs import DesignatedTracker, point_map, propagate_map
from imagine_ros.planning.oracle import OraclePlanner, SimPredictor, eta_actions
from imagine_ros.prediction import Prediction
from imagine_ros.predictor import PredictorProtocol

TASK_ENV_ID = "ImagineRos/PushTask-v0"
#: How agent names call estimated flows, by flow source.
FLOW_LABELS = {"dis": "DIS flows", "flownet": "flow network flows"}


# ------------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class TaskConfig:
    """The tasks and how episodes run (the same for every planner of a run)."""

    tasks: int = 20
    seed: int = 0  # task i uses env seed ``seed + i``
    budget: int = 30  # frames per episode at most
    execute_steps: int = 3  # frames executed per plan before replanning
    horizon: int = 10  # frames to reach η for planners without a model (random, oracle): the models' horizon
    goal_distance: tuple[float, float] = (0.10, 0.20)  # metres from the object's start
    tolerance: float = 0.03  # metres: success radius
    image_size: int = 64  # camera image side
    designated: str = "track"  # "track" (carried + re-acquired by colour), "carry" (predicted only) or "true"
    hand: str = "behind"  # the hand's start: "behind" the object (pre-push pose) or "default" (random, raised)

    def __post_init__(self) -> None:
        for name in ("tasks", "budget", "execute_steps", "horizon", "image_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.execute_steps > self.horizon:
            raise ConfigError(f"execute_steps ({self.execute_steps}) must not exceed horizon ({self.horizon})")
        if self.hand not in ("behind", "default"):
            raise ConfigError(f"hand must be 'behind' or 'default', got {self.hand!r}")
        if self.designated not in DESIGNATED_MODES:
            raise ConfigError(f"designated must be one of {', '.join(DESIGNATED_MODES)}, got {self.designated!r}")
        lo, hi = self.goal_distance
        if not 0 < lo <= hi:
            raise ConfigError(f"goal_distance must be a range 0 < low <= high metres, got {self.goal_distance}")
        object.__setattr__(self, "goal_distance", (float(lo), float(hi)))

    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.tasks)]


def make_task_env(tc: TaskConfig):
    """The task-mode environment of ``ImagineRos/PushTask-v0`` (unwrapped: the step budget is the runner's)."""
    import gymnasium as gym

    import imagine_ros.sim  # noqa: F401  (registers the ids)

    return gym.make(
        TASK_ENV_ID, goal_distance=tc.goal_distance, success_tolerance=tc.tolerance, image_size=tc.image_size
    ).unwrapped


# ------------------------------------------------------------------------------------------------------ agents
class ReflowPredictor:
    """A predictor whose flows are re-estimated from its own frames by ``estimator`` (``flow_source == source``).

    Wraps any :class:`PredictorProtocol`. ``estimator(x0 (H, W, 3) uint8, frames (..., H, W, 3) uint8) -> (..., H, W,
    2) float32`` gives forward flows with :func:`imagine_ros.flow.dis_flows`'s convention (``dis_flows`` itself, or
    :meth:`imagine_ros.flownet.FlowNet.estimate`); ``source`` (one of :data:`imagine_ros.flow.FLOW_SOURCES`) is what
    the predictions then say. Used to compare a method's native flows with flows estimated from its frames, and to
    plan on estimated flows of the simulator's true frames. Predictions that already carry ``source`` flows pass
    through unchanged.
    """

    def __init__(
        self, inner: PredictorProtocol, estimator: Callable[[np.ndarray, np.ndarray], np.ndarray], source: str
    ):
        if source not in FLOW_SOURCES:
            raise ConfigError(f"flow source must be one of {', '.join(FLOW_SOURCES)}, got {source!r}")
        self.inner, self.estimator, self.source = inner, estimator, source
        self.image_size, self.horizon = inner.image_size, inner.horizon
        self.condition_dim, self.method = inner.condition_dim, inner.method

    def predict(self, images, conditions=None, num_samples: int = 1, seed: int | None = None) -> Prediction:
        pred = self.inner.predict(images, conditions, num_samples=num_samples, seed=seed)
        if pred.flow_source == self.source:
            return pred
        t0 = time.perf_counter()
        flows = np.stack([self.estimator(x, f) for x, f in zip(np.asarray(images), pred.frames)]).astype(np.float32)
        timing = {**pred.timing, "flow": time.perf_counter() - t0}
        timing["total"] = pred.timing.get("total", 0.0) + timing["flow"]
        return Prediction(pred.frames, flows, self.source, pred.method, pred.condition, pred.masks, timing)


class DisFlowPredictor(ReflowPredictor):
    """A :class:`ReflowPredictor` with OpenCV DIS (``flow_source == "dis"``)."""

    def __init__(self, inner: PredictorProtocol):
        super().__init__(inner, dis_flows, "dis")


class Agent(Protocol):
    name: str
    horizon: int

    def reset(self, env, obs: dict, info: dict, seed: int) -> None: ...

    def act(self, env, obs: dict, info: dict, index: int) -> PlanResult: ...


def _resize_pixels(xy: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Pixel coordinates (pixel centres at integers) from a src x src image to a dst x dst one."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) * (dst / src) - 0.5


class RandomAgent:
    """η uniform in the workspace."""

    def __init__(self, eta_low: np.ndarray, eta_high: np.ndarray, horizon: int, name: str = "random"):
        self.name, self.horizon = name, int(horizon)
        self.low, self.high = np.asarray(eta_low, float), np.asarray(eta_high, float)
        self.rng = np.random.default_rng(0)

    def reset(self, env, obs, info, seed) -> None:
        self.rng = np.random.default_rng([seed, 7])

    def act(self, env, obs, info, index) -> PlanResult:
        t0 = time.perf_counter()
        eta = self.rng.uniform(self.low, self.high).astype(np.float32)
        return PlanResult(eta, float("nan"), np.zeros(0), None, None, time.perf_counter() - t0)


class ModelAgent:
    """A :class:`CEMPlanner` on a predictor's futures, with the designated pixel carried (and tracked) between plans."""

    def __init__(self, name: str, predictor: PredictorProtocol, config: PlannerConfig, eta_low, eta_high,
                 designated: str = "track"):  # fmt: skip
        self.name, self.horizon = name, int(predictor.horizon)
        self.planner = CEMPlanner(predictor, config, eta_low, eta_high)
        self.size = int(predictor.image_size)
        self.mode = designated
        self.designated: np.ndarray | None = None
        self.tracker: DesignatedTracker | None = None
        self.seed = 0
        self.drift: list[float] = []  # pixels (at the model's size) between the designated pixel and the object

    def _image(self, image: np.ndarray) -> np.ndarray:
        if image.shape[0] == self.size:
            return image
        import cv2

        return cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def reset(self, env, obs, info, seed) -> None:
        self.seed = int(seed)
        self.designated = None
        self.tracker = None
        self.drift = []

    def act(self, env, obs, info, index) -> PlanResult:
        src = obs["image"].shape[0]
        image = self._image(obs["image"])
        truth = _resize_pixels(info["object_pixel"][None], src, self.size)
        if self.designated is None or self.mode == "true":
            self.designated = truth
            if self.mode == "track":
                self.tracker = DesignatedTracker(image, truth[0])
        elif self.mode == "track" and self.tracker is not None:
            self.designated = self.tracker.update(image, self.designated[0])[0][None]
        self.drift.append(float(np.linalg.norm(self.designated[0] - truth[0])))
        goal = _resize_pixels(info["goal_pixel"], src, self.size)
        res = self.planner.plan(image, self.designated, goal, seed=self.seed * 1000 + index)
        self.designated = np.asarray(res.designated_next, dtype=np.float64)
        return res


class SimulatorAgent(ModelAgent):
    """The CEM planner and designated-pixel cost of the model agents on a :class:`SimPredictor` of the episode's own
    environment (rendered frames and ground-truth flows of every candidate): the learned planners' upper bound.

    flows: "exact" (the ground-truth flows), "dis" (OpenCV DIS on the true frames) or "flownet" (``flow_net``, a
    :class:`~imagine_ros.flownet.FlowNet` for ``image_size`` images, on the true frames).
    """

    def __init__(self, config: PlannerConfig, eta_low, eta_high, horizon: int, image_size: int,
                 designated: str = "track", flows: str = "exact", flow_net: FlowNet | None = None):  # fmt: skip
        if flows not in SIMULATOR_FLOWS:
            raise ConfigError(f"simulator flows must be one of {', '.join(SIMULATOR_FLOWS)}, got {flows!r}")
        if flows == "flownet" and flow_net is None:
            raise ConfigError("simulator flows 'flownet' need a flow network (flow_net; plan-eval --flow-net)")
        if flows == "flownet" and flow_net.config.image_size != int(image_size):
            raise ConfigError(
                f"the flow network works on {flow_net.config.image_size} x {flow_net.config.image_size} images but "
                f"the simulator renders {image_size} x {image_size}"
            )
        self.flows, self.flow_net = flows, flow_net
        what = {
            "exact": "ground-truth flows",
            "dis": "DIS flows of its true frames",
            "flownet": "flow network on its true frames",
        }[flows]
        self.name, self.horizon, self.size = f"simulator ({what})", int(horizon), int(image_size)
        self.config, self.low, self.high = config, eta_low, eta_high
        self.mode = designated
        self.planner = None
        self.env = None
        self.designated, self.tracker, self.seed, self.drift = None, None, 0, []

    def reset(self, env, obs, info, seed) -> None:
        if self.planner is None or self.env is not env:
            sim = SimPredictor(env, self.horizon)
            if self.flows == "dis":
                sim = DisFlowPredictor(sim)
            elif self.flows == "flownet":
                sim = ReflowPredictor(sim, self.flow_net.estimate, "flownet")
            self.planner = CEMPlanner(sim, self.config, self.low, self.high)
            self.env = env
        super().reset(env, obs, info, seed)


class OracleAgent:
    """:class:`OraclePlanner` on the episode's environment; ``eta_low``/``eta_high`` default to the hand's reachable
    box."""

    def __init__(self, config: PlannerConfig, horizon: int, name: str = "oracle", eta_low=None, eta_high=None):
        self.name, self.horizon, self.config = name, int(horizon), config
        self.eta_low, self.eta_high = eta_low, eta_high
        self.planner: OraclePlanner | None = None
        self.seed = 0

    def reset(self, env, obs, info, seed) -> None:
        if self.planner is None or self.planner.env is not env:
            if self.planner is not None:
                self.planner.close()
            self.planner = OraclePlanner(env, self.config, self.eta_low, self.eta_high, horizon=self.horizon)
        self.seed = int(seed)

    def act(self, env, obs, info, index) -> PlanResult:
        return self.planner.plan(seed=self.seed * 1000 + index)

    def close(self) -> None:
        if self.planner is not None:
            self.planner.close()
            self.planner = None


# ---------------------------------------------------------------------------------------------------- episodes
@dataclass
class Episode:
    task: int
    seed: int
    success: bool
    start_distance: float  # metres
    final_distance: float  # metres
    frames: int  # frames executed
    plans: int
    plan_seconds: list[float] = field(default_factory=list)
    drift: list[float] = field(default_factory=list)  # designated pixel vs the object's true pixel, per plan


@dataclass
class Recording:
    """What an episode looked like: per executed frame the real image and (model planners) the predicted one."""

    real: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) uint8 after each executed frame
    predicted: list[np.ndarray | None] = field(default_factory=list)  # predicted frame for that step, or None
    prob: list[np.ndarray | None] = field(default_factory=list)  # (h, w) designated-pixel map for that step
    goal_pixel: np.ndarray | None = None
    first: np.ndarray | None = None


def run_episode(agent: Agent, env, task: int, seed: int, tc: TaskConfig, record: bool = False, on_frame=None):
    """One task with one planner -> (Episode, Recording | None). ``on_frame()`` is called after every frame."""
    obs, info = env.reset(seed=seed, options={"hand": tc.hand})
    agent.reset(env, obs, info, seed)
    ep = Episode(task, seed, bool(info["is_success"]), float(info["distance"]), float(info["distance"]), 0, 0)
    rec = Recording(goal_pixel=np.asarray(info["goal_pixel"]), first=obs["image"].copy()) if record else None
    done = bool(info["is_success"])
    while not done and ep.frames < tc.budget:
        res = agent.act(env, obs, info, ep.plans)
        ep.plans += 1
        ep.plan_seconds.append(float(res.seconds))
        steps = min(tc.execute_steps, tc.budget - ep.frames)
        actions = eta_actions(env.ee_target, res.eta, agent.horizon, env.config.max_step)[:steps]
        for t, a in enumerate(actions):
            obs, _, terminated, _, info = env.step(a)
            ep.frames += 1
            if on_frame is not None:
                on_frame()
            if rec is not None:
                rec.real.append(obs["image"].copy())
                pred = res.prediction
                if pred is not None and t < pred.horizon:
                    rec.predicted.append(pred.frames[0, 0, t])
                    start = res.designated
                    h, w = pred.flows.shape[3:5]
                    rec.prob.append(
                        None if start is None else propagate_map(point_map(start, h, w).sum(0), pred.flows[0, 0, t])
                    )
                else:
                    rec.predicted.append(None)
                    rec.prob.append(None)
            if terminated:
                done = True
                break
    ep.success = bool(info["is_success"])
    ep.final_distance = float(info["distance"])
    ep.drift = list(getattr(agent, "drift", []))
    return ep, rec


# ----------------------------------------------------------------------------------------------------- results
def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (``z`` = the normal quantile)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class PlannerResult:
    name: str
    episodes: list[Episode]

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    def summary(self) -> dict:
        n = len(self.episodes)
        lo, hi = wilson_interval(self.successes, n)
        secs = [s for e in self.episodes for s in e.plan_seconds]
        final = np.array([e.final_distance for e in self.episodes]) * 100
        drift = np.array([d for e in self.episodes for d in e.drift])
        return {
            "planner": self.name,
            "tasks": n,
            "successes": self.successes,
            "success_rate": self.successes / n if n else 0.0,
            "wilson95": [lo, hi],
            "final_distance_cm_mean": float(final.mean()) if n else float("nan"),
            "final_distance_cm_median": float(np.median(final)) if n else float("nan"),
            "start_distance_cm_mean": float(np.mean([e.start_distance for e in self.episodes]) * 100) if n else 0.0,
            "seconds_per_plan": float(np.mean(secs)) if secs else 0.0,
            "plans": int(sum(e.plans for e in self.episodes)),
            "drift_px_mean": float(drift.mean()) if drift.size else None,
            "drift_3px_fraction": float((drift >= 3).mean()) if drift.size else None,
        }


def table(results: list[PlannerResult], tc: TaskConfig) -> str:
    seeds = tc.seeds()
    head = (
        f"{tc.tasks} tasks of {TASK_ENV_ID} (env seeds {seeds[0]}..{seeds[-1]}), goal {tc.goal_distance[0] * 100:.0f}-"
        f"{tc.goal_distance[1] * 100:.0f} cm away, success within {tc.tolerance * 100:.0f} cm, budget {tc.budget} "
        f"frames, replan every {tc.execute_steps} frames, hand starts {tc.hand}\n\n"
    )
    rows = [
        "| planner | success | 95% interval | final distance, cm (mean / median) | s per plan | "
        "designated drift, px (mean / >= 3 px) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.summary()
        lo, hi = s["wilson95"]
        rows.append(
            f"| {s['planner']} | {s['successes']}/{s['tasks']} ({s['success_rate']:.0%}) | {lo:.0%}-{hi:.0%} | "
            f"{s['final_distance_cm_mean']:.1f} / {s['final_distance_cm_median']:.1f} | {s['seconds_per_plan']:.2f} | "
            + ("-" if s.get("drift_px_mean") is None else f"{s['drift_px_mean']:.1f} / {s['drift_3px_fraction']:.0%}")
            + " |"
        )
    return head + "\n".join(rows) + "\n"


def plot(results: list[PlannerResult], path: str | Path) -> Path:
    """A PNG bar chart: success rate with its 95% Wilson interval and the mean final distance, per planner."""
    from PIL import Image, ImageDraw

    rows = [r.summary() for r in results]
    label_w, bar_w, row_h, pad = 260, 360, 34, 16
    width = label_w + 2 * bar_w + 4 * pad
    height = pad * 3 + 24 + row_h * len(rows)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    x1, x2 = label_w + pad, label_w + bar_w + 3 * pad
    d.text((x1, pad), "success rate (bar) and 95% Wilson interval", fill="black")
    max_dist = max([s["final_distance_cm_mean"] for s in rows] + [s["start_distance_cm_mean"] for s in rows] + [1.0])
    d.text((x2, pad), f"final distance to goal, cm (0-{max_dist:.0f}; | = start)", fill="black")
    for i, s in enumerate(rows):
        y = pad * 2 + 24 + i * row_h
        d.text((pad, y + 8), s["planner"][:40], fill="black")
        d.rectangle([x1, y + 4, x1 + bar_w, y + row_h - 8], outline=(200, 200, 200))
        d.rectangle([x1, y + 4, x1 + int(bar_w * s["success_rate"]), y + row_h - 8], fill=(70, 130, 200))
        lo, hi = s["wilson95"]
        ym = y + (row_h - 4) // 2
        d.line([x1 + int(bar_w * lo), ym, x1 + int(bar_w * hi), ym], fill="black", width=2)
        for v in (lo, hi):
            d.line([x1 + int(bar_w * v), ym - 5, x1 + int(bar_w * v), ym + 5], fill="black", width=2)
        d.text((x1 + bar_w - 40, y + 8), f"{s['success_rate']:.0%}", fill="black")
        dist = s["final_distance_cm_mean"] / max_dist
        d.rectangle([x2, y + 4, x2 + bar_w, y + row_h - 8], outline=(200, 200, 200))
        d.rectangle([x2, y + 4, x2 + int(bar_w * dist), y + row_h - 8], fill=(220, 120, 60))
        xs = x2 + int(bar_w * s["start_distance_cm_mean"] / max_dist)
        d.line([xs, y + 2, xs, y + row_h - 6], fill="black", width=2)
        d.text((x2 + bar_w - 40, y + 8), f"{s['final_distance_cm_mean']:.1f}", fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _tile(image: np.ndarray, scale: int) -> np.ndarray:
    return np.asarray(image, np.uint8).repeat(scale, 0).repeat(scale, 1)


def episode_frames(rec: Recording, scale: int = 4, label: str = "") -> np.ndarray:
    """(F, H', W', 3) uint8 frames of an episode: the prediction (designated-pixel map in red, goal in green) beside
    what happened (goal in green)."""
    from PIL import Image, ImageDraw

    size = rec.first.shape[0]
    s = size * scale
    out = []
    for k, real in enumerate([rec.first, *rec.real]):
        pred = rec.predicted[k - 1] if k > 0 else None
        prob = rec.prob[k - 1] if k > 0 else None
        left = np.full((s, s, 3), 235, np.uint8)
        if pred is not None:
            p = pred.astype(np.float32)
            if prob is not None and prob.max() > 0:
                m = (prob / prob.max())[..., None]
                p = p * (1 - 0.8 * m) + np.array([255.0, 0, 0]) * 0.8 * m
            left = _tile(_resize_to(p.astype(np.uint8), size), scale)
        canvas = Image.new("RGB", (2 * s + 4, s + 14), "white")
        canvas.paste(Image.fromarray(left), (0, 14))
        canvas.paste(Image.fromarray(_tile(real, scale)), (s + 4, 14))
        d = ImageDraw.Draw(canvas)
        d.text((2, 1), "predicted" if pred is not None else "(no prediction)", fill="black")
        d.text((s + 6, 1), f"{label} frame {k}", fill="black")
        gx, gy = (np.asarray(rec.goal_pixel, float) + 0.5) * scale
        for ox in (0, s + 4):
            d.ellipse([ox + gx - 4, 14 + gy - 4, ox + gx + 4, 14 + gy + 4], outline=(0, 200, 0), width=2)
        if prob is not None and prob.sum() > 0:  # the designated pixel's expected position, in red
            ys, xs = np.mgrid[: prob.shape[0], : prob.shape[1]]
            ex, ey = (np.array([(prob * xs).sum(), (prob * ys).sum()]) / prob.sum() + 0.5) * s / prob.shape[0]
            d.ellipse([ex - 5, 14 + ey - 5, ex + 5, 14 + ey + 5], outline=(255, 0, 0), width=2)
        out.append(np.asarray(canvas))
    return np.stack(out)


def _resize_to(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)


def write_report(
    results: list[PlannerResult],
    tc: TaskConfig,
    out: str | Path,
    recordings: dict | None = None,
    extra: dict | None = None,
) -> dict[str, Path]:
    """results.json, table.md, success.png and one GIF per recorded (planner, task) into ``out``."""
    from imagine_ros.viz import write_gif

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "table.md", "results": out / "results.json", "plot": out / "success.png"}
    paths["table"].write_text(table(results, tc), encoding="utf-8")
    payload = {
        "task_config": {**asdict(tc), "env_id": TASK_ENV_ID, "env_seeds": tc.seeds()},
        "planners": [r.summary() for r in results],
        "episodes": {r.name: [asdict(e) for e in r.episodes] for r in results},
        **(extra or {}),
    }
    paths["results"].write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    plot(results, paths["plot"])
    for (name, task), rec in (recordings or {}).items():
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        gif = out / "episodes" / f"{slug}_task{task:03d}.gif"
        write_gif(gif, episode_frames(rec, label=name), fps=3)
        paths[f"gif:{name}:{task}"] = gif
    return paths


def evaluate(
    agents: list[Agent], tc: TaskConfig, gifs: int = 2, progress: bool = True, env=None
) -> tuple[list[PlannerResult], dict]:
    """Run every agent on the same tasks -> (results, recordings {(agent name, task): Recording} of the first
    ``gifs`` tasks)."""
    from tqdm.auto import tqdm

    own_env = env is None
    env = env or make_task_env(tc)
    results, recordings = [], {}
    try:
        for agent in agents:
            eps = []
            bar = tqdm(total=tc.tasks * tc.budget, desc=agent.name, disable=not progress, unit="frame")
            for task, seed in enumerate(tc.seeds()):
                ep, rec = run_episode(agent, env, task, seed, tc, record=task < gifs, on_frame=partial(bar.update, 1))
                bar.update((task + 1) * tc.budget - bar.n)  # an episode that ended early skips its other frames
                eps.append(ep)
                if rec is not None:
                    recordings[(agent.name, task)] = rec
                bar.set_postfix(tasks=len(eps), success=sum(e.success for e in eps))
            bar.close()
            results.append(PlannerResult(agent.name, eps))
            if hasattr(agent, "close"):
                agent.close()
    finally:
        if own_env:
            env.close()
    return results, recordings


# ------------------------------------------------------------------------------------------------ experiment setup
def model_agents(
    name: str, predictor: PredictorProtocol, config: PlannerConfig, eta_low, eta_high, flows: str, designated: str
) -> list[ModelAgent]:
    """One agent per flow source: ``flows`` is "native", "dis" or "both" (native only where the model has them).

    A model without native flows gets one agent, on the flows its predictor estimates from the frames (DIS, or the
    flow network of a :class:`~imagine_ros.predictor.Predictor` given one), whatever ``flows`` says.
    """
    if not predictor.condition_dim:
        raise ConfigError(f"{name} ({predictor.method}) takes no condition: planning over eta needs an eta model")
    probe = predictor.predict(np.zeros((1, predictor.image_size, predictor.image_size, 3), np.uint8), None, 1, seed=0)
    native = probe.flow_source == "native"
    agents = []
    if native and flows in ("native", "both"):
        agents.append(ModelAgent(f"{name} (native flows)", predictor, config, eta_low, eta_high, designated))
    if flows in ("dis", "both") or not native:
        inner, source = (DisFlowPredictor(predictor), "dis") if native else (predictor, probe.flow_source)
        label = FLOW_LABELS.get(source, f"{source} flows")
        agents.append(ModelAgent(f"{name} ({label})", inner, config, eta_low, eta_high, designated))
    return agents


def workspace(tc: TaskConfig, max_lift: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The η search box (eta_low, eta_high) in metres: the hand's reachable box from the task environment, its top
    lowered to ``max_lift`` metres above the pushing height (the lowest reachable one) when given.

    Pushes happen at the pushing height; a lifted η sends the hand over or half over the objects, which the
    planning-matched data shows rarely (docs/results.md "Planning at the pushing height")."""
    if max_lift is not None and not max_lift >= 0:
        raise ConfigError(f"max_lift must be >= 0 metres, got {max_lift}")
    env = make_task_env(tc)
    try:
        low, high = env.hand_low.copy(), env.hand_high.copy()
    finally:
        env.close()
    if max_lift is not None:
        high[2] = min(high[2], low[2] + max_lift)
    return low, high
