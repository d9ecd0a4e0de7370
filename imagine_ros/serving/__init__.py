"""Remote model serving over ZeroMQ with the Majordomo Protocol MDP/0.2 (RFC 18).

- :class:`Broker` (``imagine-ros broker``): one ROUTER socket; services are model names.
- :class:`Worker` (``imagine-ros serve``): serves a Predictor, heartbeats from its own I/O thread, batches requests.
- :class:`RemotePredictor`: the Predictor interface over the network (Lazy Pirate retries, one socket per thread).
- :class:`LocalCluster` (``imagine-ros cluster``): broker + N worker processes on this machine.
- CURVE: :class:`CurveServerKeys`, :class:`CurveClientKeys`, :func:`generate_keys` (``imagine-ros keygen``).

Wire format of the bodies: :mod:`imagine_ros.serving.codec` (msgpack header + raw array frames, never pickle).
Names are imported lazily, so that ``imagine-ros broker`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Broker": "broker",
    "Worker": "worker",
    "MDPClient": "client",
    "RemotePredictor": "client",
    "RemoteError": "client",
    "ServiceUnavailable": "client",
    "ClientClosed": "client",
    "LocalCluster": "cluster",
    "ClusterError": "cluster",
    "CurveClientKeys": "curve",
    "CurveServerKeys": "curve",
    "generate_keys": "curve",
    "CodecError": "codec",
    "PROTOCOL_VERSION": "codec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
