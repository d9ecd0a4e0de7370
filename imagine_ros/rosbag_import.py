"""Import a ROS 2 bag (MCAP or sqlite3) as a dataset folder (HDF5 shards + ``meta.json``), without a ROS install.

The reverse of :mod:`imagine_ros.rosbag_export`: a camera topic and an end-effector track become episodes that
``train``, ``evaluate``, ``gif`` and ``info`` read like collected ones (kind ``"rosbag"``, no ground truth).

What is read (rosbags' ``AnyReader``: a rosbag2 folder, or a bare ``.mcap`` / ``.db3`` file; message definitions
from the bag, else from ``distro``'s typestore, Humble's by default):

* camera: ``sensor_msgs/msg/Image`` in an encoding the prediction node accepts (:data:`ros_msgs.CAMERA_ENCODINGS`:
  rgb8, bgr8, mono8, rgba8, bgra8) or ``sensor_msgs/msg/CompressedImage`` in jpeg or png (image_transport's
  ``compressed`` format strings such as ``"rgb8; jpeg compressed bgr8"`` included);
* end effector: a ``geometry_msgs/msg/PointStamped`` or ``PoseStamped`` topic (its position), or a TF frame pair
  (``ee_tf = (parent, child)``: the origin of ``child`` in ``parent``, composed along the tree of ``/tf`` and
  ``/tf_static``);
* intrinsics: the first ``sensor_msgs/msg/CameraInfo`` of the image's size on the camera_info topic (default: beside
  the image topic, image_transport's convention), brought to the dataset's pixels like the images; the camera pose
  (``T_cam_world``) when TF connects the end-effector frame to the image's ``frame_id``.

Resampling: every contiguous stretch of camera images (consecutive stamps at most ``gap_s`` apart; a longer pause
starts a new stretch) is laid on a grid of ``1 / fps`` seconds starting at its first image. Each grid time takes the
newest image and the newest end-effector sample stamped at or before it (nearest earlier), if that sample is at most
``max_age_s`` old (TF: every non-static transform of the chain); a grid time without one is dropped and splits the
stretch. Runs of kept grid times are cut into episodes of ``episode_frames`` frames; the remainder of a run is dropped.
Times are header stamps (``stamps="header"``) or the bag's receive times (``"bag"``). Defaults: ``fps`` = the camera's
median rate; ``max_age_s`` = one period and ``gap_s`` = 1.5 periods, of the grid or of the camera, whichever is longer
(so resampling above the camera's rate repeats images instead of dropping frames).

Frames are brought to ``image_size`` x ``image_size`` by :func:`imagine_ros.pipeline.prepare_image` (the prediction
node's own code: ``crop`` the centred square, ``stretch`` or ``exact``). Episode keys: ``frames``, ``ee_pos`` (metres,
in the end-effector frame), ``actions`` (``ee_pos[t + 1] - ee_pos[t]``, the last one 0), ``stamp_ns`` (grid times),
``image_stamp_ns`` (the stamps of the images taken), ``index``. The folder is written beside ``out`` under a hidden
name and renamed into place only when complete: an error leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imagine_ros import ros_msgs
from imagine_ros.constants import ACTIONS, EE_POS, FRAMES, INDEX
from imagine_ros.errors import ConfigError, DatasetError, ImagineRosError

KIND = "rosbag"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
IMAGE_TYPES = (ros_msgs.IMAGE, COMPRESSED_IMAGE)
EE_TYPES = (ros_msgs.POINT_STAMPED, POSE_STAMPED)
TF_TOPICS = ("/tf", "/tf_static")
STAMP_SOURCES = ("header", "bag")
STAMP_NS = "stamp_ns"
IMAGE_STAMP_NS = "image_stamp_ns"
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


@dataclass
class ImportConfig:
    """Settings of :func:`import_bag` (module docstring for their meaning)."""

    image_topic: str = "/camera/image_raw"
    ee_topic: str | None = "/ee_pos"
    ee_tf: tuple[str, str] | None = None  # (parent, child): replaces ee_topic
    camera_info_topic: str | None = None  # default: <image topic's namespace>/camera_info
    fps: float | None = None
    max_age_s: float | None = None
    gap_s: float | None = None
    episode_frames: int = 30
    image_size: int = 64
    resize: str = "crop"
    stamps: str = "header"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    shard_size: int = 16
    distro: str = "humble"

    def check(self) -> None:
        from imagine_ros.pipeline import RESIZE_MODES

        def positive(name: str, value: Any) -> None:
            if value is not None and not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ConfigError(f"--{name} must be a positive number, got {value!r}")

        positive("fps", self.fps)
        positive("max-age", self.max_age_s)
        positive("gap", self.gap_s)
        for name, value, low in (
            ("episode-frames", self.episode_frames, 2),
            ("image-size", self.image_size, 1),
            ("shard-size", self.shard_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"--{name} must be an integer >= {low}, got {value!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.stamps not in STAMP_SOURCES:
            raise ConfigError(f"--stamps must be one of {', '.join(STAMP_SOURCES)}, got {self.stamps!r}")
        if self.ee_tf is not None and (len(self.ee_tf) != 2 or not all(self.ee_tf)):
            raise ConfigError(f"--ee-tf needs two frame names (PARENT CHILD), got {self.ee_tf!r}")
        if self.ee_tf is None and not self.ee_topic:
            raise ConfigError("an end-effector source is needed: --ee-topic TOPIC or --ee-tf PARENT CHILD")
        ros_msgs.get_typestore(self.distro)  # an unknown distro is refused, naming the known ones


def info_topic_for(image_topic: str) -> str:
    """``/camera/image_raw`` and ``/camera/image_raw/compressed`` -> ``/camera/camera_info``."""
    topic = image_topic.rstrip("/")
    if topic.endswith("/compressed"):
        topic = topic[: -len("/compressed")]
    namespace = topic.rsplit("/", 1)[0]
    return f"{namespace}/camera_info"


# ----------------------------------------------------------------------------------------------------------------------
# decoding


def cdr_header_stamp(raw: bytes | memoryview) -> int:
    """The ``header.stamp`` (ns) of a CDR message whose first field is a ``std_msgs/Header``, without decoding it."""
    little = raw[1] & 1  # encapsulation kind: 0x0001 CDR_LE, 0x0000 CDR_BE
    sec, nanosec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return int(sec) * 1_000_000_000 + int(nanosec)


def decode_camera_msg(msg: Any, msgtype: str) -> np.ndarray:
    """An Image (camera encodings) or CompressedImage (jpeg, png) message -> (H, W, 3) uint8 RGB.

    Raises :class:`ros_msgs.UnsupportedEncoding` for another encoding or format, ``ValueError`` for bytes that do not
    decode."""
    if msgtype == ros_msgs.IMAGE:
        return ros_msgs.msg_to_rgb(msg)
    import cv2

    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt or not any(k in fmt for k in COMPRESSED_FORMATS):
        raise ros_msgs.UnsupportedEncoding(
            f"compressed image format {msg.format!r} is not accepted; expected jpeg or png"
        )
    bgr = cv2.imdecode(np.frombuffer(memoryview(msg.data), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"a CompressedImage ({msg.format!r}) holds bytes that do not decode as jpeg or png")
    return np.ascontiguousarray(bgr[..., ::-1])


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """The 3x3 rotation of a quaternion (normalised first)."""
    q = np.array([x, y, z, w], np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"not a rotation quaternion: {q.tolist()}")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _transform_matrix(tf: Any) -> np.ndarray:
    m = np.eye(4)
    r, t = tf.transform.rotation, tf.transform.translation
    m[:3, :3] = quaternion_matrix(r.x, r.y, r.z, r.w)
    m[:3, 3] = [t.x, t.y, t.z]
    return m


# ----------------------------------------------------------------------------------------------------------------------
# TF


class TfTree:
    """The transforms of ``/tf`` (time series per child frame) and ``/tf_static`` (fixed), looked up nearest-earlier.

    Each frame has one parent (tf2's tree); a static transform wins over a dynamic one for the same child."""

    def __init__(self) -> None:
        self.static: dict[str, tuple[str, np.ndarray]] = {}
        self._dynamic: dict[str, tuple[str, list[int], list[np.ndarray]]] = {}
        self.dynamic: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}

    def add(self, msg: Any, static: bool, bag_ns: int | None = None) -> None:
        """A TFMessage; stamps from each transform's header (or ``bag_ns`` when given)."""
        for tf in msg.transforms:
            parent, child = str(tf.header.frame_id).lstrip("/"), str(tf.child_frame_id).lstrip("/")
            m = _transform_matrix(tf)
            if static:
                self.static[child] = (parent, m)
            else:
                stamp = ros_msgs.ns_from_stamp(tf.header.stamp) if bag_ns is None else int(bag_ns)
                entry = self._dynamic.setdefault(child, (parent, [], []))
                if entry[0] == parent:
                    entry[1].append(stamp)
                    entry[2].append(m)

    def finish(self) -> TfTree:
        for child, (parent, stamps, mats) in self._dynamic.items():
            order = np.argsort(np.asarray(stamps, np.int64), kind="stable")
            self.dynamic[child] = (parent, np.asarray(stamps, np.int64)[order], np.stack(mats)[order])
        return self

    @property
    def frames(self) -> list[str]:
        names = set(self.static) | set(self.dynamic)
        names |= {p for p, _ in self.static.values()} | {p for p, _, _ in self.dynamic.values()}
        return sorted(names)

    def _to_root(self, frame: str, times: np.ndarray, max_age_ns: int) -> tuple[str, list[str], np.ndarray, np.ndarray]:
        """(root, chain of frames, pose of ``frame`` in root (n, 4, 4), valid (n,))."""
        n = len(times)
        pose = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
        ok = np.ones(n, bool)
        chain = [frame]
        while len(chain) < 256:
            child = chain[-1]
            if child in self.static:
                parent, m = self.static[child]
                pose = m @ pose
            elif child in self.dynamic:
                parent, stamps, mats = self.dynamic[child]
                i = np.searchsorted(stamps, times, side="right") - 1
                ok &= (i >= 0) & (times - stamps[np.maximum(i, 0)] <= max_age_ns)
                pose = mats[np.maximum(i, 0)] @ pose
            else:
                return child, chain, pose, ok
            chain.append(parent)
        raise DatasetError(f"the TF tree has a loop through {chain[-1]!r}")

    def lookup(self, target: str, source: str, times: np.ndarray, max_age_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Pose of ``source`` in ``target`` at ``times`` (n, 4, 4) and where it is known (n,) bool. DatasetError
        when the two frames are not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        times = np.asarray(times, np.int64)
        root_t, chain_t, pose_t, ok_t = self._to_root(target, times, max_age_ns)
        root_s, chain_s, pose_s, ok_s = self._to_root(source, times, max_age_ns)
        if root_t != root_s:
            known = ", ".join(self.frames) or "none"
            raise DatasetError(
                f"TF does not connect {target!r} and {source!r} (their roots are {root_t!r} and {root_s!r}; "
                f"frames on /tf and /tf_static: {known})"
            )
        return np.linalg.inv(pose_t) @ pose_s, ok_t & ok_s


# ----------------------------------------------------------------------------------------------------------------------
# resampling plan (pure)


@dataclass
class Plan:
    """Episodes cut from the camera stamps: for each, its grid times and the (sorted) image index of every frame."""

    grid_ns: list[np.ndarray] = field(default_factory=list)
    image_idx: list[np.ndarray] = field(default_factory=list)
    ee_pos: list[np.ndarray] = field(default_factory=list)
    image_ns: list[np.ndarray] = field(default_factory=list)
    segments: int = 0
    grid_total: int = 0
    dropped_camera: int = 0  # grid times with no image within max_age
    dropped_ee: int = 0  # ... with an image but no end-effector sample within max_age
    dropped_tail: int = 0  # kept grid times in a run's remainder shorter than episode_frames
    runs: int = 0


def make_plan(
    image_ns: np.ndarray,
    period_ns: int,
    max_age_ns: int,
    gap_ns: int,
    episode_frames: int,
    ee_at: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> Plan:
    """Lay each stretch of ``image_ns`` (sorted, unique) on a grid and cut episodes (module docstring).

    ``ee_at(times) -> (positions (n, 3), valid (n,))`` gives the end-effector track nearest-earlier."""
    plan = Plan()
    s = np.asarray(image_ns, np.int64)
    if len(s) == 0:
        return plan
    breaks = np.flatnonzero(np.diff(s) > gap_ns) + 1
    bounds = zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(s)]]))
    for lo, hi in bounds:
        plan.segments += 1
        a, b = int(s[lo]), int(s[hi - 1])
        grid = a + period_ns * np.arange((b - a) // period_ns + 1, dtype=np.int64)
        pick = np.searchsorted(s, grid, side="right") - 1
        cam_ok = grid - s[pick] <= max_age_ns
        ee, ee_ok = ee_at(grid)
        ok = cam_ok & ee_ok
        plan.grid_total += len(grid)
        plan.dropped_camera += int((~cam_ok).sum())
        plan.dropped_ee += int((cam_ok & ~ee_ok).sum())
        # runs of consecutive kept grid times
        edges = np.diff(np.concatenate([[0], ok.astype(np.int8), [0]]))
        for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            plan.runs += 1
            n_ep = (stop - start) // episode_frames
            plan.dropped_tail += (stop - start) - n_ep * episode_frames
            for e in range(n_ep):
                sl = slice(start + e * episode_frames, start + (e + 1) * episode_frames)
                plan.grid_ns.append(grid[sl])
                plan.image_idx.append(pick[sl])
                plan.ee_pos.append(np.asarray(ee[sl], np.float32))
                plan.image_ns.append(s[pick[sl]])
    return plan


def nearest_earlier(stamps: np.ndarray, values: np.ndarray, max_age_ns: int):
    """``ee_at`` for a sampled track: the newest sample at or before each time, if at most ``max_age_ns`` old."""
    order = np.argsort(stamps, kind="stable")
    stamps, values = np.asarray(stamps, np.int64)[order], np.asarray(values, np.float64)[order]

    def at(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.searchsorted(stamps, times, side="right") - 1
        ok = (i >= 0) & (times - stamps[np.maximum(i, 0)] <= max_age_ns)
        return values[np.maximum(i, 0)], ok

    return at


# ----------------------------------------------------------------------------------------------------------------------
# the import


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _scale_intrinsics(k: np.ndarray, transform: Any) -> np.ndarray:
    """K of the camera -> K of the prepared image (``model = (camera - offset + 0.5) * scale - 0.5`` per axis)."""
    (x0, y0), (sx, sy) = transform.offset, transform.scale
    out = np.array(k, np.float64)
    out[0, 0], out[0, 1], out[1, 1] = k[0, 0] * sx, k[0, 1] * sx, k[1, 1] * sy
    out[0, 2] = (k[0, 2] - x0 + 0.5) * sx - 0.5
    out[1, 2] = (k[1, 2] - y0 + 0.5) * sy - 0.5
    return out


def import_bag(
    bag: str | os.PathLike, out: str | os.PathLike, config: ImportConfig | None = None, progress: bool = True
) -> dict[str, Any]:
    """Import the recording at ``bag`` as a dataset folder ``out`` (module docstring). Returns a summary: counts of
    what was taken and dropped (and why), the frame rate, the camera, seconds and frames per second.

    Raises :class:`DatasetError` (a missing topic, an unsupported encoding, no end-effector sample in the camera's
    time range, an unreadable bag, nothing to import, an existing ``out``) or :class:`ConfigError`; in every case
    nothing is left at ``out``."""
    from rosbags.highlevel import AnyReader

    cfg = config or ImportConfig()
    cfg.check()
    t0 = time.perf_counter()
    bag, out = Path(bag), Path(out)
    if not bag.exists():
        raise DatasetError(f"no bag at {bag}")
    from imagine_ros.sim.storage import refuse_existing_out

    refuse_existing_out(out)
    typestore = ros_msgs.get_typestore(cfg.distro)
    try:
        reader = AnyReader([bag], default_typestore=typestore)
        reader.open()
    except ImagineRosError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot read the bag {bag}: {_one_line(e)}") from None
    try:
        return _import(reader, bag, out, cfg, progress, t0)
    except ImagineRosError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot read the bag {bag}: {_one_line(e)}") from None
    finally:
        try:
            reader.close()
        except Exception:
            pass


def _import(reader: Any, bag: Path, out: Path, cfg: ImportConfig, progress: bool, t0: float) -> dict[str, Any]:
    from tqdm.auto import tqdm

    conns = list(reader.connections)
    by_topic: dict[str, list[Any]] = {}
    for c in conns:
        by_topic.setdefault(c.topic, []).append(c)

    def listing(types: tuple[str, ...]) -> str:
        found = sorted({f"{c.topic} ({c.msgtype.rsplit('/', 1)[-1]})" for c in conns if c.msgtype in types})
        return ", ".join(found) if found else "none"

    # --- which connections
    image_conns = by_topic.get(cfg.image_topic, [])
    if not image_conns:
        raise DatasetError(
            f"camera topic {cfg.image_topic} is not in {bag}; image topics there: {listing(IMAGE_TYPES)}"
        )
    image_type = image_conns[0].msgtype
    if image_type not in IMAGE_TYPES or any(c.msgtype != image_type for c in image_conns):
        raise DatasetError(
            f"camera topic {cfg.image_topic} carries {image_type}, not sensor_msgs/msg/Image or CompressedImage; "
            f"image topics in {bag}: {listing(IMAGE_TYPES)}"
        )
    ee_conns: list[Any] = []
    tf_conns: list[Any] = []
    if cfg.ee_tf is not None:
        tf_conns = [c for t in TF_TOPICS for c in by_topic.get(t, []) if c.msgtype == ros_msgs.TF_MESSAGE]
        if not tf_conns:
            raise DatasetError(f"--ee-tf needs /tf or /tf_static, and {bag} has neither")
        ee_source = f"TF {cfg.ee_tf[0]} -> {cfg.ee_tf[1]}"
    else:
        ee_conns = by_topic.get(cfg.ee_topic, [])
        if not ee_conns:
            raise DatasetError(
                f"end-effector topic {cfg.ee_topic} is not in {bag}; PointStamped/PoseStamped topics there: "
                f"{listing(EE_TYPES)} (or use --ee-tf PARENT CHILD)"
            )
        if any(c.msgtype not in EE_TYPES for c in ee_conns):
            raise DatasetError(
                f"end-effector topic {cfg.ee_topic} carries {ee_conns[0].msgtype}; expected PointStamped or "
                f"PoseStamped (or use --ee-tf PARENT CHILD for a TF frame pair)"
            )
        ee_source = f"{cfg.ee_topic} ({ee_conns[0].msgtype.rsplit('/', 1)[-1]})"
        # the camera pose, when TF is there too
        tf_conns = [c for t in TF_TOPICS for c in by_topic.get(t, []) if c.msgtype == ros_msgs.TF_MESSAGE]
    info_topic = cfg.camera_info_topic or info_topic_for(cfg.image_topic)
    info_conns = [c for c in by_topic.get(info_topic, []) if c.msgtype == ros_msgs.CAMERA_INFO]
    if cfg.camera_info_topic and not info_conns:
        raise DatasetError(
            f"camera_info topic {cfg.camera_info_topic} is not in {bag}; CameraInfo topics there: "
            f"{listing((ros_msgs.CAMERA_INFO,))}"
        )

    # --- pass 1: stamps, the end-effector track, TF, CameraInfo
    image_ids = {id(c) for c in image_conns}
    ee_ids = {id(c) for c in ee_conns}
    info_ids = {id(c) for c in info_conns}
    use_bag_time = cfg.stamps == "bag"
    image_stamps: list[int] = []
    ee_stamps: list[int] = []
    ee_values: list[tuple[float, float, float]] = []
    ee_frames: set[str] = set()
    infos: list[Any] = []
    tf = TfTree()
    first_image = None
    wanted = image_conns + ee_conns + tf_conns + info_conns
    total = sum(int(getattr(c, "msgcount", 0) or 0) for c in wanted) or None
    bar = tqdm(total=total, desc="import-bag: scan", unit="msg", disable=not progress, dynamic_ncols=True)
    try:
        for conn, bag_ns, raw in reader.messages(connections=wanted):
            bar.update(1)
            key = id(conn)
            if key in image_ids:
                image_stamps.append(int(bag_ns) if use_bag_time else cdr_header_stamp(raw))
                if first_image is None:
                    first_image = reader.deserialize(raw, conn.msgtype)
                    try:
                        decode_camera_msg(first_image, conn.msgtype)
                    except ros_msgs.UnsupportedEncoding as e:
                        raise DatasetError(f"camera topic {cfg.image_topic}: {e}") from None
                    except ValueError as e:
                        raise DatasetError(
                            f"camera topic {cfg.image_topic}: the first image is unreadable: {e}"
                        ) from None
            elif key in ee_ids:
                msg = reader.deserialize(raw, conn.msgtype)
                p = msg.pose.position if conn.msgtype == POSE_STAMPED else msg.point
                ee_stamps.append(int(bag_ns) if use_bag_time else ros_msgs.header_stamp_ns(msg))
                ee_values.append((p.x, p.y, p.z))
                ee_frames.add(str(msg.header.frame_id))
            elif key in info_ids:
                if len(infos) < 16:
                    infos.append(reader.deserialize(raw, conn.msgtype))
            else:
                tf.add(
                    reader.deserialize(raw, conn.msgtype), conn.topic == "/tf_static", bag_ns if use_bag_time else None
                )
    finally:
        bar.close()
    tf.finish()

    # --- the grid
    n_images = len(image_stamps)
    if n_images == 0:
        raise DatasetError(f"camera topic {cfg.image_topic} has no messages in {bag}")
    stamps = np.asarray(image_stamps, np.int64)
    if not use_bag_time and not stamps.any():
        raise DatasetError(f"every image on {cfg.image_topic} has a zero header stamp; use --stamps bag")
    order = np.argsort(stamps, kind="stable")
    sorted_stamps = stamps[order]
    unique = np.concatenate([sorted_stamps[1:] != sorted_stamps[:-1], [True]])  # keep the last of equal stamps
    duplicates = int((~unique).sum())
    order, sorted_stamps = order[unique], sorted_stamps[unique]
    steps = np.diff(sorted_stamps)
    camera_ns = int(round(float(np.median(steps)))) if len(steps) else 0  # the camera's own period
    if cfg.fps is not None:
        period_ns = int(round(1e9 / cfg.fps))
    elif camera_ns:
        period_ns = camera_ns
    else:
        raise DatasetError(f"camera topic {cfg.image_topic} has one image; a frame rate needs two (or give --fps)")
    if period_ns < 1:
        raise ConfigError(f"--fps {cfg.fps} is too high")
    slower = max(period_ns, camera_ns)  # defaults follow the slower of the grid and the camera
    max_age_ns = int(round(cfg.max_age_s * 1e9)) if cfg.max_age_s is not None else slower
    gap_ns = int(round(cfg.gap_s * 1e9)) if cfg.gap_s is not None else int(round(1.5 * slower))
    lo_ns, hi_ns = int(sorted_stamps[0]), int(sorted_stamps[-1])

    if cfg.ee_tf is not None:
        parent, child = cfg.ee_tf
        ee_frame = parent.lstrip("/")
        probe = np.array([lo_ns, hi_ns], np.int64)
        tf.lookup(parent, child, probe, max_age_ns)  # not connected: a DatasetError naming the frames

        def ee_at(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pose, ok = tf.lookup(parent, child, times, max_age_ns)
            return pose[:, :3, 3], ok
    else:
        if not ee_stamps:
            raise DatasetError(f"end-effector topic {cfg.ee_topic} has no messages in {bag}")
        e = np.asarray(ee_stamps, np.int64)
        if not ((e >= lo_ns - max_age_ns) & (e <= hi_ns)).any():
            raise DatasetError(
                f"end-effector topic {cfg.ee_topic} has no samples in the camera's time range "
                f"({lo_ns / 1e9:.3f} s to {hi_ns / 1e9:.3f} s; its {len(e)} samples span {e.min() / 1e9:.3f} s to "
                f"{e.max() / 1e9:.3f} s)"
            )
        ee_frame = sorted(ee_frames)[0] if len(ee_frames) == 1 else ", ".join(sorted(ee_frames))
        ee_at = nearest_earlier(e, np.asarray(ee_values, np.float64), max_age_ns)

    plan = make_plan(sorted_stamps, period_ns, max_age_ns, gap_ns, cfg.episode_frames, ee_at)
    if cfg.ee_tf is not None and plan.grid_total and plan.dropped_ee == plan.grid_total - plan.dropped_camera:
        raise DatasetError(
            f"TF {cfg.ee_tf[0]} -> {cfg.ee_tf[1]} has no transform within --max-age of any camera frame "
            "(no end-effector samples in the camera's time range)"
        )
    counts = _drop_counts(plan, n_images, duplicates, cfg)
    if not plan.grid_ns:
        raise DatasetError(
            f"no episode of {cfg.episode_frames} frames at {1e9 / period_ns:.3g} fps could be cut from {bag}: "
            + "; ".join(f"{v} {k}" for k, v in counts["dropped"].items() if v)
        )

    # --- pass 2: the frames
    from imagine_ros.pipeline import prepare_image
    from imagine_ros.sim.storage import (
        _atomic_write_text,
        move_into_place,
        new_meta,
        scan_folder,
        shard_name,
        staging_folder,
        write_shard,
    )

    num_eps, n_frames, size = len(plan.grid_ns), cfg.episode_frames, cfg.image_size
    slots: dict[int, list[tuple[int, int]]] = {}  # bag-order image index -> (episode, frame) slots
    for e, idx in enumerate(plan.image_idx):
        for t, i in enumerate(order[idx]):
            slots.setdefault(int(i), []).append((e, t))
    frames: dict[int, np.ndarray] = {}  # episodes being filled (a shard's are freed once it is written)
    remaining = np.full(num_eps, n_frames, np.int64)
    transform = None
    source_size = None
    tmp = staging_folder(out)
    try:
        # meta first: splits need only the number of episodes; shards are written as they complete
        camera = _camera_meta(infos, info_topic, first_image, tf, ee_frame, lo_ns, max_age_ns, cfg)
        settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
        settings.update(fps=1e9 / period_ns, max_age_s=max_age_ns / 1e9, gap_s=gap_ns / 1e9)
        num_shards = (num_eps + cfg.shard_size - 1) // cfg.shard_size
        left_in_shard = np.bincount(np.arange(num_eps) // cfg.shard_size, minlength=num_shards)
        written = 0
        bar = tqdm(total=len(slots), desc="import-bag: frames", unit="frame", disable=not progress, dynamic_ncols=True)
        try:
            for i, (conn, _, raw) in enumerate(reader.messages(connections=image_conns)):
                targets = slots.get(i)
                if not targets:
                    continue
                msg = reader.deserialize(raw, conn.msgtype)
                try:
                    rgb = decode_camera_msg(msg, conn.msgtype)
                except ros_msgs.UnsupportedEncoding as err:
                    raise DatasetError(f"camera topic {cfg.image_topic}, image {i}: {err}") from None
                except ValueError as err:
                    raise DatasetError(f"camera topic {cfg.image_topic}, image {i} is unreadable: {err}") from None
                if source_size is None:
                    source_size = rgb.shape[:2]
                elif rgb.shape[:2] != source_size:
                    raise DatasetError(
                        f"camera topic {cfg.image_topic}: image {i} is {rgb.shape[1]}x{rgb.shape[0]} pixels, the "
                        f"first was {source_size[1]}x{source_size[0]}; one camera size per import"
                    )
                try:
                    small, transform = prepare_image(rgb, size, cfg.resize)
                except ValueError as err:  # BadInput (resize=exact) is a ValueError
                    raise DatasetError(f"camera topic {cfg.image_topic}: {err}") from None
                for e, t in targets:
                    if e not in frames:
                        frames[e] = np.zeros((n_frames, size, size, 3), np.uint8)
                    frames[e][t] = small
                    remaining[e] -= 1
                    if remaining[e] == 0:
                        s = e // cfg.shard_size
                        left_in_shard[s] -= 1
                        if left_in_shard[s] == 0:  # every episode of the shard is complete: write it, free it
                            members = range(s * cfg.shard_size, min((s + 1) * cfg.shard_size, num_eps))
                            try:
                                write_shard(tmp / shard_name(s), [_episode(plan, frames, m) for m in members])
                            except OSError as err:
                                raise DatasetError(f"cannot write {out}: {_one_line(err)}") from None
                            written += 1
                bar.update(1)
        finally:
            bar.close()
        if int(remaining.sum()) != 0 or written != num_shards:
            raise DatasetError(f"camera topic {cfg.image_topic}: the bag changed between its two readings")
        if camera is not None and transform is not None:
            camera = _finish_camera(camera, transform, source_size, size)
        meta = new_meta(
            kind=KIND,
            config={"import": settings},
            num_episodes=num_eps,
            episodes_per_shard=cfg.shard_size,
            seed=cfg.seed,
            frames_per_episode=n_frames,
            image_size=(size, size),
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            extra={
                **({"camera": camera} if camera is not None else {}),
                "frame_period_s": period_ns / 1e9,
                "action": "end-effector displacement (dx, dy, dz) in metres from the imported track: "
                "actions[t] = ee_pos[t + 1] - ee_pos[t], the last one 0",
                "ee_frame": f"{ee_frame}, metres ({ee_source})",
                "ground_truth": False,
                "source": {
                    "bag": str(bag),
                    "image_topic": cfg.image_topic,
                    "image_type": image_type,
                    "ee": ee_source,
                    "source_image_size": [int(v) for v in source_size] if source_size else None,
                    "start_ns": int(lo_ns),
                    "end_ns": int(hi_ns),
                },
                "import_summary": counts,
            },
        )
        try:
            _atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
        except OSError as err:
            raise DatasetError(f"cannot write {out}: {_one_line(err)}") from None
        scan_folder(tmp, meta, require_complete=True)
        move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return {
        "out": str(out),
        "episodes": num_eps,
        "frames_per_episode": n_frames,
        "frames": num_eps * n_frames,
        "fps": 1e9 / period_ns,
        "max_age_s": max_age_ns / 1e9,
        "gap_s": gap_ns / 1e9,
        "image_type": image_type,
        "source_image_size": list(source_size) if source_size else None,
        "image_size": [size, size],
        "ee": ee_source,
        "ee_frame": ee_frame,
        "camera": None if camera is None else {k: camera[k] for k in ("K", "source") if k in camera},
        "camera_pose": camera is not None and "T_cam_world" in camera,
        "splits": {k: len(v) for k, v in meta["splits"].items()},
        **counts,
        "seconds": seconds,
        "frames_per_s": num_eps * n_frames / seconds if seconds > 0 else float("inf"),
    }


def _drop_counts(plan: Plan, n_images: int, duplicates: int, cfg: ImportConfig) -> dict[str, Any]:
    used = len({int(i) for idx in plan.image_idx for i in idx})
    return {
        "images": int(n_images),
        "images_used": used,
        "segments": int(plan.segments),
        "resampled_frames": int(plan.grid_total),
        "dropped": {
            "images not taken (between resampled frames, duplicate stamps or in dropped frames)": int(n_images - used),
            "images with a duplicate stamp": int(duplicates),
            "frames with no camera image within --max-age": int(plan.dropped_camera),
            "frames with no end-effector sample within --max-age": int(plan.dropped_ee),
            f"frames at the end of a run, fewer than --episode-frames {cfg.episode_frames}": int(plan.dropped_tail),
        },
    }


def _episode(plan: Plan, frames: dict[int, np.ndarray], e: int) -> dict[str, np.ndarray]:
    ee = plan.ee_pos[e]
    actions = np.zeros_like(ee)
    actions[:-1] = np.diff(ee, axis=0)
    return {
        FRAMES: frames.pop(e),
        EE_POS: ee,
        ACTIONS: actions,
        STAMP_NS: np.asarray(plan.grid_ns[e], np.int64),
        IMAGE_STAMP_NS: np.asarray(plan.image_ns[e], np.int64),
        INDEX: np.int64(e),
    }


def _camera_meta(
    infos: list[Any],
    info_topic: str,
    first_image: Any,
    tf: TfTree,
    ee_frame: str,
    t_ns: int,
    max_age_ns: int,
    cfg: ImportConfig,
) -> dict[str, Any] | None:
    """The camera of the first image's size from CameraInfo (K at source pixels; scaled later) and its pose."""
    if not infos or first_image is None:
        return None
    if hasattr(first_image, "height") and hasattr(first_image, "width"):
        size = (int(first_image.height), int(first_image.width))
    else:
        size = decode_camera_msg(first_image, COMPRESSED_IMAGE).shape[:2]
    match = [m for m in infos if (int(m.height), int(m.width)) == size or (m.height == 0 and m.width == 0)]
    if not match:
        return None
    info = match[0]
    k = np.asarray(info.k, np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        return None
    camera: dict[str, Any] = {
        "source_K": k.tolist(),
        "source": info_topic,
        "distortion_model": str(info.distortion_model),
        "D": [float(v) for v in info.d],
        "frame_id": str(first_image.header.frame_id).lstrip("/"),
    }
    cam_frame = camera["frame_id"]
    if cam_frame and ee_frame and cam_frame in tf.frames and ee_frame in tf.frames:
        try:
            pose, ok = tf.lookup(ee_frame, cam_frame, np.array([t_ns], np.int64), max_age_ns)
        except DatasetError:
            ok = np.array([False])
        if ok[0]:
            camera["T_cam_world"] = np.linalg.inv(pose[0]).tolist()
            camera["T_cam_world_frame"] = ee_frame
    return camera


def _finish_camera(camera: dict[str, Any], transform: Any, source_size: tuple[int, int], size: int) -> dict[str, Any]:
    k = _scale_intrinsics(np.asarray(camera["source_K"]), transform)
    return {
        **camera,
        "K": k.tolist(),
        "config": {"width": size, "height": size},
        "source_size": [int(source_size[0]), int(source_size[1])],
        "convention": "OpenCV pinhole (x right, y down, z forward); K of the dataset's pixels after --resize",
    }


def format_summary(s: dict[str, Any]) -> str:
    """The summary of :func:`import_bag` as lines for a terminal."""
    src = s["source_image_size"]
    camera = f"K from {s['camera']['source']}" if s["camera"] else "no CameraInfo (no intrinsics)"
    if s["camera_pose"]:
        camera += " and the camera pose from TF"
    lines = [
        f"wrote {s['out']}: {s['episodes']} episodes x {s['frames_per_episode']} frames at {s['fps']:.4g} fps "
        f"({s['splits']['train']}/{s['splits']['val']}/{s['splits']['test']} train/val/test), "
        f"{src[1]}x{src[0]} -> {s['image_size'][1]}x{s['image_size'][0]}; {camera}",
        f"taken: {s['images_used']} of {s['images']} images ({s['image_type'].rsplit('/', 1)[-1]}) in "
        f"{s['frames']} of {s['resampled_frames']} resampled frames over {s['segments']} stretches between gaps "
        f"(> {s['gap_s']:.4g} s); end effector from {s['ee']} in {s['ee_frame']}",
        "dropped: "
        + ("; ".join(f"{v} {k}" for k, v in s["dropped"].items() if v) or "nothing")
        + f" (max age {s['max_age_s']:.4g} s)",
        f"{s['frames_per_s']:.0f} frames/s, {s['seconds']:.1f} s",
    ]
    return "\n".join(lines)
