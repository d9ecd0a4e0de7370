"""Message bodies: one msgpack header frame + one raw frame per array (zero-copy both ways). Never pickle.

Body frames::

    frame 0      msgpack map, at most MAX_HEADER_BYTES: {"v": PROTOCOL_VERSION, "type": ..., ..., "arrays": [...]}
    frame 1..K   the raw bytes of array i (C order, little-endian), described by header["arrays"][i - 1] =
                 {"name": str, "dtype": "uint8" | "float32" | "float16", "shape": [int, ...]}

Types and their fields (every other field is refused by name):

- ``predict`` (client -> worker): ``num_samples`` int >= 1, ``seed`` int or nil, optionally ``flows_only`` bool (the
  planner's fast path, :meth:`imagine_ros.predictor.Predictor.predict`; only to workers whose ``info`` says
  ``flows_only``); arrays ``images`` (B, H, W, 3) uint8 and optionally ``conditions`` (B, C) float32 (η in metres;
  one-hot push-direction classes for a direction model).
- ``info`` (client -> worker): no fields; the reply is an ``info`` map (service, method, image_size, horizon,
  condition_dim, condition_kind, max_batch, max_pixels, device, flows_only).
- ``prediction`` (worker -> client): ``method``, ``flow_source``, ``timing`` {stage: seconds}, optionally
  ``frames_synthesised`` bool (default true); arrays ``frames`` (B, N, T, H, W, 3) uint8 — when
  ``frames_synthesised`` is false only the inputs (B, H, W, 3), repeated on decoding —, ``flows`` (B, N, T, H, W, 2)
  float32, optionally ``masks`` (B, N, T, H, W) float32 and ``condition`` (B, C) float32.
- ``error`` (worker or broker -> client): ``code`` (:data:`ERROR_CODES`) and ``message``.

Decoded arrays are views of the received ZeroMQ frames (no copy); they keep the frames alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from imagine_ros.prediction import Prediction

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 65536
MAX_ARRAYS = 8
MAX_DIMS = 8
DTYPES: dict[str, np.dtype] = {
    "uint8": np.dtype("|u1"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
}
ERROR_CODES = ("bad_request", "unsupported_version", "too_large", "expired", "overloaded", "internal")

REQUEST_FIELDS = {
    "predict": {"num_samples", "seed", "flows_only"},
    "info": set(),
}
REQUEST_ARRAYS = {"predict": ({"images"}, {"conditions"}), "info": (set(), set())}  # (required, optional)
REPLY_FIELDS = {
    "prediction": {"method", "flow_source", "timing", "frames_synthesised"},
    "info": {
        "service",
        "method",
        "image_size",
        "horizon",
        "condition_dim",
        "condition_kind",
        "max_batch",
        "max_pixels",
        "device",
        "flows_only",
    },
    "error": {"code", "message"},
}


class CodecError(ValueError):
    """A body that cannot be decoded or does not fit the wire format; the message names the problem."""

    def __init__(self, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.code = code


@dataclass
class Body:
    """A decoded body: the header map (without "v" and "arrays") and the named arrays."""

    type: str
    fields: dict[str, Any]
    arrays: dict[str, np.ndarray]


# ------------------------------------------------------------------------------------------------------ low level
def encode(type_: str, fields: dict[str, Any] | None = None, arrays: dict[str, np.ndarray] | None = None) -> list:
    """Body frames: the msgpack header, then every array's buffer (C-contiguous; not copied when it already is)."""
    descs, bufs = [], []
    for name, a in (arrays or {}).items():
        a = np.asarray(a)
        dtype_name = next((k for k, v in DTYPES.items() if v == a.dtype.newbyteorder("<") or v == a.dtype), None)
        if dtype_name is None:
            raise CodecError(f"array {name!r} has dtype {a.dtype}; the wire carries {', '.join(DTYPES)}")
        a = np.ascontiguousarray(a, dtype=DTYPES[dtype_name])
        descs.append({"name": name, "dtype": dtype_name, "shape": list(a.shape)})
        bufs.append(a.reshape(-1).view(np.uint8) if a.size else b"")
    header = {"v": PROTOCOL_VERSION, "type": type_, **(fields or {}), "arrays": descs}
    return [msgpack.packb(header, use_bin_type=True), *bufs]


def _buffer(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", None)  # zmq.Frame (received with copy=False)
    return buf if isinstance(buf, memoryview) else memoryview(frame)


def decode(frames: Sequence[Any]) -> Body:
    """Parse body frames into a :class:`Body`; raise :class:`CodecError` naming the problem. Never raises anything
    else for any byte sequence."""
    if not frames:
        raise CodecError("empty body: expected a msgpack header frame")
    try:
        raw = _buffer(frames[0])
        if raw.nbytes > MAX_HEADER_BYTES:
            raise CodecError(f"header frame of {raw.nbytes} bytes exceeds the limit of {MAX_HEADER_BYTES}", "too_large")
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except CodecError:
        raise
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, StackError, ValueError, ...)
        raise CodecError(f"undecodable body: header frame is not msgpack ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise CodecError(f"undecodable body: header must be a msgpack map, got {type(header).__name__}")
    version = header.pop("v", None)
    if version != PROTOCOL_VERSION:
        raise CodecError(
            f"unsupported protocol version {version!r}; this side speaks version {PROTOCOL_VERSION}",
            "unsupported_version",
        )
    type_ = header.pop("type", None)
    if not isinstance(type_, str):
        raise CodecError("header field 'type' must be a string")
    descs = header.pop("arrays", [])
    if not isinstance(descs, list) or len(descs) > MAX_ARRAYS:
        raise CodecError(f"header field 'arrays' must be a list of at most {MAX_ARRAYS} array descriptions")
    if len(descs) != len(frames) - 1:
        raise CodecError(f"header describes {len(descs)} arrays but the body has {len(frames) - 1} array frames")
    arrays: dict[str, np.ndarray] = {}
    for i, d in enumerate(descs):
        arrays_name, arr = _array(d, frames[i + 1], i)
        if arrays_name in arrays:
            raise CodecError(f"array {arrays_name!r} appears twice")
        arrays[arrays_name] = arr
    return Body(type_, header, arrays)


def _array(desc: Any, frame: Any, i: int) -> tuple[str, np.ndarray]:
    if not isinstance(desc, dict) or set(desc) != {"name", "dtype", "shape"}:
        raise CodecError(f"array description {i} must be a map with exactly the keys name, dtype, shape")
    name, dtype, shape = desc["name"], desc["dtype"], desc["shape"]
    if not isinstance(name, str):
        raise CodecError(f"array description {i}: name must be a string")
    if dtype not in DTYPES:
        raise CodecError(f"array {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**40 for s in shape)
    ):
        raise CodecError(f"array {name!r}: shape must be a list of at most {MAX_DIMS} non-negative integers")
    buf = _buffer(frame)
    count = int(np.prod(shape, dtype=np.float64))
    want = count * DTYPES[dtype].itemsize
    if buf.nbytes != want:
        raise CodecError(f"array {name!r}: shape {tuple(shape)} {dtype} needs {want} bytes, frame has {buf.nbytes}")
    arr = np.frombuffer(buf, dtype=DTYPES[dtype]) if want else np.zeros(0, DTYPES[dtype])
    return name, arr.reshape(shape)


def _check_fields(body: Body, allowed: set[str], required_arrays: set[str], optional_arrays: set[str]) -> None:
    unknown = sorted(map(repr, set(body.fields) - allowed))
    if unknown:
        raise CodecError(f"unknown field(s) {', '.join(unknown)} in a {body.type!r} message")
    names = set(body.arrays)
    missing = sorted(required_arrays - names)
    if missing:
        raise CodecError(f"missing array(s) {', '.join(map(repr, missing))} in a {body.type!r} message")
    extra = sorted(names - required_arrays - optional_arrays)
    if extra:
        raise CodecError(f"unknown array(s) {', '.join(map(repr, extra))} in a {body.type!r} message")


# -------------------------------------------------------------------------------------------------------- requests
@dataclass
class PredictRequest:
    """A decoded ``predict`` request (arrays are views of the received frames)."""

    images: np.ndarray  # (B, H, W, 3) uint8
    conditions: np.ndarray | None  # (B, C) float32
    num_samples: int
    seed: int | None
    flows_only: bool = False


def encode_predict(
    images: np.ndarray, conditions: np.ndarray | None, num_samples: int, seed: int | None, flows_only: bool = False
) -> list:
    arrays = {"images": images}
    if conditions is not None:
        arrays["conditions"] = np.asarray(conditions, dtype=np.float32)
    fields: dict[str, Any] = {"num_samples": int(num_samples), "seed": None if seed is None else int(seed)}
    if flows_only:  # sent only when asked, so a worker from before the field still understands the request
        fields["flows_only"] = True
    return encode("predict", fields, arrays)


def encode_info_request() -> list:
    return encode("info")


def decode_request(frames: Sequence[Any]) -> Body | PredictRequest:
    """A client request: a :class:`PredictRequest`, or the :class:`Body` of an ``info`` request.

    Checks the wire format only (types, fields, dtypes); the model's shapes are checked by the worker."""
    body = decode(frames)
    if body.type not in REQUEST_FIELDS:
        raise CodecError(f"unknown request type {body.type!r}; expected one of {', '.join(REQUEST_FIELDS)}")
    _check_fields(body, REQUEST_FIELDS[body.type], *REQUEST_ARRAYS[body.type])
    if body.type == "info":
        return body
    n = body.fields.get("num_samples")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CodecError(f"num_samples must be a positive integer, got {n!r}")
    seed = body.fields.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not -(2**63) <= seed < 2**64):
        raise CodecError(f"seed must be nil or an integer in [-2^63, 2^64), got {seed!r}")
    flows_only = body.fields.get("flows_only", False)
    if not isinstance(flows_only, bool):
        raise CodecError(f"flows_only must be true or false, got {flows_only!r}")
    images = body.arrays["images"]
    if images.dtype != np.uint8:
        raise CodecError(f"images must be (B, H, W, 3) uint8, got dtype {images.dtype}")
    cond = body.arrays.get("conditions")
    if cond is not None and cond.dtype != np.float32:
        raise CodecError(f"conditions must be (B, C) float32, got dtype {cond.dtype}")
    return PredictRequest(images, cond, n, seed, flows_only)


# ---------------------------------------------------------------------------------------------------------- replies
def encode_prediction(pred: Prediction, timing: dict[str, float] | None = None) -> list:
    # a flows-only prediction's frames repeat its inputs: send the inputs once
    frames = pred.frames if pred.frames_synthesised else np.ascontiguousarray(pred.frames[:, 0, 0])
    arrays = {"frames": frames, "flows": pred.flows}
    if pred.masks is not None:
        arrays["masks"] = np.asarray(pred.masks, dtype=np.float32)
    if pred.condition is not None:
        arrays["condition"] = np.asarray(pred.condition, dtype=np.float32)
    t = {k: float(v) for k, v in {**pred.timing, **(timing or {})}.items()}
    fields: dict[str, Any] = {"method": pred.method, "flow_source": pred.flow_source, "timing": t}
    if not pred.frames_synthesised:
        fields["frames_synthesised"] = False
    return encode("prediction", fields, arrays)


def encode_error(code: str, message: str) -> list:
    return encode("error", {"code": code, "message": str(message)})


def decode_reply(frames: Sequence[Any]) -> Body:
    """A worker/broker reply (``prediction``, ``info`` or ``error``); raise :class:`CodecError` if malformed."""
    body = decode(frames)
    if body.type not in REPLY_FIELDS:
        raise CodecError(f"unknown reply type {body.type!r}")
    unknown = sorted(map(repr, set(body.fields) - REPLY_FIELDS[body.type]))
    if unknown:
        raise CodecError(f"unknown field(s) {', '.join(unknown)} in a {body.type!r} reply")
    return body


def prediction_from_body(body: Body) -> Prediction:
    """The :class:`Prediction` of a ``prediction`` reply (arrays stay views of the received frames)."""
    try:
        timing = body.fields.get("timing") or {}
        synthesised = body.fields.get("frames_synthesised", True)
        if not isinstance(synthesised, bool):
            raise ValueError(f"frames_synthesised must be true or false, got {synthesised!r}")
        flows, frames = body.arrays["flows"].astype(np.float32, copy=False), body.arrays["frames"]
        if not synthesised:  # the inputs (B, H, W, 3), repeated over samples and steps as Predictor does
            if frames.ndim != 4 or frames.shape[0] != flows.shape[0]:
                raise ValueError(f"a flows-only reply carries the inputs (B, H, W, 3), got {frames.shape}")
            frames = np.broadcast_to(frames[:, None, None], (*flows.shape[:3], *frames.shape[1:]))
        return Prediction(
            frames=frames,
            flows=flows,
            flow_source=str(body.fields["flow_source"]),
            method=str(body.fields["method"]),
            condition=body.arrays.get("condition"),
            masks=body.arrays.get("masks"),
            timing={str(k): float(v) for k, v in timing.items()},
            frames_synthesised=synthesised,
        )
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CodecError(f"malformed prediction reply: {e}") from None
