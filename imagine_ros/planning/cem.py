"""Visual-foresight planning: the cross-entropy method (CEM) over η, scored on predicted futures.

η is the end-effector position (metres, robot base frame) at the end of the predicted horizon — the condition the
models were trained with (BAIR protocol). Each CEM iteration samples ``samples`` candidates η (the first iteration
uniformly in the reachable box ``[eta_low, eta_high]``, later ones from a diagonal Gaussian fitted to the ``elites``
best, clipped to the box), asks the predictor for ``num_futures`` futures of the current image under every candidate
in a few batched ``predict`` calls, and scores them with a cost of :mod:`imagine_ros.planning.costs`:

- ``"designated"``: designated pixels pushed along the predicted forward flows as a probability map; expected pixel
  distance to the goal pixel, summed over the predicted steps with the last step weighted ``last_step_weight``.
- ``"goal_image"``: mean squared distance of the predicted frames to a goal image, with the same step weights.

The planner replans every step (model-predictive control): :attr:`PlanResult.designated_next` is where the best
candidate's futures expect the designated pixels after ``execute_steps`` executed frames, and the caller passes it
as ``designated`` to the next :meth:`CEMPlanner.plan` (Visual Foresight's designated-pixel carry-over).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from imagine_ros.errors import ConfigError
from imagine_ros.planning.costs import designated_pixel_cost, expected_positions, goal_image_cost
from imagine_ros.prediction import Prediction
from imagine_ros.predictor import PredictorProtocol

COSTS = ("designated", "goal_image")


@dataclass(frozen=True)
class PlannerConfig:
    """CEM settings; the defaults are Visual Foresight's (200 samples, 3 iterations, 10 elites, last step x10)."""

    samples: int = 200  # candidates per iteration
    iterations: int = 3
    elites: int = 10  # best candidates the next iteration's Gaussian is fitted to
    num_futures: int = 1  # futures sampled per candidate (costs are averaged over them)
    last_step_weight: float = 10.0
    cost: str = "designated"  # "designated" or "goal_image"
    max_batch: int = 200  # images per predict() call (candidates are split into calls of at most this many)
    min_std: float = 0.005  # metres: floor of the Gaussian's standard deviation per axis
    execute_steps: int = 3  # frames the caller executes before replanning (designated_next looks this far)

    def __post_init__(self) -> None:
        for name in ("samples", "iterations", "elites", "num_futures", "max_batch", "execute_steps"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or v < 1:
                raise ConfigError(f"planner {name} must be a positive integer, got {v!r}")
        if self.elites > self.samples:
            raise ConfigError(f"planner elites ({self.elites}) must not exceed samples ({self.samples})")
        if self.cost not in COSTS:
            raise ConfigError(f"planner cost must be one of {', '.join(COSTS)}, got {self.cost!r}")
        if not self.last_step_weight >= 0:
            raise ConfigError(f"last_step_weight must be >= 0, got {self.last_step_weight}")
        if not self.min_std >= 0:
            raise ConfigError(f"min_std must be >= 0 metres, got {self.min_std}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PlanResult:
    """What a planner chose.

    eta: (3,) float32 metres — the target end-effector position at the end of the horizon.
    cost: the best candidate's cost; costs: (iterations,) the best cost of each CEM iteration (non-increasing).
    prediction: the best candidate's futures (B = 1), or None for planners that predict nothing.
    designated_next: (K, 2) expected designated pixels after ``execute_steps`` frames, or None.
    seconds: wall time of the plan; predict_calls: number of predict() calls made.
    designated: (K, 2) the designated pixels the plan started from, or None.
    """

    eta: np.ndarray
    cost: float
    costs: np.ndarray
    prediction: Prediction | None
    designated_next: np.ndarray | None
    seconds: float
    predict_calls: int = 0
    designated: np.ndarray | None = None


def slice_prediction(pred: Prediction, i: int) -> Prediction:
    """The ``i``-th input of a batched Prediction, as a Prediction with B = 1."""
    return Prediction(
        frames=pred.frames[i : i + 1].copy(),
        frames_synthesised=pred.frames_synthesised,
        flows=pred.flows[i : i + 1].copy(),
        flow_source=pred.flow_source,
        method=pred.method,
        condition=None if pred.condition is None else np.asarray(pred.condition)[i : i + 1].copy(),
        masks=None if pred.masks is None else pred.masks[i : i + 1].copy(),
        timing=dict(pred.timing),
    )


def _box(eta_low, eta_high) -> tuple[np.ndarray, np.ndarray]:
    low = np.asarray(eta_low, dtype=np.float64).reshape(-1)
    high = np.asarray(eta_high, dtype=np.float64).reshape(-1)
    if low.shape != high.shape or low.size < 1 or not np.all(np.isfinite(low)) or not np.all(np.isfinite(high)):
        raise ConfigError(f"eta_low and eta_high must be finite vectors of one size, got {low} and {high}")
    if np.any(low > high):
        raise ConfigError(f"eta_low {low} must not exceed eta_high {high}")
    return low, high


def cem(
    score: Callable[[np.ndarray, int], np.ndarray],
    eta_low: np.ndarray,
    eta_high: np.ndarray,
    config: PlannerConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float, np.ndarray]:
    """The cross-entropy method over a box.

    score(candidates (S, D) float64, iteration) -> (S,) costs (lower is better). Returns (best (D,), best cost,
    (iterations,) best cost per iteration). Axes with ``eta_low == eta_high`` stay fixed.
    """
    low, high = _box(eta_low, eta_high)
    best, best_cost = low.copy(), np.inf
    per_iteration = np.zeros(config.iterations)
    mean = std = None
    for it in range(config.iterations):
        if it == 0:
            cand = rng.uniform(low, high, (config.samples, low.size))
        else:
            cand = np.clip(mean + std * rng.standard_normal((config.samples, low.size)), low, high)
        costs = np.asarray(score(cand, it), dtype=np.float64).reshape(-1)
        if costs.shape != (config.samples,):
            raise ValueError(f"score returned {costs.shape} costs for {config.samples} candidates")
        costs = np.where(np.isfinite(costs), costs, np.inf)
        order = np.argsort(costs, kind="stable")
        if costs[order[0]] < best_cost:
            best, best_cost = cand[order[0]].copy(), float(costs[order[0]])
        per_iteration[it] = best_cost
        elites = cand[order[: config.elites]]
        mean = elites.mean(0)
        std = np.maximum(elites.std(0), config.min_std)
    return best, best_cost, per_iteration


class CEMPlanner:
    """CEM over η scored on a predictor's futures (module docstring). Works with any :class:`PredictorProtocol`
    (in process or remote); candidates go to the predictor in batches of at most ``config.max_batch`` images."""

    def __init__(
        self,
        predictor: PredictorProtocol,
        config: PlannerConfig | None = None,
        eta_low: np.ndarray | tuple = (0.37, -0.18, 0.022),
        eta_high: np.ndarray | tuple = (0.73, 0.18, 0.172),
    ):
        self.predictor = predictor
        self.config = config or PlannerConfig()
        self.eta_low, self.eta_high = _box(eta_low, eta_high)
        cdim = int(predictor.condition_dim)
        if cdim != self.eta_low.size:
            raise ConfigError(
                f"the predictor takes a condition of size {cdim} but eta_low/eta_high have {self.eta_low.size}; "
                "planning over eta needs an eta-conditioned model"
            )
        if self.config.execute_steps > int(predictor.horizon):
            raise ConfigError(
                f"execute_steps ({self.config.execute_steps}) exceeds the predictor's horizon ({predictor.horizon})"
            )

    def max_batch(self) -> int:
        """Images per predict() call: ``config.max_batch``, lowered to fit a remote worker's output pixel budget
        (``info()["max_pixels"]`` = B * N * T * H * W) when the predictor reports one."""
        cfg, n = self.config, int(self.config.max_batch)
        info = getattr(self.predictor, "info", None)
        if callable(info):
            budget = info().get("max_pixels")
            if budget:
                per_image = cfg.num_futures * int(self.predictor.horizon) * int(self.predictor.image_size) ** 2
                n = min(n, max(1, int(budget) // per_image))
        return n

    def plan(
        self,
        image: np.ndarray,
        designated: np.ndarray | None = None,
        goal: np.ndarray | None = None,
        seed: int | None = None,
        goal_image: np.ndarray | None = None,
    ) -> PlanResult:
        """Choose η for the current camera image.

        image: (H, W, 3) uint8 at the predictor's image_size; designated: (K, 2) float pixel coordinates (x right,
        y down) of the pixels to move; goal: (2,) or (K, 2) goal pixel(s); goal_image: (H, W, 3) uint8 (for the
        ``"goal_image"`` cost, which needs no pixels). seed fixes the candidates and the sampled futures.
        """
        t0 = time.perf_counter()
        cfg, s = self.config, int(self.predictor.image_size)
        image = np.asarray(image)
        if image.shape != (s, s, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"image must be ({s}, {s}, 3) uint8 (the predictor's size), got {image.shape} {image.dtype}"
            )
        if cfg.cost == "designated":
            if designated is None or goal is None:
                raise ValueError("the designated-pixel cost needs designated (K, 2) and goal (2,) pixels")
            designated = np.asarray(designated, dtype=np.float64).reshape(-1, 2)
            goal = np.asarray(goal, dtype=np.float64)
        elif goal_image is None or np.asarray(goal_image).shape != (s, s, 3):
            raise ValueError(f"the goal-image cost needs goal_image ({s}, {s}, 3) uint8")
        rng = np.random.default_rng(seed)
        max_batch = self.max_batch()
        batch = np.broadcast_to(image, (min(max_batch, cfg.samples), s, s, 3))
        state = {"cost": np.inf, "pred": None, "calls": 0, "seed": None}
        # the designated-pixel cost needs flows only: skip frame synthesis where the predictor can
        fast = cfg.cost == "designated" and bool(getattr(self.predictor, "supports_flows_only", False))

        def score(cand: np.ndarray, it: int) -> np.ndarray:
            costs = np.empty(len(cand))
            for lo in range(0, len(cand), max_batch):
                chunk = cand[lo : lo + max_batch].astype(np.float32)
                pred_seed = None if seed is None else int(rng.integers(2**31 - 1))
                kwargs = {"flows_only": True} if fast else {}
                pred = self.predictor.predict(
                    np.ascontiguousarray(batch[: len(chunk)]),
                    chunk,
                    num_samples=cfg.num_futures,
                    seed=pred_seed,
                    **kwargs,
                )
                state["calls"] += 1
                if cfg.cost == "designated":
                    c = designated_pixel_cost(pred.flows, designated, goal, cfg.last_step_weight)
                else:
                    c = goal_image_cost(pred.frames, goal_image, cfg.last_step_weight)
                c = np.where(np.isfinite(c), c, np.inf)  # NaN would win argmin
                costs[lo : lo + len(chunk)] = c
                j = int(np.argmin(c))
                if c[j] < state["cost"]:
                    state["cost"], state["pred"] = float(c[j]), slice_prediction(pred, j)
                    state["seed"] = pred_seed
            return costs

        eta, cost, per_it = cem(score, self.eta_low, self.eta_high, cfg, rng)
        if state["pred"] is None:
            raise ValueError(
                f"every candidate's cost was non-finite: the predictor ({self.predictor.method}) returned NaN or "
                "infinite flows or frames"
            )
        prediction: Prediction = state["pred"]
        if not prediction.frames_synthesised:  # the chosen candidate's frames, for the caller's pictures
            full = self.predictor.predict(
                image[None], eta[None].astype(np.float32), cfg.num_futures, seed=state["seed"]
            )
            state["calls"] += 1
            prediction = Prediction(
                full.frames, prediction.flows, prediction.flow_source, full.method, full.condition, full.masks,
                {**prediction.timing, "frames": full.timing.get("total", 0.0)},
            )  # fmt: skip
        nxt = None
        if designated is not None:
            step = min(cfg.execute_steps, prediction.horizon) - 1
            nxt = expected_positions(designated, prediction.flows[0, :, step]).mean(0)  # (K, 2), mean over futures
            nxt = nxt.astype(np.float32)
        return PlanResult(
            eta=eta.astype(np.float32),
            cost=cost,
            costs=per_it,
            prediction=prediction,
            designated_next=nxt,
            seconds=time.perf_counter() - t0,
            predict_calls=state["calls"],
            designated=None if designated is None else designated.astype(np.float32),
        )
