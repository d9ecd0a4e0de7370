"""``LocalCluster``: a broker and N workers of one checkpoint as subprocesses on this machine (``imagine-ros cluster``).

The processes are ``python -m imagine_ros.cli broker ...`` (= ``imagine-ros broker ...``, which loads no torch) and
``python -m imagine_ros.cli serve ...`` (= ``imagine-ros serve``), so a worker can be killed or the broker restarted
like any real deployment.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from imagine_ros.errors import ImagineRosError
from imagine_ros.serving import defaults
from imagine_ros.serving import protocol as mdp
from imagine_ros.serving.client import MDPClient, RemotePredictor, ServiceUnavailable
from imagine_ros.serving.curve import CurveClientKeys

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ClusterError(ImagineRosError):
    """A broker or worker process of a LocalCluster did not start or ended early."""


class LocalCluster:
    """Context manager: ``imagine-ros broker`` + ``workers`` x ``imagine-ros serve`` for ``checkpoint``.

    host/port: where the broker binds (``host="*"`` binds every interface; clients on this machine use 127.0.0.1;
    ``port=None`` picks a free one); service: default the checkpoint's method name; max_batch: images per forward
    pass of each worker (the broker lets a worker hold ``2 * max_batch`` requests). heartbeat_interval, liveness,
    request_timeout, max_wait_ms: passed to the processes. ``startup_timeout``: seconds to wait until a worker answers.
    ``threads``: torch threads per worker (None: torch's default). ``log_dir``: where the processes' output goes
    (default: a temporary folder; see :attr:`log_dir`). ``flow_net``: a flow network file the workers use in place of
    DIS for a frame-only model (``imagine-ros serve --flow-net``). ``extra_broker_args`` / ``extra_worker_args``:
    more flags of ``imagine-ros broker`` / ``serve`` (e.g. CURVE keys or limits); ``curve``: the CURVE client keys
    that this object's own clients (:meth:`stats`, :meth:`predictor`, the readiness probe) use.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        workers: int = 1,
        device: str = "cpu",
        host: str = "127.0.0.1",
        port: int | None = None,
        service: str | None = None,
        max_batch: int = defaults.MAX_BATCH,
        *,
        heartbeat_interval: float = mdp.HEARTBEAT_INTERVAL,
        liveness: int = mdp.HEARTBEAT_LIVENESS,
        request_timeout: float = defaults.REQUEST_TIMEOUT,
        max_wait_ms: float = defaults.MAX_WAIT_MS,
        threads: int | None = None,
        startup_timeout: float = 120.0,
        log_dir: str | Path | None = None,
        extra_worker_args: list[str] | None = None,
        flow_net: str | Path | None = None,
        extra_broker_args: list[str] | None = None,
        curve: CurveClientKeys | None = None,
    ):
        from imagine_ros.models.checkpoint import read_checkpoint_meta

        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.checkpoint = str(checkpoint)
        meta = read_checkpoint_meta(checkpoint)
        self.service = service or str(meta["method"])
        self.num_workers = int(workers)
        self.device = device
        self.port = port or free_port("127.0.0.1" if host in ("*", "0.0.0.0") else host)
        self.bind = f"tcp://{host}:{self.port}"
        connect_host = "127.0.0.1" if host in ("*", "0.0.0.0") else host
        self.endpoint = f"tcp://{connect_host}:{self.port}"
        self.max_batch = int(max_batch)
        self.heartbeat_interval = float(heartbeat_interval)
        self.liveness = int(liveness)
        self.request_timeout = float(request_timeout)
        self.max_wait_ms = float(max_wait_ms)
        self.threads = threads
        self.startup_timeout = float(startup_timeout)
        self.extra_worker_args = list(extra_worker_args or [])
        self.extra_broker_args = list(extra_broker_args or [])
        self.curve = curve
        self.flow_net = None if flow_net is None else str(flow_net)
        self._tmp = None if log_dir is not None else tempfile.TemporaryDirectory(prefix="imagine-cluster-")
        self.log_dir = Path(log_dir) if log_dir is not None else Path(self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.broker_process: subprocess.Popen | None = None
        self.worker_processes: list[subprocess.Popen] = []
        self._logs: list[Any] = []

    # ------------------------------------------------------------------------------------------------- processes
    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        out = open(self.log_dir / log_name, "ab")  # closed in stop()
        self._logs.append(out)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return subprocess.Popen(
            [sys.executable, "-m", "imagine_ros.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )

    def broker_args(self) -> list[str]:
        return [
            "broker",
            "--bind",
            self.bind,
            "--heartbeat",
            str(self.heartbeat_interval),
            "--liveness",
            str(self.liveness),
            "--request-timeout",
            str(self.request_timeout),
            "--worker-credit",
            str(2 * self.max_batch),
            *self.extra_broker_args,
        ]

    def worker_args(self) -> list[str]:
        args = [
            "serve",
            "--checkpoint",
            self.checkpoint,
            "--broker",
            self.endpoint,
            "--device",
            self.device,
            "--service",
            self.service,
            "--max-batch",
            str(self.max_batch),
            "--max-wait-ms",
            str(self.max_wait_ms),
            "--heartbeat",
            str(self.heartbeat_interval),
            "--liveness",
            str(self.liveness),
        ]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        if self.flow_net is not None:
            args += ["--flow-net", self.flow_net]
        return args + self.extra_worker_args

    def start_broker(self) -> subprocess.Popen:
        self.broker_process = self._spawn(self.broker_args(), "broker.log")
        return self.broker_process

    def add_worker(self, extra_args: list[str] | None = None) -> subprocess.Popen:
        """Start one more worker process (``extra_args``: flags of ``imagine-ros serve`` for this one only); its
        output goes to ``worker{index}.log``."""
        p = self._spawn([*self.worker_args(), *(extra_args or [])], f"worker{len(self.worker_processes)}.log")
        self.worker_processes.append(p)
        return p

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL) to worker ``index`` and, for SIGKILL/SIGTERM, wait for it to end."""
        p = self.worker_processes[index]
        p.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            p.wait(10)

    def restart_broker(self, downtime: float = 0.0) -> None:
        """Kill the broker (SIGKILL), wait ``downtime`` seconds, start a new one on the same address."""
        if self.broker_process is not None:
            self.broker_process.kill()
            self.broker_process.wait(10)
        time.sleep(downtime)
        self.start_broker()

    def log_tail(self, name: str, chars: int = 2000) -> str:
        try:
            return (self.log_dir / name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.broker_process is not None and self.broker_process.poll() is not None:
            raise ClusterError(
                f"the broker ended (exit {self.broker_process.returncode}):\n{self.log_tail('broker.log')}"
            )
        for i, p in enumerate(self.worker_processes):
            if p.poll() is not None:
                raise ClusterError(f"worker {i} ended (exit {p.returncode}):\n{self.log_tail(f'worker{i}.log')}")

    def stats(self, timeout: float = 2.0) -> dict[str, Any]:
        """The broker's counters and workers (its ``mmi.stats`` service); raises ServiceUnavailable if it is down."""
        with MDPClient(self.endpoint, timeout=timeout, retries=0, curve=self.curve) as client:
            return json.loads(client.request("mmi.stats", [])[0].bytes)

    def registered_workers(self) -> int:
        """How many workers of this cluster's service the broker knows now (0 when the broker does not answer)."""
        try:
            return len(self.stats(0.5)["services"].get(self.service, {}).get("workers", []))
        except ServiceUnavailable:
            return 0

    def wait_ready(self, timeout: float | None = None, workers: int | None = None) -> None:
        """Wait until ``workers`` (default: every running worker process) are registered with the broker and one
        answers an ``info`` request; raise :class:`ClusterError` when a process ends or the time is up."""
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        want = sum(p.poll() is None for p in self.worker_processes) if workers is None else workers
        while True:
            self._check_alive()
            if self.registered_workers() >= want:
                break
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{self.registered_workers()} of {want} workers of {self.service!r} registered at {self.endpoint} "
                    f"within {self.startup_timeout:g} s; logs in {self.log_dir}"
                )
            time.sleep(0.1)
        probe_timeout = max(1.0, deadline - time.monotonic())
        with RemotePredictor(self.endpoint, self.service, timeout=probe_timeout, curve=self.curve) as probe:
            probe.info()

    def start(self) -> LocalCluster:
        try:
            self.start_broker()
            for _ in range(self.num_workers):
                self.add_worker()
            if self.num_workers:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every process, workers first (so that their DISCONNECT still reaches the broker), then the broker;
        SIGKILL what has not ended after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for group in (self.worker_processes, [self.broker_process] if self.broker_process else []):
            for p in group:
                if p.poll() is None:
                    p.terminate()
            for p in group:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for f in self._logs:
            f.close()
        self._logs.clear()

    def predictor(self, **kw: Any) -> RemotePredictor:
        """A :class:`RemotePredictor` of this cluster's service (keyword arguments: timeout, retries, ...)."""
        kw.setdefault("curve", self.curve)
        return RemotePredictor(self.endpoint, self.service, **kw)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
