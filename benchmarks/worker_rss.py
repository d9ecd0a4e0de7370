"""RSS of one serving worker against the number of requests it answered (issue 18: the soak's growing worker).

What runs
---------
A :class:`~imagine_ros.serving.broker.Broker` in this process on 127.0.0.1 and one worker process (this script with
``--serve``: a :class:`~imagine_ros.serving.worker.Worker` of a :class:`~imagine_ros.predictor.Predictor`, 1 torch
thread) of a tiny ``visual_dynamics`` model with fresh weights (or ``--checkpoint``). ``--clients`` (4) client threads
send ``--requests`` requests back to back, as fast as the worker answers:

- ``--shapes varied`` (default): 1-4 images, 1-2 samples, 3 in 4 seeded (run alone), the others batched (up to 8
  images), as the soak's clients send; ``--shapes fixed``: always 1 image, 1 sample;
- every ``--malformed-every`` (50) th request is a malformed body (``junk``), answered with an error reply.

The worker's RSS (``/proc/PID/status`` VmRSS) is sampled every ``--sample-every`` (500) requests; the figures are
the curve, the start and end, and the growth per request over the second half of the run (a least-squares slope, in
KB a request: the first half holds the warm-up of the allocators). Variants:

- ``--per-call-pool``: the worker computes DIS flows on a new thread pool for each request, as the Predictor did
  before the fix (reproduces the growth);
- ``--tracemalloc``: the worker traces Python allocations and writes, at the end, the 10 biggest growths between a
  snapshot after the warm-up and the end, and the object counts by type that grew (Python-object growth or not);
- ``MALLOC_ARENA_MAX=2`` etc. in the environment reach the worker unchanged (glibc arenas);
- ``--opencv-threads N``: no serving; N short-lived threads each call ``cv2.cvtColor`` once, in this process, and
  the RSS is printed every N/6 threads (the OpenCV behaviour behind the growth: opencv/opencv#21838).

Run (loopback only; nice when the machine is shared)::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/worker_rss.py --requests 4000 --json worker_rss.json
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/worker_rss.py --requests 20000 --per-call-pool
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/worker_rss.py --opencv-threads 60000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def rss_mib(pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def slope_kb(points: list[list[float]]) -> float | None:
    """Least-squares growth in KB per request over the second half of ``points`` ([requests, MiB])."""
    half = points[len(points) // 2 :]
    if len(half) < 2:
        return None
    x = np.array([p[0] for p in half], float)
    y = np.array([p[1] for p in half], float)
    return round(float(np.polyfit(x, y, 1)[0]) * 1024, 4)


# ------------------------------------------------------------------------------------------------------ worker side
def serve(endpoint: str, checkpoint: str, per_call_pool: bool, trace: str | None) -> int:
    import torch

    from imagine_ros.predictor import Predictor
    from imagine_ros.serving.worker import Worker

    torch.set_num_threads(1)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    if per_call_pool:  # the Predictor's DIS flows before the fix: a new pool (new threads) for each request
        from concurrent.futures import ThreadPoolExecutor

        from imagine_ros.flow import dis_flows

        def _dis(images, frames):
            if predictor.flow_threads > 1 and len(images) > 1:
                with ThreadPoolExecutor(predictor.flow_threads) as pool:
                    return np.stack(list(pool.map(dis_flows, images, frames)))
            return np.stack([dis_flows(x, f) for x, f in zip(images, frames)])

        predictor._dis = _dis
    snapshot: dict[str, Any] = {}
    if trace:
        import tracemalloc

        tracemalloc.start(1)

        def take(signum=None, frame=None):  # SIGUSR1 from the driver after the warm-up
            gc.collect()
            snapshot["snap"] = tracemalloc.take_snapshot()
            snapshot["objects"] = Counter(type(o).__name__ for o in gc.get_objects())

        signal.signal(signal.SIGUSR1, take)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    worker = Worker(predictor, endpoint, max_batch=8)
    print("worker ready", flush=True)
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    if trace and "snap" in snapshot:
        import tracemalloc

        gc.collect()
        end = tracemalloc.take_snapshot()
        objects = Counter(type(o).__name__ for o in gc.get_objects())
        top = end.compare_to(snapshot["snap"], "lineno")[:10]
        report = {
            "traced_now_mib": round(tracemalloc.get_traced_memory()[0] / 2**20, 2),
            "top_growth": [
                {"where": str(s.traceback), "size_diff_kib": round(s.size_diff / 1024, 1), "count_diff": s.count_diff}
                for s in top
            ],
            "objects_grown": {k: v - snapshot["objects"][k] for k, v in objects.items() if v > snapshot["objects"][k]},
        }
        Path(trace).write_text(json.dumps(report, indent=2) + "\n")
    return 0


# ------------------------------------------------------------------------------------------------------ driver side
def opencv_threads(n: int) -> dict[str, Any]:
    import cv2

    img = np.zeros((16, 16, 3), np.uint8)

    def one():
        t = threading.Thread(target=cv2.cvtColor, args=(img, cv2.COLOR_RGB2GRAY))
        t.start()
        t.join()

    for _ in range(100):
        one()
    points = [[0, round(rss_mib(), 1)]]
    step = max(1, n // 6)
    for k in range(1, n + 1):
        one()
        if k % step == 0:
            points.append([k, round(rss_mib(), 1)])
            print(f"{k} threads: {points[-1][1]} MiB", flush=True)
    kb = round((points[-1][1] - points[0][1]) * 1024 / max(1, points[-1][0]), 3)
    print(f"opencv {cv2.__version__}: {kb} KB per short-lived thread that called cvtColor")
    return {"opencv": cv2.__version__, "threads": n, "rss_mib": points, "kb_per_thread": kb}


def drive(args) -> dict[str, Any]:
    import torch

    from imagine_ros.models import build
    from imagine_ros.models.checkpoint import save_checkpoint
    from imagine_ros.serving.broker import Broker
    from imagine_ros.serving.client import RemoteError, RemotePredictor

    tmp = tempfile.TemporaryDirectory(prefix="imagine-worker-rss-")
    if args.checkpoint:
        checkpoint = str(args.checkpoint)
    else:
        torch.manual_seed(args.seed)
        save_checkpoint(Path(tmp.name) / "vd", build("visual_dynamics", "tiny"))
        checkpoint = str(Path(tmp.name) / "vd.json")
    broker = Broker("tcp://127.0.0.1:*", request_timeout=60).start()
    trace = str(Path(tmp.name) / "trace.json") if args.tracemalloc else None
    cmd = [sys.executable, __file__, "--serve", broker.endpoint, checkpoint]
    cmd += ["--per-call-pool"] * args.per_call_pool + (["--trace-out", trace] if trace else [])
    worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    lock = threading.Lock()
    counts = Counter()
    points: list[list[float]] = []
    try:
        assert worker.stdout.readline().startswith("worker ready"), "the worker did not start"
        with RemotePredictor(broker.endpoint, "visual_dynamics", timeout=60, retries=0) as probe:
            info = probe.info()
        s, c = int(info["image_size"]), int(info["condition_dim"])
        rss0 = rss_mib(worker.pid)
        next_id = iter(range(args.requests))
        warm = args.requests // 2

        def client(i: int) -> None:
            rng = np.random.default_rng(100 + i)
            with RemotePredictor(broker.endpoint, "visual_dynamics", timeout=60, retries=0) as remote:
                remote.info()
                for k in next_id:
                    if args.malformed_every and k % args.malformed_every == args.malformed_every - 1:
                        try:
                            remote.client.request("visual_dynamics", [b"junk"])
                            outcome = "error reply"
                        except Exception as e:
                            outcome = f"exception:{type(e).__name__}"
                    else:
                        if args.shapes == "fixed":
                            b, n, seed = 1, 1, None
                        else:
                            b, n = int(rng.integers(1, 5)), int(rng.integers(1, 3))
                            seed = int(rng.integers(1 << 30)) if rng.random() < 0.75 else None
                        img = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
                        cond = (rng.normal(size=(b, c)) * 0.1).astype(np.float32) if c else None
                        try:
                            remote.predict(img, cond, n, seed=seed)
                            outcome = "answered"
                        except RemoteError as e:
                            outcome = f"error:{e.code}"
                        except Exception as e:
                            outcome = f"exception:{type(e).__name__}"
                    with lock:
                        counts[outcome] += 1
                        done = sum(counts.values())
                        if done % args.sample_every == 0:
                            points.append([done, round(rss_mib(worker.pid) or float("nan"), 2)])
                            if not args.quiet:
                                print(f"{done} requests: worker RSS {points[-1][1]} MiB", flush=True)
                        if trace and done == warm:
                            worker.send_signal(signal.SIGUSR1)

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.monotonic() - t0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        broker.stop()
    result = {
        "benchmark": "worker_rss",
        "settings": {
            "requests": args.requests,
            "clients": args.clients,
            "shapes": args.shapes,
            "malformed_every": args.malformed_every,
            "per_call_pool": args.per_call_pool,
            "tracemalloc": args.tracemalloc,
            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX"),
            "checkpoint": args.checkpoint or "tiny visual_dynamics (fresh weights)",
        },
        "seconds": round(seconds, 1),
        "outcomes": dict(counts),
        "rss_ready_mib": round(rss0, 1),
        "rss_end_mib": points[-1][1] if points else None,
        "kb_per_request_second_half": slope_kb(points),
        "rss_mib": points,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    if trace and Path(trace).exists():
        result["tracemalloc"] = json.loads(Path(trace).read_text())
    tmp.cleanup()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--shapes", choices=["varied", "fixed"], default="varied")
    p.add_argument("--malformed-every", type=int, default=50, help="every Nth request malformed (0: none)")
    p.add_argument("--sample-every", type=int, default=500, help="requests between RSS samples")
    p.add_argument("--per-call-pool", action="store_true", help="DIS flows on a new pool per request (pre-fix)")
    p.add_argument("--tracemalloc", action="store_true", help="trace Python allocations in the worker")
    p.add_argument("--opencv-threads", type=int, default=0, metavar="N", help="only the OpenCV thread check")
    p.add_argument("--checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--serve", nargs=2, metavar=("ENDPOINT", "CHECKPOINT"), help=argparse.SUPPRESS)
    p.add_argument("--trace-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(*args.serve, args.per_call_pool, args.trace_out)
    if args.opencv_threads:
        result = opencv_threads(args.opencv_threads)
    else:
        result = drive(args)
        print(
            f"{result['seconds']} s, {result['outcomes']}; worker RSS {result['rss_ready_mib']} -> "
            f"{result['rss_end_mib']} MiB, {result['kb_per_request_second_half']} KB a request over the second half"
        )
        if "tracemalloc" in result:
            t = result["tracemalloc"]
            print(f"tracemalloc: {t['traced_now_mib']} MiB traced; top growth {t['top_growth'][:3]}")
            print(f"objects grown: {t['objects_grown']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
