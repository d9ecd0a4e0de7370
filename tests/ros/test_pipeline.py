"""The prediction pipeline (plain Python, no rclpy) with real tiny Predictors: frames in, grids out; newest frame only;
rate limit; η; failures and recovery; parameters -> pipeline."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from imagine_ros import node_params, ros_msgs
from imagine_ros import pipeline as pl
from imagine_ros.errors import ConfigError
from imagine_ros.models import build
from imagine_ros.models.checkpoint import save_checkpoint
from imagine_ros.predictor import Predictor

ETA = np.array([0.52, -0.07, 0.13])
FRAME = "panda_link0"


@pytest.fixture(scope="module")
def copy_last() -> Predictor:
    return Predictor(build("copy_last", "tiny"), device="cpu")  # 16 px, horizon 3, no condition, zero flows


@pytest.fixture(scope="module")
def vd() -> Predictor:
    return Predictor(build("visual_dynamics", "tiny"), device="cpu")  # 16 px, horizon 3, condition_dim 3


def camera_image(h: int = 24, w: int = 32, value: int | None = None, seed: int = 0) -> np.ndarray:
    if value is not None:
        return np.full((h, w, 3), value, np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Collector:
    """on_result / on_error callbacks that keep what they got (and when)."""

    def __init__(self):
        self.results: list[pl.PipelineResult] = []
        self.errors: list[tuple[BaseException, pl.Frame]] = []
        self.times: list[float] = []
        self.lock = threading.Lock()

    def on_result(self, result):
        with self.lock:
            self.results.append(result)
            self.times.append(time.monotonic())

    def on_error(self, error, frame):
        with self.lock:
            self.errors.append((error, frame))


class SlowPredictor:
    """A real Predictor that takes ``delay`` seconds longer and records the first pixel of every input it got."""

    def __init__(self, inner: Predictor, delay: float):
        self.inner, self.delay = inner, delay
        self.image_size, self.horizon = inner.image_size, inner.horizon
        self.condition_dim, self.method = inner.condition_dim, inner.method
        self.seen: list[int] = []

    def predict(self, images, conditions=None, num_samples=1, seed=None):
        self.seen.append(int(images[0, 0, 0, 0]))
        time.sleep(self.delay)
        return self.inner.predict(images, conditions, num_samples, seed)


class FlakyPredictor(SlowPredictor):
    """Fails its first ``failures`` calls like an unreachable server, then works."""

    def __init__(self, inner: Predictor, failures: int):
        super().__init__(inner, 0.0)
        self.failures = failures

    def predict(self, images, conditions=None, num_samples=1, seed=None):
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("server did not answer")
        return super().predict(images, conditions, num_samples, seed)


# ----------------------------------------------------------------------------------------------------------------------
# pure functions


def test_prepare_image_crop_stretch_exact():
    img = np.zeros((30, 50, 3), np.uint8)
    img[:, 10:40] = 200  # the centred 30x30 square
    out, tr = pl.prepare_image(img, 16, "crop")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.all(out == 200), "crop must keep exactly the centred square"
    assert tr.offset == (10.0, 0.0) and tr.scale == (16 / 30, 16 / 30)
    out, tr = pl.prepare_image(img, 16, "stretch")
    assert out.shape == (16, 16, 3) and (out == 0).any() and (out == 200).any()
    assert tr.offset == (0.0, 0.0) and tr.scale == (16 / 50, 16 / 30)
    # pixel centres: the camera image centre maps to the model image centre, and back
    for mode in ("crop", "stretch"):
        _, tr = pl.prepare_image(img, 16, mode)
        np.testing.assert_allclose(tr.to_model([24.5, 14.5]), [7.5, 7.5])
        pts = np.array([[0.0, 0.0], [49.0, 29.0], [13.2, 7.7]])
        np.testing.assert_allclose(tr.to_camera(tr.to_model(pts)), pts, atol=1e-9)
    same = camera_image(16, 16)
    out, tr = pl.prepare_image(same, 16, "exact")
    np.testing.assert_array_equal(out, same)
    with pytest.raises(ValueError, match="resize=exact: the image must be 16x16 pixels, got 50x30"):
        pl.prepare_image(img, 16, "exact")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        pl.prepare_image(img.astype(np.float32), 16)
    big = pl.prepare_image(camera_image(8, 12), 16, "crop")[0]  # enlarging works too
    assert big.shape == (16, 16, 3)


def test_grid_layout_and_split():
    tiles = np.arange(2 * 3 * 4 * 5 * 2, dtype=np.float32).reshape(2, 3, 4, 5, 2)
    g = pl.grid(tiles)
    assert g.shape == (8, 15, 2)
    for r in range(2):
        for c in range(3):
            np.testing.assert_array_equal(g[r * 4 : (r + 1) * 4, c * 5 : (c + 1) * 5], tiles[r, c])
    np.testing.assert_array_equal(pl.split_grid(g, 2, 3), tiles)
    with pytest.raises(ValueError, match="cannot be split into 3 rows"):
        pl.split_grid(g, 3, 3)


def test_config_is_validated():
    for bad in (dict(rate_hz=-1.0), dict(num_samples=0), dict(resize="pad"), dict(seed=-3), dict(eta_max_age_s=-1)):
        with pytest.raises(ConfigError):
            pl.PipelineConfig(**bad)


# ----------------------------------------------------------------------------------------------------------------------
# the pipeline with real predictors


def test_frames_in_grids_out(copy_last):
    got = Collector()
    cfg = pl.PipelineConfig(rate_hz=0, num_samples=4)
    img = camera_image(24, 32, seed=1)
    with pl.PredictionPipeline(copy_last, cfg, on_result=got.on_result) as pipe:
        header = object()
        pipe.submit(img, stamp_ns=123, frame_id="camera", header=header)
        wait_until(lambda: got.results, what="a result")
    r = got.results[0]
    assert r.frame.header is header and r.frame.stamp_ns == 123 and r.frame.frame_id == "camera"
    g = r.grids
    assert (g.rows, g.cols, g.tile) == (4, 3, (16, 16))
    assert g.frames.shape == (64, 48, 3) and g.frames.dtype == np.uint8
    assert g.flows.shape == (64, 48, 2) and g.flows.dtype == np.float32
    assert g.flow_vis.shape == (64, 48, 3) and g.flow_vis.dtype == np.uint8
    expected_input = pl.prepare_image(img, 16, "crop")[0]
    np.testing.assert_array_equal(r.model_image, expected_input)
    tiles = pl.split_grid(g.frames, 4, 3)
    for n in range(4):
        for t in range(3):
            np.testing.assert_array_equal(tiles[n, t], expected_input)  # copy_last: every future is the input
    assert not g.flows.any()
    assert r.eta is None and r.planned_eta is None
    s = pipe.stats()
    assert (s.received, s.predictions, s.dropped, s.failures) == (1, 1, 0, 0)
    assert s.latency_last >= s.predict_mean * 0.5 and s.latency_last > 0
    assert not s.running


def test_eta_is_applied_and_grids_match_a_direct_prediction(vd):
    got = Collector()
    cfg = pl.PipelineConfig(rate_hz=0, num_samples=2, seed=7, eta_frame=FRAME)
    img = camera_image(40, 40, seed=2)
    with pl.PredictionPipeline(vd, cfg, on_result=got.on_result) as pipe:
        pipe.submit(img)
        wait_until(lambda: len(got.results) == 1)
        assert pipe.set_eta(ETA, FRAME)
        assert pipe.set_eta(ETA + 0.05, FRAME)  # the latest one counts
        pipe.submit(img)
        wait_until(lambda: len(got.results) == 2)
    unconditioned, conditioned = got.results
    assert unconditioned.eta is None and unconditioned.prediction.condition is None
    np.testing.assert_allclose(conditioned.eta, ETA + 0.05)
    np.testing.assert_allclose(conditioned.prediction.condition, (ETA + 0.05)[None].astype(np.float32))
    model_image = pl.prepare_image(img, 16, "crop")[0]
    direct = vd.predict(model_image[None], (ETA + 0.05)[None], num_samples=2, seed=7)
    np.testing.assert_array_equal(conditioned.grids.frames, pl.grid(direct.frames[0]))
    np.testing.assert_array_equal(conditioned.grids.flows, pl.grid(direct.flows[0]))
    assert pipe.stats().eta_received == 2


def test_eta_frame_is_checked_and_eta_expires(vd):
    now = [100.0]
    cfg = pl.PipelineConfig(eta_frame=FRAME, eta_max_age_s=2.0, require_eta=True)
    pipe = pl.PredictionPipeline(vd, cfg, clock=lambda: now[0])
    assert not pipe.set_eta(ETA, "camera")
    assert "eta_frame is 'panda_link0'" in pipe.eta_rejection_reason("camera")
    assert not pipe.set_eta([0.1, np.nan, 0.2], FRAME)
    assert pipe.current_eta() is None
    assert pipe.set_eta(ETA, FRAME)
    now[0] += 1.9
    np.testing.assert_array_equal(pipe.current_eta(), ETA)
    now[0] += 0.2
    assert pipe.current_eta() is None, "eta older than eta_max_age must not be used"
    # require_eta: the frame is skipped (and counted), nothing is predicted
    assert pipe.process(pl.Frame(camera_image(16, 16), received=now[0])) is None
    s = pipe.stats()
    assert (s.eta_received, s.eta_rejected, s.skipped_no_eta) == (3, 2, 1)
    level, message, _ = pipe.diagnostics()
    assert level == pl.ERROR and "not running" in message  # never started
    # any frame is accepted when eta_frame is empty
    anyframe = pl.PredictionPipeline(vd, pl.PipelineConfig(eta_frame=""))
    assert anyframe.set_eta(ETA, "whatever")


def test_model_without_condition_ignores_eta(copy_last):
    pipe = pl.PredictionPipeline(copy_last, pl.PipelineConfig(num_samples=1))
    assert pipe.set_eta(ETA, "")
    r = pipe.process(pl.Frame(camera_image(16, 16)))
    assert r.eta is None and r.prediction.condition is None


def test_slow_predictor_does_not_block_input_and_stale_frames_are_dropped(copy_last):
    slow = SlowPredictor(copy_last, delay=0.4)
    got = Collector()
    with pl.PredictionPipeline(slow, pl.PipelineConfig(rate_hz=0, num_samples=1), on_result=got.on_result) as pipe:
        submit_times = []
        for i in range(10):
            t0 = time.perf_counter()
            pipe.submit(camera_image(16, 16, value=10 + i))
            submit_times.append(time.perf_counter() - t0)
            time.sleep(0.02)
        assert max(submit_times) < 0.05, f"submit waited for the model: {max(submit_times):.3f} s"
        wait_until(lambda: len(got.results) == 2, what="the first and the newest frame")
        time.sleep(0.1)
    # frame 10 was taken at once; while it ran, frames 11..19 arrived and only the newest (19) was kept
    assert slow.seen == [10, 19]
    assert [int(r.model_image[0, 0, 0]) for r in got.results] == [10, 19]
    s = pipe.stats()
    assert (s.received, s.predictions, s.dropped) == (10, 2, 8)
    assert s.received == s.predictions + s.dropped


def test_rate_limit(copy_last):
    got = Collector()
    rate = 5.0
    cfg = pl.PipelineConfig(rate_hz=rate, num_samples=1)
    with pl.PredictionPipeline(copy_last, cfg, on_result=got.on_result) as pipe:
        t_end = time.monotonic() + 1.3
        i = 0
        while time.monotonic() < t_end:  # a 100 Hz camera
            pipe.submit(camera_image(16, 16, value=i % 256))
            i += 1
            time.sleep(0.01)
        time.sleep(0.05)
    n = len(got.results)
    assert 3 <= n <= int(1.3 * rate) + 2, f"{n} predictions in 1.3 s at {rate} Hz"
    gaps = np.diff(got.times)
    assert gaps.min() >= 1 / rate - 0.03, f"predictions closer than 1/rate: {gaps.min():.3f} s"
    s = pipe.stats()
    assert s.received == i and s.dropped >= i - n - 1


def test_failures_are_counted_and_the_pipeline_recovers(copy_last):
    flaky = FlakyPredictor(copy_last, failures=3)
    got = Collector()
    cfg = pl.PipelineConfig(rate_hz=0, num_samples=1, retry_delay_s=0.02)
    levels = []
    with pl.PredictionPipeline(flaky, cfg, on_result=got.on_result, on_error=got.on_error) as pipe:
        for i in range(3):
            pipe.submit(camera_image(16, 16, value=i))
            wait_until(lambda i=i: len(got.errors) == i + 1, what=f"failure {i + 1}")
            wait_until(lambda i=i: pipe.stats().failures == i + 1)
            levels.append(pipe.diagnostics()[0])
        s = pipe.stats()
        assert (s.failures, s.consecutive_failures) == (3, 3)
        assert s.last_error == "RuntimeError: server did not answer"
        assert "3 predictions failed in a row" in pipe.diagnostics()[1]
        assert pipe.running, "a failure must not stop the worker"
        pipe.submit(camera_image(16, 16, value=99))
        wait_until(lambda: got.results, what="recovery")
        s = pipe.stats()
        level, message, values = pipe.diagnostics()
    assert levels == [pl.WARN, pl.WARN, pl.ERROR]
    assert (s.failures, s.consecutive_failures, s.predictions) == (3, 0, 1)
    assert level == pl.OK and "1 predictions" in message and values["failures"] == "3"
    assert [int(f.image[0, 0, 0]) for _, f in got.errors] == [0, 1, 2]
    assert int(got.results[0].model_image[0, 0, 0]) == 99
    assert "failures 3" in pipe.summary()


def test_wrong_condition_size_is_a_counted_failure():
    model = Predictor(build("visual_dynamics", "tiny", condition_dim=2), device="cpu")
    got = Collector()
    with pl.PredictionPipeline(model, pl.PipelineConfig(rate_hz=0), on_error=got.on_error) as pipe:
        pipe.submit(camera_image(16, 16))
        wait_until(lambda: got.errors)
    assert isinstance(got.errors[0][0], ConfigError)
    assert "2-D condition" in pipe.stats().last_error


def test_submit_messages_from_real_cdr_bytes(copy_last):
    ts = ros_msgs.get_typestore("humble")
    rgb = camera_image(20, 30, seed=5)
    got = Collector()
    with pl.PredictionPipeline(copy_last, pl.PipelineConfig(rate_hz=0, num_samples=1), on_result=got.on_result) as pipe:
        for encoding, array in [("bgr8", rgb[..., ::-1]), ("rgb8", rgb)]:
            msg = ros_msgs.image_to_msg(np.ascontiguousarray(array), encoding, 1_700_000_000_123, "camera", ts)
            msg = ros_msgs.cdr_to_msg(ros_msgs.msg_to_cdr(msg, ts), ros_msgs.IMAGE, ts)
            before = len(got.results)
            pipe.submit_msg(msg)
            wait_until(lambda before=before: len(got.results) == before + 1)
            r = got.results[-1]
            np.testing.assert_array_equal(r.frame.image, rgb)
            assert r.frame.stamp_ns == 1_700_000_000_123 and r.frame.frame_id == "camera"
            assert r.frame.header is msg.header
        depth = ros_msgs.image_to_msg(np.zeros((4, 4), np.float32), "32FC1", 0, "", ts)
        with pytest.raises(ros_msgs.UnsupportedEncoding, match="'32FC1' is not accepted; expected one of rgb8"):
            pipe.submit_msg(depth)
        with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
            pipe.submit(np.zeros((4, 4), np.uint8))
        assert pipe.stats().rejected_images == 2
        assert pipe.stats().received == 2


# ----------------------------------------------------------------------------------------------------------------------
# node parameters -> pipeline


def test_parameters_are_validated():
    p = node_params.validate(node_params.PREDICTION_PARAMS, {})
    assert p == node_params.defaults(node_params.PREDICTION_PARAMS)
    for bad, match in [
        ({"backend": "gpu"}, "'backend': expected one of local, remote"),
        ({"rate": -1.0}, r"'rate': expected a value in \[0, 1000\]"),
        ({"num_samples": 2.0}, "'num_samples': expected an integer"),
        ({"num_samples": True}, "'num_samples': expected an integer"),
        ({"planner.eta_low": [0.1, 0.2]}, "'planner.eta_low': expected 3 numbers"),
        ({"require_eta": 1}, "'require_eta': expected true or false"),
        ({"no_such": 1}, "unknown parameter"),
    ]:
        with pytest.raises(ConfigError, match=match):
            node_params.validate(node_params.PREDICTION_PARAMS, bad)
    assert node_params.validate(node_params.PREDICTION_PARAMS, {"rate": 3})["rate"] == 3.0
    names = [q.name for q in node_params.PREDICTION_PARAMS + node_params.SIM_PARAMS]
    assert all(q.description for q in node_params.PREDICTION_PARAMS + node_params.SIM_PARAMS)
    assert len(set(q.name for q in node_params.PREDICTION_PARAMS)) == len(node_params.PREDICTION_PARAMS)
    assert "checkpoint" in names


def test_pipeline_from_parameters(tmp_path):
    save_checkpoint(tmp_path / "vd", build("visual_dynamics", "tiny"))
    values = {"checkpoint": str(tmp_path / "vd.json"), "device": "cpu", "seed": 3, "rate": 0.0, "resize": "stretch"}
    p = node_params.validate(node_params.PREDICTION_PARAMS, values)
    cfg = pl.config_from_params(p)
    assert (cfg.seed, cfg.rate_hz, cfg.resize, cfg.num_samples, cfg.eta_frame) == (3, 0.0, "stretch", 4, FRAME)
    assert pl.config_from_params(node_params.validate(node_params.PREDICTION_PARAMS, {})).seed is None
    predictor = pl.predictor_from_params(p)
    assert isinstance(predictor, Predictor) and predictor.method == "visual_dynamics"
    r = pl.PredictionPipeline(predictor, cfg).process(pl.Frame(camera_image(20, 40)))
    assert r.grids.frames.shape == (4 * 16, 3 * 16, 3)
    assert pl.planner_from_params(p) is None

    def params(**kw):
        return node_params.validate(node_params.PREDICTION_PARAMS, kw)

    with pytest.raises(ConfigError, match="'checkpoint' is required"):
        pl.predictor_from_params(params())
    with pytest.raises(ConfigError, match="no checkpoint at"):
        pl.predictor_from_params(params(checkpoint=str(tmp_path / "missing.json")))
    with pytest.raises(ConfigError, match="'remote.service' is required"):
        pl.predictor_from_params(params(backend="remote"))
    with pytest.raises(ConfigError, match="needs 'remote.server_public_key'"):
        pl.curve_keys_from_params(params(**{"remote.client_secret_key": "x.key_secret"}))
    assert pl.curve_keys_from_params(params()) is None
    hook = pl.planner_from_params(params(**{"planner.enabled": True, "planner.goal": [10.0, 12.0]}))
    assert hook is not None and not hook.ready and hook.num_futures == 4
    hook.set_designated([3.0, 4.0])
    assert hook.ready
    np.testing.assert_array_equal(hook.designated, [[3.0, 4.0]])
    with pytest.raises(ConfigError, match="eta_low <= eta_high"):
        pl.planner_from_params(params(**{"planner.enabled": True, "planner.eta_low": [1.0, 0.0, 0.0]}))
    # equal bounds fix an axis: planning in the table plane at the pushing height, as the demo does
    flat = {"planner.enabled": True, "planner.goal": [10.0, 12.0], "planner.eta_high": [0.75, 0.2, 0.0]}
    assert pl.planner_from_params(params(**flat)) is not None


def test_planner_waits_for_a_task(copy_last):
    hook = pl.PlannerHook(pl.PlannerSettings(), num_futures=2)
    pipe = pl.PredictionPipeline(copy_last, pl.PipelineConfig(), planner=hook)
    assert pipe.process(pl.Frame(camera_image(16, 16))) is None
    assert pipe.stats().skipped_no_task == 1


def test_planner_hook_plans_eta_and_tracks_the_designated_pixel(vd):
    pytest.importorskip("imagine_ros.planning", reason="imagine_ros.planning is not available")
    settings = pl.PlannerSettings(
        samples=8, iterations=2, elites=2, designated=((20.0, 12.0),), goal=(12.0, 12.0), track=True
    )
    hook = pl.PlannerHook(settings, num_futures=2)
    got = Collector()
    cfg = pl.PipelineConfig(rate_hz=0, num_samples=2, seed=4)
    camera = camera_image(24, 32, seed=9)
    with pl.PredictionPipeline(vd, cfg, on_result=got.on_result, planner=hook) as pipe:
        pipe.submit(camera, stamp_ns=5)
        wait_until(lambda: got.results, what="a plan")
    r = got.results[0]
    low, high = np.array(settings.eta_low), np.array(settings.eta_high)
    assert r.planned_eta.shape == (3,) and np.all(r.planned_eta >= low - 1e-6) and np.all(r.planned_eta <= high + 1e-6)
    np.testing.assert_array_equal(r.eta, r.planned_eta)
    assert r.plan is not None and r.prediction is r.plan.prediction
    assert r.grids.rows == r.prediction.num_samples and r.grids.cols == vd.horizon
    np.testing.assert_allclose(r.prediction.condition[0], r.planned_eta, rtol=1e-6)  # the futures of the chosen eta
    # the designated pixel moves to the plan's expectation, converted back to camera pixels
    expected = r.transform.to_camera(np.asarray(r.plan.designated_next, np.float64))
    np.testing.assert_allclose(hook.designated, expected)
    # the same plan again, directly: the pipeline passed the task in model pixels (crop of the 24x32 camera image)
    from imagine_ros.planning import CEMPlanner, PlannerConfig

    planner = CEMPlanner(vd, PlannerConfig(samples=8, iterations=2, elites=2, num_futures=2), low, high)
    direct = planner.plan(
        r.model_image, r.transform.to_model([[20.0, 12.0]]), r.transform.to_model([12.0, 12.0]), seed=4
    )
    np.testing.assert_allclose(direct.eta, r.planned_eta, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# bad input: refused, counted in the rejected counters, never a model failure


def _image_cdr(ts, height: int, width: int, data: bytes, sec: int = 1_700_000_000, nanosec: int = 0) -> bytes:
    """The CDR bytes of a rgb8 Image with these fields, built field by field (rosbags' own message class)."""
    types = ts.types
    header = types[ros_msgs.HEADER](stamp=types[ros_msgs.TIME](sec=sec, nanosec=nanosec), frame_id="camera")
    msg = types[ros_msgs.IMAGE](
        header=header, height=height, width=width, encoding="rgb8", is_bigendian=0, step=3 * width,
        data=np.frombuffer(data, np.uint8),
    )  # fmt: skip
    return ros_msgs.msg_to_cdr(msg, ts)


def _assert_refused_not_failed(pipe, got, rejected: int, counter: str = "rejected_images") -> None:
    s = pipe.stats()
    assert getattr(s, counter) == rejected, s
    assert (s.failures, s.consecutive_failures, s.last_error) == (0, 0, ""), s
    assert not got.errors, "bad input must not reach on_error (a model failure)"
    level, _, values = pipe.diagnostics()
    assert level != pl.ERROR and values[counter] == str(rejected) and values["failures"] == "0"


@pytest.mark.parametrize(
    ("height", "width", "nanosec", "match"),
    [
        (0, 0, 0, "at least one pixel"),
        (0, 8, 0, "at least one pixel"),
        (6, 0, 0, "at least one pixel"),
        (6, 8, 1_000_000_000, r"nanosec must be in \[0, 1e9\)"),
        (6, 8, 4_294_967_295, r"nanosec must be in \[0, 1e9\)"),
    ],
)
def test_bad_camera_messages_are_refused_and_counted(copy_last, height, width, nanosec, match):
    ts = ros_msgs.get_typestore("humble")
    data = bytes(range(256)) * (height * width * 3 // 256 + 1)
    cdr = _image_cdr(ts, height, width, data[: height * width * 3], nanosec=nanosec)
    msg = ros_msgs.cdr_to_msg(cdr, ros_msgs.IMAGE, ts)
    assert (msg.height, msg.width, msg.header.stamp.nanosec) == (height, width, nanosec)  # what the wire carried
    got = Collector()
    cfg = pl.PipelineConfig(rate_hz=0, num_samples=1)
    with pl.PredictionPipeline(copy_last, cfg, on_result=got.on_result, on_error=got.on_error) as pipe:
        for _ in range(3):
            with pytest.raises(pl.BadInput, match=match):
                pipe.submit_msg(msg)
        _assert_refused_not_failed(pipe, got, 3)
        assert pipe.stats().received == 0 and re.search(match, pipe.stats().last_rejection)
        assert "camera image(s) refused" in pipe.diagnostics()[1]
        good = ros_msgs.cdr_to_msg(_image_cdr(ts, 16, 16, bytes(16 * 16 * 3)), ros_msgs.IMAGE, ts)
        pipe.submit_msg(good)  # the pipeline goes on with good frames
        wait_until(lambda: got.results, what="a prediction after bad input")
    assert pipe.stats().predictions == 1 and pipe.stats().failures == 0


def test_resize_exact_size_mismatch_is_refused_not_a_failure(copy_last):
    """resize=exact: a wrong-size frame is refused by the worker before the model is called (the size is not known
    before the first frame), and at submit from then on; neither is a failure, good frames go on."""
    ts = ros_msgs.get_typestore("jazzy")
    got = Collector()
    calls = SlowPredictor(copy_last, 0.0)
    cfg = pl.PipelineConfig(rate_hz=0, num_samples=1, resize="exact")
    wrong = ros_msgs.cdr_to_msg(_image_cdr(ts, 20, 24, bytes(20 * 24 * 3)), ros_msgs.IMAGE, ts)
    right = ros_msgs.cdr_to_msg(_image_cdr(ts, 16, 16, bytes(16 * 16 * 3)), ros_msgs.IMAGE, ts)
    with pl.PredictionPipeline(calls, cfg, on_result=got.on_result, on_error=got.on_error) as pipe:
        pipe.submit_msg(wrong)  # accepted into the slot: the model's size is not known yet
        wait_until(lambda: pipe.stats().rejected_images == 1, what="the worker's refusal")
        _assert_refused_not_failed(pipe, got, 1)
        assert "resize=exact: the image must be 16x16 pixels, got 24x20" in pipe.stats().last_rejection
        assert calls.seen == [], "the model must not be called for a refused frame"
        with pytest.raises(pl.BadInput, match="resize=exact: the image must be 16x16"):
            pipe.submit_msg(wrong)  # now known: refused at once, the slot keeps its frame
        _assert_refused_not_failed(pipe, got, 2)
        pipe.submit_msg(right)
        wait_until(lambda: got.results, what="a prediction of the right size")
        _assert_refused_not_failed(pipe, got, 2)
    assert len(calls.seen) == 1 and pipe.stats().predictions == 1


@pytest.mark.parametrize("kind", ["designated", "goal"])
@pytest.mark.parametrize("xy", [(float("nan"), 10.0), (10.0, float("inf")), (float("-inf"), float("nan"))])
def test_non_finite_planner_pixels_are_refused_and_counted(copy_last, kind, xy):
    ts = ros_msgs.get_typestore("humble")
    msg = ros_msgs.point_stamped_msg([xy[0], xy[1], 0.0], 5, "camera_pixels", ts)
    msg = ros_msgs.cdr_to_msg(ros_msgs.msg_to_cdr(msg, ts), ros_msgs.POINT_STAMPED, ts)
    hook = pl.PlannerHook(pl.PlannerSettings(designated=((3.0, 4.0),), goal=(8.0, 9.0)), num_futures=1)
    got = Collector()
    pipe = pl.PredictionPipeline(copy_last, pl.PipelineConfig(rate_hz=0), on_error=got.on_error, planner=hook)
    with pipe:
        assert pipe.set_task_pixel_msg(kind, msg) is False
        assert pipe.set_task_pixel_msg(kind, msg) is False
        _assert_refused_not_failed(pipe, got, 2, "task_rejected")
    assert pipe.stats().task_received == 2 and "must be finite" in pipe.stats().last_rejection
    np.testing.assert_array_equal(hook.designated, [[3.0, 4.0]])  # the task it had is kept
    assert hook.ready
    fine = ros_msgs.point_stamped_msg([12.0, 7.5, 0.0], 5, "camera_pixels", ts)
    assert pipe.set_task_pixel_msg(kind, fine) is True and pipe.stats().task_rejected == 2
    with pytest.raises(pl.BadInput, match="must be finite"):
        hook.set_goal([float("nan"), 1.0])


def test_planner_pixels_without_a_planner_are_refused(copy_last):
    pipe = pl.PredictionPipeline(copy_last, pl.PipelineConfig())
    assert pipe.set_task_pixel("goal", [1.0, 2.0]) is False
    assert pipe.stats().task_rejected == 1 and "planner is off" in pipe.stats().last_rejection
    assert pipe.stats().failures == 0


def test_planner_pixels_must_come_in_a_pixel_frame(copy_last):
    """A PointStamped in a frame of metres (the robot base, the camera's optical frame) is not a pixel: refused."""
    ts = ros_msgs.get_typestore("jazzy")
    hook = pl.PlannerHook(pl.PlannerSettings(), num_futures=1)
    pipe = pl.PredictionPipeline(copy_last, pl.PipelineConfig(), planner=hook)
    for frame in ("panda_link0", "camera_optical_frame", ""):
        msg = ros_msgs.cdr_to_msg(
            ros_msgs.msg_to_cdr(ros_msgs.point_stamped_msg([0.5, 0.1, 0.0], 0, frame, ts), ts),
            ros_msgs.POINT_STAMPED,
            ts,
        )
        assert pipe.set_task_pixel_msg("designated", msg) is False
        assert f"frame {frame!r} refused" in pipe.stats().last_rejection
    assert pipe.stats().task_rejected == 3 and hook.designated is None
    for kind, xy in (("designated", [20.0, 14.0]), ("goal", [30.0, 8.0])):
        assert pipe.set_task_pixel_msg(kind, ros_msgs.point_stamped_msg([*xy, 0.0], 0, "camera_pixels", ts))
    assert hook.ready and pipe.stats().task_rejected == 3 and pipe.stats().failures == 0


# ----------------------------------------------------------------------------------------------------------------------
# loading in the background and shutting down in time


class ClosablePredictor(SlowPredictor):
    """A real Predictor that records ``close`` and can be made to hang in ``predict`` until released."""

    def __init__(self, inner: Predictor, hang: threading.Event | None = None):
        super().__init__(inner, 0.0)
        self.hang, self.closed, self.close_calls, self.predict_calls = hang, False, 0, 0

    def predict(self, images, conditions=None, num_samples=1, seed=None):
        self.predict_calls += 1
        if self.hang is not None:
            self.hang.wait()
        return super().predict(images, conditions, num_samples, seed)

    def close(self):
        self.closed = True
        self.close_calls += 1


def test_the_model_loads_in_the_background_while_frames_wait(copy_last):
    release = threading.Event()
    loaded = []

    def factory():
        release.wait(20)  # a slow checkpoint load
        return copy_last

    got = Collector()
    cfg = pl.PipelineConfig(rate_hz=0, num_samples=1)
    with pl.PredictionPipeline(None, cfg, on_result=got.on_result, on_error=got.on_error) as pipe:
        t0 = time.monotonic()
        pipe.load_async(factory, on_loaded=loaded.append)
        assert time.monotonic() - t0 < 0.5, "load_async must not wait for the model"
        for value in (10, 20, 30):
            pipe.submit(camera_image(16, 16, value=value))
        time.sleep(0.2)
        s = pipe.stats()
        assert (s.model_state, s.predictions, s.failures, s.dropped) == ("loading", 0, 0, 2)
        level, message, values = pipe.diagnostics()
        assert level == pl.WARN and message.startswith("loading the model") and values["model_state"] == "loading"
        release.set()
        wait_until(lambda: got.results, what="the first prediction after loading")
        assert loaded == [copy_last] and pipe.predictor is copy_last
        assert int(got.results[0].model_image[0, 0, 0]) == 30, "the newest waiting frame is predicted"
        s = pipe.stats()
        assert s.model_state == "ready" and s.model_load_s >= 0.2 and pipe.diagnostics()[0] == pl.OK
    assert not got.errors


def test_a_model_that_fails_to_load_is_an_error_state_not_a_prediction_failure():
    failed = []

    def factory():
        raise FileNotFoundError("vd.safetensors")

    with pl.PredictionPipeline(None, pl.PipelineConfig(rate_hz=0)) as pipe:
        pipe.load_async(factory, on_failed=failed.append).join(5)
        pipe.submit(camera_image(16, 16))
        s = pipe.stats()
        level, message, _ = pipe.diagnostics()
    assert isinstance(failed[0], FileNotFoundError)
    assert (s.model_state, s.model_error) == ("failed", "FileNotFoundError: vd.safetensors")
    assert (s.failures, s.predictions) == (0, 0)
    assert level == pl.ERROR and message == "the model failed to load: FileNotFoundError: vd.safetensors"


def test_shutdown_is_bounded_with_a_hung_prediction_or_a_load_in_progress(copy_last):
    """stop(timeout) returns in about ``timeout`` even while a prediction hangs (a remote server gone quiet) or the
    model is still loading; a model that arrives after stop is closed. The node's bound is STOP_WAIT_S < 5 s."""
    hang = threading.Event()
    hung = ClosablePredictor(copy_last, hang)
    pipe = pl.PredictionPipeline(hung, pl.PipelineConfig(rate_hz=0)).start()
    pipe.submit(camera_image(16, 16))
    time.sleep(0.1)
    t0 = time.monotonic()
    pipe.stop(timeout=1.0)
    assert time.monotonic() - t0 < 1.5 and pipe.running  # still in predict: left to the process exit
    hang.set()
    wait_until(lambda: not pipe.running, what="the worker to end after its prediction")

    release = threading.Event()
    late = ClosablePredictor(copy_last)
    pipe = pl.PredictionPipeline(None, pl.PipelineConfig(rate_hz=0)).start()
    thread = pipe.load_async(lambda: (release.wait(20), late)[1])
    t0 = time.monotonic()
    pipe.stop(timeout=1.0)
    assert time.monotonic() - t0 < 1.0 and not pipe.running, "stop must not wait for a load"
    release.set()
    thread.join(5)
    assert late.closed and pipe.predictor is None


def test_a_stop_between_load_and_install_closes_the_late_predictor_once(copy_last):
    """stop() (and the node's destroy_node, which then closes ``pipeline.predictor``) lands after the factory returned
    but before the predictor is installed: the install is refused, the load thread closes the predictor exactly once
    and the pipeline never predicts with it. The gap is held open with events, so the interleaving is certain."""
    in_gap, proceed = threading.Event(), threading.Event()

    class GapPipeline(pl.PredictionPipeline):
        def set_predictor(self, predictor):
            if threading.current_thread().name == "imagine-model-load":
                in_gap.set()  # the factory has returned; the stop happens now, before the install
                assert proceed.wait(10)
            return super().set_predictor(predictor)

    late = ClosablePredictor(copy_last)
    loaded, failed = [], []
    pipe = GapPipeline(None, pl.PipelineConfig(rate_hz=0)).start()
    pipe.submit(camera_image(16, 16))  # a frame waits for the model
    thread = pipe.load_async(lambda: late, on_loaded=loaded.append, on_failed=failed.append)
    assert in_gap.wait(10)
    pipe.stop(timeout=1.0)
    seen_by_destroy = pipe.predictor  # what destroy_node would close: nothing yet
    proceed.set()
    thread.join(5)
    assert not thread.is_alive() and seen_by_destroy is None
    assert late.close_calls == 1 and pipe.predictor is None and late.predict_calls == 0
    assert loaded == [] and failed == [] and pipe.stats().predictions == 0
    assert pipe.set_predictor(late) is False and pipe.predictor is None  # still refused while stopped

    # the other order: installed before stop, so the owner (destroy_node) closes it and the load thread does not
    pipe = pl.PredictionPipeline(None, pl.PipelineConfig(rate_hz=0)).start()
    early = ClosablePredictor(copy_last)
    pipe.load_async(lambda: early, on_loaded=loaded.append).join(5)
    pipe.stop(timeout=1.0)
    assert pipe.predictor is early and loaded == [early] and early.close_calls == 0


def test_node_shutdown_bound_and_quick_parameter_checks(tmp_path):
    import ast

    from imagine_ros.node_params import PREDICTION_PARAMS, validate

    tree = ast.parse((Path(__file__).parents[2] / "imagine_ros" / "ros" / "prediction_node.py").read_text())
    stop = next(n for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "STOP_WAIT_S")
    assert 0 < ast.literal_eval(stop.value) < 5, "ros2 launch sends SIGTERM 5 s after SIGINT"
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "self.pipeline.load_async" in calls and "pl.predictor_from_params" not in calls  # never in __init__
    with pytest.raises(ConfigError, match="no checkpoint at"):
        pl.check_predictor_params(validate(PREDICTION_PARAMS, {"checkpoint": str(tmp_path / "none.json")}))
    with pytest.raises(ConfigError, match="'remote.service' is required"):
        pl.check_predictor_params(validate(PREDICTION_PARAMS, {"backend": "remote"}))
