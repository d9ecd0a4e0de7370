"""Defaults of the broker, the workers and the local cluster, in one place. The classes (:class:`Broker`,
:class:`Worker`, :class:`LocalCluster`) and the command line (``imagine-ros broker``, ``serve``, ``cluster``) read
them from here; this module imports neither ZeroMQ nor torch, so that ``imagine-ros broker --help`` stays light."""

from __future__ import annotations

from imagine_ros.serving.protocol import HEARTBEAT_INTERVAL, HEARTBEAT_LIVENESS

PORT = 5555  # the broker's TCP port
BIND = f"tcp://*:{PORT}"  # what ``imagine-ros broker`` binds
BROKER = f"tcp://127.0.0.1:{PORT}"  # where ``imagine-ros serve`` finds the broker

# --- broker
REQUEST_TIMEOUT = 30.0  # seconds a request may wait for a worker
WORKER_CREDIT = 16  # requests a worker may hold at once (2 x the default max_batch of a worker)
BROKER_MAX_MESSAGE_SIZE = 1 << 30  # bytes per inbound frame (replies of large batches pass through the broker too)
MAX_QUEUED = 10_000  # requests waiting for a worker, all services together
# body bytes of one request: not above the worker's default max_message_size (a bigger frame would make ZeroMQ drop the
# worker's connection), so that what the broker accepts every default worker can receive
MAX_REQUEST_BYTES = 64 << 20
MAX_QUEUED_BYTES = 1 << 30  # body bytes of every request the broker holds (queued or handed to a worker)
WORKER_TIMEOUT = 120.0  # seconds a worker may hold a request before it is taken back

# --- worker
MAX_BATCH = 8  # images per forward pass
MAX_WAIT_MS = 2.0  # longest wait for more requests to fill a batch
MAX_PIXELS = 1 << 24  # output pixels per request: B * N * T * H * W
WORKER_MAX_MESSAGE_SIZE = 64 << 20  # bytes per inbound frame (requests)
WORKER_MAX_REQUEST_BYTES = MAX_REQUEST_BYTES  # body bytes per request (= the broker's default)

__all__ = [
    "BIND",
    "BROKER",
    "BROKER_MAX_MESSAGE_SIZE",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_LIVENESS",
    "MAX_BATCH",
    "MAX_PIXELS",
    "MAX_QUEUED",
    "MAX_QUEUED_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_WAIT_MS",
    "PORT",
    "REQUEST_TIMEOUT",
    "WORKER_CREDIT",
    "WORKER_MAX_MESSAGE_SIZE",
    "WORKER_MAX_REQUEST_BYTES",
    "WORKER_TIMEOUT",
]
