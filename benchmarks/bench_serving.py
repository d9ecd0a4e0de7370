"""Benchmark of remote serving (MDP/0.2 over ZeroMQ, loopback): throughput, latency and remote overhead.

What is measured
----------------
A ``--method`` model (default ``visual_dynamics``) of preset ``--preset`` (default ``small``) with fresh, untrained
weights (the cost of a forward pass does not depend on training) is saved as a checkpoint and served by a
:class:`~imagine_ros.serving.LocalCluster`: a broker process and one worker process (``imagine-ros serve``, batching up
to ``--max-batch`` images) on 127.0.0.1.

1. Remote vs in-process overhead: the same requests — 1 image x ``--overhead-samples`` (8) samples x the model's
   horizon, a condition, seed i — alternately through :meth:`Predictor.predict` in this process and
   :meth:`RemotePredictor.predict` (same seeds, so the same work; the results are checked to be identical). Reported:
   median seconds of each and overhead = remote / in-process - 1 (target <= 10%).
2. Throughput and latency: 1, 4 and 16 client threads (``--clients``), each with its own RemotePredictor, send
   unseeded requests of 1 image x ``--samples`` (1) samples back to back for ``--seconds`` seconds (after a warm-up);
   requests/s (the requests that finished inside the measured window, all clients together) and their p50/p99
   latency, and the mean number of requests the worker put into one forward pass. A window must hold several
   forward passes: on a CPU a ``small`` batch of 16 takes seconds, so keep ``--seconds`` well above that.
   Target: requests/s at 16 clients >= 2x requests/s at 1 client (batching).

The worker and the in-process predictor use the same torch thread count (``--threads``, default torch's choice). Other
load makes the figures meaningless: each section reports how many cores other processes kept busy (``/proc/stat``).

Run::

    python benchmarks/bench_serving.py --quick                 # ~1 min, tiny model: checks that everything runs
    python benchmarks/bench_serving.py --out results/bench_serving.json
    python benchmarks/bench_serving.py --device cuda --out results/bench_serving_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from _common import DISTURBED, OtherLoad, _fmt_load  # benchmarks/_common.py (sys.path[0])

from imagine_ros.models import build
from imagine_ros.models.checkpoint import save_checkpoint
from imagine_ros.predictor import Predictor
from imagine_ros.serving.cluster import LocalCluster

TARGET_OVERHEAD = 0.10
TARGET_SCALING = 2.0


def _cluster_pids(cluster: LocalCluster) -> list[int]:
    """The broker's and workers' process ids: their CPU time is the benchmark's own, not other load."""
    procs = [cluster.broker_process, *cluster.worker_processes]
    return [p.pid for p in procs if p is not None]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bench_overhead(local: Predictor, cluster: LocalCluster, samples: int, repeats: int) -> dict:
    s, c = local.image_size, local.condition_dim
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"local": [], "remote": []}
    meter = OtherLoad(_cluster_pids(cluster))
    with cluster.predictor(timeout=120, retries=0) as remote:
        for i in range(repeats + 1):  # the first round is a warm-up
            img = rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)
            cond = rng.normal(size=(1, c)).astype(np.float32) if c else None
            t = time.perf_counter()
            a = local.predict(img, cond, samples, seed=i)
            t_local = time.perf_counter() - t
            t = time.perf_counter()
            b = remote.predict(img, cond, samples, seed=i)
            t_remote = time.perf_counter() - t
            if not (np.array_equal(a.frames, b.frames) and np.array_equal(a.flows, b.flows)):
                raise AssertionError("remote and in-process predictions differ for the same seed")
            if i:
                times["local"].append(t_local)
                times["remote"].append(t_remote)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "samples": samples,
        "horizon": local.horizon,
        "repeats": repeats,
        "local_s": times["local"],
        "remote_s": times["remote"],
        "local_median_s": med["local"],
        "remote_median_s": med["remote"],
        "overhead": med["remote"] / med["local"] - 1.0,
        "other_cores": meter.cores(),
    }


def bench_clients(cluster: LocalCluster, clients: int, samples: int, seconds: float, warmup: float) -> dict:
    predictors = [cluster.predictor(timeout=120, retries=0) for _ in range(clients)]
    s = predictors[0].image_size
    done: list[list[tuple[float, float, float]]] = [[] for _ in range(clients)]  # (finished at, latency, batch)
    start = threading.Event()
    measure_from, stop_at = [0.0], [0.0]

    def run(i: int) -> None:
        rng = np.random.default_rng(100 + i)
        img = rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            out = predictors[i].predict(img, None, samples)
            end = time.perf_counter()
            done[i].append((end, end - t, out.timing.get("batch_requests", 1.0)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    measure_from[0], stop_at[0] = t0 + warmup, t0 + warmup + seconds
    meter = OtherLoad(_cluster_pids(cluster))
    start.set()
    for t in threads:
        t.join()
    for p in predictors:
        p.close()
    # requests that finished inside the measured window (the warm-up and the last requests in flight are left out)
    window = [d for v in done for d in v if measure_from[0] <= d[0] <= stop_at[0]]
    lat = [d[1] for d in window]
    wall = seconds
    return {
        "clients": clients,
        "samples": samples,
        "requests": len(lat),
        "seconds": wall,
        "requests_per_s": len(lat) / wall,
        "p50_s": _percentile(lat, 50),
        "p99_s": _percentile(lat, 99),
        "mean_batch_requests": float(np.mean([d[2] for d in window])) if window else float("nan"),
        "other_cores": meter.cores(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (seconds), fewer repeats: not the targets")
    parser.add_argument("--method", default="visual_dynamics", help="method (default visual_dynamics)")
    parser.add_argument("--preset", default=None, help="config preset (default small; tiny with --quick)")
    parser.add_argument("--device", default="cpu", help="device of worker and in-process predictor (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of both (default torch's choice)")
    parser.add_argument("--max-batch", type=int, default=16, help="worker batch in images (default 16)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="worker batching wait (default 2)")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients (default 1,4,16)")
    parser.add_argument("--samples", type=int, default=1, help="samples per throughput request (default 1)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per client count (default 15)")
    parser.add_argument("--overhead-samples", type=int, default=8, help="samples per overhead request (default 8)")
    parser.add_argument("--repeats", type=int, default=10, help="overhead request pairs (default 10)")
    parser.add_argument("--out", metavar="JSON", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    args.preset = args.preset or ("tiny" if args.quick else "small")
    seconds, warmup, repeats = (2.0, 0.5, 3) if args.quick else (args.seconds, 2.0, args.repeats)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    print(
        f"bench_serving{' --quick' if args.quick else ''}: {args.method}/{args.preset} on {args.device}, python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        torch.manual_seed(0)
        model = build(args.method, args.preset)
        save_checkpoint(Path(tmp) / "model", model)
        local = Predictor.from_checkpoint(Path(tmp) / "model.json", device=args.device)
        with LocalCluster(
            Path(tmp) / "model.json",
            workers=1,
            device=args.device,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            threads=args.threads,
            log_dir=Path(tmp) / "logs",
        ) as cluster:
            print(f"[overhead] 1 image x {args.overhead_samples} samples x {local.horizon} frames, {repeats} pairs")
            overhead = bench_overhead(local, cluster, args.overhead_samples, repeats)
            rows = []
            for c in clients:
                print(f"[throughput] {c} clients, {seconds:g} s", flush=True)
                rows.append(bench_clients(cluster, c, args.samples, seconds, warmup))
    elapsed = time.perf_counter() - t_start

    print(f"\n{'=' * 100}\nRemote vs in-process ({args.method}/{args.preset}, {args.device}), same requests, same run")
    print(
        f"  1 image x {overhead['samples']} samples x {overhead['horizon']} frames: in-process "
        f"{1e3 * overhead['local_median_s']:.1f} ms, remote {1e3 * overhead['remote_median_s']:.1f} ms (medians of "
        f"{overhead['repeats']}), overhead {100 * overhead['overhead']:+.1f}%  ({_fmt_load(overhead['other_cores'])})"
    )
    print(f"\nThroughput (1 image x {args.samples} sample(s) per request, unseeded, worker max batch {args.max_batch})")
    print(f"{'clients':>8} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6}  load")
    for r in rows:
        print(
            f"{r['clients']:>8} {r['requests']:>9} {r['requests_per_s']:8.1f} {1e3 * r['p50_s']:8.1f} "
            f"{1e3 * r['p99_s']:8.1f} {r['mean_batch_requests']:6.2f}  {_fmt_load(r['other_cores'])}"
        )
    by = {r["clients"]: r for r in rows}
    targets = [("remote overhead <= 10% of in-process", overhead["overhead"], overhead["overhead"] <= TARGET_OVERHEAD)]
    if 1 in by and 16 in by:
        ratio = by[16]["requests_per_s"] / by[1]["requests_per_s"]
        targets.append(("throughput 16 clients >= 2x 1 client", ratio, ratio >= TARGET_SCALING))
    print("\nTargets")
    for name, value, ok in targets:
        print(f"  {name:<40} {value:8.3f}  {'PASS' if ok else 'MISS'}")
    if args.quick:
        print("note: --quick runs are too short for the targets")
    loads = [overhead["other_cores"], *(r["other_cores"] for r in rows)]
    if any(c is not None and c > DISTURBED for c in loads):
        print("note: other processes were busy during the run (DISTURBED above): these figures are not meaningful")
    print(f"(benchmark took {elapsed:.0f} s)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        result = {
            "quick": args.quick,
            "method": args.method,
            "preset": args.preset,
            "device": args.device,
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
            "overhead": overhead,
            "throughput": rows,
            "targets": [{"target": n, "value": v, "pass": ok} for n, v, ok in targets],
            "seconds": elapsed,
        }
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
