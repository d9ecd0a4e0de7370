"""MDP/0.2 clients: :class:`MDPClient` (frames in, frames out, Lazy Pirate retries) and :class:`RemotePredictor`.

Thread safety: both are safe to share between threads. Each calling thread gets its own DEALER socket (made on its
first call), so calls from several threads run concurrently and never see each other's replies. :meth:`close`
closes every thread's socket; call it when no call is running any more. After it, every call from any thread raises
:class:`ClientClosed`.

Lazy Pirate: a request is sent, and the reply awaited for ``timeout`` seconds; on a timeout the socket is closed
(LINGER 0) and replaced, and the request sent again, ``retries`` times; then :class:`ServiceUnavailable` is raised.
A fresh socket has a fresh identity, so a late reply to an abandoned attempt can never be mistaken for the answer
to a later one. Sends never block: a send that ZeroMQ cannot queue (it closed the connection for a protocol error,
e.g. a reply frame above ``max_message_size``) counts as a failed attempt. Workers are idempotent, so resending is
safe. For the same reason a call that ends by an exception
(KeyboardInterrupt during the wait included) closes its thread's socket: the next call gets a fresh one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from imagine_ros.errors import ImagineRosError
from imagine_ros.prediction import Prediction
from imagine_ros.predictor import check_request
from imagine_ros.serving import codec
from imagine_ros.serving import protocol as mdp
from imagine_ros.serving.curve import CurveClientKeys

log = logging.getLogger(__name__)


class RemoteError(ImagineRosError):
    """The worker (or broker) refused a request; ``code`` is one of :data:`codec.ERROR_CODES`, the message names
    the problem."""

    def __init__(self, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.code = code


class ServiceUnavailable(ImagineRosError, TimeoutError):
    """No answer after the last retry, or the broker had no worker for the service in time."""


class ClientClosed(ImagineRosError, RuntimeError):
    """A call on a client (or RemotePredictor) after its ``close()``."""

    def __init__(self, endpoint: str):
        super().__init__(f"this client of {endpoint} is closed")


class MDPClient:
    """An MDP/0.2 client of the broker at ``endpoint`` (see the module docstring for retries and threads).

    timeout: seconds to wait for each attempt's reply; retries: attempts after the first (so 1 + retries in all);
    curve: CURVE client keys (the broker's public key included) or None; max_message_size: bytes per inbound frame
    (-1: no limit).
    """

    def __init__(
        self,
        endpoint: str,
        timeout: float = 10.0,
        retries: int = 3,
        curve: CurveClientKeys | None = None,
        context: zmq.Context | None = None,
        max_message_size: int = -1,
    ):
        if timeout <= 0 or retries < 0:
            raise ValueError(f"timeout must be > 0 and retries >= 0, got {timeout}, {retries}")
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.curve = curve
        self.max_message_size = int(max_message_size)
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sockets: set[zmq.Socket] = set()
        self._closed = False
        self.attempts = 0  # requests sent, resends included
        self.timeouts = 0  # attempts that timed out

    def _socket(self) -> zmq.Socket:
        if self._closed:
            raise ClientClosed(self.endpoint)
        sock = getattr(self._local, "socket", None)
        if sock is None:
            with self._lock:
                if self._closed:
                    raise ClientClosed(self.endpoint)
                sock = self.context.socket(zmq.DEALER)
                sock.linger = 0
                sock.maxmsgsize = self.max_message_size
                if self.curve is not None:
                    self.curve.apply(sock)
                sock.connect(self.endpoint)
                self._sockets.add(sock)
            self._local.socket = sock
        return sock

    def _drop_socket(self) -> None:
        sock = getattr(self._local, "socket", None)
        if sock is not None:
            self._local.socket = None
            with self._lock:
                self._sockets.discard(sock)
                if not sock.closed:
                    sock.close(0)

    def request(self, service: str, body: Sequence[Any], timeout: float | None = None) -> list[zmq.Frame]:
        """Send ``body`` frames to ``service``; the body frames of its FINAL reply (``zmq.Frame`` objects).

        Raises :class:`ServiceUnavailable` when no attempt got an answer within ``timeout`` seconds each, and
        :class:`ClientClosed` after :meth:`close`. Whatever exception ends the call, this thread's socket is closed
        (LINGER 0), so that a late reply cannot be taken for the answer to the next call."""
        timeout = self.timeout if timeout is None else float(timeout)
        name = service.encode("ascii")
        message = mdp.client_request(name, body)
        try:
            return self._request(service, name, message, timeout)
        except BaseException as e:
            self._drop_socket()
            if isinstance(e, zmq.ZMQError) and self._closed:  # closed by another thread while this call waited
                raise ClientClosed(self.endpoint) from None
            raise

    def _request(self, service: str, name: bytes, message: list, timeout: float) -> list[zmq.Frame]:
        for attempt in range(1 + self.retries):
            sock = self._socket()
            with self._lock:
                self.attempts += 1
            try:  # never block: ZeroMQ has no connection to queue on after it dropped one for a protocol error
                sock.send_multipart(message, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                with self._lock:
                    self.timeouts += 1
                log.info("cannot send to %s (no usable connection; attempt %d)", self.endpoint, attempt + 1)
                self._drop_socket()
                continue
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                if not sock.poll(remaining * 1000, zmq.POLLIN):
                    break
                frames = sock.recv_multipart(copy=False)
                msg = mdp.parse_client(frames)
                if msg is not None and msg.command == mdp.C_FINAL and msg.service == name:
                    return msg.body
                log.debug("ignored a reply that is not a FINAL for %r", service)  # PARTIAL or malformed
            with self._lock:
                self.timeouts += 1
            log.info("no reply from %r at %s within %.3g s (attempt %d)", service, self.endpoint, timeout, attempt + 1)
            self._drop_socket()
        raise ServiceUnavailable(
            f"no reply from service {service!r} at {self.endpoint} after {1 + self.retries} attempts of {timeout:g} s"
        )

    def close(self) -> None:
        """Close every thread's socket (and the context if this client made it). Calls after this raise
        :class:`ClientClosed`; closing twice is fine."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for s in self._sockets:
                s.close(0)
            self._sockets.clear()
        if self._own_context:
            self.context.term()

    def __enter__(self) -> MDPClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _raise_error(body: codec.Body) -> None:
    code = str(body.fields.get("code", "internal"))
    message = str(body.fields.get("message", ""))
    if code == "expired":
        raise ServiceUnavailable(message)
    raise RemoteError(message, code)


class RemotePredictor:
    """A Predictor served by workers behind an MDP/0.2 broker: the same ``predict`` as :class:`Predictor`.

    endpoint: the broker, e.g. ``tcp://gpu-host:5555``; service: the workers' service name (the method name unless
    they were started with ``--service``); timeout/retries/curve: see :class:`MDPClient`.

    ``image_size``, ``horizon``, ``condition_dim``, ``method`` are fetched from a worker on first use (an ``info``
    request). Safe to use from several threads (one socket per thread). The arrays of a returned Prediction are
    views of the received message (no copy).
    """

    def __init__(
        self,
        endpoint: str,
        service: str,
        timeout: float = 10.0,
        retries: int = 3,
        curve: CurveClientKeys | None = None,
        *,
        context: zmq.Context | None = None,
    ):
        self.endpoint = endpoint
        self.service = service
        self.client = MDPClient(endpoint, timeout, retries, curve, context)
        self._info: dict[str, Any] | None = None

    # --------------------------------------------------------------------------------------------------- metadata
    def info(self, refresh: bool = False) -> dict[str, Any]:
        """The worker's ``info`` map: service, method, image_size, horizon, condition_dim, max_batch, max_pixels,
        device."""
        if self._info is None or refresh:
            body = codec.decode_reply(self.client.request(self.service, codec.encode_info_request()))
            if body.type == "error":
                _raise_error(body)
            if body.type != "info":
                raise RemoteError(f"expected an info reply, got {body.type!r}", "internal")
            self._info = body.fields
        return self._info

    @property
    def image_size(self) -> int:
        return int(self.info()["image_size"])

    @property
    def horizon(self) -> int:
        return int(self.info()["horizon"])

    @property
    def condition_dim(self) -> int:
        return int(self.info()["condition_dim"])

    @property
    def condition_kind(self) -> str:
        """``"eta"``, ``"direction"`` or ``""`` (workers that do not say serve η models)."""
        info = self.info()
        return str(info.get("condition_kind", "eta" if int(info["condition_dim"]) else ""))

    @property
    def method(self) -> str:
        return str(self.info()["method"])

    # ------------------------------------------------------------------------------------------------------ predict
    @property
    def supports_flows_only(self) -> bool:
        """Whether the worker's model can return flows without frames (``predict(..., flows_only=True)``)."""
        return bool(self.info().get("flows_only", False))

    def predict(
        self,
        images: np.ndarray,
        conditions: np.ndarray | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        flows_only: bool = False,
    ) -> Prediction:
        """images: (B, H, W, 3) uint8; conditions: (B, C) η in metres, or None -> Prediction (see Predictor.predict;
        ``flows_only`` is sent only to a worker that supports it, others predict frames as usual).

        Raises ``ValueError`` for a request that does not fit the model (checked here first, as Predictor does),
        :class:`RemoteError` when the worker refuses it, :class:`ServiceUnavailable` after the last retry."""
        t0 = time.perf_counter()
        info = self.info()
        images, conditions = check_request(
            images, conditions, num_samples, int(info["image_size"]), int(info["condition_dim"])
        )
        fast = flows_only and self.supports_flows_only
        request = codec.encode_predict(images, conditions, int(num_samples), seed, fast)
        body = codec.decode_reply(self.client.request(self.service, request))
        if body.type == "error":
            _raise_error(body)
        if body.type != "prediction":
            raise RemoteError(f"expected a prediction reply, got {body.type!r}", "internal")
        pred = codec.prediction_from_body(body)
        pred.timing["remote_total"] = time.perf_counter() - t0
        return pred

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RemotePredictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
