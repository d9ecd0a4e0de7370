"""The MDP/0.2 broker: one ROUTER socket between clients and workers; services = model names.

- Requests for a service are queued until one of its workers has room, then sent to the least busy worker (ties:
  the one that has waited longest). A request that waits longer than ``request_timeout`` seconds in the queue (no
  worker yet, or all busy) is answered with an ``expired`` error.
- Heartbeats per RFC 18: the broker sends HEARTBEAT to every worker each ``heartbeat_interval``; a worker that sent
  nothing for ``liveness`` intervals is dead. Requests a dead (or disconnecting) worker was holding are queued again
  once (workers are idempotent); clients retry anyway.
- A request handed to a worker must be answered within ``worker_timeout`` seconds (the longest one inference may
  take, waiting behind the worker's other requests included). Otherwise it is taken back from that worker and queued
  again once, for another worker; the second time it is answered with an ``expired`` error. A late reply of the
  worker is dropped: each hand-over gets its own token in the client-address frame, so a late reply can never be
  taken for the answer to a later request of the same client.
- Memory: ZeroMQ's ``max_message_size`` limits each frame only, so a request is also refused (error ``too_large``)
  when it has more than ``codec.MAX_ARRAYS + 1`` body frames or more than ``max_request_bytes`` body bytes, and new
  requests are refused (error ``overloaded``) while the bodies the broker holds (queued and handed to workers) would
  exceed ``max_queued_bytes`` or more than ``max_queued`` requests wait.
- With CURVE and a worker key folder (``CurveServerKeys.workers_dir``), only those keys may register as workers:
  worker-protocol messages from any other key (the ZAP ``User-Id`` of the received frame) get DISCONNECT and are
  otherwise ignored.
- A worker may hold up to ``worker_credit`` requests at once so that it can batch them into one forward pass
  (``worker_credit=1`` is the classic one-request-at-a-time Majordomo broker). The frames on the wire are RFC 18's.
- Protocol violations by a worker (a command out of order, unknown command, malformed frames, a command from a
  worker it does not know) are answered with DISCONNECT; malformed client messages are dropped. Nothing that arrives
  can crash the loop: every message is handled inside ``try``; problems are logged at debug level.
- ``mmi.service`` (RFC 8) answers "200" when a service has a worker, "404" otherwise; ``mmi.stats`` answers the
  broker's counters and its workers' loads as JSON (:meth:`Broker.stats`); other ``mmi.*`` get "501".
- A socket monitor logs (warning) every failed handshake (a peer whose CURVE key is refused, a wrong broker key, no
  encryption where CURVE is on, not ZMTP): ``mmi.stats`` counts them (``handshake_failures``), lists the last
  ``RECENT_FAILURES`` with the reason and how many seconds ago (``recent_handshake_failures``) and the public keys
  the CURVE allowlist refused last (``refused_keys``), so a worker that cannot register shows up here, not only in
  its own log. (libzmq's monitor names the broker's endpoint, not the peer's address.)
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

# imported here, not in the I/O loop: it loads asyncio (~0.5 s), which stalled the first heartbeats there
from zmq.utils.monitor import recv_monitor_message

from imagine_ros.serving import codec, defaults
from imagine_ros.serving import protocol as mdp
from imagine_ros.serving.curve import CurveServerKeys, refused_keys

log = logging.getLogger(__name__)

# the defaults live in imagine_ros.serving.defaults (read by the command line too)
DEFAULT_REQUEST_TIMEOUT = defaults.REQUEST_TIMEOUT
DEFAULT_WORKER_CREDIT = defaults.WORKER_CREDIT
DEFAULT_MAX_MESSAGE_SIZE = defaults.BROKER_MAX_MESSAGE_SIZE
DEFAULT_MAX_QUEUED = defaults.MAX_QUEUED
DEFAULT_MAX_REQUEST_BYTES = defaults.MAX_REQUEST_BYTES
DEFAULT_MAX_QUEUED_BYTES = defaults.MAX_QUEUED_BYTES
DEFAULT_WORKER_TIMEOUT = defaults.WORKER_TIMEOUT
MAX_REQUEUE = 1  # a request whose worker died or timed out is queued again this many times, then answered with an error
MAX_BODY_FRAMES = codec.MAX_ARRAYS + 1  # a header frame and at most MAX_ARRAYS array frames
RECENT_FAILURES = 10  # handshake failures listed in mmi.stats
_POLL_S = 0.05  # longest wait before the loop looks at its stop flag and timers


@dataclass
class _Request:
    client: bytes
    service: bytes
    body: list[Any]
    deadline: float  # while queued: when it expires
    nbytes: int = 0  # body bytes, counted in Broker._held_bytes until the request is answered
    requeued: int = 0
    token: bytes = b""  # the client address the worker holding it was given (unique per hand-over)
    worker_deadline: float = math.inf  # while a worker holds it: when it is taken back
    avoid: bytes | None = None  # the worker that timed out on it: the requeued request goes to another one


@dataclass
class _Worker:
    identity: bytes
    service: bytes
    expiry: float
    order: int  # for least-recently-used ties
    inflight: list[_Request] = field(default_factory=list)


@dataclass
class _Service:
    name: bytes
    requests: deque = field(default_factory=deque)
    workers: list[_Worker] = field(default_factory=list)


def _short(frame: Any, limit: int = 16) -> bytes | None:
    """The bytes of a small frame, or None when it is longer than ``limit`` (so big frames are never copied)."""
    return mdp.as_bytes(frame) if len(frame) <= limit else None


class Broker:
    """An MDP/0.2 broker. ``start()`` runs it in a daemon thread (``stop()`` ends it); ``run()`` blocks instead.

    bind: a ZeroMQ endpoint, e.g. ``tcp://*:5555`` (``tcp://127.0.0.1:*`` picks a free port; see :attr:`endpoint`).
    heartbeat_interval: seconds between heartbeats; liveness: missed intervals before a worker is dead.
    request_timeout: seconds a request waits for a worker of its service before an ``expired`` error reply.
    worker_credit: requests one worker may hold at once (its batching window); max_message_size: bytes per inbound
    frame (-1: no limit; a peer that sends more is disconnected by ZeroMQ); max_queued: requests waiting for a worker;
    max_request_bytes: body bytes of one request (more: ``too_large``); max_queued_bytes: body bytes of all requests
    held, queued or handed to workers (more: ``overloaded``); worker_timeout: seconds a worker may hold a request
    (see the module docstring); curve: CURVE server keys or None (with ``workers_dir``: the worker allowlist).
    """

    def __init__(
        self,
        bind: str,
        *,
        heartbeat_interval: float = mdp.HEARTBEAT_INTERVAL,
        liveness: int = mdp.HEARTBEAT_LIVENESS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        worker_credit: int = DEFAULT_WORKER_CREDIT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
        curve: CurveServerKeys | None = None,
        context: zmq.Context | None = None,
    ):
        if heartbeat_interval <= 0 or liveness < 1 or request_timeout <= 0 or worker_credit < 1:
            raise ValueError(
                "heartbeat_interval and request_timeout must be > 0, liveness and worker_credit >= 1; got "
                f"{heartbeat_interval}, {request_timeout}, {liveness}, {worker_credit}"
            )
        if worker_timeout <= 0 or max_request_bytes < 1 or max_queued_bytes < 1:
            raise ValueError(
                "worker_timeout must be > 0, max_request_bytes and max_queued_bytes >= 1; got "
                f"{worker_timeout}, {max_request_bytes}, {max_queued_bytes}"
            )
        self.bind_address = bind
        self.heartbeat_interval = float(heartbeat_interval)
        self.liveness = int(liveness)
        self.request_timeout = float(request_timeout)
        self.worker_credit = int(worker_credit)
        self.max_message_size = int(max_message_size)
        self.max_queued = int(max_queued)
        self.max_request_bytes = int(max_request_bytes)
        self.max_queued_bytes = int(max_queued_bytes)
        self.worker_timeout = float(worker_timeout)
        self.curve = curve
        self._worker_keys = curve.worker_keys() if curve is not None else None
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.endpoint: str | None = None
        self._socket: zmq.Socket | None = None
        self._auth = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._services: dict[bytes, _Service] = {}
        self._workers: dict[bytes, _Worker] = {}
        self._order = itertools.count()
        self._queued = 0
        self._held_bytes = 0
        self._tokens = itertools.count(1)
        self._monitor: zmq.Socket | None = None
        self._recent_failures: deque = deque(maxlen=RECENT_FAILURES)  # (time.time(), peer, reason)
        self.counters = dict.fromkeys(
            (
                "requests",
                "replies",
                "expired",
                "requeued",
                "dropped",
                "disconnects_sent",
                "workers_expired",
                "worker_timeouts",
                "too_large",
                "overloaded",
                "workers_refused",
                "handshake_failures",
            ),
            0,
        )

    # ------------------------------------------------------------------------------------------------- lifecycle
    def _open(self) -> None:
        if self.curve is not None:
            self._auth = self.curve.start_authenticator(self.context)
        sock = self.context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.maxmsgsize = self.max_message_size
        sock.rcvhwm = sock.sndhwm = 100_000
        if self.curve is not None:
            self.curve.apply(sock)
        try:
            sock.bind(self.bind_address)
        except zmq.ZMQError:
            sock.close(0)
            self._stop_auth()
            raise
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        )
        self._socket = sock
        log.info(
            "broker listening on %s (heartbeat %.3g s x %d)", self.endpoint, self.heartbeat_interval, self.liveness
        )

    def start(self) -> Broker:
        """Bind now (errors raise here) and serve in a daemon thread."""
        self._open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="mdp-broker", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Bind and serve in this thread until :meth:`stop` (from another thread) or KeyboardInterrupt."""
        self._open()
        try:
            self._loop()
        finally:
            self._close()
            log.info("broker stopped: %s", json.dumps(self.counters))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
            self._close()

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def _close(self) -> None:
        if self._monitor is not None:
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        self._stop_auth()
        if self._own_context:
            self.context.term()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """A snapshot: counters, registered workers per service with the requests each holds, queued requests."""
        with self._lock:
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        now = time.time()
        return {
            **self.counters,
            "held_bytes": self._held_bytes,
            "recent_handshake_failures": [
                {"endpoint": ep, "reason": reason, "age_s": round(now - t, 3)}
                for t, ep, reason in self._recent_failures
            ],
            "refused_keys": refused_keys(self._auth) if self._auth is not None else [],
            "services": {
                s.name.decode(): {"workers": [len(w.inflight) for w in s.workers], "queued": len(s.requests)}
                for s in self._services.values()
            },
        }

    # ------------------------------------------------------------------------------------------------------ loop
    def _loop(self) -> None:
        sock = self._socket
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        heartbeat_at = time.monotonic() + self.heartbeat_interval
        while not self._stop.is_set():
            try:
                wait = max(0.0, min(_POLL_S, heartbeat_at - time.monotonic()))
                events = dict(poller.poll(wait * 1000))
                if events.get(self._monitor):
                    self._socket_events()
                if events.get(sock):
                    for _ in range(1000):  # a bounded burst, then timers get their turn
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        with self._lock:
                            self._handle(frames)
                now = time.monotonic()
                with self._lock:
                    if now >= heartbeat_at:
                        for w in list(self._workers.values()):
                            self._send(w.identity, mdp.worker_heartbeat())
                        heartbeat_at = now + self.heartbeat_interval
                    self._purge_workers(now)
                    self._expire_inflight(now)
                    self._expire_requests(now)
            except zmq.ContextTerminated:
                return
            except Exception:  # never let one bad turn end the broker
                log.debug("broker loop error", exc_info=True)

    def _socket_events(self) -> None:
        for _ in range(1000):
            try:
                ev = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            event, value = ev["event"], ev["value"]
            ep = ev["endpoint"].decode(errors="replace") if isinstance(ev["endpoint"], bytes) else str(ev["endpoint"])
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                reason = f"key refused (ZAP status {value})"
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                reason = f"ZMTP protocol error 0x{value:x} (e.g. a wrong broker key, or no CURVE)"
            else:
                reason = "connection closed during the handshake"
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and self._auth is not None:
                keys = refused_keys(self._auth)
                if keys:
                    reason += f"; last refused key {keys[-1]}"
            log.warning("a handshake on %s failed: %s", ep, reason)
            with self._lock:
                self.counters["handshake_failures"] += 1
                self._recent_failures.append((time.time(), ep, reason))

    def _send(self, identity: bytes, frames: list) -> None:
        try:
            self._socket.send_multipart([identity, *frames], copy=False)
        except zmq.ZMQError:
            log.debug("cannot send to %r", identity, exc_info=True)

    def _handle(self, frames: list) -> None:
        try:
            if len(frames) < 2:
                self.counters["dropped"] += 1
                return
            sender = mdp.as_bytes(frames[0])
            header = _short(frames[1])
            if header == mdp.MDPC:
                self._client_message(sender, frames[1:])
            elif header == mdp.MDPW:
                if self._worker_keys is not None and not self._worker_allowed(frames[1]):
                    self._refuse_worker(sender, frames[1:])
                    return
                self._worker_message(sender, frames[1:])
            else:
                self.counters["dropped"] += 1
                log.debug("dropped a message of %d frames with an unknown protocol header", len(frames))
        except Exception:
            self.counters["dropped"] += 1
            log.debug("dropped a message that could not be handled", exc_info=True)

    # ---------------------------------------------------------------------------------------------------- clients
    def _client_message(self, sender: bytes, frames: list) -> None:
        command = _short(frames[1]) if len(frames) > 1 else None
        if command != mdp.C_REQUEST or len(frames) < 3 or len(frames[2]) > mdp.MAX_SERVICE_NAME:
            self.counters["dropped"] += 1
            log.debug("dropped a malformed client message from %r", sender)
            return
        msg = mdp.parse_client(frames)
        if msg is None:
            self.counters["dropped"] += 1
            log.debug("dropped a malformed client message from %r", sender)
            return
        self.counters["requests"] += 1
        if len(msg.body) > MAX_BODY_FRAMES:
            self._refuse(
                sender, msg.service, "too_large", f"request of {len(msg.body)} body frames (at most {MAX_BODY_FRAMES})"
            )
            return
        nbytes = sum(len(f) for f in msg.body)
        if nbytes > self.max_request_bytes:
            self._refuse(
                sender,
                msg.service,
                "too_large",
                f"request of {nbytes} body bytes is over the broker's limit of {self.max_request_bytes} bytes",
            )
            return
        if msg.service.startswith(mdp.MMI_PREFIX.encode()):
            self._mmi(sender, msg.service, msg.body)
            return
        if self._queued >= self.max_queued:
            self._refuse(sender, msg.service, "overloaded", f"broker queue full ({self.max_queued} requests)")
            return
        if self._held_bytes + nbytes > self.max_queued_bytes:
            self._refuse(
                sender,
                msg.service,
                "overloaded",
                f"broker full: it holds {self._held_bytes} bytes of requests, {nbytes} more would exceed its limit of "
                f"{self.max_queued_bytes} bytes",
            )
            return
        service = self._service(msg.service)
        req = _Request(sender, msg.service, msg.body, time.monotonic() + self.request_timeout, nbytes)
        service.requests.append(req)
        self._queued += 1
        self._held_bytes += nbytes
        self._dispatch(service)

    def _refuse(self, client: bytes, service: bytes, code: str, message: str) -> None:
        self.counters[code] += 1
        log.debug("refused a request of %r for %r: %s", client, service, message)
        self._send(client, mdp.client_final(service, codec.encode_error(code, message)))

    def _answer_error(self, req: _Request, code: str, message: str) -> None:
        """Answer a held request with an error and forget it."""
        self._send(req.client, mdp.client_final(req.service, codec.encode_error(code, message)))
        self._held_bytes -= req.nbytes

    def _mmi(self, sender: bytes, name: bytes, body: list) -> None:
        if name == b"mmi.service" and body:
            wanted = _short(body[0], mdp.MAX_SERVICE_NAME) or b""
            s = self._services.get(wanted)
            code = b"200" if s is not None and s.workers else b"404"
        elif name == b"mmi.stats":
            code = json.dumps(self._stats()).encode()
        else:
            code = b"501"
        self._send(sender, mdp.client_final(name, [code]))

    # ---------------------------------------------------------------------------------------------------- workers
    @staticmethod
    def _user_id(frame: Any) -> str | None:
        try:
            return frame.get("User-Id")  # zmq.Frame: the ZAP User-Id, with CURVE the peer's Z85 public key
        except Exception:
            return None

    def _worker_allowed(self, frame: Any) -> bool:
        return self._user_id(frame) in self._worker_keys

    def _refuse_worker(self, sender: bytes, frames: list) -> None:
        """A worker-protocol message from a key that may not be a worker: DISCONNECT (not for a DISCONNECT)."""
        self.counters["workers_refused"] += 1
        worker = self._workers.get(sender)  # (never registered; removed all the same if it were)
        if len(frames) > 1 and _short(frames[1]) == mdp.W_DISCONNECT:
            return
        log.debug("worker message from key %r, not in the worker allowlist: DISCONNECT", self._user_id(frames[0]))
        self._disconnect(sender, worker)

    def _worker_message(self, sender: bytes, frames: list) -> None:
        command = _short(frames[1]) if len(frames) > 1 else None
        worker = self._workers.get(sender)
        if command in (mdp.W_READY,) and len(frames) == 3 and len(frames[2]) > mdp.MAX_SERVICE_NAME:
            msg = None
        else:
            msg = mdp.parse_worker(frames)
        if msg is None:
            log.debug("malformed worker message (command %r) from %r: DISCONNECT", command, sender)
            self._disconnect(sender, worker)
            return
        if msg.command == mdp.W_DISCONNECT:
            if worker is not None:
                log.info("worker %r of %r disconnected", sender, worker.service)
                self._remove_worker(worker)
            return
        if worker is not None:
            worker.expiry = time.monotonic() + self.heartbeat_interval * self.liveness  # any command is a heartbeat
        if msg.command == mdp.W_READY:
            if worker is not None or msg.service.startswith(mdp.MMI_PREFIX.encode()):
                log.debug("READY from a registered worker or for a reserved service from %r: DISCONNECT", sender)
                self._disconnect(sender, worker)
                return
            worker = _Worker(
                sender, msg.service, time.monotonic() + self.heartbeat_interval * self.liveness, next(self._order)
            )
            self._workers[sender] = worker
            service = self._service(msg.service)
            service.workers.append(worker)
            log.info("worker %r ready for %r (%d workers)", sender, msg.service, len(service.workers))
            self._dispatch(service)
        elif worker is None:
            log.debug("%s from an unknown worker %r: DISCONNECT", mdp.WORKER_COMMANDS[msg.command], sender)
            self._disconnect(sender, None)
        elif msg.command == mdp.W_HEARTBEAT:
            pass
        elif msg.command in (mdp.W_FINAL, mdp.W_PARTIAL):
            req = next((r for r in worker.inflight if r.token == msg.client), None)
            if req is None:
                self.counters["dropped"] += 1
                log.debug("reply from %r for a request it does not hold (any more): dropped", sender)
                return
            cmd = mdp.C_FINAL if msg.command == mdp.W_FINAL else mdp.C_PARTIAL
            self._send(req.client, [mdp.MDPC, cmd, worker.service, *msg.body])
            if msg.command == mdp.W_FINAL:
                worker.inflight.remove(req)
                self._held_bytes -= req.nbytes
                worker.order = next(self._order)
                self.counters["replies"] += 1
                self._dispatch(self._services[worker.service])
        else:  # REQUEST goes broker -> worker only
            log.debug("unexpected %s from worker %r: DISCONNECT", mdp.WORKER_COMMANDS[msg.command], sender)
            self._disconnect(sender, worker)

    def _disconnect(self, identity: bytes, worker: _Worker | None) -> None:
        self.counters["disconnects_sent"] += 1
        self._send(identity, mdp.worker_disconnect())
        if worker is not None:
            self._remove_worker(worker)

    def _remove_worker(self, worker: _Worker) -> None:
        self._workers.pop(worker.identity, None)
        service = self._services.get(worker.service)
        if service is None:
            return
        if worker in service.workers:
            service.workers.remove(worker)
        for req in reversed(worker.inflight):  # requests it held go back to the front of the queue, once
            self._requeue(service, req, "internal", "workers died twice while handling this request")
        worker.inflight.clear()
        self._dispatch(service)

    def _requeue(self, service: _Service, req: _Request, code: str, message: str) -> None:
        """Put a request taken back from a worker at the front of the queue, or answer it with an error when it was
        requeued MAX_REQUEUE times already."""
        req.worker_deadline = math.inf
        req.token = b""
        if req.requeued < MAX_REQUEUE:
            req.requeued += 1
            req.deadline = time.monotonic() + self.request_timeout
            service.requests.appendleft(req)
            self._queued += 1
            self.counters["requeued"] += 1
        else:
            self._answer_error(req, code, message)

    def _expire_inflight(self, now: float) -> None:
        """Take back the requests that workers hold longer than ``worker_timeout``."""
        for w in list(self._workers.values()):
            late = [r for r in w.inflight if r.worker_deadline < now]
            if not late:
                continue
            service = self._services[w.service]
            for req in reversed(late):
                w.inflight.remove(req)
                self.counters["worker_timeouts"] += 1
                log.warning(
                    "worker %r of %r did not answer a request within %.3g s: %s",
                    w.identity,
                    w.service,
                    self.worker_timeout,
                    "answered with an error" if req.requeued >= MAX_REQUEUE else "queued again for another worker",
                )
                req.avoid = w.identity
                self._requeue(
                    service,
                    req,
                    "expired",
                    f"no worker of service {w.service.decode()!r} answered the request within the broker's worker "
                    f"timeout of {self.worker_timeout:g} s (tried {req.requeued + 1} times)",
                )
            self._dispatch(service)

    def _purge_workers(self, now: float) -> None:
        for w in [w for w in self._workers.values() if w.expiry < now]:
            log.info("worker %r of %r expired (no message for %d heartbeats)", w.identity, w.service, self.liveness)
            self.counters["workers_expired"] += 1
            self._remove_worker(w)

    # --------------------------------------------------------------------------------------------------- services
    def _service(self, name: bytes) -> _Service:
        s = self._services.get(name)
        if s is None:
            s = self._services[name] = _Service(name)
        return s

    def _dispatch(self, service: _Service) -> None:
        skipped: list[_Request] = []  # requests that may only go to another worker than the free ones
        while service.requests:
            free = [w for w in service.workers if len(w.inflight) < self.worker_credit]
            if not free:
                break
            req = service.requests.popleft()
            if req.avoid is not None:
                free = [w for w in free if w.identity != req.avoid]
                if not free:
                    skipped.append(req)
                    continue
            worker = min(free, key=lambda w: (len(w.inflight), w.order))
            self._queued -= 1
            req.token = struct.pack(">Q", next(self._tokens))
            req.worker_deadline = time.monotonic() + self.worker_timeout
            worker.inflight.append(req)
            self._send(worker.identity, mdp.worker_request(req.token, req.body))
        service.requests.extendleft(reversed(skipped))

    def _expire_requests(self, now: float) -> None:
        for name in list(self._services):
            s = self._services[name]
            if s.requests:
                kept = deque()
                for req in s.requests:
                    if req.deadline < now:
                        self.counters["expired"] += 1
                        msg = (
                            f"no worker of service {name.decode()!r} took the request within {self.request_timeout:g} s"
                        )
                        self._answer_error(req, "expired", msg)
                    else:
                        kept.append(req)
                self._queued -= len(s.requests) - len(kept)
                s.requests = kept
            if not s.requests and not s.workers:
                del self._services[name]
