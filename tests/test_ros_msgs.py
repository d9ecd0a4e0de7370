"""numpy <-> ROS 2 messages, checked against rosbags' real CDR bytes and decoded independently by rosbags-image."""

from __future__ import annotations

import numpy as np
import pytest
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
