"""The prediction pipeline of the ROS node, in plain Python (no rclpy): camera frames in, future grids out.

::

    submit(frame) ─▶ [newest-frame slot] ─▶ worker thread ─▶ prepare_image ─▶ Predictor.predict / planner
                      (older one dropped,     (at most rate_hz)    (crop/resize to      ─▶ future grids ─▶ on_result
                       counted)                                      image_size)

* The input path (:meth:`PredictionPipeline.submit`) only stores the frame: it never waits for the model. A frame that
  is replaced before the worker took it is *dropped* and counted.
* The worker takes the newest frame, at most ``rate_hz`` times per second, and calls any
  :class:`~imagine_ros.predictor.PredictorProtocol` (in process or remote). A failure (an exception of the predictor,
  e.g. a remote server that does not answer) is counted and reported to ``on_error``; the worker goes on with the next
  frame after ``retry_delay_s``.
* Bad input is refused, counted (``rejected_images``, ``eta_rejected``, ``task_rejected``) and never reported as a
  model failure: images without pixels or with unusable fields, stamps with ``nanosec`` >= 1e9, images of the wrong
  size with ``resize=exact`` (refused at :meth:`PredictionPipeline.submit` once the model's input size is known, else
  by the worker, before the model is called), non-finite η or planner pixels. These raise :class:`BadInput` (a
  ``ValueError``) or return False; ``failures`` counts only what the predictor or planner raised.
* η (the target end-effector position, metres) is the latest accepted point: its ``frame_id`` must equal
  ``eta_frame`` (unless that is empty), and it expires after ``eta_max_age_s`` (0 = never). Models without a
  condition ignore it.
* Grids: frames ``(N*H, T*W, 3)`` uint8 RGB and flows ``(N*H, T*W, 2)`` float32 — rows = samples, columns = time
  steps, tiles of the model's ``image_size`` without gaps — plus a colour coding of the flows
  (:func:`imagine_ros.viz.flow_to_rgb`). Flows are in pixels of the model's input image.
* Optional planner: a :class:`PlannerHook` runs :class:`imagine_ros.planning.CEMPlanner` on each frame instead of a
  plain prediction; the result carries the chosen η and the futures of the best candidate.

* The model may load in the background (:meth:`PredictionPipeline.load_async`): until it is ready frames wait in the
  slot (the newest only), the diagnostics say WARN "loading the model" and, if loading fails, ERROR with the reason;
  a load failure is not a prediction failure. :meth:`PredictionPipeline.stop` never waits for a load.

Everything is thread-safe: ``submit``/``set_eta``/``stats`` may be called from any thread while the worker runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imagine_ros import ros_msgs
from imagine_ros.errors import ConfigError
from imagine_ros.prediction import Prediction

RESIZE_MODES = ("crop", "stretch", "exact")
#: diagnostic levels, the values of ``diagnostic_msgs/DiagnosticStatus``
OK, WARN, ERROR, STALE = 0, 1, 2, 3
#: consecutive failures from which the diagnostics say ERROR (fewer: WARN)
ERROR_AFTER_FAILURES = 3
#: the frame_id of planner pixels ends with this (e.g. ``camera_pixels``): a frame without transform, so a point in it
#: is never taken for metres; the simulator's ``pixel_frame`` follows it
PIXEL_FRAME_SUFFIX = "_pixels"
_USE_LATEST = object()


class BadInput(ValueError):
    """Input the pipeline refuses (counted in the rejected counters, never as a model failure); the message says why."""


# ----------------------------------------------------------------------------------------------------------------------
# configuration and data


@dataclass(frozen=True)
class PipelineConfig:
    """How frames become predictions (the prediction node's parameters of the same meaning)."""

    rate_hz: float = 2.0  # most predictions per second; 0 = as fast as the predictor goes
    num_samples: int = 4  # sampled futures per prediction (grid rows)
    seed: int | None = None  # noise seed used for every prediction; None = fresh noise each time
    resize: str = "crop"  # crop | stretch | exact (see prepare_image)
    eta_frame: str = ""  # required frame_id of η; "" = any
    eta_max_age_s: float = 0.0  # η older than this (seconds on the pipeline clock) is not used; 0 = never expires
    require_eta: bool = False  # skip frames while no usable η is known (else predict unconditioned)
    flow_vis_max: float = 0.0  # pixels at full saturation in the flow colour coding; 0 = each prediction's largest
    retry_delay_s: float = 0.5  # pause after a failed prediction before the next one
    latency_window: int = 100  # predictions the latency statistics are taken over

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_hz) and self.rate_hz >= 0):
            raise ConfigError(f"rate must be a finite number of Hz >= 0 (0 = no limit), got {self.rate_hz}")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {self.num_samples!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(f"seed must be None or an integer >= 0, got {self.seed!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        for name in ("eta_max_age_s", "flow_vis_max", "retry_delay_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v}")
        if self.latency_window < 1:
            raise ConfigError(f"latency_window must be >= 1, got {self.latency_window}")


@dataclass
class Frame:
    """One camera frame as received.

    image: (H, W, 3) uint8 RGB at the camera's size; stamp_ns/frame_id: from the message header; header: the message's
    header object itself, handed back untouched with the result (the node stamps its outputs with it); received: the
    pipeline clock (seconds) when it was submitted.
    """

    image: np.ndarray
    stamp_ns: int = 0
    frame_id: str = ""
    header: Any = None
    received: float = 0.0


@dataclass(frozen=True)
class ImageTransform:
    """Where camera pixels land in the model's input image after :func:`prepare_image`.

    Pixel centres follow the camera convention (pixel (row i, column j) is at (x, y) = (j, i)):
    ``model = (camera - offset + 0.5) * scale - 0.5`` per axis, ``offset`` = (x0, y0) of the crop, ``scale`` = (sx, sy).
    """

    offset: tuple[float, float]
    scale: tuple[float, float]

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) camera pixels (x right, y down) -> (..., 2) model-input pixels."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - np.asarray(self.offset) + 0.5) * np.asarray(self.scale) - 0.5

    def to_camera(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) model-input pixels -> (..., 2) camera pixels (inverse of :meth:`to_model`)."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy + 0.5) / np.asarray(self.scale) - 0.5 + np.asarray(self.offset)


@dataclass
class FutureGrids:
    """frames: (N*H, T*W, 3) uint8 RGB; flows: (N*H, T*W, 2) float32 pixels; flow_vis: (N*H, T*W, 3) uint8 RGB.
    Rows = samples, columns = time steps; ``tile`` = (H, W) of one future frame."""

    frames: np.ndarray
    flows: np.ndarray
    flow_vis: np.ndarray
    rows: int
    cols: int
    tile: tuple[int, int]


@dataclass
class PipelineResult:
    """What one processed frame gives: the grids to publish and how they came about.

    eta: (3,) float64 η the prediction was conditioned on (None: unconditioned); planned_eta: (3,) the planner's
    choice (None without planner); latency_s: submit -> result on the pipeline clock; predict_s: time in the
    predictor or planner; plan: the planner's full result (None without planner).
    """

    frame: Frame
    model_image: np.ndarray
    transform: ImageTransform
    prediction: Prediction
    grids: FutureGrids
    eta: np.ndarray | None
    latency_s: float
    predict_s: float
    index: int
    planned_eta: np.ndarray | None = None
    plan: Any = None


@dataclass
class PipelineStats:
    """A snapshot of the counters (see :meth:`PredictionPipeline.stats`). Latencies in seconds over the last
    ``latency_window`` predictions (NaN before the first)."""

    received: int = 0  # frames submitted
    predictions: int = 0  # frames turned into results
    dropped: int = 0  # frames replaced by a newer one before the worker took them
    failures: int = 0  # predictions that raised
    consecutive_failures: int = 0
    rejected_images: int = 0  # images refused: encoding, inconsistent fields, no pixels, bad stamp, size (exact)
    skipped_no_eta: int = 0  # frames skipped because require_eta and no usable η
    skipped_no_task: int = 0  # frames skipped because the planner has no designated/goal pixel yet
    eta_received: int = 0
    eta_rejected: int = 0  # η messages refused (frame_id, not finite)
    task_received: int = 0  # planner pixels (designated, goal) offered
    task_rejected: int = 0  # planner pixels refused (not finite, no planner)
    last_error: str = ""  # the last model failure
    last_rejection: str = ""  # why the last input was refused
    model_state: str = "ready"  # loading | ready | failed (see PredictionPipeline.load_async)
    model_error: str = ""  # why loading failed
    model_load_s: float = float("nan")  # seconds the load took (or has taken so far)
    latency_last: float = float("nan")
    latency_mean: float = float("nan")
    latency_max: float = float("nan")
    predict_mean: float = float("nan")
    running: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ----------------------------------------------------------------------------------------------------------------------
# pure functions


def prepare_image(image: np.ndarray, size: int, mode: str = "crop") -> tuple[np.ndarray, ImageTransform]:
    """image: (H, W, 3) uint8 RGB -> ((size, size, 3) uint8, the pixel transform).

    ``crop``: the centred square of side min(H, W), resized; ``stretch``: the whole image resized (aspect ratio
    lost); ``exact``: the image must already be ``size`` x ``size``. Shrinking uses area averaging, enlarging
    bilinear interpolation.
    """
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise BadInput(f"an image needs at least one pixel, got {w}x{h} (width x height)")
    if mode == "exact":
        if (h, w) != (size, size):
            raise BadInput(f"resize=exact: the image must be {size}x{size} pixels, got {w}x{h} (width x height)")
        return np.ascontiguousarray(image), ImageTransform((0.0, 0.0), (1.0, 1.0))
    x0 = y0 = 0
    if mode == "crop":
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        image = image[y0 : y0 + side, x0 : x0 + side]
    ch, cw = image.shape[:2]
    transform = ImageTransform((float(x0), float(y0)), (size / cw, size / ch))
    if (ch, cw) == (size, size):
        return np.ascontiguousarray(image), transform
    interp = cv2.INTER_AREA if ch >= size and cw >= size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interp), transform


def grid(tiles: np.ndarray) -> np.ndarray:
    """tiles: (R, C, H, W, K) -> (R*H, C*W, K), tile (r, c) at rows r*H.., columns c*W.. (same dtype)."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 5:
        raise ValueError(f"tiles must have shape (rows, cols, H, W, channels), got {tiles.shape}")
    r, c, h, w, k = tiles.shape
    return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3, 4).reshape(r * h, c * w, k))


def split_grid(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`grid`: (R*H, C*W, K) -> (R, C, H, W, K)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    gh, gw, k = image.shape
    if gh % rows or gw % cols:
        raise ValueError(f"a {gh}x{gw} grid cannot be split into {rows} rows and {cols} columns of equal tiles")
    return image.reshape(rows, gh // rows, cols, gw // cols, k).transpose(0, 2, 1, 3, 4)


def future_grids(prediction: Prediction, index: int = 0, flow_vis_max: float = 0.0) -> FutureGrids:
    """The grids of input ``index`` of a prediction (see :class:`FutureGrids`)."""
    from imagine_ros.viz import flow_to_rgb

    frames = prediction.frames[index]  # (N, T, H, W, 3)
    flows = prediction.flows[index]  # (N, T, H, W, 2)
    n, t, h, w, _ = frames.shape
    flows_grid = grid(flows).astype(np.float32, copy=False)
    return FutureGrids(
        frames=grid(frames),
        flows=flows_grid,
        flow_vis=flow_to_rgb(flows_grid, max_magnitude=flow_vis_max or None),
        rows=n,
        cols=t,
        tile=(h, w),
    )


# ----------------------------------------------------------------------------------------------------------------------
# planner hook


@dataclass(frozen=True)
class PlannerSettings:
    """The planner part of the node's parameters. ``designated`` (K, 2) and ``goal`` (2,) are camera-image pixels
    (x right, y down); ``None`` = not known yet. ``eta_low``/``eta_high``: the η search box, metres (an axis with
    equal bounds stays fixed: ``eta_high[2] == eta_low[2]`` plans in the table plane at that height, as the demo)."""

    samples: int = 64
    iterations: int = 3
    elites: int = 8
    eta_low: tuple[float, float, float] = (0.35, -0.2, 0.0)
    eta_high: tuple[float, float, float] = (0.75, 0.2, 0.2)
    designated: tuple[tuple[float, float], ...] | None = None
    goal: tuple[float, float] | None = None
    track: bool = True

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.eta_low, float), np.asarray(self.eta_high, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo <= hi):
            raise ConfigError(
                f"planner eta box needs eta_low <= eta_high per axis (3 numbers each; equal fixes the axis), "
                f"got {lo}, {hi}"
            )
        if self.elites > self.samples:
            raise ConfigError(f"planner elites ({self.elites}) cannot exceed samples ({self.samples})")


def _pixels(xy: Any, what: str) -> np.ndarray:
    """Pixel coordinates as a flat float64 array of (x, y) pairs; :class:`BadInput` unless finite and paired."""
    try:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BadInput(f"planner {what} pixel must be numbers (x, y), got {xy!r}") from None
    if xy.size == 0 or xy.size % 2:
        raise BadInput(f"planner {what} pixel must be (x, y) pairs, got {xy.size} numbers")
    if not np.all(np.isfinite(xy)):
        raise BadInput(f"planner {what} pixel must be finite, got {xy.tolist()}")
    return xy


class PlannerHook:
    """Runs :class:`imagine_ros.planning.CEMPlanner` on model-input images; keeps the task in camera pixels.

    The planning package is imported when the hook is first used, so the pipeline works without it.
    """

    def __init__(self, settings: PlannerSettings, num_futures: int):
        self.settings = settings
        self.num_futures = num_futures
        self._lock = threading.Lock()
        self._designated = None if settings.designated is None else np.asarray(settings.designated, np.float64)
        self._goal = None if settings.goal is None else np.asarray(settings.goal, np.float64)
        self._planner = None
        self._predictor = None

    def set_designated(self, xy: np.ndarray) -> None:
        """(K, 2) or (2,) camera pixels of the object(s) to push; :class:`BadInput` unless finite."""
        xy = _pixels(xy, "designated").reshape(-1, 2)
        with self._lock:
            self._designated = xy

    def set_goal(self, xy: np.ndarray) -> None:
        """(2,) camera pixel the designated object should reach; :class:`BadInput` unless 2 finite numbers."""
        xy = _pixels(xy, "goal")
        if xy.shape != (2,):
            raise BadInput(f"planner goal must be one pixel (x, y), got {xy.size} numbers")
        with self._lock:
            self._goal = xy

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._designated is not None and self._goal is not None

    @property
    def designated(self) -> np.ndarray | None:
        with self._lock:
            return None if self._designated is None else self._designated.copy()

    def _get_planner(self, predictor: Any) -> Any:
        if self._planner is None or self._predictor is not predictor:
            from imagine_ros.planning import CEMPlanner, PlannerConfig

            s = self.settings
            config = PlannerConfig(
                samples=s.samples, iterations=s.iterations, elites=s.elites, num_futures=self.num_futures
            )
            self._planner = CEMPlanner(predictor, config, np.asarray(s.eta_low, np.float32),
                                       np.asarray(s.eta_high, np.float32))  # fmt: skip
            self._predictor = predictor
        return self._planner

    def plan(self, predictor: Any, model_image: np.ndarray, transform: ImageTransform, seed: int | None) -> Any:
        """Plan on ``model_image`` (size x size x 3); returns the planner's PlanResult."""
        with self._lock:
            designated, goal = self._designated, self._goal
        if designated is None or goal is None:
            raise RuntimeError("the planner has no task yet: set the designated pixel and the goal pixel")
        planner = self._get_planner(predictor)
        result = planner.plan(model_image, transform.to_model(designated), transform.to_model(goal), seed=seed)
        if self.settings.track and getattr(result, "designated_next", None) is not None:
            with self._lock:
                if self._designated is designated:  # not replaced by a new task meanwhile
                    self._designated = transform.to_camera(np.asarray(result.designated_next, np.float64))
        return result


# ----------------------------------------------------------------------------------------------------------------------
# the pipeline


class PredictionPipeline:
    """Newest-frame queue + rate-limited worker thread around a Predictor (see module docstring).

    ``on_result(result)`` and ``on_error(exception, frame)`` are called from the worker thread. ``clock`` returns
    seconds (monotonic); tests may pass their own. ``predictor`` may be None when it is loaded later with
    :meth:`load_async` (or given with :meth:`set_predictor`).
    """

    def __init__(
        self,
        predictor: Any,
        config: PipelineConfig | None = None,
        on_result: Callable[[PipelineResult], None] | None = None,
        on_error: Callable[[BaseException, Frame], None] | None = None,
        planner: PlannerHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.predictor = predictor
        self.config = config or PipelineConfig()
        self.on_result = on_result
        self.on_error = on_error
        self.planner = planner
        self.clock = clock
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._eta: tuple[np.ndarray, float] | None = None  # (xyz, received)
        self._stats = PipelineStats()
        self._latencies: deque[float] = deque(maxlen=self.config.latency_window)
        self._predict_times: deque[float] = deque(maxlen=self.config.latency_window)
        self._last_start: float | None = None
        self._index = 0
        self._model_size: int | None = None  # the model's input side, once known (resize=exact checks at submit)
        self._model_state = "ready" if predictor is not None else "loading"
        self._model_error = ""
        self._load_started: float | None = None
        self._load_s = float("nan")

    # ------------------------------------------------------------------------------------------------ life cycle
    def start(self) -> PredictionPipeline:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="imagine-prediction", daemon=True)
            self._thread.start()
        return self

    def set_predictor(self, predictor: Any) -> bool:
        """Hand the pipeline its (loaded) predictor; frames waiting in the slot are predicted from now on. Returns
        False, installing nothing, once :meth:`stop` was called: the predictor stays the caller's to close. The stop
        check and the assignment are one step under the lock, so whoever stops the pipeline and then closes
        :attr:`predictor` (the node's ``destroy_node``) never misses a predictor installed behind its back."""
        with self._cond:
            if self._stop:
                return False
            self.predictor = predictor
            self._model_state, self._model_error = "ready", ""
            self._cond.notify_all()
        return True

    def load_async(
        self,
        factory: Callable[[], Any],
        on_loaded: Callable[[Any], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
    ) -> threading.Thread:
        """Build the predictor with ``factory()`` on a background thread (a daemon: a load cannot be interrupted, and
        must not hold up shutdown). Until it returns, :meth:`stats` says ``model_state`` loading; then
        :meth:`set_predictor` and ``on_loaded(predictor)``, or ``model_state`` failed with ``model_error`` and
        ``on_failed(exception)``. A predictor that arrives after :meth:`stop` is closed at once (when it can be)."""
        with self._cond:
            self._model_state, self._model_error = "loading", ""
            self._load_started = self.clock()

        def load() -> None:
            try:
                predictor = factory()
            except BaseException as e:  # any failure to load is reported, never raised into the void
                with self._cond:
                    self._model_state, self._model_error = "failed", f"{type(e).__name__}: {e}"
                    self._load_s = self.clock() - self._load_started
                if on_failed is not None:
                    on_failed(e)
                return
            with self._cond:
                self._load_s = self.clock() - self._load_started
            if not self.set_predictor(predictor):  # stopped while loading: nobody else will close this one
                close = getattr(predictor, "close", None)
                if close is not None:
                    close()
                return
            if on_loaded is not None:
                on_loaded(predictor)

        thread = threading.Thread(target=load, name="imagine-model-load", daemon=True)
        thread.start()
        return thread

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the worker (a prediction in progress is finished first; its result is still delivered)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> PredictionPipeline:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------------- input
    def _reject(self, counter: str, reason: str) -> None:
        with self._cond:
            setattr(self._stats, counter, getattr(self._stats, counter) + 1)
            self._stats.last_rejection = reason

    def submit(self, image: np.ndarray, stamp_ns: int = 0, frame_id: str = "", header: Any = None) -> bool:
        """Offer a frame ((H, W, 3) uint8 RGB, at least one pixel). Never waits for the model. Returns True when it
        replaced an older frame the worker had not taken yet (that one is dropped and counted). Raises
        :class:`BadInput` (counted in ``rejected_images``) for an image it cannot use."""
        image = np.asarray(image)
        reason = ""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            reason = f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}"
        elif image.shape[0] == 0 or image.shape[1] == 0:
            reason = f"an image needs at least one pixel, got {image.shape[1]}x{image.shape[0]} (width x height)"
        elif self.config.resize == "exact" and self._model_size is not None:
            size = self._model_size
            if image.shape[:2] != (size, size):
                reason = (
                    f"resize=exact: the image must be {size}x{size} pixels, got {image.shape[1]}x{image.shape[0]} "
                    "(width x height)"
                )
        if reason:
            self._reject("rejected_images", reason)
            raise BadInput(reason)
        frame = Frame(image, int(stamp_ns), str(frame_id), header, self.clock())
        with self._cond:
            replaced = self._slot is not None
            if replaced:
                self._stats.dropped += 1
            self._slot = frame
            self._stats.received += 1
            self._cond.notify_all()
        return replaced

    def submit_msg(self, msg: Any) -> bool:
        """Offer a ``sensor_msgs/Image`` (rclpy, rosbags or any object with its fields). Raises
        :class:`imagine_ros.ros_msgs.UnsupportedEncoding` or :class:`BadInput` (both ``ValueError``) for an image it
        cannot use: encoding, inconsistent fields, no pixels, a stamp with ``nanosec`` >= 1e9 (all counted)."""
        try:
            stamp_ns = ros_msgs.header_stamp_ns(msg)
            rgb = ros_msgs.msg_to_rgb(msg)
        except ros_msgs.UnsupportedEncoding as e:
            self._reject("rejected_images", str(e))
            raise
        except ValueError as e:
            self._reject("rejected_images", str(e))
            raise BadInput(str(e)) from None
        return self.submit(rgb, stamp_ns, ros_msgs.point_frame(msg), msg.header)

    def set_eta(self, xyz: Sequence[float] | np.ndarray, frame_id: str = "") -> bool:
        """Offer η (3,) metres in ``frame_id``; False (counted) when refused: wrong frame or not finite."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1)
        ok = xyz.shape == (3,) and bool(np.all(np.isfinite(xyz)))
        want = self.config.eta_frame
        frame_ok = not want or str(frame_id) == want
        with self._cond:
            self._stats.eta_received += 1
            if not (ok and frame_ok):
                self._stats.eta_rejected += 1
                self._stats.last_rejection = self.eta_rejection_reason(str(frame_id))
                return False
            self._eta = (xyz.copy(), self.clock())
        return True

    def set_eta_msg(self, msg: Any) -> bool:
        """Offer a ``geometry_msgs/PointStamped`` as η (see :meth:`set_eta`)."""
        return self.set_eta(ros_msgs.msg_to_point(msg), ros_msgs.point_frame(msg))

    def eta_rejection_reason(self, frame_id: str) -> str:
        want = self.config.eta_frame
        if want and frame_id != want:
            return f"eta in frame {frame_id!r} refused: eta_frame is {want!r}"
        return "eta refused: expected 3 finite numbers"

    def set_task_pixel(self, kind: str, xy: Any) -> bool:
        """Offer the planner's ``designated`` or ``goal`` pixel (x, y), camera image; False (counted in
        ``task_rejected``, reason in ``last_rejection``) when refused: not finite, or no planner."""
        if kind not in ("designated", "goal"):
            raise ValueError(f"kind must be designated or goal, got {kind!r}")
        with self._cond:
            self._stats.task_received += 1
        if self.planner is None:
            self._reject("task_rejected", f"planner {kind} pixel refused: the planner is off (planner.enabled)")
            return False
        try:
            (self.planner.set_designated if kind == "designated" else self.planner.set_goal)(xy)
        except BadInput as e:
            self._reject("task_rejected", str(e))
            return False
        return True

    def set_task_pixel_msg(self, kind: str, msg: Any) -> bool:
        """Offer a ``geometry_msgs/PointStamped`` (x, y; z ignored) as the planner's ``designated``/``goal`` pixel. Its
        ``frame_id`` must name a pixel frame (ending with :data:`PIXEL_FRAME_SUFFIX`, e.g. ``camera_pixels``): a point
        in metres (``panda_link0``, ``camera_optical_frame``) is refused and counted in ``task_rejected``."""
        frame = ros_msgs.point_frame(msg)
        if not frame.endswith(PIXEL_FRAME_SUFFIX):
            with self._cond:
                self._stats.task_received += 1
            self._reject(
                "task_rejected",
                f"planner {kind} pixel in frame {frame!r} refused: pixels come in a frame whose name ends with "
                f"{PIXEL_FRAME_SUFFIX} (e.g. camera{PIXEL_FRAME_SUFFIX}), not in a frame of metres",
            )
            return False
        p = getattr(msg, "point", msg)
        return self.set_task_pixel(kind, [p.x, p.y])

    def current_eta(self) -> np.ndarray | None:
        """The η to use now: the latest accepted one unless it expired (``eta_max_age_s``), else None."""
        with self._cond:
            eta = self._eta
        if eta is None:
            return None
        xyz, received = eta
        max_age = self.config.eta_max_age_s
        if max_age and self.clock() - received > max_age:
            return None
        return xyz.copy()

    # ------------------------------------------------------------------------------------------------ processing
    def process(self, frame: Frame, eta: Any = _USE_LATEST) -> PipelineResult | None:
        """Turn one frame into a result, synchronously (the worker calls this; so may a script or a bag export).

        ``eta``: (3,) metres, None (unconditioned), or by default the pipeline's :meth:`current_eta`. Returns None
        when the frame is skipped (``require_eta`` and no η, or the planner has no task). Exceptions of the
        predictor propagate (the worker counts them).
        """
        cfg = self.config
        t0 = self.clock()
        predictor = self.predictor
        if predictor is None:
            raise RuntimeError("the model is not loaded yet (see load_async)")
        size = int(predictor.image_size)
        self._model_size = size
        cond_dim = int(predictor.condition_dim)
        if cond_dim not in (0, 3):
            raise ConfigError(f"eta is a 3-D point, but the model takes a {cond_dim}-D condition")
        eta = self.current_eta() if eta is _USE_LATEST else (None if eta is None else np.asarray(eta, np.float64))
        if eta is None and cfg.require_eta:
            with self._cond:
                self._stats.skipped_no_eta += 1
            return None
        if self.planner is not None and not self.planner.ready:
            with self._cond:
                self._stats.skipped_no_task += 1
            return None
        model_image, transform = prepare_image(frame.image, size, cfg.resize)
        t_pred = time.perf_counter()
        plan = planned = None
        if self.planner is not None:
            plan = self.planner.plan(predictor, model_image, transform, cfg.seed)
            prediction = plan.prediction
            planned = np.asarray(plan.eta, dtype=np.float64)
            eta = planned
        else:
            cond = None if (eta is None or cond_dim == 0) else eta[None].astype(np.float32)
            prediction = predictor.predict(model_image[None], cond, num_samples=cfg.num_samples, seed=cfg.seed)
            if cond is None:
                eta = None
        predict_s = time.perf_counter() - t_pred
        grids = future_grids(prediction, 0, cfg.flow_vis_max)
        latency = self.clock() - (frame.received or t0)
        with self._cond:
            index = self._index
            self._index += 1
        return PipelineResult(
            frame=frame,
            model_image=model_image,
            transform=transform,
            prediction=prediction,
            grids=grids,
            eta=eta,
            latency_s=latency,
            predict_s=predict_s,
            index=index,
            planned_eta=planned,
            plan=plan,
        )

    def _take(self) -> Frame | None:
        """Wait for a frame and the rate limit; None when stopped."""
        period = 1.0 / self.config.rate_hz if self.config.rate_hz > 0 else 0.0
        with self._cond:
            while not self._stop:
                if self._slot is None or self.predictor is None:  # no frame yet, or the model is still loading
                    self._cond.wait(0.5)
                    continue
                if period and self._last_start is not None:
                    wait = self._last_start + period - self.clock()
                    if wait > 0:
                        self._cond.wait(min(wait, 0.5))
                        continue
                frame, self._slot = self._slot, None
                self._last_start = self.clock()
                return frame
        return None

    def _pause(self, seconds: float) -> None:
        deadline = self.clock() + seconds
        with self._cond:
            while not self._stop and self.clock() < deadline:
                self._cond.wait(max(0.0, min(deadline - self.clock(), 0.5)))

    def _run(self) -> None:
        while True:
            frame = self._take()
            if frame is None:
                return
            try:
                result = self.process(frame)
            except BadInput as e:  # the frame, not the model: refused and counted, no pause
                self._reject("rejected_images", str(e))
                continue
            except Exception as e:  # any predictor failure: count, report, go on
                with self._cond:
                    self._stats.failures += 1
                    self._stats.consecutive_failures += 1
                    self._stats.last_error = f"{type(e).__name__}: {e}"
                if self.on_error is not None:
                    try:
                        self.on_error(e, frame)
                    except Exception:  # a broken callback must not stop the worker
                        pass
                self._pause(self.config.retry_delay_s)
                continue
            if result is None:
                continue
            with self._cond:
                self._stats.predictions += 1
                self._stats.consecutive_failures = 0
                self._latencies.append(result.latency_s)
                self._predict_times.append(result.predict_s)
            if self.on_result is not None:
                try:
                    self.on_result(result)
                except Exception as e:
                    with self._cond:
                        self._stats.last_error = f"on_result: {type(e).__name__}: {e}"

    # ---------------------------------------------------------------------------------------------- statistics
    def stats(self) -> PipelineStats:
        with self._cond:
            s = PipelineStats(**self._stats.as_dict())
            lat = list(self._latencies)
            pred = list(self._predict_times)
            s.model_state, s.model_error = self._model_state, self._model_error
            loading = self._model_state == "loading" and self._load_started is not None
            s.model_load_s = self.clock() - self._load_started if loading else self._load_s
        if lat:
            s.latency_last, s.latency_mean, s.latency_max = lat[-1], float(np.mean(lat)), float(np.max(lat))
        if pred:
            s.predict_mean = float(np.mean(pred))
        s.running = self.running
        return s

    def diagnostics(self) -> tuple[int, str, dict[str, str]]:
        """(level, message, key/values) for a ``diagnostic_msgs/DiagnosticStatus``: ERROR when the model failed to
        load, the worker is not running or the last :data:`ERROR_AFTER_FAILURES` predictions failed; WARN while the
        model loads, after a failure, while every image so far was refused, or while frames arrive but wait for η /
        a planner task; else OK. Refused input never makes an ERROR: it is counted in ``rejected_images`` /
        ``eta_rejected`` / ``task_rejected``."""
        s = self.stats()
        values = {k: (f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in s.as_dict().items()}
        if s.model_state == "failed":
            return ERROR, f"the model failed to load: {s.model_error}", values
        if not s.running:
            return ERROR, "prediction worker is not running", values
        if s.model_state == "loading":
            return WARN, f"loading the model ({s.model_load_s:.0f} s so far); frames wait", values
        if s.consecutive_failures >= ERROR_AFTER_FAILURES:
            return ERROR, f"{s.consecutive_failures} predictions failed in a row: {s.last_error}", values
        if s.consecutive_failures:
            return WARN, f"last prediction failed: {s.last_error}", values
        if s.rejected_images and not s.predictions:
            return WARN, f"{s.rejected_images} camera image(s) refused, none used yet: {s.last_rejection}", values
        if s.received and not s.predictions and s.skipped_no_eta:
            return WARN, "frames arrive but no usable eta yet (require_eta)", values
        if s.received and not s.predictions and s.skipped_no_task:
            return WARN, "frames arrive but the planner has no task (designated and goal pixels)", values
        if not s.received:
            return OK, "waiting for camera frames", values
        return OK, f"{s.predictions} predictions, latency {s.latency_mean * 1e3:.0f} ms, {s.dropped} dropped", values

    def summary(self) -> str:
        """One log line of the statistics."""
        s = self.stats()
        lat = "n/a" if math.isnan(s.latency_mean) else f"{s.latency_mean * 1e3:.0f}/{s.latency_max * 1e3:.0f} ms"
        line = (
            f"frames {s.received}, predictions {s.predictions}, dropped {s.dropped}, failures {s.failures}, "
            f"latency mean/max {lat}, rejected images {s.rejected_images}, eta {s.eta_received} "
            f"({s.eta_rejected} refused), planner pixels {s.task_received} ({s.task_rejected} refused)"
        )
        if s.last_error and s.consecutive_failures:
            line += f"; last error: {s.last_error}"
        return line


# ----------------------------------------------------------------------------------------------------------------------
# from node parameters (the dicts of imagine_ros.node_params.validate)


def config_from_params(params: dict[str, Any]) -> PipelineConfig:
    """The :class:`PipelineConfig` of the prediction node's parameters."""
    return PipelineConfig(
        rate_hz=float(params["rate"]),
        num_samples=int(params["num_samples"]),
        seed=None if int(params["seed"]) < 0 else int(params["seed"]),
        resize=str(params["resize"]),
        eta_frame=str(params["eta_frame"]),
        eta_max_age_s=float(params["eta_max_age"]),
        require_eta=bool(params["require_eta"]),
        flow_vis_max=float(params["flow_vis_max"]),
    )


def planner_from_params(params: dict[str, Any]) -> PlannerHook | None:
    """A :class:`PlannerHook` when ``planner.enabled``, else None. Negative pixels mean "not set yet"."""
    if not params["planner.enabled"]:
        return None
    designated = [float(v) for v in params["planner.designated"]]
    goal = [float(v) for v in params["planner.goal"]]
    settings = PlannerSettings(
        samples=int(params["planner.samples"]),
        iterations=int(params["planner.iterations"]),
        elites=int(params["planner.elites"]),
        eta_low=tuple(params["planner.eta_low"]),
        eta_high=tuple(params["planner.eta_high"]),
        designated=None if min(designated) < 0 else (tuple(designated),),
        goal=None if min(goal) < 0 else tuple(goal),
        track=bool(params["planner.track"]),
    )
    return PlannerHook(settings, num_futures=int(params["num_samples"]))


def predictor_from_params(params: dict[str, Any]) -> Any:
    """The Predictor the parameters ask for: ``backend: local`` loads ``checkpoint`` on ``device``; ``backend: remote``
    connects a :class:`imagine_ros.serving.RemotePredictor` (lazily: nothing is sent before the first prediction)."""
    check_predictor_params(params)
    backend = params["backend"]
    if backend == "local":
        from imagine_ros.predictor import Predictor

        return Predictor.from_checkpoint(str(params["checkpoint"]).strip(), device=str(params["device"]))
    if backend == "remote":
        try:
            from imagine_ros.serving import RemotePredictor
        except ImportError as e:  # pragma: no cover - the serving package ships with imagine_ros
            raise ConfigError(f"backend 'remote' needs imagine_ros.serving, which cannot be imported: {e}") from None
        service = str(params["remote.service"]).strip()
        if not service:
            raise ConfigError("parameter 'remote.service' is required with backend 'remote' (the model's method name)")
        return RemotePredictor(
            str(params["remote.endpoint"]),
            service,
            timeout=float(params["remote.timeout"]),
            retries=int(params["remote.retries"]),
            curve=curve_keys_from_params(params),
        )
    raise ConfigError(f"parameter 'backend' must be local or remote, got {backend!r}")


def check_predictor_params(params: dict[str, Any]) -> None:
    """The quick checks of :func:`predictor_from_params` (no model is loaded): ``checkpoint`` given and present for
    ``backend: local``, ``remote.service`` given for ``backend: remote``; :class:`ConfigError` otherwise."""
    backend = params["backend"]
    if backend == "local":
        from pathlib import Path

        checkpoint = str(params["checkpoint"]).strip()
        if not checkpoint:
            raise ConfigError("parameter 'checkpoint' is required with backend 'local' (a NAME.json checkpoint file)")
        if not Path(checkpoint).with_suffix(".json").exists():
            raise ConfigError(f"parameter 'checkpoint': no checkpoint at {checkpoint} (NAME.json not found)")
    elif backend == "remote":
        if not str(params["remote.service"]).strip():
            raise ConfigError("parameter 'remote.service' is required with backend 'remote' (the model's method name)")
    else:
        raise ConfigError(f"parameter 'backend' must be local or remote, got {backend!r}")


def curve_keys_from_params(params: dict[str, Any]) -> Any:
    """CURVE client keys from ``remote.server_public_key`` / ``remote.client_secret_key`` (None: no encryption)."""
    server = str(params["remote.server_public_key"]).strip()
    client = str(params["remote.client_secret_key"]).strip()
    if not server:
        if client:
            raise ConfigError("parameter 'remote.client_secret_key' needs 'remote.server_public_key' as well")
        return None
    from imagine_ros.serving.curve import CurveClientKeys, load_public

    if client:
        return CurveClientKeys.from_files(client, server)
    import zmq

    public, secret = zmq.curve_keypair()
    return CurveClientKeys(public, secret, load_public(server))
