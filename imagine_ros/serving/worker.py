"""An MDP/0.2 worker that serves one Predictor as one service, with request batching.

Two threads:

- the **I/O thread** owns the DEALER socket to the broker: READY, heartbeats every ``heartbeat_interval`` (whatever
  the model is doing), reconnection on a new socket when the broker has been silent for ``liveness`` intervals or sent
  DISCONNECT, decoding and checking requests (a bad request is answered with an error here, at once), ``info``
  requests, and sending the replies that the compute thread hands back over an inproc PAIR socket. It never blocks
  on the broker: every send is non-blocking, and a send that cannot be queued (ZeroMQ has no connection left to send
  on) counts as a lost connection. A socket monitor reports connection events: a dropped connection (ZeroMQ closes
  it for good on a protocol error, e.g. an inbound frame above ``max_message_size``, without reconnecting) or a
  failed handshake (e.g. a CURVE key the broker refuses, or a wrong broker key) is logged and answered with a new
  socket, after a back-off that doubles from ``RECONNECT_MIN_S`` to ``RECONNECT_MAX_S`` while the broker does not
  answer (reset by the first HEARTBEAT or REQUEST on a connection). A DISCONNECT right after READY (a key the broker
  does not accept as a worker's) backs off the same way. :attr:`Worker.connection` says where the connection stands.
  If the compute thread ends (a bug, or an exception that is not an
  ``Exception``), the I/O thread sends DISCONNECT and stops (no more heartbeats): the broker queues what this worker
  held again, and :meth:`Worker.run` raises. On stop, the last socket lingers ``STOP_LINGER_MS`` so that its
  DISCONNECT gets out;
- the **compute thread** takes checked requests from a queue and runs the model. Requests that arrive together are
  batched into one :meth:`Predictor.predict` call, up to ``max_batch`` images, waiting at most ``max_wait_ms`` for
  more: requests without a seed and with the same ``num_samples`` and the same presence of conditions share a call
  (their results are random either way). A request with a seed always gets its own call, so its result is exactly the
  in-process ``Predictor.predict(..., seed=seed)`` result.

Limits: ``max_message_size`` bytes per inbound frame (ZeroMQ drops the connection when the broker sends more; the
worker then reconnects, but the request is lost), at least ``max_request_bytes`` (-1: no limit), so that a request the
worker's own check can refuse always arrives; a request with more than ``codec.MAX_ARRAYS + 1`` body frames or more
than ``max_request_bytes`` body bytes is refused (``too_large``) before it is decoded. The defaults equal the broker's
default ``max_request_bytes``, so the broker refuses (``too_large``) any request a default worker could not
receive. And a pixel budget ``max_pixels`` on the output, ``B * N * T * H * W``: a request above it is refused ("over
the pixel budget") before the model runs, and requests are batched into one forward pass only while the batch's
summed output pixels stay within it.
"""

from __future__ import annotations

import itertools
import logging
import queue
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

# imported here, not in the I/O loop: it loads asyncio (~0.5 s), which stalled the first heartbeats there
from zmq.utils.monitor import recv_monitor_message

from imagine_ros.prediction import Prediction
from imagine_ros.predictor import PredictorProtocol, check_request, condition_kind
from imagine_ros.serving import codec, defaults
from imagine_ros.serving import protocol as mdp
from imagine_ros.serving.curve import CurveClientKeys

log = logging.getLogger(__name__)

# the defaults live in imagine_ros.serving.defaults (read by the command line too)
DEFAULT_MAX_BATCH = defaults.MAX_BATCH
DEFAULT_MAX_WAIT_MS = defaults.MAX_WAIT_MS
DEFAULT_MAX_PIXELS = defaults.MAX_PIXELS
DEFAULT_MAX_MESSAGE_SIZE = defaults.WORKER_MAX_MESSAGE_SIZE
DEFAULT_MAX_REQUEST_BYTES = defaults.WORKER_MAX_REQUEST_BYTES
RECONNECT_MIN_S = 0.1  # first wait before a new socket after a lost connection or a refused handshake
RECONNECT_MAX_S = 5.0  # the back-off doubles up to this while the broker does not answer
STOP_LINGER_MS = 500  # how long the last socket may keep sending (the DISCONNECT) after stop
_POLL_S = 0.05
_ids = itertools.count()
_MONITOR_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@dataclass
class _Job:
    client: bytes
    generation: int
    request: codec.PredictRequest
    received: float
    pixels: int  # output pixels B * N * T * H * W


class Worker:
    """Serve ``predictor`` (any :class:`PredictorProtocol`) as ``service`` (default: its method name) at ``broker``.

    ``start()`` runs the two threads in the background (``stop()`` ends them); ``run()`` blocks until ``stop()``
    or KeyboardInterrupt. Other arguments: see the module docstring and :class:`~imagine_ros.serving.broker.Broker`.
    """

    def __init__(
        self,
        predictor: PredictorProtocol,
        broker: str,
        *,
        service: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        heartbeat_interval: float = mdp.HEARTBEAT_INTERVAL,
        liveness: int = mdp.HEARTBEAT_LIVENESS,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        curve: CurveClientKeys | None = None,
        context: zmq.Context | None = None,
    ):
        if (
            max_batch < 1
            or max_wait_ms < 0
            or max_pixels < 1
            or heartbeat_interval <= 0
            or liveness < 1
            or max_request_bytes < 1
        ):
            raise ValueError(
                "need max_batch >= 1, max_wait_ms >= 0, max_pixels >= 1, heartbeat_interval > 0, liveness >= 1, "
                f"max_request_bytes >= 1; got {max_batch}, {max_wait_ms}, {max_pixels}, {heartbeat_interval}, "
                f"{liveness}, {max_request_bytes}"
            )
        if 0 <= max_message_size < max_request_bytes:
            raise ValueError(
                f"max_message_size ({max_message_size} bytes per frame) must be -1 or at least max_request_bytes "
                f"({max_request_bytes}): ZeroMQ drops the connection on a larger frame instead of the worker refusing "
                "the request"
            )
        self.predictor = predictor
        self.broker = broker
        self.service = service or predictor.method
        if not mdp.valid_service(self.service.encode("ascii", "replace")) or self.service.startswith(mdp.MMI_PREFIX):
            raise ValueError(f"service name must be 1-255 printable ASCII characters, not mmi.*; got {self.service!r}")
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_pixels = int(max_pixels)
        self.heartbeat_interval = float(heartbeat_interval)
        self.liveness = int(liveness)
        self.max_message_size = int(max_message_size)
        self.max_request_bytes = int(max_request_bytes)
        self.curve = curve
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._stop = threading.Event()
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._generation = 0
        self._threads: list[threading.Thread] = []
        self._pipe_addr = f"inproc://imagine-worker-{id(self)}-{next(_ids)}"
        self._pipe_io: zmq.Socket | None = None
        self._pipe_compute: zmq.Socket | None = None
        self._dealer: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._poller = zmq.Poller()
        self._compute_thread: threading.Thread | None = None
        self._connected_at = 0.0
        self._reconnect_at = 0.0  # while there is no socket: when to make the next one
        self._backoff = RECONNECT_MIN_S
        self.counters = dict.fromkeys(
            (
                "requests",
                "replies",
                "errors",
                "batches",
                "batched_requests",
                "reconnects",
                "malformed",
                "connections_lost",
                "handshake_failures",
                "send_failures",
            ),
            0,
        )
        # where the connection to the broker stands: "connecting" (READY sent, nothing heard yet), "connected" (the
        # broker answers), "waiting" (no socket: back-off before the next one); the last problem and since when
        self.connection: dict[str, Any] = {"state": "connecting", "since": time.time(), "problem": None}
        self.info = {
            "service": self.service,
            "method": predictor.method,
            "image_size": int(predictor.image_size),
            "horizon": int(predictor.horizon),
            "condition_dim": int(predictor.condition_dim),
            "condition_kind": condition_kind(predictor),
            "max_batch": self.max_batch,
            "max_pixels": self.max_pixels,
            "device": str(getattr(predictor, "device", "")),
            "flows_only": bool(getattr(predictor, "supports_flows_only", False)),
        }

    # ------------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> Worker:
        self._stop.clear()
        self._pipe_io = self.context.socket(zmq.PAIR)
        self._pipe_io.linger = 0
        self._pipe_io.bind(self._pipe_addr)
        self._pipe_compute = self.context.socket(zmq.PAIR)
        self._pipe_compute.linger = 0
        self._pipe_compute.connect(self._pipe_addr)
        self._poller = zmq.Poller()
        self._poller.register(self._pipe_io, zmq.POLLIN)
        self._backoff = RECONNECT_MIN_S
        self._compute_thread = threading.Thread(
            target=self._compute_loop, name=f"mdp-worker-compute-{self.service}", daemon=True
        )
        self._threads = [
            threading.Thread(target=self._io_loop, name=f"mdp-worker-io-{self.service}", daemon=True),
            self._compute_thread,
        ]
        for t in reversed(self._threads):  # the compute thread first: the I/O thread stops when it is not alive
            t.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both threads; the broker is told (DISCONNECT) so it re-queues what this worker held."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        stuck = [t.name for t in self._threads if t.is_alive()]
        self._threads = []
        if stuck:
            log.warning("worker threads %s did not stop within %.3g s", stuck, timeout)
        elif self._own_context:
            self.context.term()

    def run(self) -> None:
        """Serve in the background threads until :meth:`stop` or KeyboardInterrupt (then stop cleanly)."""
        self.start()
        try:
            while not self._stop.wait(0.2):
                if not all(t.is_alive() for t in self._threads):
                    raise RuntimeError("a worker thread ended unexpectedly")
        finally:
            self.stop()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    # ---------------------------------------------------------------------------------------------------- I/O thread
    def _set_state(self, state: str, problem: str | None = None) -> None:
        if state != self.connection["state"] or problem is not None:
            self.connection = {
                "state": state,
                "since": time.time(),
                "problem": problem if problem is not None else self.connection["problem"],
            }

    def _close_socket(self, linger: int = 0) -> None:
        if self._monitor is not None:
            self._poller.unregister(self._monitor)
            try:
                self._dealer.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None
        if self._dealer is not None:
            self._poller.unregister(self._dealer)
            self._dealer.close(linger)
            self._dealer = None

    def _connect(self) -> None:
        self._close_socket()
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 0
        sock.maxmsgsize = self.max_message_size
        sock.rcvhwm = sock.sndhwm = 10_000
        if self.curve is not None:
            self.curve.apply(sock)
        self._monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        sock.connect(self.broker)
        self._dealer = sock
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._generation += 1
        self._connected_at = time.monotonic()
        self._broker_expiry = time.monotonic() + self.heartbeat_interval * self.liveness
        self._set_state("connecting")
        log.info("worker for %r connecting to %s (connection %d)", self.service, self.broker, self._generation)
        self._send(mdp.worker_ready(self.service))  # queued until the connection is up

    def _lost(self, problem: str, delay: float | None = None) -> None:
        """The connection is gone or useless: close the socket; a new one after ``delay`` (default: the back-off,
        which then doubles)."""
        if delay is None:
            delay = self._backoff
            self._backoff = min(RECONNECT_MAX_S, self._backoff * 2)
        self.counters["reconnects"] += 1
        log.warning("worker for %r: %s; reconnecting to %s in %.3g s", self.service, problem, self.broker, delay)
        self._close_socket()
        self._reconnect_at = time.monotonic() + delay
        self._set_state("waiting", problem)

    def _send(self, frames: list) -> bool:
        """Queue ``frames`` to the broker without blocking; False (and the connection is dropped) when ZeroMQ has no
        connection to queue them on, or its queue is full."""
        if self._dealer is None:
            return False
        try:
            self._dealer.send_multipart(frames, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            self.counters["send_failures"] += 1
            self._lost("cannot send to the broker (ZeroMQ has no usable connection to it)")
            return False

    def _socket_events(self) -> None:
        while self._monitor is not None:
            try:
                ev = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            event, value = ev["event"], ev["value"]
            if event == zmq.EVENT_CONNECTED:
                log.debug("worker for %r: TCP connection to %s up", self.service, self.broker)
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                log.info("worker for %r: handshake with %s succeeded", self.service, self.broker)
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.counters["handshake_failures"] += 1
                self._lost(f"the broker refused this worker's key (CURVE/ZAP status {value})")
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self.counters["handshake_failures"] += 1
                self._lost(f"handshake with the broker failed (ZMTP protocol error 0x{value:x})")
            elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self.counters["handshake_failures"] += 1
                self._lost(
                    "the connection closed during the handshake (a wrong broker key, no CURVE where the broker "
                    "wants it, or not an MDP broker?)"
                )
            elif event == zmq.EVENT_DISCONNECTED:
                self.counters["connections_lost"] += 1
                self._lost(
                    "connection to the broker closed (the broker went away, or ZeroMQ dropped it: e.g. an inbound "
                    f"frame above max_message_size {self.max_message_size})"
                )

    def _io_loop(self) -> None:
        try:
            self._connect()
            heartbeat_at = time.monotonic() + self.heartbeat_interval
            while not self._stop.is_set():
                if not self._compute_thread.is_alive():
                    log.error("the compute thread has ended: sending DISCONNECT to the broker and stopping")
                    try:
                        self._drain_replies()  # what it finished before it ended
                    except zmq.ZMQError:
                        pass
                    break
                try:
                    if self._dealer is None:  # backing off: no socket
                        if time.monotonic() >= self._reconnect_at:
                            self._connect()
                            heartbeat_at = time.monotonic() + self.heartbeat_interval
                            continue
                        wait = min(_POLL_S, self._reconnect_at - time.monotonic())
                    else:
                        wait = min(_POLL_S, heartbeat_at - time.monotonic())
                    events = dict(self._poller.poll(max(0.0, wait) * 1000))
                    if self._monitor is not None and events.get(self._monitor):
                        self._socket_events()
                    if self._dealer is not None and events.get(self._dealer):
                        self._drain_broker()
                    if events.get(self._pipe_io):
                        self._drain_replies()
                    if self._dealer is None:
                        continue
                    now = time.monotonic()
                    if now >= heartbeat_at:
                        self._send(mdp.worker_heartbeat())
                        heartbeat_at = now + self.heartbeat_interval
                    if self._dealer is not None and now > self._broker_expiry:
                        self._lost(f"the broker was silent for {self.liveness} heartbeats", delay=0.0)
                except zmq.ContextTerminated:
                    return
                except Exception:
                    log.warning("worker I/O loop error", exc_info=True)
            if self._dealer is not None:
                try:
                    self._dealer.send_multipart(mdp.worker_disconnect(), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        finally:
            self._close_socket(STOP_LINGER_MS)  # a short linger, so that the DISCONNECT gets out
            if self._pipe_io is not None:
                self._pipe_io.close(0)
            self._pipe_io = None

    def _drain_broker(self) -> None:
        sock = self._dealer
        for _ in range(1000):
            if self._dealer is not sock:  # the connection was dropped while handling the last message
                return
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._broker_expiry = time.monotonic() + self.heartbeat_interval * self.liveness
            try:
                msg = mdp.parse_worker(frames)
            except Exception:
                msg = None
            if msg is None:
                self.counters["malformed"] += 1
                log.debug("ignored a malformed message of %d frames from the broker", len(frames))
                continue
            if msg.command in (mdp.W_REQUEST, mdp.W_HEARTBEAT) and self.connection["state"] != "connected":
                self._backoff = RECONNECT_MIN_S  # the broker answers: a healthy connection
                self._set_state("connected")
                log.info("worker for %r registered with %s", self.service, self.broker)
            if msg.command == mdp.W_REQUEST:
                self._request(msg.client, msg.body)
            elif msg.command == mdp.W_DISCONNECT:
                if time.monotonic() - self._connected_at < self.heartbeat_interval:
                    # refused at once (e.g. the broker does not accept this key as a worker): do not storm it
                    self._lost("the broker sent DISCONNECT right after READY (is this key allowed as a worker's?)")
                else:
                    self._lost("the broker sent DISCONNECT", delay=0.0)
                return
            elif msg.command != mdp.W_HEARTBEAT:
                self.counters["malformed"] += 1
                log.debug("ignored an unexpected %s from the broker", mdp.WORKER_COMMANDS[msg.command])

    def _reply(self, client: bytes, body: list) -> None:
        self._send(mdp.worker_final(client, body))

    def _error(self, client: bytes, code: str, message: str) -> None:
        self.counters["errors"] += 1
        log.debug("refused a request: %s", message)
        self._reply(client, codec.encode_error(code, message))

    def _request(self, client: bytes, body: list) -> None:
        self.counters["requests"] += 1
        if len(body) > codec.MAX_ARRAYS + 1:
            self._error(client, "too_large", f"request of {len(body)} body frames (at most {codec.MAX_ARRAYS + 1})")
            return
        nbytes = sum(len(f) for f in body)
        if nbytes > self.max_request_bytes:
            self._error(
                client,
                "too_large",
                f"request of {nbytes} body bytes is over the worker's limit of {self.max_request_bytes} bytes",
            )
            return
        try:
            req = codec.decode_request(body)
        except codec.CodecError as e:
            self._error(client, e.code, str(e))
            return
        if isinstance(req, codec.Body):  # info
            self._reply(client, codec.encode("info", self.info))
            return
        p = self.predictor
        try:
            check_request(req.images, req.conditions, req.num_samples, p.image_size, p.condition_dim)
        except ValueError as e:
            self._error(client, "bad_request", str(e))
            return
        b, h, w = req.images.shape[:3]
        pixels = b * req.num_samples * p.horizon * h * w
        if pixels > self.max_pixels:
            self._error(
                client,
                "too_large",
                f"request is over the pixel budget: {b} images x {req.num_samples} samples x {p.horizon} frames x "
                f"{h}x{w} = {pixels} output pixels > max_pixels {self.max_pixels}",
            )
            return
        self._jobs.put(_Job(client, self._generation, req, time.monotonic(), pixels))

    def _drain_replies(self) -> None:
        for _ in range(1000):
            try:
                frames = self._pipe_io.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            client, generation, body = frames[0].bytes, struct.unpack("<Q", frames[1].bytes)[0], frames[2:]
            if generation == self._generation and self._dealer is not None:  # others would reach nobody
                self.counters["replies"] += 1
                self._reply(client, body)

    # ------------------------------------------------------------------------------------------------ compute thread
    def _compute_loop(self) -> None:
        try:
            self._compute()
        except BaseException:  # the I/O thread sees this thread end: it tells the broker and stops
            log.critical("the compute thread failed", exc_info=True)
        finally:
            self._pipe_compute.close(0)
            self._pipe_compute = None

    def _compute(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._jobs.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            jobs, images = [first], len(first.request.images)
            # a seeded request runs alone: take only what is already queued instead of waiting for more
            deadline = time.monotonic() + (self.max_wait if first.request.seed is None else 0.0)
            while images < self.max_batch:
                try:
                    job = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                jobs.append(job)
                images += len(job.request.images)
            for group in self._groups(jobs):
                self._run(group)

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Seeded requests alone; the others by (num_samples, has conditions, flows only), at most max_batch images
        and at most max_pixels output pixels a call."""
        groups: list[list[_Job]] = []
        open_groups: dict[tuple[int, bool, bool], list[_Job]] = {}
        for job in jobs:
            r = job.request
            if r.seed is not None:
                groups.append([job])
                continue
            key = (r.num_samples, r.conditions is not None, r.flows_only)
            g = open_groups.get(key)
            if (
                g is not None
                and sum(len(j.request.images) for j in g) + len(r.images) <= self.max_batch
                and sum(j.pixels for j in g) + job.pixels <= self.max_pixels
            ):
                g.append(job)
            else:
                g = open_groups[key] = [job]
                groups.append(g)
        return groups

    def _send_back(self, job: _Job, body: list) -> None:
        self._pipe_compute.send_multipart([job.client, struct.pack("<Q", job.generation), *body], copy=False)

    def _run(self, group: list[_Job]) -> None:
        reqs = [j.request for j in group]
        t0 = time.monotonic()
        try:
            images = reqs[0].images if len(reqs) == 1 else np.concatenate([r.images for r in reqs])
            conds = None
            if reqs[0].conditions is not None:
                conds = reqs[0].conditions if len(reqs) == 1 else np.concatenate([r.conditions for r in reqs])
            kwargs = {"flows_only": True} if reqs[0].flows_only and self.info["flows_only"] else {}
            pred = self.predictor.predict(images, conds, reqs[0].num_samples, seed=reqs[0].seed, **kwargs)
        except Exception as e:
            if len(group) > 1:  # find the one that fails; the others still get answers
                for job in group:
                    self._run([job])
                return
            code = "bad_request" if isinstance(e, ValueError) else "internal"
            log.warning("predict failed: %s: %s", type(e).__name__, e)
            self._send_back(group[0], codec.encode_error(code, f"{type(e).__name__}: {e}"))
            return
        self.counters["batches"] += 1
        self.counters["batched_requests"] += len(group)
        done = time.monotonic()
        start = 0
        for job in group:
            stop = start + len(job.request.images)
            part = _slice(pred, start, stop) if len(group) > 1 else pred
            timing = {
                "server_queue": t0 - job.received,
                "server_total": done - job.received,
                "batch_images": float(len(images)),
                "batch_requests": float(len(group)),
            }
            try:
                self._send_back(job, codec.encode_prediction(part, timing))
            except Exception as e:  # e.g. an array dtype the wire does not carry
                self._send_back(job, codec.encode_error("internal", f"cannot encode the prediction: {e}"))
            start = stop


def _slice(pred: Prediction, start: int, stop: int) -> Prediction:
    """Inputs ``start:stop`` of a batched prediction (views, no copies)."""

    def cut(a: Any) -> Any:
        return None if a is None else a[start:stop]

    return Prediction(
        frames=pred.frames[start:stop],
        flows=pred.flows[start:stop],
        flow_source=pred.flow_source,
        method=pred.method,
        condition=cut(pred.condition),
        masks=cut(pred.masks),
        timing=dict(pred.timing),
        frames_synthesised=pred.frames_synthesised,
    )
