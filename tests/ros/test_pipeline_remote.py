"""The prediction pipeline with a real RemotePredictor against a real broker and worker on 127.0.0.1: the same grids
as in process, and a server that goes away is counted as failures and recovered from without a restart."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from imagine_ros import pipeline as pl
from imagine_ros.models import build
from imagine_ros.models.checkpoint import save_checkpoint
from imagine_ros.predictor import Predictor

pytestmark = pytest.mark.slow  # end to end

cluster_module = pytest.importorskip("imagine_ros.serving.cluster", reason="imagine_ros.serving is not available")
serving = pytest.importorskip("imagine_ros.serving", reason="imagine_ros.serving is not available")

HB = 0.2  # heartbeat interval (s) of broker and worker
ETA = np.array([0.55, 0.05, 0.12])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("remote")
    save_checkpoint(d / "vd", build("visual_dynamics", "tiny"))
    with cluster_module.LocalCluster(
        d / "vd.json",
        workers=1,
        device="cpu",
        max_batch=2,
        heartbeat_interval=HB,
        liveness=3,
        request_timeout=1.5,  # requests for a service without workers expire quickly (an error reply)
        threads=1,
        startup_timeout=120,
        log_dir=d / "logs",
    ) as c:
        yield c, d / "vd.json"


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_remote_pipeline_gives_the_local_grids(cluster):
    c, ckpt = cluster
    results = []
    done = threading.Event()

    def on_result(r):
        results.append(r)
        done.set()

    remote = serving.RemotePredictor(c.endpoint, c.service, timeout=20.0, retries=2)
    cfg = pl.PipelineConfig(rate_hz=0, num_samples=3, seed=11, eta_frame="panda_link0")
    camera = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    try:
        with pl.PredictionPipeline(remote, cfg, on_result=on_result) as pipe:
            assert pipe.set_eta(ETA, "panda_link0")
            pipe.submit(camera, stamp_ns=42, frame_id="camera")
            assert done.wait(60), pipe.summary()
    finally:
        remote.close()
    r = results[0]
    assert r.frame.stamp_ns == 42 and remote.image_size == 16 and remote.method == "visual_dynamics"
    np.testing.assert_allclose(r.prediction.condition, ETA[None].astype(np.float32))
    local = Predictor.from_checkpoint(ckpt, device="cpu")
    direct = local.predict(pl.prepare_image(camera, 16)[0][None], ETA[None], num_samples=3, seed=11)
    np.testing.assert_array_equal(r.grids.frames, pl.grid(direct.frames[0]))
    np.testing.assert_allclose(r.grids.flows, pl.grid(direct.flows[0]), atol=1e-5)
    assert r.grids.frames.shape == (3 * 16, 3 * 16, 3)


def test_server_loss_is_counted_and_the_pipeline_recovers(cluster):
    c, _ = cluster
    remote = serving.RemotePredictor(c.endpoint, c.service, timeout=1.0, retries=1)
    results, errors = [], []
    cfg = pl.PipelineConfig(rate_hz=0, num_samples=1, seed=0, retry_delay_s=0.05)
    frame = np.full((16, 16, 3), 7, np.uint8)
    try:
        with pl.PredictionPipeline(remote, cfg, on_result=results.append, on_error=lambda e, f: errors.append(e)) as p:
            p.submit(frame)
            wait_until(lambda: results, 60, "a first remote prediction")
            c.kill_worker(0)  # the model server goes away
            t0 = time.monotonic()
            p.submit(frame)
            wait_until(lambda: p.stats().failures >= 1, 30, "a counted failure")
            assert p.running and p.stats().consecutive_failures >= 1
            assert isinstance(errors[0], serving.RemoteError | serving.ServiceUnavailable), repr(errors[0])
            assert time.monotonic() - t0 < 10, "a failure must be detected within the timeouts"
            c.add_worker()  # the server comes back: no restart of the pipeline or the client
            before = len(results)

            def recovered() -> bool:
                if len(results) > before:
                    return True
                p.submit(frame)  # a camera keeps sending frames
                time.sleep(0.2)
                return False

            wait_until(recovered, 120, "recovery after the worker came back")
            s = p.stats()
            level = p.diagnostics()[0]
    finally:
        remote.close()
    assert s.consecutive_failures == 0 and s.failures >= 1 and s.predictions >= 2
    assert level == pl.OK
    assert results[-1].prediction.method == "visual_dynamics" and results[-1].grids.frames.shape == (16, 48, 3)
