"""numpy <-> ROS 2 messages, checked against rosbags' real CDR bytes and decoded independently by rosbags-image."""

from __future__ import annotations

import array as pyarray
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rosbags.image import message_to_cvimage

from imagine_ros import ros_msgs
from imagine_ros.errors import ConfigError

SHAPES = {
    "rgb8": (5, 7, 3),
    "bgr8": (5, 7, 3),
    "rgba8": (5, 7, 4),
    "bgra8": (5, 7, 4),
    "mono8": (5, 7),
    "32FC1": (5, 7),
    "32FC2": (5, 7, 2),
}
STAMP = 1_700_000_123_456_789_012


@pytest.fixture(scope="module")
def ts():
    return ros_msgs.get_typestore("humble")


def _array(encoding: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = SHAPES[encoding]
    if encoding.startswith("32F"):
        return rng.normal(scale=50.0, size=shape).astype(np.float32)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _cdr_round_trip(msg, ts):
    raw = bytes(ts.serialize_cdr(msg, msg.__msgtype__))
    return raw, ts.deserialize_cdr(raw, msg.__msgtype__)


def test_encodings_table_matches_spec():
    assert set(ros_msgs.ENCODINGS) == set(SHAPES)


@pytest.mark.parametrize("encoding", list(SHAPES))
def test_image_round_trip_through_cdr(encoding, ts):
    arr = _array(encoding)
    msg = ros_msgs.image_to_msg(arr, encoding, STAMP, "camera", ts)
    itemsize = 4 if encoding.startswith("32F") else 1
    channels = ros_msgs.ENCODINGS[encoding].channels
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (5, 7, encoding, 0)
    assert msg.step == 7 * channels * itemsize
    raw, back = _cdr_round_trip(msg, ts)
    # the pixel bytes are the last field of the CDR message, little-endian and packed
    assert raw.endswith(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    assert len(back.data) == back.height * back.step
    assert ros_msgs.ns_from_stamp(back.header.stamp) == STAMP
    assert back.header.frame_id == "camera"
    out = ros_msgs.msg_to_image(back)
    assert out.shape == SHAPES[encoding]
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)
    out[...] = 0  # decoded arrays are writable copies, independent of the message buffer
    np.testing.assert_array_equal(ros_msgs.msg_to_image(back), arr)


def test_single_channel_accepts_trailing_axis(ts):
    arr = _array("mono8")
    msg = ros_msgs.image_to_msg(arr[..., None], "mono8", 0, "", ts)
    np.testing.assert_array_equal(ros_msgs.msg_to_image(msg), arr)


def test_non_contiguous_and_big_endian_input_is_packed(ts):
    big = _array("rgb8", seed=1)
    view = np.concatenate([big, big], axis=1)[:, ::2]  # strided view
    msg = ros_msgs.image_to_msg(view, "rgb8", 0, "", ts)
    np.testing.assert_array_equal(ros_msgs.msg_to_image(_cdr_round_trip(msg, ts)[1]), view)
    flow = _array("32FC2", seed=2)
    msg = ros_msgs.image_to_msg(flow.astype(">f4"), "32FC2", 0, "", ts)
    assert msg.is_bigendian == 0
    assert bytes(msg.data) == flow.astype("<f4").tobytes()


@pytest.mark.parametrize("encoding", ["rgb8", "32FC2", "mono8"])
def test_rosbags_image_decodes_our_messages(encoding, ts):
    arr = _array(encoding, seed=3)
    _, back = _cdr_round_trip(ros_msgs.image_to_msg(arr, encoding, STAMP, "camera", ts), ts)
    decoded = np.asarray(message_to_cvimage(back))
    assert decoded.dtype == arr.dtype
    np.testing.assert_array_equal(decoded.reshape(arr.shape), arr)


@pytest.mark.parametrize(
    ("encoding", "array", "match"),
    [
        ("rgb8", np.zeros((4, 4, 3), np.float32), "expects dtype uint8, got float32"),
        ("rgb8", np.zeros((4, 4, 3), np.uint16), "expects dtype uint8, got uint16"),
        ("32FC2", np.zeros((4, 4, 2), np.float64), "expects dtype float32, got float64"),
        ("32FC1", np.zeros((4, 4), np.uint8), "expects dtype float32, got uint8"),
        ("rgb8", np.zeros((4, 4, 4), np.uint8), r"shape \(H, W, 3\), got shape \(4, 4, 4\)"),
        ("rgb8", np.zeros((4, 4), np.uint8), r"shape \(H, W, 3\), got shape \(4, 4\)"),
        ("32FC2", np.zeros((4, 4), np.float32), r"shape \(H, W, 2\), got shape \(4, 4\)"),
        ("mono8", np.zeros((4, 4, 3), np.uint8), r"shape \(H, W\) or \(H, W, 1\), got shape \(4, 4, 3\)"),
        ("16UC1", np.zeros((4, 4), np.uint16), "unsupported image encoding '16UC1'; expected one of rgb8"),
    ],
)
def test_wrong_array_is_rejected_naming_the_expectation(encoding, array, match, ts):
    with pytest.raises(ValueError, match=match):
        ros_msgs.image_to_msg(array, encoding, 0, "", ts)


def test_decode_checks_data_length_and_step():
    data = bytes(4 * 9)
    assert ros_msgs.decode_image(4, 3, "rgb8", 0, 9, data).shape == (4, 3, 3)
    with pytest.raises(ValueError, match=r"35 bytes, but height \* step = 4 \* 9 = 36 expected"):
        ros_msgs.decode_image(4, 3, "rgb8", 0, 9, data[:-1])
    with pytest.raises(ValueError, match="step 8 is smaller than a row"):
        ros_msgs.decode_image(4, 3, "rgb8", 0, 8, bytes(32))
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        ros_msgs.decode_image(4, 3, "yuv422", 0, 6, bytes(24))


def test_decode_padded_rows_and_other_buffers():
    import array

    arr = _array("rgb8", seed=4)
    padded = np.zeros((5, 7 * 3 + 3), np.uint8)
    padded[:, :21] = arr.reshape(5, 21)
    for data in (padded.tobytes(), memoryview(padded.tobytes()), array.array("B", padded.tobytes()), padded.ravel()):
        np.testing.assert_array_equal(ros_msgs.decode_image(5, 7, "rgb8", 0, 24, data), arr)
    flow = _array("32FC2", seed=5)
    padded = np.zeros((5, 7 * 8 + 4), np.uint8)
    padded[:, :56] = flow.view(np.uint8).reshape(5, 56)
    np.testing.assert_array_equal(ros_msgs.decode_image(5, 7, "32FC2", 0, 60, padded.tobytes()), flow)


def test_big_endian_float_messages_are_read(ts):
    flow = _array("32FC2", seed=6)
    img_cls = ts.types[ros_msgs.IMAGE]
    msg = img_cls(
        header=ros_msgs.header_msg(0, "", ts),
        height=5,
        width=7,
        encoding="32FC2",
        is_bigendian=1,
        step=56,
        data=np.frombuffer(flow.astype(">f4").tobytes(), np.uint8),
    )
    out = ros_msgs.msg_to_image(_cdr_round_trip(msg, ts)[1])
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, flow)


def test_to_rgb():
    rgb = _array("rgb8", seed=7)
    np.testing.assert_array_equal(ros_msgs.to_rgb(rgb[..., ::-1], "bgr8"), rgb)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(ros_msgs.to_rgb(rgba, "rgba8"), rgb)
    bgra = np.concatenate([rgb[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(ros_msgs.to_rgb(bgra, "bgra8"), rgb)
    mono = rgb[..., 0]
    np.testing.assert_array_equal(ros_msgs.to_rgb(mono, "mono8"), np.stack([mono] * 3, axis=2))
    with pytest.raises(ValueError, match="not a colour encoding"):
        ros_msgs.to_rgb(np.zeros((2, 2), np.float32), "32FC1")


def test_point_stamped_round_trip(ts):
    xyz = np.array([0.25, -1.5, 3.125e-3], np.float32)
    msg = ros_msgs.point_stamped_msg(xyz, STAMP, "panda_link0", ts)
    _, back = _cdr_round_trip(msg, ts)
    assert back.__msgtype__ == "geometry_msgs/msg/PointStamped"
    assert back.header.frame_id == "panda_link0"
    assert ros_msgs.ns_from_stamp(back.header.stamp) == STAMP
    out = ros_msgs.msg_to_point(back)
    assert out.dtype == np.float64 and out.shape == (3,)
    np.testing.assert_array_equal(out, xyz.astype(np.float64))
    np.testing.assert_array_equal(ros_msgs.msg_to_point(ros_msgs.point_stamped_msg([1, 2, 3], 0, "", ts)), [1, 2, 3])


@pytest.mark.parametrize(
    ("xyz", "match"),
    [
        (np.zeros(2), r"shape \(3,\), got shape \(2,\)"),
        (np.zeros((1, 3)), r"shape \(3,\), got shape \(1, 3\)"),
        (np.array(["a", "b", "c"]), "float or integer dtype"),
    ],
)
def test_bad_point_is_rejected(xyz, match, ts):
    with pytest.raises(ValueError, match=match):
        ros_msgs.point_stamped_msg(xyz, 0, "", ts)


def test_stamps():
    assert ros_msgs.stamp_from_ns(STAMP) == (1_700_000_123, 456_789_012)
    assert ros_msgs.stamp_from_ns(np.int64(5)) == (0, 5)
    assert ros_msgs.stamp_from_ns(-1) == (-1, 999_999_999)
    for ns in (0, 1, 999_999_999, 1_000_000_000, STAMP, -1, -1_500_000_000):
        assert ros_msgs.ns_from_stamp(ros_msgs.stamp_from_ns(ns)) == ns
    assert ros_msgs.ns_from_stamp(ros_msgs.time_msg(STAMP)) == STAMP
    with pytest.raises(ValueError, match="nanosec must be in"):
        ros_msgs.ns_from_stamp((1, 1_000_000_000))
    with pytest.raises(ValueError, match="int32"):
        ros_msgs.stamp_from_ns(2**31 * 1_000_000_000)
    with pytest.raises(ValueError, match="integer nanoseconds, got float"):
        ros_msgs.stamp_from_ns(1.5)


def test_typestore_cache_and_distros():
    assert ros_msgs.get_typestore() is ros_msgs.get_typestore("humble")
    assert ros_msgs.get_typestore("ros2_humble") is ros_msgs.get_typestore("Humble")
    jazzy = ros_msgs.get_typestore("jazzy")
    assert ros_msgs.IMAGE in jazzy.types
    with pytest.raises(ConfigError, match="unknown ROS 2 distro 'noetic'; expected one of"):
        ros_msgs.get_typestore("noetic")


def test_cdr_helpers(ts):
    msg = ros_msgs.image_to_msg(_array("rgb8"), "rgb8", STAMP, "camera", ts)
    raw = ros_msgs.msg_to_cdr(msg, ts)
    assert isinstance(raw, bytes)
    back = ros_msgs.cdr_to_msg(raw, ros_msgs.IMAGE, ts)
    np.testing.assert_array_equal(ros_msgs.msg_to_image(back), _array("rgb8"))


# ----------------------------------------------------------------------------------------------------------------------
# camera input, padded rows, big-endian, flows, and filling existing messages (the rclpy node's path)


def _raw_image_msg(ts, height, width, encoding, step, data, is_bigendian=0, frame_id="camera"):
    """A rosbags Image built field by field (as a camera driver would), sent through real CDR bytes."""
    msg = ts.types[ros_msgs.IMAGE](
        header=ros_msgs.header_msg(STAMP, frame_id, ts),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=is_bigendian,
        step=step,
        data=np.frombuffer(bytes(data), np.uint8),
    )
    return _cdr_round_trip(msg, ts)[1]


@pytest.mark.parametrize("encoding", ros_msgs.CAMERA_ENCODINGS)
def test_camera_encodings_become_rgb(encoding, ts):
    rgb = _array("rgb8", seed=11)
    native = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, np.full((5, 7, 1), 255, np.uint8)], 2),
        "bgra8": np.concatenate([rgb[..., ::-1], np.full((5, 7, 1), 255, np.uint8)], 2),
        "mono8": rgb[..., 1],
    }[encoding]
    msg = _cdr_round_trip(ros_msgs.image_to_msg(np.ascontiguousarray(native), encoding, STAMP, "camera", ts), ts)[1]
    out = ros_msgs.msg_to_rgb(msg)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and out.flags.c_contiguous and out.flags.writeable
    expected = np.repeat(rgb[..., 1:2], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("encoding", ["32FC1", "32FC2", "16UC1", "yuv422", "bayer_rggb8"])
def test_other_camera_encodings_are_refused_by_name(encoding, ts):
    msg = _raw_image_msg(ts, 2, 2, encoding, 16, bytes(32))
    with pytest.raises(ros_msgs.UnsupportedEncoding, match=f"encoding '{encoding}' is not accepted; expected one of"):
        ros_msgs.msg_to_rgb(msg)
    assert issubclass(ros_msgs.UnsupportedEncoding, ValueError)


def test_odd_width_with_row_padding(ts):
    """rgb8, width 5 = 15 bytes per row, padded to step 16 (4-byte row alignment) with garbage in the padding."""
    rgb = np.random.default_rng(12).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    rows = np.full((3, 16), 0xEE, np.uint8)
    rows[:, :15] = rgb.reshape(3, 15)
    msg = _raw_image_msg(ts, 3, 5, "rgb8", 16, rows.tobytes())
    np.testing.assert_array_equal(ros_msgs.msg_to_rgb(msg), rgb)
    # (rosbags-image 0.10 is no reference here: it ignores step and reads the padding byte as the next pixel)
    mono = rgb[..., 0]
    rows = np.zeros((3, 8), np.uint8)
    rows[:, :5] = mono
    np.testing.assert_array_equal(ros_msgs.msg_to_image(_raw_image_msg(ts, 3, 5, "mono8", 8, rows.tobytes())), mono)
    with pytest.raises(ValueError, match=r"47 bytes, but height \* step = 3 \* 16 = 48 expected"):
        ros_msgs.msg_to_rgb(
            SimpleNamespace(height=3, width=5, encoding="rgb8", is_bigendian=0, step=16, data=bytes(47))
        )


@settings(max_examples=40, deadline=None)
@given(
    encoding=st.sampled_from(sorted(ros_msgs.ENCODINGS)),
    height=st.integers(1, 6),
    width=st.integers(1, 7),
    pad=st.integers(0, 5),
    big=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_size_padding_and_byte_order_decodes(encoding, height, width, pad, big, seed):
    info = ros_msgs.ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = ros_msgs.expected_shape(encoding, height, width)
    if info.dtype == np.uint8:
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        arr = rng.normal(size=shape).astype(np.float32)
    wire = arr.astype(info.dtype.newbyteorder(">" if big else "<"))
    row = width * info.channels * info.dtype.itemsize
    rows = np.full((height, row + pad), 0xAB, np.uint8)
    rows[:, :row] = np.frombuffer(wire.tobytes(), np.uint8).reshape(height, row)
    out = ros_msgs.decode_image(height, width, encoding, int(big), row + pad, rows.tobytes())
    assert out.dtype.isnative and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_big_endian_flag_on_8bit_images_is_ignored_and_float_is_converted(ts):
    rgb = _array("rgb8", seed=13)
    msg = _raw_image_msg(ts, 5, 7, "rgb8", 21, rgb.tobytes(), is_bigendian=1)
    np.testing.assert_array_equal(ros_msgs.msg_to_rgb(msg), rgb)  # bytes have no byte order
    depth = _array("32FC1", seed=14)
    msg = _raw_image_msg(ts, 5, 7, "32FC1", 28, depth.astype(">f4").tobytes(), is_bigendian=1)
    out = ros_msgs.msg_to_image(msg)
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, depth)


def test_flows_round_trip_bit_exactly_through_32fc2(ts):
    flow = np.random.default_rng(15).normal(scale=20.0, size=(4, 6, 2)).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4028235e38, -1.17549435e-38, 0.1], np.float32)
    flow.reshape(-1)[: special.size] = special
    flow.view(np.uint32).reshape(-1)[0] = 0x7FC0_1234  # a NaN with a payload
    msg = ros_msgs.image_to_msg(flow, "32FC2", STAMP, "camera", ts)
    raw, back = _cdr_round_trip(msg, ts)
    out = ros_msgs.msg_to_image(back)
    assert out.dtype == np.float32 and out.shape == (4, 6, 2)
    np.testing.assert_array_equal(out.view(np.uint32), flow.view(np.uint32))  # bit for bit, NaN payload included
    grid = np.random.default_rng(16).normal(size=(2 * 16, 3 * 16, 2)).astype(np.float32)  # a prediction grid
    back = _cdr_round_trip(ros_msgs.image_to_msg(grid, "32FC2", 0, "", ts), ts)[1]
    assert (back.width, back.height, back.step) == (48, 32, 48 * 8)
    np.testing.assert_array_equal(ros_msgs.msg_to_image(back).view(np.uint32), grid.view(np.uint32))
    np.testing.assert_array_equal(np.asarray(message_to_cvimage(back)), grid)


def test_fill_image_into_existing_messages(ts):
    flow = _array("32FC2", seed=17)
    rgb = _array("rgb8", seed=18)
    # a rosbags message made elsewhere, refilled in place, then sent as CDR
    msg = ros_msgs.image_to_msg(np.zeros((1, 1, 3), np.uint8), "rgb8", 0, "", ts)
    header = ros_msgs.header_msg(STAMP, "camera", ts)
    assert ros_msgs.fill_image(msg, flow, "32FC2", header) is msg
    assert msg.header is header and isinstance(msg.data, np.ndarray)
    back = _cdr_round_trip(msg, ts)[1]
    np.testing.assert_array_equal(ros_msgs.msg_to_image(back), flow)
    assert ros_msgs.header_stamp_ns(back) == STAMP and ros_msgs.point_frame(back) == "camera"
    # an object shaped like an rclpy message: its uint8[] field is an array.array('B') and must stay one
    rclpy_like = SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id=""),
        height=0, width=0, encoding="", is_bigendian=0, step=0, data=pyarray.array("B"),
    )  # fmt: skip
    ros_msgs.fill_image(rclpy_like, rgb, "rgb8")
    ros_msgs.set_header(rclpy_like, STAMP, "cam2")
    assert isinstance(rclpy_like.data, pyarray.array) and rclpy_like.data.typecode == "B"
    assert (rclpy_like.height, rclpy_like.width, rclpy_like.step, rclpy_like.encoding) == (5, 7, 21, "rgb8")
    assert ros_msgs.header_stamp_ns(rclpy_like) == STAMP and rclpy_like.header.frame_id == "cam2"
    np.testing.assert_array_equal(ros_msgs.msg_to_rgb(rclpy_like), rgb)
    # the same fields rebuilt as a real message give the same CDR bytes as image_to_msg
    rebuilt = ts.types[ros_msgs.IMAGE](
        header=ros_msgs.header_msg(STAMP, "cam2", ts), height=rclpy_like.height, width=rclpy_like.width,
        encoding=rclpy_like.encoding, is_bigendian=0, step=rclpy_like.step,
        data=np.frombuffer(rclpy_like.data, np.uint8),
    )  # fmt: skip
    assert ros_msgs.msg_to_cdr(rebuilt, ts) == ros_msgs.msg_to_cdr(
        ros_msgs.image_to_msg(rgb, "rgb8", STAMP, "cam2", ts)
    )


def test_fill_point_stamped(ts):
    msg = ros_msgs.point_stamped_msg([0, 0, 0], 0, "", ts)
    header = ros_msgs.header_msg(STAMP, "panda_link0", ts)
    ros_msgs.fill_point_stamped(msg, np.array([0.5, -0.25, 0.125]), header)
    back = _cdr_round_trip(msg, ts)[1]
    np.testing.assert_array_equal(ros_msgs.msg_to_point(back), [0.5, -0.25, 0.125])
    assert ros_msgs.point_frame(back) == "panda_link0" and ros_msgs.header_stamp_ns(back) == STAMP
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        ros_msgs.fill_point_stamped(msg, [1.0, 2.0])
