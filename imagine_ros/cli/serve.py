"""Serving over ZeroMQ (MDP/0.2): ``broker``, ``serve``, ``keygen``, ``cluster``.

Every default comes from :mod:`imagine_ros.serving.defaults`, the defaults of the classes too; ``broker`` and
``keygen`` never load torch."""

from __future__ import annotations

import argparse

from imagine_ros.cli._common import add_common, sigterm_is_interrupt
from imagine_ros.errors import ConfigError
from imagine_ros.serving import defaults as d


def _mib(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"


def _serving_common(p: argparse.ArgumentParser, worker: bool) -> None:
    """Heartbeat and logging flags shared by ``broker``, ``serve`` and ``cluster`` (and batching: ``serve``,
    ``cluster``)."""
    p.add_argument(
        "--heartbeat",
        type=float,
        default=d.HEARTBEAT_INTERVAL,
        metavar="S",
        help="heartbeat interval in seconds (%(default)s)",
    )
    p.add_argument(
        "--liveness",
        type=int,
        default=d.HEARTBEAT_LIVENESS,
        help="missed heartbeats before a peer counts as dead (default %(default)s)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="logging level (info)"
    )
    if worker:
        p.add_argument(
            "--max-batch", type=int, default=d.MAX_BATCH, help="images per forward pass, batched (default %(default)s)"
        )
        p.add_argument(
            "--max-wait-ms",
            type=float,
            default=d.MAX_WAIT_MS,
            help="longest wait for more requests to batch (default %(default)s)",
        )
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _serving_logging(args: argparse.Namespace) -> None:
    import logging

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def _request_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--request-timeout",
        type=float,
        default=d.REQUEST_TIMEOUT,
        metavar="S",
        help="seconds a request may wait for a worker before an 'expired' error reply (default %(default)s)",
    )


# ----------------------------------------------------------------------------------------------------------- broker
def add_broker(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Route requests from clients to the workers of each service (model name), with heartbeats, worker expiry, "
        "request expiry and optional CURVE encryption/authentication. Runs until Ctrl-C/SIGTERM."
    )
    p.add_argument("--bind", default=d.BIND, help="ZeroMQ endpoint to bind (default %(default)s)")
    _request_timeout(p)
    p.add_argument(
        "--worker-credit",
        type=int,
        default=d.WORKER_CREDIT,
        help="requests one worker may hold at once (default %(default)s)",
    )
    p.add_argument(
        "--max-message-size",
        type=int,
        default=d.BROKER_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help=f"largest inbound frame; larger ones drop the sender (default {_mib(d.BROKER_MAX_MESSAGE_SIZE)}; "
        "-1 no limit)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=d.MAX_REQUEST_BYTES,
        metavar="BYTES",
        help="largest request body (all its frames); larger ones get a 'too_large' error; keep it at most the "
        f"workers' --max-message-size (default {_mib(d.MAX_REQUEST_BYTES)}, the workers' default)",
    )
    p.add_argument(
        "--max-queued-bytes",
        type=int,
        default=d.MAX_QUEUED_BYTES,
        metavar="BYTES",
        help="request bodies the broker may hold, queued or at workers; beyond, 'overloaded' errors (default "
        f"{_mib(d.MAX_QUEUED_BYTES)})",
    )
    p.add_argument(
        "--worker-timeout",
        type=float,
        default=d.WORKER_TIMEOUT,
        metavar="S",
        help="longest a worker may hold a request (one inference, queueing in the worker included); then it is "
        "queued again once for another worker, or answered with an 'expired' error (default %(default)s)",
    )
    p.add_argument(
        "--curve-secret", metavar="FILE", help="enable CURVE: the broker's NAME.key_secret (imagine-ros keygen)"
    )
    p.add_argument(
        "--curve-allow",
        metavar="DIR",
        help="with --curve-secret: folder of allowed client/worker public keys (*.key); default: any key",
    )
    p.add_argument(
        "--curve-workers",
        metavar="DIR",
        help="with --curve-secret: folder of the public keys (*.key) that may register as workers (they are "
        "admitted as clients too); default: any admitted key may",
    )
    _serving_common(p, worker=False)


def run_broker(args: argparse.Namespace) -> int:
    import zmq

    from imagine_ros.serving.broker import Broker
    from imagine_ros.serving.curve import CurveServerKeys

    _serving_logging(args)
    if (args.curve_allow or args.curve_workers) and not args.curve_secret:
        raise ConfigError("--curve-allow and --curve-workers need --curve-secret")
    curve = (
        CurveServerKeys.from_files(args.curve_secret, args.curve_allow, args.curve_workers)
        if args.curve_secret
        else None
    )
    try:
        broker = Broker(
            args.bind,
            heartbeat_interval=args.heartbeat,
            liveness=args.liveness,
            request_timeout=args.request_timeout,
            worker_credit=args.worker_credit,
            max_message_size=args.max_message_size,
            max_request_bytes=args.max_request_bytes,
            max_queued_bytes=args.max_queued_bytes,
            worker_timeout=args.worker_timeout,
            curve=curve,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    sigterm_is_interrupt()
    print(f"imagine-ros broker on {args.bind}{' (CURVE)' if curve else ''}", flush=True)
    try:
        broker.run()
    except zmq.ZMQError as e:
        raise ConfigError(f"cannot bind {args.bind}: {e}") from None
    except KeyboardInterrupt:
        pass
    return 0


# ------------------------------------------------------------------------------------------------------------ serve
def add_serve(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Load a checkpoint and answer prediction requests routed by the broker; the service name is the method name "
        "unless --service is given. Runs until Ctrl-C/SIGTERM."
    )
    add_common(p, "checkpoint", "flow-net", "device", required=["checkpoint"])
    p.add_argument("--broker", default=d.BROKER, help="broker endpoint (default %(default)s)")
    p.add_argument("--service", default=None, help="service name (default: the checkpoint's method name)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=d.MAX_PIXELS,
        help="budget of output pixels B*N*T*H*W per request and per batched forward pass (default %(default)s)",
    )
    p.add_argument(
        "--max-message-size",
        type=int,
        default=d.WORKER_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help="largest inbound request frame; at least --max-request-bytes (default "
        f"{_mib(d.WORKER_MAX_MESSAGE_SIZE)}; -1 no limit)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=d.WORKER_MAX_REQUEST_BYTES,
        metavar="BYTES",
        help="largest request body (all its frames); larger ones get a 'too_large' error (default "
        f"{_mib(d.WORKER_MAX_REQUEST_BYTES)})",
    )
    p.add_argument("--curve-secret", metavar="FILE", help="enable CURVE: this worker's NAME.key_secret")
    p.add_argument("--curve-server-key", metavar="FILE", help="with --curve-secret: the broker's public NAME.key")
    _serving_common(p, worker=True)


def _curve_client(args: argparse.Namespace):
    from imagine_ros.serving.curve import CurveClientKeys

    if bool(args.curve_secret) != bool(args.curve_server_key):
        raise ConfigError("CURVE needs both --curve-secret and --curve-server-key")
    return CurveClientKeys.from_files(args.curve_secret, args.curve_server_key) if args.curve_secret else None


def run_serve(args: argparse.Namespace) -> int:
    import torch

    from imagine_ros.predictor import Predictor
    from imagine_ros.serving.worker import Worker

    _serving_logging(args)
    curve = _curve_client(args)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, flow_net=args.flow_net)
    try:
        worker = Worker(
            predictor,
            args.broker,
            service=args.service,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_pixels=args.max_pixels,
            heartbeat_interval=args.heartbeat,
            liveness=args.liveness,
            max_message_size=args.max_message_size,
            max_request_bytes=args.max_request_bytes,
            curve=curve,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    sigterm_is_interrupt()
    print(
        f"imagine-ros serve: {predictor.method} as {worker.service!r} on {predictor.device} via {args.broker}",
        flush=True,
    )
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    return 0


# ----------------------------------------------------------------------------------------------------------- keygen
def add_keygen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="key name, e.g. broker, gpu1, robot")
    p.add_argument("--dir", default="keys", metavar="DIR", help="folder to write the key files into (default keys)")


def run_keygen(args: argparse.Namespace) -> int:
    from imagine_ros.serving.curve import generate_keys

    public, secret = generate_keys(args.dir, args.name)
    print(f"public key {public} (copy it to peers), secret key {secret} (keep it private)")
    return 0


# ---------------------------------------------------------------------------------------------------------- cluster
def add_cluster(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run a broker and --workers worker processes of one checkpoint on this machine (every worker on --device) "
        "until Ctrl-C; clients connect to the broker's port."
    )
    add_common(p, "checkpoint", "flow-net", "device", required=["checkpoint"])
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--host", default="*", help="interface the broker binds: * = all, 127.0.0.1 = local (default *)")
    p.add_argument("--port", type=int, default=d.PORT, help="broker port (default %(default)s)")
    p.add_argument("--service", default=None, help="service name (default: the checkpoint's method name)")
    _request_timeout(p)
    p.add_argument("--log-dir", default=None, metavar="DIR", help="process logs (default: a temporary folder)")
    _serving_common(p, worker=True)


def run_cluster(args: argparse.Namespace) -> int:
    import time

    from imagine_ros.serving.cluster import LocalCluster

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    sigterm_is_interrupt()
    cluster = LocalCluster(
        args.checkpoint,
        workers=args.workers,
        device=args.device,
        host=args.host,
        port=args.port,
        service=args.service,
        max_batch=args.max_batch,
        heartbeat_interval=args.heartbeat,
        liveness=args.liveness,
        request_timeout=args.request_timeout,
        max_wait_ms=args.max_wait_ms,
        threads=args.threads,
        log_dir=args.log_dir,
        flow_net=args.flow_net,
    )
    try:
        with cluster:
            print(
                f"imagine-ros cluster: broker on {cluster.bind}, {args.workers} worker(s) of {cluster.service!r}; "
                f"clients use {cluster.endpoint} (logs in {cluster.log_dir}); Ctrl-C stops",
                flush=True,
            )
            while True:
                time.sleep(1.0)
                cluster._check_alive()
    except KeyboardInterrupt:
        pass
    return 0
