"""The Majordomo Protocol MDP/0.2 (ZeroMQ RFC 18): constants and frame builders/parsers.

Frames as a DEALER peer sees them (the broker's ROUTER socket adds the peer's identity in front):

Client::

    REQUEST  client -> broker   "MDPC02", 0x01, service, body...
    PARTIAL  broker -> client   "MDPC02", 0x02, service, body...
    FINAL    broker -> client   "MDPC02", 0x03, service, body...

Worker::

    READY       worker -> broker   "MDPW02", 0x01, service
    REQUEST     broker -> worker   "MDPW02", 0x02, client address, "", body...
    PARTIAL     worker -> broker   "MDPW02", 0x03, client address, "", body...
    FINAL       worker -> broker   "MDPW02", 0x04, client address, "", body...
    HEARTBEAT   both ways          "MDPW02", 0x05
    DISCONNECT  both ways          "MDPW02", 0x06

The parsers never raise on any byte sequence: they return ``None`` for a message that is not well formed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MDPC = b"MDPC02"
MDPW = b"MDPW02"

# client commands
C_REQUEST = b"\x01"
C_PARTIAL = b"\x02"
C_FINAL = b"\x03"

# worker commands
W_READY = b"\x01"
W_REQUEST = b"\x02"
W_PARTIAL = b"\x03"
W_FINAL = b"\x04"
W_HEARTBEAT = b"\x05"
W_DISCONNECT = b"\x06"

WORKER_COMMANDS = {
    W_READY: "READY",
    W_REQUEST: "REQUEST",
    W_PARTIAL: "PARTIAL",
    W_FINAL: "FINAL",
    W_HEARTBEAT: "HEARTBEAT",
    W_DISCONNECT: "DISCONNECT",
}
CLIENT_COMMANDS = {C_REQUEST: "REQUEST", C_PARTIAL: "PARTIAL", C_FINAL: "FINAL"}

HEARTBEAT_INTERVAL = 2.5  # seconds (zguide default)
HEARTBEAT_LIVENESS = 3  # missed intervals before a peer counts as dead
MMI_PREFIX = "mmi."  # Majordomo Management Interface (RFC 8) services are answered by the broker itself
MAX_SERVICE_NAME = 255  # bytes

Frames = list[Any]  # bytes, memoryview, numpy arrays or zmq.Frame objects


def as_bytes(frame: Any) -> bytes:
    """The bytes of a frame (``bytes``, ``zmq.Frame``, memoryview, ...)."""
    if isinstance(frame, bytes):
        return frame
    buf = getattr(frame, "bytes", None)  # zmq.Frame
    if isinstance(buf, bytes):
        return buf
    return bytes(frame)


def valid_service(name: bytes) -> bool:
    """A service name: 1..255 bytes of printable ASCII without spaces."""
    return 0 < len(name) <= MAX_SERVICE_NAME and all(0x21 <= c <= 0x7E for c in name)


# --------------------------------------------------------------------------------------------------------- client
def client_request(service: str | bytes, body: Sequence[Any]) -> Frames:
    return [MDPC, C_REQUEST, _b(service), *body]


def client_final(service: str | bytes, body: Sequence[Any]) -> Frames:
    return [MDPC, C_FINAL, _b(service), *body]


@dataclass
class ClientMessage:
    command: bytes  # C_REQUEST / C_PARTIAL / C_FINAL
    service: bytes
    body: list[Any]


def parse_client(frames: Sequence[Any]) -> ClientMessage | None:
    """A client message (without the ROUTER identity), or None if it is not well-formed MDP/0.2."""
    if len(frames) < 3 or as_bytes(frames[0]) != MDPC:
        return None
    command = as_bytes(frames[1])
    if command not in CLIENT_COMMANDS:
        return None
    service = as_bytes(frames[2])
    if not valid_service(service):
        return None
    return ClientMessage(command, service, list(frames[3:]))


# --------------------------------------------------------------------------------------------------------- worker
def worker_ready(service: str | bytes) -> Frames:
    return [MDPW, W_READY, _b(service)]


def worker_heartbeat() -> Frames:
    return [MDPW, W_HEARTBEAT]


def worker_disconnect() -> Frames:
    return [MDPW, W_DISCONNECT]


def worker_request(client: bytes, body: Sequence[Any]) -> Frames:
    return [MDPW, W_REQUEST, client, b"", *body]


def worker_final(client: bytes, body: Sequence[Any]) -> Frames:
    return [MDPW, W_FINAL, client, b"", *body]


def worker_partial(client: bytes, body: Sequence[Any]) -> Frames:
    return [MDPW, W_PARTIAL, client, b"", *body]


@dataclass
class WorkerMessage:
    command: bytes  # one of W_*
    service: bytes = b""  # READY
    client: bytes = b""  # REQUEST / PARTIAL / FINAL
    body: list[Any] | None = None  # REQUEST / PARTIAL / FINAL


def parse_worker(frames: Sequence[Any]) -> WorkerMessage | None:
    """A worker-channel message (without the ROUTER identity), or None if it is not well-formed MDP/0.2."""
    if len(frames) < 2 or as_bytes(frames[0]) != MDPW:
        return None
    command = as_bytes(frames[1])
    if command not in WORKER_COMMANDS:
        return None
    if command in (W_HEARTBEAT, W_DISCONNECT):
        return WorkerMessage(command) if len(frames) == 2 else None
    if command == W_READY:
        if len(frames) != 3:
            return None
        service = as_bytes(frames[2])
        return WorkerMessage(command, service=service) if valid_service(service) else None
    # REQUEST / PARTIAL / FINAL: client address, empty delimiter, body
    if len(frames) < 4:
        return None
    client = as_bytes(frames[2])
    if not client or len(client) > 256 or as_bytes(frames[3]) != b"":
        return None
    return WorkerMessage(command, client=client, body=list(frames[4:]))


def _b(s: str | bytes) -> bytes:
    return s.encode("ascii") if isinstance(s, str) else bytes(s)
