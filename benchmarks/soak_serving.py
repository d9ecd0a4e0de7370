"""Soak test of remote serving: broker + workers under client load for N minutes while faults are injected.

What runs
---------
A :class:`~imagine_ros.serving.LocalCluster` on 127.0.0.1 only (a broker process and ``--workers`` (2) worker
processes, ``imagine-ros serve``) of ``--checkpoint``, or of a tiny ``visual_dynamics`` model with fresh weights that
this script saves in a temporary folder. ``--clients`` (4) client threads, each with its own
:class:`~imagine_ros.serving.RemotePredictor` (``--timeout`` s per attempt, ``--retries`` resends), send requests back
to back for ``--minutes`` (5) minutes and check every answer:

- 3 in 4 requests carry a seed and are drawn from a pool computed before the run by an in-process
  :class:`~imagine_ros.predictor.Predictor` of the same checkpoint: a seeded request is never batched with others, so
  its frames and flows must equal the in-process ones exactly;
- the others have no seed (the worker batches them): frames ``(B, N, T, H, W, 3)`` uint8, flows ``(B, N, T, H, W, 2)``
  finite float32, the condition sent back unchanged.

Faults, one every ``--fault-interval`` (10) seconds, in turn (``--faults``, default all):

- ``kill``: SIGKILL of the youngest worker (the oldest one lives through the run, so its RSS shows a leak), and a
  replacement worker process started at once;
- ``stop``: SIGSTOP of the oldest worker for ``--stop-seconds`` (2) (the broker's heartbeat expires it and re-queues
  what it held), then SIGCONT (it reconnects);
- ``broker``: SIGKILL of the broker and a new broker process on the same port after 0.5 s (clients resend, workers
  reconnect);
- ``oversized``: one request of 1 image more than the broker's default ``--max-request-bytes`` (64 MiB: 87,382
  images of 16 px, 67 MB), which the broker must refuse with ``too_large`` before any worker sees it;
- ``fuzz``: ``--fuzz-messages`` (500) mutated or random MDP/0.2 messages from a raw ZeroMQ DEALER (client requests
  with broken bodies, worker commands out of order, random frames). It poses as a worker of another service only:
  a fake worker of the served service would take real requests and answer none, which the broker already handles
  (tests/serving/test_serving.py::test_broker_survives_fuzzing_and_keeps_serving) at the price of error replies here.

Figures (printed, and written with ``--json PATH``): duration; requests sent, answered correctly, wrong, errored by
kind (error replies by code, ``no_reply`` = ServiceUnavailable after the last retry, ``expired`` = the broker's
queue timeout) and lost (neither an answer nor an error within the client's total timeout, ``(1 + retries) *
timeout`` + 2 s; must be 0); the oversized requests and their replies; the faults injected; the RSS of each broker
and worker process when it was ready and at the end of the run (or when it was killed), and its peak. Exit code 1
when a request was lost, an answer was wrong, an oversized request got anything but ``too_large``/no reply, a process
ended that was not killed on purpose, or not every worker is registered again at the end.

Run (loopback only; nice when the machine is shared)::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/soak_serving.py --minutes 3 --json results/reliability/soak.json
    python benchmarks/soak_serving.py --minutes 0.1 --fault-interval 1 --faults fuzz,oversized,stop,broker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import torch
import zmq

from imagine_ros.models import build
from imagine_ros.models.checkpoint import save_checkpoint
from imagine_ros.predictor import Predictor
from imagine_ros.serving import codec
from imagine_ros.serving import protocol as mdp
from imagine_ros.serving.broker import DEFAULT_MAX_REQUEST_BYTES
from imagine_ros.serving.client import RemoteError, ServiceUnavailable
from imagine_ros.serving.cluster import LocalCluster

FAULTS = ("fuzz", "oversized", "stop", "kill", "broker")
LOST_GRACE_S = 2.0  # beyond the client's (1 + retries) * timeout
POOL = 16  # seeded requests computed in process before the run
FUZZ_SERVICE = b"soak-fuzz"
SERIES_S = 10.0  # seconds between the RSS samples kept in the JSON


def rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (Linux ``/proc``), None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class Proc:
    """A broker or worker process of the run and its RSS samples."""

    name: str
    popen: Any
    started_s: float
    rss_start: float | None = None
    rss_end: float | None = None
    rss_peak: float | None = None
    ended: str = "running at the end"
    intended_end: bool = False
    series: list | None = None  # [seconds since the run started, MiB] every SERIES_S seconds

    def sample(self, t: float | None = None) -> None:
        if self.popen.poll() is not None:
            return
        r = rss_mib(self.popen.pid)
        if r is not None:
            self.rss_end = r
            self.rss_peak = r if self.rss_peak is None else max(self.rss_peak, r)
            if t is not None:
                self.series = self.series or []
                if not self.series or t - self.series[-1][0] >= SERIES_S:
                    self.series.append([round(t, 1), round(r, 1)])

    def mark_ready(self) -> None:
        self.rss_start = rss_mib(self.popen.pid)
        self.sample()

    def as_dict(self) -> dict[str, Any]:
        rnd = lambda v: None if v is None else round(v, 1)  # noqa: E731
        return {
            "name": self.name,
            "pid": self.popen.pid,
            "started_s": round(self.started_s, 1),
            "rss_start_mib": rnd(self.rss_start),
            "rss_end_mib": rnd(self.rss_end),
            "rss_peak_mib": rnd(self.rss_peak),
            "ended": self.ended,
            "rss_series_mib": self.series or [],
        }


class Tally:
    """Counters of the client threads, and the requests under way (to find lost ones)."""

    def __init__(self, lost_after: float):
        self.lock = threading.Lock()
        self.lost_after = lost_after
        self.sent = self.answered = self.wrong = self.lost = self.late = 0
        self.seeded = self.unseeded = 0
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}  # first message of each error kind / wrong answer
        self.inflight: dict[int, float] = {}
        self.lost_ids: set[int] = set()
        self.latencies: list[float] = []
        self._ids = 0

    def begin(self, seeded: bool) -> int:
        with self.lock:
            self._ids += 1
            self.sent += 1
            self.seeded += seeded
            self.unseeded += not seeded
            self.inflight[self._ids] = time.monotonic()
            return self._ids

    def end(self, rid: int, outcome: str, detail: str = "") -> None:
        with self.lock:
            t0 = self.inflight.pop(rid)
            if rid in self.lost_ids:
                self.late += 1  # counted as lost already; it ended after the client's total timeout
                self.examples.setdefault(f"late {outcome}", detail)
                return
            if outcome == "ok":
                self.answered += 1
                self.latencies.append(time.monotonic() - t0)
            elif outcome == "wrong":
                self.wrong += 1
                self.examples.setdefault("wrong", detail)
            else:
                self.errors[outcome] += 1
                self.examples.setdefault(outcome, detail[:300])

    def find_lost(self) -> None:
        now = time.monotonic()
        with self.lock:
            for rid, t0 in self.inflight.items():
                if rid not in self.lost_ids and now - t0 > self.lost_after:
                    self.lost_ids.add(rid)
                    self.lost += 1


# ---------------------------------------------------------------------------------------------------- requests
def make_pool(local: Predictor, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Seeded requests and the in-process answers to them."""
    s, c = local.image_size, local.condition_dim
    pool = []
    for i in range(POOL):
        b, n = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        img = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
        cond = (rng.normal(size=(b, c)) * 0.1).astype(np.float32) if c else None
        pred = local.predict(img, cond, n, seed=1000 + i)
        pool.append(
            {
                "images": img,
                "conditions": cond,
                "num_samples": n,
                "seed": 1000 + i,
                "frames": np.array(pred.frames),
                "flows": np.array(pred.flows),
            }
        )
    return pool


def check_unseeded(pred, img: np.ndarray, cond: np.ndarray | None, n: int, horizon: int) -> str:
    """'' when a prediction of an unseeded request has the promised shapes, dtypes and values, else the problem."""
    b, s = img.shape[0], img.shape[1]
    if pred.frames.shape != (b, n, horizon, s, s, 3) or pred.frames.dtype != np.uint8:
        return f"frames {pred.frames.shape} {pred.frames.dtype}, expected {(b, n, horizon, s, s, 3)} uint8"
    if pred.flows.shape != (b, n, horizon, s, s, 2) or pred.flows.dtype != np.float32:
        return f"flows {pred.flows.shape} {pred.flows.dtype}, expected {(b, n, horizon, s, s, 2)} float32"
    if not np.isfinite(pred.flows).all():
        return "non-finite flows"
    if cond is not None and (pred.condition is None or not np.array_equal(pred.condition, cond)):
        return "the condition sent back differs from the one sent"
    return ""


def client_loop(i: int, cluster: LocalCluster, args, pool, info, tally: Tally, stop: threading.Event) -> None:
    rng = np.random.default_rng(10_000 + i)
    s, c, horizon = int(info["image_size"]), int(info["condition_dim"]), int(info["horizon"])
    with cluster.predictor(timeout=args.timeout, retries=args.retries) as remote:
        while not stop.is_set():
            seeded = rng.random() < 0.75
            if seeded:
                req = pool[int(rng.integers(len(pool)))]
                img, cond, n, seed = req["images"], req["conditions"], req["num_samples"], req["seed"]
            else:
                b, n, seed = int(rng.integers(1, 3)), int(rng.integers(1, 3)), None
                img = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
                cond = (rng.normal(size=(b, c)) * 0.1).astype(np.float32) if c else None
            rid = tally.begin(seeded)
            try:
                pred = remote.predict(img, cond, n, seed=seed)
            except ServiceUnavailable as e:
                tally.end(rid, "no_reply" if str(e).startswith("no reply from") else "expired", str(e))
                continue
            except RemoteError as e:
                tally.end(rid, e.code, str(e))
                continue
            except Exception as e:  # anything else is a client-side failure: counted by type
                tally.end(rid, f"exception:{type(e).__name__}", str(e))
                continue
            if seeded:
                problem = ""
                if not (np.array_equal(pred.frames, req["frames"]) and np.array_equal(pred.flows, req["flows"])):
                    problem = f"seed {seed}: the answer differs from the in-process Predictor's"
            else:
                problem = check_unseeded(pred, img, cond, n, horizon)
            tally.end(rid, "wrong" if problem else "ok", problem)


# ------------------------------------------------------------------------------------------------------ faults
def mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    """A mutated copy of an MDP message: flipped bytes, dropped/added frames, another command, random frames, or a
    random msgpack header in place of the body."""
    frames = list(frames)
    k = rng.randrange(7)
    if k == 0 and frames:
        i = rng.randrange(len(frames))
        f = bytearray(frames[i]) or bytearray(b"\x00")
        for _ in range(rng.randrange(1, 4)):
            f[rng.randrange(len(f))] = rng.randrange(256)
        frames[i] = bytes(f)
    elif k == 1:
        frames = frames[: rng.randrange(len(frames) + 1)]
    elif k == 2:
        frames += [rng.randbytes(rng.randrange(64)) for _ in range(rng.randrange(1, 4))]
    elif k == 3 and len(frames) > 1:
        frames[1] = bytes([rng.randrange(12)])
    elif k == 4:
        frames = [rng.randbytes(rng.randrange(32)) for _ in range(rng.randrange(6))]
    elif k == 5:
        keys = ["v", "type", "arrays", "seed", "num_samples", "zzz"]
        values = [1, 2, "predict", "info", None, -1, 10**12, [], [{"name": "images", "dtype": "uint8", "shape": [1]}]]
        hdr = {rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(5))}
        frames = frames[:3] + [msgpack.packb(hdr)]
    return frames or [b""]


class Injector:
    """Injects one fault every ``interval`` seconds, in turn, and keeps the list of processes and what happened."""

    def __init__(self, cluster: LocalCluster, args, info, t0: float):
        self.cluster, self.args, self.info, self.t0 = cluster, args, info, t0
        self.stop = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.oversized: Counter[str] = Counter()
        self.oversized_wrong = 0
        self.fuzz_sent = self.fuzz_replies = 0
        self.rng = random.Random(args.seed)
        self.ctx = zmq.Context()
        self.lock = threading.Lock()
        self.procs: list[Proc] = [Proc("broker#0", cluster.broker_process, 0.0)]
        self.procs += [Proc(f"worker#{i}", p, 0.0) for i, p in enumerate(cluster.worker_processes)]
        self.workers = [p for p in self.procs if p.name.startswith("worker")]  # oldest first
        self.brokers = 1
        self._t_fault = 0.0  # when the fault under way began (seconds since the run started)
        s, c = int(info["image_size"]), int(info["condition_dim"])
        body = codec.encode_predict(np.zeros((1, s, s, 3), np.uint8), np.zeros((1, c), np.float32) if c else None, 1, 7)
        svc = cluster.service.encode()
        self.templates = [
            [mdp.MDPC, mdp.C_REQUEST, svc, *map(bytes, body)],
            [mdp.MDPC, mdp.C_REQUEST, svc, b"junk"],
            [mdp.MDPC, mdp.C_REQUEST, svc, *map(bytes, codec.encode_info_request())],
            [mdp.MDPC, mdp.C_REQUEST, b"mmi.service", svc],
            [mdp.MDPW, mdp.W_READY, FUZZ_SERVICE],
            [mdp.MDPW, mdp.W_HEARTBEAT],
            [mdp.MDPW, mdp.W_FINAL, b"\x00\x80\x00\x00\x29", b"", b"reply"],
            [mdp.MDPW, mdp.W_DISCONNECT],
        ]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, fault: str, detail: str) -> None:
        with self.lock:
            self.counts[fault] += 1
            self.events.append({"t_s": round(self._t_fault, 1), "fault": fault, "detail": detail})

    def sample(self) -> None:
        t = self.now()
        with self.lock:
            for p in self.procs:
                p.sample(t)

    def _sleep(self, seconds: float) -> bool:
        """Sleep; False when the run ends meanwhile."""
        return not self.stop.wait(seconds)

    def _wait_registered(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            if self.cluster.registered_workers() >= self.args.workers:
                return True
            self.stop.wait(0.2)
        return False

    def run(self) -> None:
        faults = self.args.faults
        k = 0
        if not self._sleep(self.args.fault_interval / 2):
            return
        while not self.stop.is_set():
            fault = faults[k % len(faults)]
            k += 1
            t = time.monotonic()
            self._t_fault = self.now()
            try:
                getattr(self, f"fault_{fault}")()
            except Exception as e:  # the injector must not die; recorded
                self.log(fault, f"injection failed: {type(e).__name__}: {e}")
            if not self._sleep(max(0.0, self.args.fault_interval - (time.monotonic() - t))):
                return

    def fault_kill(self) -> None:
        alive = [p for p in self.workers if p.popen.poll() is None]
        victim = alive[-1] if len(alive) > 1 else alive[0]
        index = self.cluster.worker_processes.index(victim.popen)
        victim.sample()
        victim.intended_end, victim.ended = True, f"SIGKILL at {self.now():.1f} s"
        self.cluster.kill_worker(index, signal.SIGKILL)
        log_file = self.cluster.log_dir / f"worker{len(self.cluster.worker_processes)}.log"
        offset = log_file.stat().st_size if log_file.exists() else 0
        popen = self.cluster.add_worker()
        new = Proc(f"worker#{len(self.cluster.worker_processes) - 1}", popen, self.now())
        with self.lock:
            self.procs.append(new)
            self.workers.append(new)
        # registered: its own log says so (the broker may still count the killed one for a heartbeat or two)
        deadline = time.monotonic() + 120
        while not (ok := "registered with" in log_file.read_text(errors="replace")[offset:]):
            if time.monotonic() > deadline or popen.poll() is not None or not self._sleep(0.2):
                break
        if ok:
            new.mark_ready()
        self.log("kill", f"{victim.name} SIGKILL; {new.name} started, registered {'yes' if ok else 'not yet'}")

    def fault_stop(self) -> None:
        victim = next(p for p in self.workers if p.popen.poll() is None)
        victim.popen.send_signal(signal.SIGSTOP)
        try:
            self.stop.wait(self.args.stop_seconds)
        finally:
            victim.popen.send_signal(signal.SIGCONT)
        ok = self._wait_registered(30)
        self.log("stop", f"{victim.name} SIGSTOP {self.args.stop_seconds:g} s, SIGCONT; registered again: {ok}")

    def fault_broker(self) -> None:
        old = next(p for p in self.procs if p.popen is self.cluster.broker_process)
        old.sample()
        old.intended_end, old.ended = True, f"SIGKILL at {self.now():.1f} s (broker restart)"
        self.cluster.restart_broker(downtime=0.5)
        new = Proc(f"broker#{self.brokers}", self.cluster.broker_process, self.now())
        self.brokers += 1
        with self.lock:
            self.procs.append(new)
        ok = self._wait_registered(30)
        new.mark_ready()
        self.log("broker", f"{old.name} SIGKILL; {new.name} on the same port; workers registered again: {ok}")

    def fault_oversized(self) -> None:
        s = int(self.info["image_size"])
        n = DEFAULT_MAX_REQUEST_BYTES // (s * s * 3) + 1
        images = np.zeros((n, s, s, 3), np.uint8)
        with self.cluster.predictor(timeout=self.args.timeout, retries=self.args.retries) as remote:
            try:
                remote.predict(images)
                kind = "answered"
            except RemoteError as e:
                kind = e.code
            except ServiceUnavailable as e:  # e.g. while the broker restarts
                kind = "no_reply" if str(e).startswith("no reply from") else "expired"
        with self.lock:
            self.oversized[kind] += 1
            if kind not in ("too_large", "no_reply"):
                self.oversized_wrong += 1
        self.log("oversized", f"{n} images, {images.nbytes / 1e6:.0f} MB: {kind}")

    def fault_fuzz(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.cluster.endpoint)
        sent = replies = 0
        try:
            for _ in range(self.args.fuzz_messages):
                sock.send_multipart(mutate(self.rng, self.rng.choice(self.templates)), zmq.NOBLOCK)
                sent += 1
                while sock.poll(0):
                    sock.recv_multipart()
                    replies += 1
            deadline = time.monotonic() + 0.5
            while sock.poll(max(0.0, deadline - time.monotonic()) * 1000):
                sock.recv_multipart()
                replies += 1
        except zmq.Again:
            pass  # no connection (the broker restarting): the burst ends here
        finally:
            sock.close(0)
        self.fuzz_sent += sent
        self.fuzz_replies += replies
        self.log("fuzz", f"{sent} messages, {replies} replies (errors, DISCONNECTs, heartbeats)")


# ---------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="duration of the load (default 5)")
    p.add_argument("--checkpoint", help="checkpoint to serve (default: a tiny visual_dynamics model, fresh weights)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per client attempt (default 3)")
    p.add_argument("--retries", type=int, default=6, help="client resends after the first attempt (default 6)")
    p.add_argument("--heartbeat", type=float, default=0.5, help="heartbeat interval, seconds (liveness 3)")
    p.add_argument("--fault-interval", type=float, default=10.0, help="seconds between faults (default 10)")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"faults in turn, comma-separated (default {FAULTS})")
    p.add_argument("--stop-seconds", type=float, default=2.0, help="how long SIGSTOP lasts")
    p.add_argument("--fuzz-messages", type=int, default=500, help="messages per fuzz burst")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--log-dir", help="keep the processes' logs here (default: a temporary folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    bad = sorted(set(args.faults) - set(FAULTS))
    if bad or not args.faults:
        p.error(f"--faults: unknown {bad}; choose from {', '.join(FAULTS)}")
    if args.minutes <= 0 or args.workers < 1 or args.clients < 1 or args.timeout <= 0 or args.retries < 0:
        p.error("--minutes, --timeout must be > 0, --workers, --clients >= 1, --retries >= 0")
    return args


def summary_lines(r: dict[str, Any]) -> list[str]:
    q = r["requests"]
    errs = ", ".join(f"{k} {v}" for k, v in sorted(q["errored"].items())) or "none"
    lines = [
        f"duration {r['duration_s']:.1f} s, {r['settings']['clients']} clients, {r['settings']['workers']} workers",
        f"sent {q['sent']}  answered correctly {q['answered_correctly']}  wrong {q['wrong']}  "
        f"errored {q['errored_total']} ({errs})  lost {q['lost']}",
        f"latency of correct answers: p50 {q['latency_p50_s']} s, p99 {q['latency_p99_s']} s, "
        f"max {q['latency_max_s']} s",
        "faults: " + ", ".join(f"{k} {v}" for k, v in r["faults"].items()),
        f"oversized: {dict(r['oversized']['replies'])}; fuzz: {r['fuzz']['messages']} messages",
        "RSS MiB (ready -> end, peak):",
    ]
    for p in r["processes"]:
        lines.append(
            f"  {p['name']:<10} pid {p['pid']:<7} {p['rss_start_mib']} -> {p['rss_end_mib']} "
            f"(peak {p['rss_peak_mib']})  {p['ended']}"
        )
    lines.append("PASS" if r["passed"] else "FAIL: " + "; ".join(r["failures"]))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm.auto import tqdm

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="imagine-soak-")
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        torch.manual_seed(args.seed)
        save_checkpoint(Path(tmp.name) / "vd", build("visual_dynamics", "tiny"))
        checkpoint = Path(tmp.name) / "vd.json"
    local = Predictor.from_checkpoint(checkpoint, device="cpu")
    pool = make_pool(local, np.random.default_rng(args.seed))
    log_dir = Path(args.log_dir) if args.log_dir else Path(tmp.name) / "logs"
    cluster = LocalCluster(
        checkpoint,
        workers=args.workers,
        device="cpu",
        host="127.0.0.1",
        max_batch=4,
        heartbeat_interval=args.heartbeat,
        liveness=3,
        request_timeout=10.0,
        threads=args.threads,
        startup_timeout=180,
        log_dir=log_dir,
    )
    duration = args.minutes * 60
    stop = threading.Event()
    tally = Tally((1 + args.retries) * args.timeout + LOST_GRACE_S)
    with cluster:
        with cluster.predictor(timeout=30, retries=0) as probe:
            info = dict(probe.info())
        t0 = time.monotonic()
        inj = Injector(cluster, args, info, t0)
        for p in inj.procs:
            p.mark_ready()
        clients = [
            threading.Thread(target=client_loop, args=(i, cluster, args, pool, info, tally, stop), daemon=True)
            for i in range(args.clients)
        ]
        injector = threading.Thread(target=inj.run, daemon=True)
        for t in [*clients, injector]:
            t.start()
        bar = tqdm(total=round(duration), unit="s", desc="soak", disable=args.no_progress, dynamic_ncols=True)
        last_sample = 0.0
        while (elapsed := time.monotonic() - t0) < duration:
            time.sleep(min(0.5, max(0.0, duration - elapsed)))
            tally.find_lost()
            if time.monotonic() - last_sample >= 1.0:
                inj.sample()
                last_sample = time.monotonic()
            bar.n = min(round(time.monotonic() - t0), bar.total)
            bar.set_postfix(
                sent=tally.sent,
                ok=tally.answered,
                err=sum(tally.errors.values()),
                wrong=tally.wrong,
                lost=tally.lost,
                faults=sum(inj.counts.values()),
                refresh=False,
            )
            bar.refresh()
        bar.close()
        stop.set()
        inj.stop.set()
        injector.join(150)
        end_wait = time.monotonic() + tally.lost_after + 1
        for t in clients:
            t.join(max(0.1, end_wait - time.monotonic()))
        tally.find_lost()
        with tally.lock:  # calls still under way after the client's total timeout are lost
            still = [rid for rid in tally.inflight if rid not in tally.lost_ids]
            tally.lost += len(still)
            tally.lost_ids.update(still)
        duration_s = time.monotonic() - t0
        inj.sample()
        deadline = time.monotonic() + 60  # every worker registered again (a replacement may still be loading)
        while (registered := cluster.registered_workers()) < args.workers and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            broker_stats = cluster.stats(timeout=5)
        except Exception as e:
            broker_stats = {"error": f"{type(e).__name__}: {e}"}
        inj.sample()
        unexpected = []
        for p in inj.procs:
            if p.popen.poll() is not None and not p.intended_end:
                p.ended = f"ENDED UNEXPECTEDLY (exit {p.popen.returncode})"
                unexpected.append(p.name)
    inj.ctx.destroy(0)

    lat = sorted(tally.latencies)
    pct = lambda q: round(float(np.percentile(lat, q)), 3) if lat else None  # noqa: E731
    failures = []
    if tally.lost:
        failures.append(f"{tally.lost} requests lost")
    if tally.wrong:
        failures.append(f"{tally.wrong} wrong answers ({tally.examples.get('wrong')})")
    if inj.oversized_wrong:
        failures.append(f"oversized requests not refused as too_large: {dict(inj.oversized)}")
    if unexpected:
        failures.append(f"processes ended unexpectedly: {unexpected}")
    if registered < args.workers:
        failures.append(f"{registered} of {args.workers} workers registered at the end")
    result = {
        "benchmark": "soak_serving",
        "duration_s": round(duration_s, 1),
        "settings": {
            "minutes": args.minutes,
            "checkpoint": str(args.checkpoint) if args.checkpoint else "tiny visual_dynamics (fresh weights)",
            "method": info.get("method"),
            "workers": args.workers,
            "clients": args.clients,
            "client_timeout_s": args.timeout,
            "client_retries": args.retries,
            "lost_after_s": tally.lost_after,
            "heartbeat_s": args.heartbeat,
            "liveness": 3,
            "fault_interval_s": args.fault_interval,
            "faults": args.faults,
            "stop_seconds": args.stop_seconds,
            "fuzz_messages_per_burst": args.fuzz_messages,
            "threads_per_worker": args.threads,
            "host": "127.0.0.1",
        },
        "requests": {
            "sent": tally.sent,
            "seeded": tally.seeded,
            "unseeded": tally.unseeded,
            "answered_correctly": tally.answered,
            "wrong": tally.wrong,
            "errored": dict(tally.errors),
            "errored_total": sum(tally.errors.values()),
            "lost": tally.lost,
            "ended_after_lost": tally.late,
            "examples": tally.examples,
            "latency_p50_s": pct(50),
            "latency_p99_s": pct(99),
            "latency_max_s": round(lat[-1], 3) if lat else None,
        },
        "faults": dict(inj.counts),
        "fault_events": inj.events,
        "oversized": {
            "images_per_request": DEFAULT_MAX_REQUEST_BYTES // (int(info["image_size"]) ** 2 * 3) + 1,
            "sent": sum(inj.oversized.values()),
            "replies": dict(inj.oversized),
        },
        "fuzz": {"messages": inj.fuzz_sent, "replies": inj.fuzz_replies},
        "processes": [p.as_dict() for p in inj.procs],
        "workers_registered_at_end": registered,
        "broker_stats_at_end": broker_stats,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "passed": not failures,
        "failures": failures,
    }
    print("\n".join(summary_lines(result)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if failures and not args.log_dir:
        for p in inj.procs:
            if "UNEXPECTEDLY" in p.ended:
                log_name = "broker.log" if p.name.startswith("broker") else f"worker{p.name.split('#')[1]}.log"
                print(f"--- {log_name}\n{(log_dir / log_name).read_text(errors='replace')[-3000:]}", file=sys.stderr)
    tmp.cleanup()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
