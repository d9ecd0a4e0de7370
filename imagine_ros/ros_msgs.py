"""numpy <-> ROS 2 messages without rclpy: ``sensor_msgs/msg/Image``, ``geometry_msgs/msg/PointStamped``, stamps.

Messages are built with the pure-Python ``rosbags`` typestores, whose ``serialize_cdr`` gives the exact CDR bytes that
ROS 2 puts on the wire. The field-level logic is kept apart from any message class so the rclpy node can reuse it:

* :func:`image_fields` turns an array into the Image fields (height, width, encoding, is_bigendian, step, data);
* :func:`decode_image` turns those fields back into an array; :func:`msg_to_image` only reads attributes, so it works
  on rosbags and rclpy messages alike;
* :func:`stamp_from_ns` / :func:`ns_from_stamp` convert between integer nanoseconds and ``(sec, nanosec)``;
* :func:`transform_stamped_msg` / :func:`tf_message_msg` (a pose as ``/tf`` carries it) and
  :func:`camera_info_fields` / :func:`camera_info_msg` (a pinhole ``CameraInfo`` from K).

Supported encodings: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8`` (uint8) and ``32FC1``, ``32FC2`` (float32,
e.g. optical flow). Arrays are taken and returned in the encoding's own channel order (``bgr8`` data is BGR);
:func:`to_rgb` converts the colour encodings to RGB. Messages are always written little-endian (``is_bigendian=0``);
big-endian float messages are read correctly (converted to native order); for the 8-bit encodings the flag has no
meaning and is ignored. Padded rows (``step`` larger than the packed row, e.g. drivers that align rows to 4 bytes)
are read correctly.

For the rclpy node (and anything else that holds ready-made message objects) :func:`fill_image`,
:func:`fill_point_stamped` and :func:`set_header` write into an existing message: they only set attributes, and an
rclpy ``uint8[]`` field (an ``array.array('B')``) gets an ``array.array`` again, filled from bytes in one call.
:func:`msg_to_rgb` is the camera input path: the five colour encodings of :data:`CAMERA_ENCODINGS` become
(H, W, 3) uint8 RGB; anything else raises :class:`UnsupportedEncoding`.
"""

from __future__ import annotations

import array as _array_module
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imagine_ros.errors import ConfigError

IMAGE = "sensor_msgs/msg/Image"
POINT_STAMPED = "geometry_msgs/msg/PointStamped"
TRANSFORM_STAMPED = "geometry_msgs/msg/TransformStamped"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STRING = "std_msgs/msg/String"
HEADER = "std_msgs/msg/Header"
TIME = "builtin_interfaces/msg/Time"


@dataclass(frozen=True)
class EncodingInfo:
    dtype: np.dtype  # little-endian element type on the wire
    channels: int


#: encoding -> element type and channel count
ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(np.dtype(np.uint8), 3),
    "bgr8": EncodingInfo(np.dtype(np.uint8), 3),
    "rgba8": EncodingInfo(np.dtype(np.uint8), 4),
    "bgra8": EncodingInfo(np.dtype(np.uint8), 4),
    "mono8": EncodingInfo(np.dtype(np.uint8), 1),
    "32FC1": EncodingInfo(np.dtype("<f4"), 1),
    "32FC2": EncodingInfo(np.dtype("<f4"), 2),
}

#: encodings the prediction node accepts from a camera (converted to RGB by :func:`msg_to_rgb`)
CAMERA_ENCODINGS = ("rgb8", "bgr8", "mono8", "rgba8", "bgra8")


class UnsupportedEncoding(ValueError):
    """An image whose encoding is not one of the accepted ones (the message names the encoding and the choices)."""


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_NS = 1_000_000_000


# ----------------------------------------------------------------------------------------------------------------------
# typestores


def _store_enum(distro: str):
    from rosbags.typesys import Stores

    name = str(distro).strip().lower()
    if not name.startswith("ros2_"):
        name = f"ros2_{name}"
    for store in Stores:
        if store.value == name:
            return store
    known = ", ".join(s.value.removeprefix("ros2_") for s in Stores if s.value.startswith("ros2_"))
    raise ConfigError(f"unknown ROS 2 distro {distro!r}; expected one of {known}")


@functools.cache
def _typestore_cached(store_value: str):
    from rosbags import typesys

    return typesys.get_typestore(typesys.Stores(store_value))


def get_typestore(distro: str = "humble"):
    """The ``rosbags`` typestore of a ROS 2 distro (``"humble"`` or ``"ros2_humble"``), built once and cached."""
    return _typestore_cached(_store_enum(distro).value)


def _types(typestore):
    return (typestore if typestore is not None else get_typestore()).types


# ----------------------------------------------------------------------------------------------------------------------
# stamps


def stamp_from_ns(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)`` with ``0 <= nanosec < 1e9`` (ROS ``builtin_interfaces/Time``)."""
    if isinstance(ns, bool) or not isinstance(ns, (int, np.integer)):
        raise ValueError(f"a stamp must be integer nanoseconds, got {type(ns).__name__} {ns!r}")
    sec, nanosec = divmod(int(ns), _NS)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise ValueError(f"stamp {ns} ns is outside the int32 seconds range of builtin_interfaces/Time")
    return sec, nanosec


def ns_from_stamp(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (anything with ``sec``/``nanosec``) or a ``(sec, nanosec)`` pair -> nanoseconds."""
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        sec, nanosec = stamp.sec, stamp.nanosec
    else:
        try:
            sec, nanosec = stamp
        except (TypeError, ValueError):
            raise ValueError(f"expected a Time message or a (sec, nanosec) pair, got {stamp!r}") from None
    sec, nanosec = int(sec), int(nanosec)
    if not 0 <= nanosec < _NS:
        raise ValueError(f"nanosec must be in [0, 1e9), got {nanosec}")
    return sec * _NS + nanosec


def time_msg(ns: int, typestore=None):
    sec, nanosec = stamp_from_ns(ns)
    return _types(typestore)[TIME](sec=sec, nanosec=nanosec)


def header_msg(stamp_ns: int, frame_id: str, typestore=None):
    return _types(typestore)[HEADER](stamp=time_msg(stamp_ns, typestore), frame_id=str(frame_id))


# ----------------------------------------------------------------------------------------------------------------------
# images: pure field logic


@dataclass(frozen=True)
class ImageFields:
    """The fields of a ``sensor_msgs/Image`` apart from the header; ``data`` is a 1-D uint8 array."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


def _encoding_info(encoding: str) -> EncodingInfo:
    info = ENCODINGS.get(encoding)
    if info is None:
        raise ValueError(f"unsupported image encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
    return info


def expected_shape(encoding: str, height: int | str = "H", width: int | str = "W") -> tuple:
    info = _encoding_info(encoding)
    return (height, width) if info.channels == 1 else (height, width, info.channels)


def image_fields(array: np.ndarray, encoding: str) -> ImageFields:
    """Encode ``array`` as Image fields: (H, W, C) for colour and 2-channel encodings, (H, W) or (H, W, 1) otherwise.

    The dtype must match the encoding exactly (uint8 for the 8-bit ones, float32 for 32FC*); nothing is converted
    silently. The data are little-endian, rows packed (``step = width * channels * itemsize``).
    """
    info = _encoding_info(encoding)
    array = np.asarray(array)
    want = "(H, W) or (H, W, 1)" if info.channels == 1 else str(expected_shape(encoding)).replace("'", "")
    shape_ok = (array.ndim == 3 and array.shape[2] == info.channels) or (info.channels == 1 and array.ndim == 2)
    if not shape_ok:
        raise ValueError(f"encoding {encoding!r} expects an array of shape {want}, got shape {array.shape}")
    if array.dtype.kind != info.dtype.kind or array.dtype.itemsize != info.dtype.itemsize:
        want_dtype = "uint8" if info.dtype == np.uint8 else "float32"
        raise ValueError(f"encoding {encoding!r} expects dtype {want_dtype}, got {array.dtype}")
    height, width = int(array.shape[0]), int(array.shape[1])
    if height == 0 or width == 0:
        raise ValueError(f"an image needs at least one pixel, got shape {array.shape}")
    packed = np.ascontiguousarray(array, dtype=info.dtype)  # no copy for a C-contiguous little-endian array
    step = width * info.channels * info.dtype.itemsize
    return ImageFields(height, width, encoding, 0, step, packed.reshape(-1).view(np.uint8))


def decode_image(
    height: int, width: int, encoding: str, is_bigendian: int, step: int, data: Any, copy: bool = True
) -> np.ndarray:
    """Image fields -> array of shape :func:`expected_shape` (float32 native-endian for 32FC*).

    ``data`` may be bytes, a memoryview, an ``array.array`` or a uint8 array. Rows may be padded (``step`` larger
    than the packed row), but ``len(data)`` must equal ``height * step``.
    """
    info = _encoding_info(encoding)
    height, width, step = int(height), int(width), int(step)
    if height < 0 or width < 0:
        raise ValueError(f"image size must be non-negative, got height={height}, width={width}")
    row_bytes = width * info.channels * info.dtype.itemsize
    if step < row_bytes:
        raise ValueError(
            f"step {step} is smaller than a row of {width} {encoding} pixels ({row_bytes} bytes expected at least)"
        )
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        buf = np.asarray(data, dtype=np.uint8).reshape(-1)
    if buf.size != height * step:
        raise ValueError(
            f"image data has {buf.size} bytes, but height * step = {height} * {step} = {height * step} expected"
        )
    dtype = info.dtype.newbyteorder(">") if is_bigendian and info.dtype.itemsize > 1 else info.dtype
    rows = buf.reshape(height, step)[:, :row_bytes]
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    out = rows.view(dtype).reshape(expected_shape(encoding, height, width))
    if dtype.itemsize > 1 and not dtype.isnative:
        return out.astype(dtype.newbyteorder("="))  # always a fresh native-endian copy
    return out.copy() if copy else out


def to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded colour or mono image as (H, W, 3) uint8 RGB (alpha dropped, mono repeated)."""
    _encoding_info(encoding)
    if encoding == "rgb8":
        return array
    if encoding == "bgr8":
        return np.ascontiguousarray(array[..., ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(array[..., :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(array[..., 2::-1])
    if encoding == "mono8":
        return np.repeat(array.reshape(*array.shape[:2], 1), 3, axis=2)
    raise ValueError(f"encoding {encoding!r} is not a colour encoding; expected rgb8, bgr8, rgba8, bgra8 or mono8")


# ----------------------------------------------------------------------------------------------------------------------
# images: messages


def image_to_msg(array: np.ndarray, encoding: str, stamp_ns: int = 0, frame_id: str = "", typestore=None):
    """A rosbags ``sensor_msgs/msg/Image`` holding ``array`` (see :func:`image_fields`)."""
    f = image_fields(array, encoding)
    return _types(typestore)[IMAGE](
        header=header_msg(stamp_ns, frame_id, typestore),
        height=f.height,
        width=f.width,
        encoding=f.encoding,
        is_bigendian=f.is_bigendian,
        step=f.step,
        data=f.data,
    )


def msg_to_image(msg: Any, copy: bool = True) -> np.ndarray:
    """An Image message (rosbags or rclpy) -> array in the message's encoding (see :func:`decode_image`)."""
    return decode_image(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data, copy=copy)


# ----------------------------------------------------------------------------------------------------------------------
# points


def point_fields(xyz: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    arr = np.asarray(xyz)
    if arr.shape != (3,):
        raise ValueError(f"a point must have shape (3,), got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"a point must be real numbers (float or integer dtype), got dtype {arr.dtype}")
    return float(arr[0]), float(arr[1]), float(arr[2])


def point_stamped_msg(xyz: Sequence[float] | np.ndarray, stamp_ns: int = 0, frame_id: str = "", typestore=None):
    """A rosbags ``geometry_msgs/msg/PointStamped`` at ``xyz`` (metres, in ``frame_id``)."""
    x, y, z = point_fields(xyz)
    types = _types(typestore)
    return types[POINT_STAMPED](
        header=header_msg(stamp_ns, frame_id, typestore), point=types["geometry_msgs/msg/Point"](x=x, y=y, z=z)
    )


def msg_to_point(msg: Any) -> np.ndarray:
    """A PointStamped (or Point) message -> (3,) float64."""
    p = getattr(msg, "point", msg)
    return np.array([p.x, p.y, p.z], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------------
# transforms


def quaternion_from_matrix(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """A 3x3 rotation matrix -> unit quaternion ``(x, y, z, w)`` (ROS order), ``w >= 0``.

    Shepperd's method: the largest of the four squared components is taken from the trace terms, so no division by a
    small number. Raises ``ValueError`` unless ``rotation`` is a proper rotation (orthonormal, determinant 1).
    """
    m = np.asarray(rotation, dtype=np.float64)
    if m.shape != (3, 3) or not np.allclose(m @ m.T, np.eye(3), atol=1e-6) or not np.isclose(np.linalg.det(m), 1.0):
        raise ValueError(f"expected a 3x3 rotation matrix (orthonormal, det 1), got {m.tolist()}")
    t = np.trace(m)
    squares = np.array([1 + 2 * m[0, 0] - t, 1 + 2 * m[1, 1] - t, 1 + 2 * m[2, 2] - t, 1 + t]) / 4  # x², y², z², w²
    i = int(np.argmax(squares))
    q = np.empty(4)
    q[i] = np.sqrt(squares[i])
    d = 4 * q[i]
    if i == 3:
        q[:3] = [(m[2, 1] - m[1, 2]) / d, (m[0, 2] - m[2, 0]) / d, (m[1, 0] - m[0, 1]) / d]
    elif i == 0:
        q[1], q[2], q[3] = (m[0, 1] + m[1, 0]) / d, (m[0, 2] + m[2, 0]) / d, (m[2, 1] - m[1, 2]) / d
    elif i == 1:
        q[0], q[2], q[3] = (m[0, 1] + m[1, 0]) / d, (m[1, 2] + m[2, 1]) / d, (m[0, 2] - m[2, 0]) / d
    else:
        q[0], q[1], q[3] = (m[0, 2] + m[2, 0]) / d, (m[1, 2] + m[2, 1]) / d, (m[1, 0] - m[0, 1]) / d
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def transform_fields(matrix: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """A 4x4 rigid transform -> (translation (x, y, z), rotation (x, y, z, w)) of ``geometry_msgs/Transform``."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise ValueError(f"expected a 4x4 rigid transform, got shape {m.shape}")
    return (float(m[0, 3]), float(m[1, 3]), float(m[2, 3])), quaternion_from_matrix(m[:3, :3])


def transform_stamped_msg(matrix: np.ndarray, parent: str, child: str, stamp_ns: int = 0, typestore=None):
    """A rosbags ``geometry_msgs/msg/TransformStamped``: the pose of ``child`` in ``parent`` (``matrix`` maps child
    coordinates to parent coordinates, as tf2 reads it)."""
    (tx, ty, tz), (qx, qy, qz, qw) = transform_fields(matrix)
    types = _types(typestore)
    return types[TRANSFORM_STAMPED](
        header=header_msg(stamp_ns, parent, typestore),
        child_frame_id=str(child),
        transform=types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
            rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
        ),
    )


def fill_transform_stamped(msg: Any, matrix: np.ndarray, parent: str, child: str, stamp_ns: int = 0) -> Any:
    """Write the pose of ``child`` in ``parent`` into an existing TransformStamped (rclpy or rosbags); returns it."""
    (tx, ty, tz), (qx, qy, qz, qw) = transform_fields(matrix)
    set_header(msg, stamp_ns, parent)
    msg.child_frame_id = str(child)
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = tx, ty, tz
    r.x, r.y, r.z, r.w = qx, qy, qz, qw
    return msg


def tf_message_msg(transforms: Sequence[Any], typestore=None):
    """A rosbags ``tf2_msgs/msg/TFMessage`` holding ``transforms`` (TransformStamped messages)."""
    return _types(typestore)[TF_MESSAGE](transforms=list(transforms))


# ----------------------------------------------------------------------------------------------------------------------
# camera info


def camera_info_fields(k: Any, width: int, height: int) -> dict[str, Any]:
    """The fields of a ``sensor_msgs/CameraInfo`` (no header) for a pinhole camera without distortion whose 3x3
    intrinsics are ``k``: width, height, distortion_model, d (5,), k (9,), r (9,), p (12,), row-major float lists."""
    km = np.asarray(k, dtype=np.float64)
    if km.shape != (3, 3) or not np.all(np.isfinite(km)):
        raise ValueError(f"expected a finite 3x3 camera matrix K, got {km.tolist()}")
    p = np.zeros((3, 4))
    p[:, :3] = km
    return {
        "width": int(width),
        "height": int(height),
        "distortion_model": "plumb_bob",
        "d": [0.0] * 5,
        "k": km.reshape(-1).tolist(),
        "r": np.eye(3).reshape(-1).tolist(),
        "p": p.reshape(-1).tolist(),
    }


def camera_info_msg(k: Any, width: int, height: int, stamp_ns: int = 0, frame_id: str = "", typestore=None):
    """A rosbags ``sensor_msgs/msg/CameraInfo`` (see :func:`camera_info_fields`), binning 0 and an empty ROI."""
    f = camera_info_fields(k, width, height)
    types = _types(typestore)
    return types[CAMERA_INFO](
        header=header_msg(stamp_ns, frame_id, typestore),
        height=f["height"],
        width=f["width"],
        distortion_model=f["distortion_model"],
        d=np.asarray(f["d"], np.float64),
        k=np.asarray(f["k"], np.float64),
        r=np.asarray(f["r"], np.float64),
        p=np.asarray(f["p"], np.float64),
        binning_x=0,
        binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


# ----------------------------------------------------------------------------------------------------------------------
# CDR


def msg_to_cdr(msg: Any, typestore=None) -> bytes:
    """The CDR bytes (little-endian, with encapsulation header) that ROS 2 sends for ``msg``."""
    ts = typestore if typestore is not None else get_typestore()
    return bytes(ts.serialize_cdr(msg, msg.__msgtype__))


def cdr_to_msg(data: bytes | memoryview, msgtype: str, typestore=None) -> Any:
    ts = typestore if typestore is not None else get_typestore()
    return ts.deserialize_cdr(data, msgtype)


# ----------------------------------------------------------------------------------------------------------------------
# camera input and filling existing messages (rclpy or rosbags)


def msg_to_rgb(msg: Any, accepted: Sequence[str] = CAMERA_ENCODINGS) -> np.ndarray:
    """A camera Image message (any object with the Image fields) -> (H, W, 3) uint8 RGB, a fresh array.

    Raises :class:`UnsupportedEncoding` for an encoding outside ``accepted`` (default :data:`CAMERA_ENCODINGS`) and
    ``ValueError`` for inconsistent fields (data length, step).
    """
    encoding = str(msg.encoding)
    if encoding not in accepted:
        raise UnsupportedEncoding(f"image encoding {encoding!r} is not accepted; expected one of {', '.join(accepted)}")
    return np.ascontiguousarray(to_rgb(msg_to_image(msg, copy=True), encoding))


def _uint8_payload(current: Any, data: np.ndarray) -> Any:
    """The value to assign to a ``uint8[]`` field that holds ``current``: an ``array.array('B')`` for rclpy messages
    (its setter would otherwise check every byte in Python), else a uint8 numpy array (rosbags, plain objects)."""
    if isinstance(current, _array_module.array):
        return _array_module.array("B", data.tobytes())
    return data


def set_header(msg: Any, stamp_ns: int | None = None, frame_id: str | None = None) -> Any:
    """Set ``msg.header.stamp`` (from integer nanoseconds) and/or ``msg.header.frame_id`` in place; returns ``msg``."""
    if stamp_ns is not None:
        sec, nanosec = stamp_from_ns(stamp_ns)
        msg.header.stamp.sec = sec
        msg.header.stamp.nanosec = nanosec
    if frame_id is not None:
        msg.header.frame_id = str(frame_id)
    return msg


def fill_image(msg: Any, array: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Write ``array`` into the Image message ``msg`` in place (see :func:`image_fields`); returns ``msg``.

    ``header``, when given, is assigned as is (e.g. the input image's header, so outputs carry its stamp and frame).
    Works on rclpy messages (``data`` becomes an ``array.array('B')``) and on rosbags or plain objects (a uint8 array).
    """
    f = image_fields(array, encoding)
    if header is not None:
        msg.header = header
    msg.height = f.height
    msg.width = f.width
    msg.encoding = f.encoding
    msg.is_bigendian = f.is_bigendian
    msg.step = f.step
    msg.data = _uint8_payload(getattr(msg, "data", None), f.data)
    return msg


def fill_point_stamped(msg: Any, xyz: Sequence[float] | np.ndarray, header: Any = None) -> Any:
    """Write ``xyz`` (metres) into the PointStamped ``msg`` in place (header assigned when given); returns ``msg``."""
    x, y, z = point_fields(xyz)
    if header is not None:
        msg.header = header
    msg.point.x, msg.point.y, msg.point.z = x, y, z
    return msg


def point_frame(msg: Any) -> str:
    """The ``header.frame_id`` of a stamped message ('' when it has no header)."""
    header = getattr(msg, "header", None)
    return str(getattr(header, "frame_id", "")) if header is not None else ""


def header_stamp_ns(msg: Any) -> int:
    """The header stamp of a stamped message in integer nanoseconds."""
    return ns_from_stamp(msg.header.stamp)
