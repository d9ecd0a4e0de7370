"""Export a dataset folder (HDF5 shards + ``meta.json``) as a ROS 2 bag (MCAP or sqlite3), without a ROS install.

Topics (defaults)::

    /tf_static               tf2_msgs/msg/TFMessage           once, first: the camera's pose panda_link0 ->
                                                              camera_optical_frame (from meta.json's camera)
    /camera/image_raw        sensor_msgs/msg/Image            rgb8 frames, frame_id "camera_optical_frame"
    /camera/camera_info      sensor_msgs/msg/CameraInfo       K of meta.json's camera, stamped like each frame
    /ee_pos                  geometry_msgs/msg/PointStamped   end-effector position, frame_id "panda_link0"
    /objects/<k>/position    geometry_msgs/msg/PointStamped   position of object k (one topic per object)
    /episode                 std_msgs/msg/String              JSON {"index": i, "seed": s} at each episode start

The frame names default to the simulator node's (``camera_frame`` and ``base_frame`` of
:data:`imagine_ros.node_params.SIM_PARAMS`), so a bag and a live ``imagine_sim`` look the same to RViz and tf2.
``/tf_static`` and ``camera_info`` need the camera of the dataset's ``meta.json`` (``camera.T_cam_world`` and
``camera.K``, written by ``collect``); a dataset without it gets neither. ``camera_info`` sits beside the image topic
(``<image topic's namespace>/camera_info``, the image_transport convention).

With ``checkpoint`` (``--checkpoint``), the bag also holds what the prediction node would publish for each frame (or
every ``predict_every``-th frame), stamped like the frame it was predicted from::

    /eta                               geometry_msgs/msg/PointStamped   η: the end-effector position ``horizon``
                                                                        frames later (the BAIR conditioning protocol;
                                                                        the episode's last one near its end)
    /imagine_prediction/future/frames  sensor_msgs/msg/Image            rgb8 grid, rows = samples, columns = time
    /imagine_prediction/future/flows   sensor_msgs/msg/Image            32FC2 grid of flows (model pixels)
    /imagine_prediction/future/flow_vis sensor_msgs/msg/Image           rgb8 colour coding of the flows

The predictions run through :class:`imagine_ros.pipeline.PredictionPipeline` (the node's own code path) with a fixed
``seed``, so the bag stays a pure function of the dataset, the checkpoint and the options (on one device).

Time: frame ``t`` of an episode is stamped ``start + t * period``. The first exported episode starts at the fixed
:data:`EPOCH_NS`, and each next one starts one empty period after the previous one's last frame, so timestamps are
strictly increasing per topic and the bag is a pure function of the dataset and the options. The bag's receive time
equals the header stamp.

Bags for a distro (:data:`BAG_VERSIONS`): Humble and Iron get rosbag2 metadata version 8, whose topics carry
``offered_qos_profiles`` as one YAML string (what their rosbag2 parses); Jazzy and later get version 9, where it is a
YAML sequence. Every topic is offered as a default reliable publisher (:func:`offered_qos`), except ``/tf_static``,
offered like tf2's static broadcaster (:func:`static_qos`: reliable, keep last 1, transient local), so that
``ros2 bag play`` republishes it latched and late subscribers still get the camera pose.

The bag is written into a hidden sibling folder and renamed into place when complete; an existing output path is
never touched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagine_ros import ros_msgs
from imagine_ros.constants import EE_POS, FRAMES, INDEX, OBJECT_POS, SEED
from imagine_ros.errors import ConfigError, DatasetError
from imagine_ros.node_params import SIM_PARAMS, defaults
from imagine_ros.pipeline import Frame, PipelineConfig, PredictionPipeline

#: Stamp of the first exported frame: 2023-11-14T22:13:20Z (fixed so the output is deterministic).
EPOCH_NS = 1_700_000_000 * 1_000_000_000
EPISODE_TOPIC = "/episode"
PREDICTION_PREFIX = "/imagine_prediction"
ETA_TOPIC = "/eta"
TF_STATIC_TOPIC = "/tf_static"
#: The simulator node's frame names (its parameter defaults): the camera's optical frame and the robot base.
CAMERA_FRAME = defaults(SIM_PARAMS)["camera_frame"]
BASE_FRAME = defaults(SIM_PARAMS)["base_frame"]
STORAGES = ("mcap", "sqlite3")
#: rosbag2 metadata version written per distro: what that distro's rosbag2 reads. Humble and Iron read up to version
#: 8, where a topic's ``offered_qos_profiles`` is one YAML string; Jazzy and later write and read version 9, where it
#: is a YAML sequence. Older distros read older versions, which rosbags does not write (it writes 8 and 9).
BAG_VERSIONS = {"humble": 8, "iron": 8, "jazzy": 9, "kilted": 9, "lyrical": 9}
SPLIT_CHOICES = ("all", "train", "val", "test")


def object_topic(k: int) -> str:
    return f"/objects/{k}/position"


def parse_episodes(text: str) -> list[int]:
    """``"0,1,5"``, ``"0:10"`` (half-open, like Python) or a mix such as ``"0:3,7"`` -> list of indices."""
    out: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if ":" in part:
                a, b = part.split(":")
                lo, hi = int(a), int(b)
                if lo < 0 or hi < lo:
                    raise ValueError
                out.extend(range(lo, hi))
            else:
                i = int(part)
                if i < 0:
                    raise ValueError
                out.append(i)
        except ValueError:
            raise ConfigError(
                f"--episodes: cannot read {part!r}; expected non-negative indices like 0,1,5 or a range like 0:10"
            ) from None
    if not out:
        raise ConfigError(f"--episodes {text!r} selects no episode")
    return out


def select_episodes(store: Any, episodes: list[int] | None, split: str) -> list[int]:
    """The dataset indices to export: ``episodes`` (in the given order) restricted to ``split``, or the whole split."""
    if split not in SPLIT_CHOICES:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_CHOICES)}")
    in_split = store.split(split)
    n = len(store)
    if episodes is None:
        chosen = list(in_split)
    else:
        chosen = [int(i) for i in episodes]
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise DatasetError(
                f"episode {bad[0]} is out of range: {store.root} has {n} episodes (indices 0 to {n - 1})"
            )
        dup = sorted({i for i in chosen if chosen.count(i) > 1})
        if dup:
            raise DatasetError(f"episode {dup[0]} is listed more than once")
        if split != "all":
            members = set(in_split)
            outside = [i for i in chosen if i not in members]
            if outside:
                raise DatasetError(f"episode {outside[0]} is not in the {split!r} split of {store.root}")
    if not chosen:
        raise DatasetError(f"the {split!r} split of {store.root} has no episodes; nothing to export")
    return chosen


def _period_ns(frame_period_s: float) -> int:
    try:
        value = float(frame_period_s)
    except (TypeError, ValueError):
        raise ConfigError(f"--frame-period must be a number of seconds, got {frame_period_s!r}") from None
    ns = round(value * 1e9) if math.isfinite(value) else 0
    if ns < 1:
        raise ConfigError(f"--frame-period must be a positive number of seconds, got {frame_period_s!r}")
    return int(ns)


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise ConfigError(f"unknown bag storage {storage!r}; expected one of {', '.join(STORAGES)}")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def bag_version(distro: str) -> int:
    """The rosbag2 metadata version that ``distro`` reads (:data:`BAG_VERSIONS`); ConfigError for another distro."""
    name = str(distro).strip().lower().removeprefix("ros2_")
    if name not in BAG_VERSIONS:
        raise ConfigError(
            f"cannot write a bag for ROS 2 {distro!r}: bags are written for {', '.join(BAG_VERSIONS)} (rosbag2 "
            "metadata versions 8 and 9; older distros read only older versions)"
        )
    return BAG_VERSIONS[name]


def offered_qos(depth: int = 10, transient_local: bool = False):
    """The QoS every topic of an exported bag is recorded as offered with: a default ROS 2 publisher (reliable,
    volatile, keep last 10, automatic liveliness, no deadline, lifespan or lease), what ``ros2 bag play`` then offers
    and what default-QoS subscribers (RViz, rqt_image_view, ``ros2 topic echo``) match. ``depth`` and
    ``transient_local`` give :func:`static_qos`."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    none = QosTime(sec=0, nsec=0)  # 0: the RMW's default (infinite)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=int(depth),
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=none,
        lifespan=none,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=none,
        avoid_ros_namespace_conventions=False,
    )


def static_qos():
    """The QoS ``/tf_static`` is recorded as offered with: tf2's static broadcaster (reliable, keep last 1, transient
    local), so that ``ros2 bag play`` republishes it latched (the simulator node offers the same, node_params)."""
    return offered_qos(depth=1, transient_local=True)


def camera_from_meta(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(K (3, 3), pose of the camera's optical frame in the base frame (4, 4)) from a dataset's ``meta.json``
    (``camera.K`` and ``camera.T_cam_world``, OpenCV axes), or None when it records no camera. DatasetError for a
    camera entry that is not a pinhole K and a rigid transform."""
    camera = meta.get("camera")
    if not isinstance(camera, dict) or "K" not in camera or "T_cam_world" not in camera:
        return None
    try:
        k = np.asarray(camera["K"], dtype=np.float64)
        t_cam_world = np.asarray(camera["T_cam_world"], dtype=np.float64)
        pose = np.linalg.inv(t_cam_world)
        ros_msgs.transform_fields(pose)  # rigid, with a proper rotation
        ros_msgs.camera_info_fields(k, 1, 1)  # a finite 3x3 K
    except (TypeError, ValueError, np.linalg.LinAlgError) as e:
        raise DatasetError(f"meta.json's camera cannot be exported (K and T_cam_world): {e}") from None
    return k, pose


def camera_info_topic(image_topic: str) -> str:
    """``/camera/image_raw`` -> ``/camera/camera_info`` (the image topic's namespace, image_transport's convention)."""
    namespace = image_topic.rstrip("/").rsplit("/", 1)[0]
    return f"{namespace}/camera_info"


def export_bag(
    data_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    episodes: list[int] | None = None,
    split: str = "all",
    storage: str = "mcap",
    distro: str = "humble",
    frame_period_s: float | None = None,
    image_topic: str = "/camera/image_raw",
    ee_topic: str = "/ee_pos",
    frame_id_camera: str = CAMERA_FRAME,
    frame_id_base: str = BASE_FRAME,
    progress: bool = True,
    frame_id_objects: str | None = None,
    start_ns: int = EPOCH_NS,
    checkpoint: str | os.PathLike | None = None,
    num_samples: int = 2,
    seed: int = 0,
    device: str = "cpu",
    predict_every: int = 1,
    resize: str = "crop",
) -> dict[str, Any]:
    """Write the selected episodes of the dataset in ``data_dir`` as a rosbag2 folder at ``out_path``, with the
    metadata version and QoS format that ``distro``'s rosbag2 reads (:func:`bag_version`) and every topic offered as
    :func:`offered_qos` (``/tf_static`` as :func:`static_qos`).

    ``episodes``: dataset indices (default: all of ``split``); ``frame_id_objects`` defaults to ``frame_id_base``.
    When ``meta.json`` records the camera (:func:`camera_from_meta`), ``/tf_static`` (``frame_id_base`` ->
    ``frame_id_camera``, once, first) and the image's ``camera_info`` are written too.
    ``checkpoint``: also write predictions (module docstring) with ``num_samples`` futures per frame, noise ``seed``,
    on ``device``, for every ``predict_every``-th frame, images brought to the model's size by ``resize``.
    Returns a summary: output path, storage, distro, exported indices, frame and message counts per topic, first and
    last stamp (ns) and wall-clock seconds. Raises :class:`DatasetError` for an existing ``out_path``, an unreadable
    dataset or an index out of range, :class:`ConfigError` for an unusable option.
    """
    from rosbags.rosbag2 import Writer
    from tqdm.auto import tqdm

    from imagine_ros.sim.storage import EpisodeStore

    t0 = time.perf_counter()
    out = Path(out_path)
    data_dir = Path(data_dir)
    if out.exists() or out.is_symlink():
        raise DatasetError(f"{out} exists already; choose another --out (an existing bag is never overwritten)")
    if _is_within(out, data_dir):
        raise DatasetError(f"--out {out} is inside the dataset folder {data_dir}; choose a path outside it")
    plugin = _storage_plugin(storage)
    typestore = ros_msgs.get_typestore(distro)  # an unknown distro is refused here, naming the known ones
    version = bag_version(distro)
    frame_id_objects = frame_id_base if frame_id_objects is None else frame_id_objects

    store = EpisodeStore(data_dir)
    if frame_period_s is None:  # the dataset's own frame rate (the simulator's frame_dt), else 0.2 s
        frame_period_s = float(store.meta.get("frame_period_s", 0.2))
    period = _period_ns(frame_period_s)
    pipeline = None
    if checkpoint is not None:
        pipeline = _prediction_pipeline(checkpoint, num_samples, seed, device, predict_every, resize)
    try:
        chosen = select_episodes(store, episodes, split)
        keys = set(store.keys())
        if FRAMES not in keys:
            raise DatasetError(f"{data_dir} holds no {FRAMES!r}; nothing to export")
        config = (store.meta.get("camera") or {}).get("config") or {}
        topics = _Topics(
            image=image_topic,
            info=camera_info_topic(image_topic),
            ee=ee_topic,
            frame_id_camera=frame_id_camera,
            frame_id_base=frame_id_base,
            frame_id_objects=frame_id_objects,
            camera=camera_from_meta(store.meta),
            camera_size=(config["height"], config["width"]) if {"height", "width"} <= set(config) else None,
        )

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = out.parent / f".{out.name}.{os.getpid()}.tmp"
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
        tmp_dir.mkdir()
        try:
            writer = Writer(tmp_dir / out.name, version=version, storage_plugin=plugin)
            writer.set_custom_data("imagine_ros", _custom_data(store.meta, split, len(chosen), period, start_ns))
            with writer:
                bag = _BagWriter(writer, typestore)
                _declare_topics(bag, topics, int(start_ns), EE_POS in keys, pipeline)
                written = _Written()
                total_frames = store.frames_per_episode * len(chosen)
                bar = tqdm(
                    total=total_frames, desc="export-bag", unit="frame", disable=not progress, dynamic_ncols=True
                )
                try:
                    stamp0 = int(start_ns)
                    for index in chosen:
                        n = _write_episode(
                            bag, topics, store.episode(index), index, stamp0, period, written, pipeline, predict_every
                        )
                        bar.update(n)
                        stamp0 += (n + 1) * period  # one empty period between episodes
                finally:
                    bar.close()
            final = tmp_dir / out.name
            if out.exists() or out.is_symlink():
                raise DatasetError(f"{out} appeared while the bag was being written; it was left untouched")
            os.rename(final, out)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    finally:
        store.close()

    return {
        "out": str(out),
        "storage": storage,
        "distro": distro,
        "episodes": chosen,
        "frames": written.frames,
        "predictions": written.predictions,
        "messages": int(sum(bag.counts.values())),
        "topics": dict(bag.counts),
        "start_ns": written.first_ns,
        "end_ns": written.last_ns,
        "frame_period_s": period / 1e9,
        "seconds": time.perf_counter() - t0,
    }


@dataclass(frozen=True)
class _Topics:
    """Where export_bag writes what: topic names, frame ids and the dataset's camera (None when meta has none)."""

    image: str
    info: str
    ee: str
    frame_id_camera: str
    frame_id_base: str
    frame_id_objects: str
    camera: tuple[np.ndarray, np.ndarray] | None
    camera_size: tuple[int, int] | None


@dataclass
class _Written:
    """What export_bag wrote so far: frames, predictions, first and last frame stamp (ns)."""

    frames: int = 0
    predictions: int = 0
    first_ns: int | None = None
    last_ns: int | None = None


class _BagWriter:
    """A rosbags Writer with one connection per topic (added on first use, latched QoS for /tf_static) and a
    message count per topic."""

    def __init__(self, writer: Any, typestore: Any) -> None:
        self.writer, self.typestore = writer, typestore
        self.conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def conn(self, topic: str, msgtype: str) -> Any:
        c = self.conns.get(topic)
        if c is None:
            offered = [static_qos()] if topic == TF_STATIC_TOPIC else [offered_qos()]
            c = self.conns[topic] = self.writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=offered
            )
            self.counts[topic] = 0
        return c

    def write(self, topic: str, msg: Any, stamp: int) -> None:
        cdr = self.typestore.serialize_cdr(msg, msg.__msgtype__)
        self.writer.write(self.conn(topic, msg.__msgtype__), stamp, cdr)
        self.counts[topic] += 1


def _custom_data(meta: dict[str, Any], split: str, episodes: int, period: int, start_ns: int) -> str:
    """The bag's ``imagine_ros`` custom data: where the episodes came from and how they are stamped (JSON)."""
    return json.dumps(
        {
            "kind": meta.get("kind"),
            "seed": meta.get("seed"),
            "num_episodes": meta.get("num_episodes"),
            "image_size": meta.get("image_size"),
            "split": split,
            "episodes": episodes,
            "frame_period_s": period / 1e9,
            "start_ns": int(start_ns),
        },
        sort_keys=True,
    )


def _declare_topics(
    bag: _BagWriter, topics: _Topics, stamp0: int, has_ee: bool, pipeline: PredictionPipeline | None
) -> None:
    """Add the connections in a fixed order (tf_static, episode, image, camera_info, ee, predictions; objects come
    with the first frame) so connection ids do not depend on the data; the camera's pose goes out once, first (tf2
    has it from the start)."""
    typestore = bag.typestore
    if topics.camera is not None:
        pose = ros_msgs.transform_stamped_msg(
            topics.camera[1], topics.frame_id_base, topics.frame_id_camera, stamp0, typestore
        )
        bag.write(TF_STATIC_TOPIC, ros_msgs.tf_message_msg([pose], typestore), stamp0)
    bag.conn(EPISODE_TOPIC, ros_msgs.STRING)
    bag.conn(topics.image, ros_msgs.IMAGE)
    if topics.camera is not None:
        bag.conn(topics.info, ros_msgs.CAMERA_INFO)
    if has_ee:
        bag.conn(topics.ee, ros_msgs.POINT_STAMPED)
    if pipeline is not None:
        if has_ee and pipeline.predictor.condition_dim:
            bag.conn(ETA_TOPIC, ros_msgs.POINT_STAMPED)
        for name in ("frames", "flows", "flow_vis"):
            bag.conn(f"{PREDICTION_PREFIX}/future/{name}", ros_msgs.IMAGE)


def _write_episode(
    bag: _BagWriter,
    topics: _Topics,
    ep: dict[str, Any],
    index: int,
    stamp0: int,
    period: int,
    written: _Written,
    pipeline: PredictionPipeline | None,
    predict_every: int,
) -> int:
    """Write one episode from ``stamp0`` (its /episode message, then every frame's messages); returns its frames."""
    frames = ep[FRAMES]
    n = len(frames)
    ee = ep.get(EE_POS)
    objs = ep.get(OBJECT_POS)
    _check_episode(index, n, ee, objs)
    if topics.camera is not None and topics.camera_size is not None and frames.shape[1:3] != topics.camera_size:
        raise DatasetError(
            f"episode {index}: frames of {frames.shape[2]}x{frames.shape[1]} pixels, but "
            f"meta.json's camera K is for {topics.camera_size[1]}x{topics.camera_size[0]}"
        )
    seed = int(ep[SEED]) if SEED in ep else None
    ep_index = int(ep[INDEX]) if INDEX in ep else int(index)
    string_cls = bag.typestore.types[ros_msgs.STRING]
    bag.write(EPISODE_TOPIC, string_cls(data=json.dumps({"index": ep_index, "seed": seed})), stamp0)
    for t in range(n):
        stamp = stamp0 + t * period
        _write_frame(bag, topics, index, frames, t, stamp, ee, objs)
        if pipeline is not None and t % predict_every == 0:
            _write_prediction(bag, topics, pipeline, frames, t, stamp, ee)
            written.predictions += 1
        written.first_ns = stamp if written.first_ns is None else written.first_ns
        written.last_ns = stamp
    written.frames += n
    return n


def _write_frame(
    bag: _BagWriter,
    topics: _Topics,
    index: int,
    frames: np.ndarray,
    t: int,
    stamp: int,
    ee: np.ndarray | None,
    objs: np.ndarray | None,
) -> None:
    """Frame ``t``'s recorded messages: the image, its camera_info, the end effector and every object."""
    typestore = bag.typestore
    try:
        img = ros_msgs.image_to_msg(frames[t], "rgb8", stamp, topics.frame_id_camera, typestore)
    except ValueError as e:
        raise DatasetError(f"episode {index}, frame {t} cannot be exported: {e}") from None
    bag.write(topics.image, img, stamp)
    if topics.camera is not None:
        height, width = frames[t].shape[:2]
        cam_info = ros_msgs.camera_info_msg(topics.camera[0], width, height, stamp, topics.frame_id_camera, typestore)
        bag.write(topics.info, cam_info, stamp)
    if ee is not None:
        bag.write(topics.ee, ros_msgs.point_stamped_msg(ee[t], stamp, topics.frame_id_base, typestore), stamp)
    if objs is not None:
        for k in range(objs.shape[1]):
            msg = ros_msgs.point_stamped_msg(objs[t, k], stamp, topics.frame_id_objects, typestore)
            bag.write(object_topic(k), msg, stamp)


def _write_prediction(
    bag: _BagWriter,
    topics: _Topics,
    pipeline: PredictionPipeline,
    frames: np.ndarray,
    t: int,
    stamp: int,
    ee: np.ndarray | None,
) -> None:
    """The prediction node's output for frame ``t``: η (the end effector ``horizon`` frames later, for conditioned
    models) and the future frames, flows and flow colours as image grids."""
    typestore = bag.typestore
    n = len(frames)
    eta = None
    if ee is not None and pipeline.predictor.condition_dim:
        eta = np.asarray(ee[min(t + pipeline.predictor.horizon, n - 1)], np.float64)
        bag.write(ETA_TOPIC, ros_msgs.point_stamped_msg(eta, stamp, topics.frame_id_base, typestore), stamp)
    result = pipeline.process(Frame(np.ascontiguousarray(frames[t]), stamp, topics.frame_id_camera), eta=eta)
    g = result.grids
    for name, array, encoding in (
        ("frames", g.frames, "rgb8"),
        ("flows", g.flows, "32FC2"),
        ("flow_vis", g.flow_vis, "rgb8"),
    ):
        msg = ros_msgs.image_to_msg(array, encoding, stamp, topics.frame_id_camera, typestore)
        bag.write(f"{PREDICTION_PREFIX}/future/{name}", msg, stamp)


def _prediction_pipeline(
    checkpoint: str | os.PathLike, num_samples: int, seed: int, device: str, predict_every: int, resize: str
) -> PredictionPipeline:
    """The node's pipeline around a checkpoint, for synchronous use (no worker thread)."""
    from imagine_ros.predictor import Predictor

    if isinstance(predict_every, bool) or not isinstance(predict_every, int) or predict_every < 1:
        raise ConfigError(f"--predict-every must be a positive integer, got {predict_every!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be an integer >= 0, got {seed!r}")
    config = PipelineConfig(rate_hz=0.0, num_samples=num_samples, seed=seed, resize=resize)
    if not Path(checkpoint).with_suffix(".json").exists():
        raise ConfigError(f"--checkpoint {checkpoint}: no such checkpoint (NAME.json not found)")
    return PredictionPipeline(Predictor.from_checkpoint(checkpoint, device=device), config)


def _check_episode(index: int, n: int, ee: np.ndarray | None, objs: np.ndarray | None) -> None:
    if ee is not None and (ee.ndim != 2 or ee.shape != (n, 3)):
        raise DatasetError(f"episode {index}: {EE_POS!r} has shape {ee.shape}, expected ({n}, 3) for {n} frames")
    if objs is not None and (objs.ndim != 3 or objs.shape[0] != n or objs.shape[2] != 3):
        raise DatasetError(
            f"episode {index}: {OBJECT_POS!r} has shape {objs.shape}, expected ({n}, K, 3) for {n} frames"
        )
