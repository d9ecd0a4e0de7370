"""LeRobot datasets (format v3.x) to and from dataset folders (HDF5 shards + ``meta.json``).

``export-lerobot``: a collected (or imported) dataset -> a LeRobot v3.0 folder, as LeRobot lays it out::

    meta/info.json                                   codebase_version "v3.0", fps, features, paths, splits
    meta/stats.json                                  min, max, mean, std, count per feature (images: per channel,
                                                     in [0, 1], shape (3, 1, 1))
    meta/tasks.parquet                               task_index, indexed by the task string
    meta/episodes/chunk-000/file-000.parquet         one row per episode: episode_index, tasks, length,
                                                     data/chunk_index, data/file_index, dataset_from_index,
                                                     dataset_to_index, videos/<key>/{chunk_index, file_index,
                                                     from_timestamp, to_timestamp}, meta/episodes/..., stats/...
    data/chunk-000/file-000.parquet                  one row per frame
    videos/<image key>/chunk-000/file-000.mp4        the frames of several episodes, one after the other

Frame columns: ``timestamp`` (s from the episode's start), ``frame_index``, ``episode_index``, ``index``,
``task_index``; ``observation.state`` (the end effector, metres), ``action``, and where the dataset has them
``observation.environment_state`` (object positions, flattened), ``eta.start`` and ``eta.target`` (the segments of
planning-matched data: where a commanded η begins, and that η; NaN elsewhere). Episodes are ordered train, then val,
then test, so that ``info.json``'s ``splits`` are LeRobot's ``"start:stop"`` ranges; ``source_episode`` (episodes
metadata) is the episode's index in the dataset folder. The folder's camera (K, T_cam_world) and frame description
go under ``info.json``'s ``imagine_ros`` entry.

``import-lerobot``: a local LeRobot v3.x folder -> a dataset folder (kind ``"lerobot"``, no ground truth): the frames
of one image key (video or image feature), the end effector from chosen columns of a state feature, the actions (or
the end effector's displacement), ``eta_start``/``eta_target`` when the folder has ``eta.*`` columns. Each LeRobot
episode is cut into pieces of ``episode_frames`` (the rest dropped); splits come from ``info.json`` when they are
ranges, else from the fractions. Frames are brought to ``image_size`` by the prediction node's own
:func:`imagine_ros.pipeline.prepare_image`.

Both write beside ``out`` under a hidden name and rename it into place only when complete: an error (one line, a
:class:`DatasetError` or :class:`ConfigError`) leaves nothing behind. Needs the ``lerobot`` extra (``av``, ``pyarrow``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from imagine_ros.constants import ACTIONS, EE_POS, FRAMES, INDEX, OBJECT_POS
from imagine_ros.errors import ConfigError, DatasetError, ImagineRosError

CODEBASE_VERSION = "v3.0"
KIND = "lerobot"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
TASKS_PATH = "meta/tasks.parquet"
STATE = "observation.state"
ACTION = "action"
ENV_STATE = "observation.environment_state"
ETA_START_COL = "eta.start"
ETA_TARGET_COL = "eta.target"
ETA_START = "eta_start"  # the collection's keys (imagine_ros.sim.collect)
ETA_TARGET = "eta_target"
DEFAULT_IMAGE_KEY = "observation.images.camera"
VIDEO_CODECS = {"h264": "libx264", "hevc": "libx265", "libsvtav1": "libsvtav1"}  # LeRobot's codec names -> encoder
PIX_FMTS = ("yuv420p", "yuv444p")
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _need_extra() -> None:
    try:
        import av  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"LeRobot datasets need the lerobot extra: pip install 'imagine_ros[lerobot]' ({_one_line(e)})"
        ) from None


def _feature_stats(x: np.ndarray, image: bool = False) -> dict[str, Any]:
    """LeRobot's per-feature statistics: over frames (and pixels for images, per channel in [0, 1])."""
    x = np.asarray(x, np.float64)
    if image:  # (N, H, W, 3) uint8 -> per channel, shape (3, 1, 1)
        x = x.reshape(-1, x.shape[-1]) / 255.0
        stats = {k: f(x, axis=0).reshape(-1, 1, 1) for k, f in (("min", np.min), ("max", np.max))}
        stats["mean"] = x.mean(0).reshape(-1, 1, 1)
        stats["std"] = x.std(0).reshape(-1, 1, 1)
    else:
        x = x.reshape(len(x), -1)
        finite = np.isfinite(x)
        if not finite.any():
            stats = {k: np.full(x.shape[1], np.nan) for k in ("min", "max", "mean", "std")}
        else:
            stats = {"min": np.nanmin(x, 0), "max": np.nanmax(x, 0), "mean": np.nanmean(x, 0), "std": np.nanstd(x, 0)}
    return {**{k: np.asarray(v).tolist() for k, v in stats.items()}, "count": [int(len(x) if not image else 0)]}


# ----------------------------------------------------------------------------------------------------------------------
# export


@dataclass
class ExportConfig:
    """Settings of :func:`export_lerobot` (``export-lerobot``'s flags are made from these fields and their help)."""

    image_key: str = field(default=DEFAULT_IMAGE_KEY, metadata={"help": "video feature of the frames"})
    task: str | None = field(
        default=None, metadata={"help": "task string of every episode (default: from the dataset's kind)"}
    )
    fps: float | None = field(default=None, metadata={"help": "frame rate (default: 1 / meta.json's frame_period_s)"})
    vcodec: str = field(default="h264", metadata={"help": "video codec", "choices": tuple(sorted(VIDEO_CODECS))})
    crf: int = field(default=18, metadata={"help": "quality, 0 lossless .. 51 worst"})
    pix_fmt: str = field(
        default="yuv444p",
        metadata={"help": "pixel format; yuv444p keeps colour at full resolution", "choices": PIX_FMTS},
    )
    gop: int = field(default=2, metadata={"help": "frames between key frames"})
    episodes_per_file: int = field(default=500, metadata={"help": "episodes per parquet and MP4 file", "metavar": "N"})
    robot_type: str | None = field(default="panda", metadata={"help": "info.json's robot_type"})

    def check(self) -> None:
        if not self.image_key or "/" in self.image_key:
            raise ConfigError(f"--image-key must be a feature name without '/', got {self.image_key!r}")
        if self.vcodec not in VIDEO_CODECS:
            raise ConfigError(f"--vcodec must be one of {', '.join(VIDEO_CODECS)}, got {self.vcodec!r}")
        if self.pix_fmt not in PIX_FMTS:
            raise ConfigError(f"--pix-fmt must be one of {', '.join(PIX_FMTS)}, got {self.pix_fmt!r}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"--crf must be in [0, 51], got {self.crf}")
        for name, v in (("gop", self.gop), ("episodes-per-file", self.episodes_per_file)):
            if v < 1:
                raise ConfigError(f"--{name} must be at least 1, got {v}")
        if self.fps is not None and not (np.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"--fps must be a positive number, got {self.fps}")


def _default_task(meta: dict) -> str:
    kind = meta.get("kind")
    if kind == "push":
        return "push the objects on the table with the end effector"
    if kind == "shapes":
        return "move the shapes"
    return f"{kind} episodes"


class _VideoWriter:
    """One MP4 file of consecutive episodes; pts counts frames (time base 1 / fps)."""

    def __init__(self, path: Path, fps: Fraction, size: tuple[int, int], cfg: ExportConfig):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(VIDEO_CODECS[cfg.vcodec], rate=fps)
        self.stream.width, self.stream.height = size[1], size[0]
        self.stream.pix_fmt = cfg.pix_fmt
        self.stream.time_base = 1 / fps
        options = {"g": str(cfg.gop), "crf": str(cfg.crf)}
        if cfg.vcodec == "h264":
            options["preset"] = "medium"
        self.stream.options = options
        self.frames = 0

    def write(self, frames: np.ndarray) -> None:
        import av

        for rgb in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts = self.frames
            self.frames += 1
            self.container.mux(self.stream.encode(vf))

    def close(self) -> None:
        self.container.mux(self.stream.encode())
        self.container.close()


def export_lerobot(
    data: str | os.PathLike, out: str | os.PathLike, config: ExportConfig | None = None, progress: bool = True
) -> dict[str, Any]:
    """Write the dataset folder ``data`` as a LeRobot v3.0 folder ``out`` (module docstring). Returns a summary."""
    cfg = config or ExportConfig()
    cfg.check()
    _need_extra()
    from imagine_ros.sim.storage import EpisodeStore, move_into_place, staging_folder

    t0 = time.perf_counter()
    out = Path(out)
    store = EpisodeStore(data)
    tmp = staging_folder(out)
    try:
        summary = _export(store, tmp, out, cfg, progress)
        move_into_place(tmp, out)
    except ImagineRosError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot export {data} to {out}: {_one_line(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        store.close()
    seconds = time.perf_counter() - t0
    return {**summary, "out": str(out), "seconds": seconds, "frames_per_s": summary["frames"] / max(seconds, 1e-9)}


def _export(store: Any, tmp: Path, out: Path, cfg: ExportConfig, progress: bool) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    meta = store.meta
    keys = set(store.keys())
    n_eps, n_frames = len(store), store.frames_per_episode
    h, w, _ = store.image_shape
    period = meta.get("frame_period_s")
    fps_value = cfg.fps if cfg.fps is not None else (1.0 / period if period else None)
    if fps_value is None:
        raise DatasetError(f"{store.root}/meta.json has no frame_period_s; give --fps")
    fps = Fraction(fps_value).limit_denominator(1001)
    fps_info: float | int = int(fps) if fps.denominator == 1 else float(fps)
    order = [i for s in ("train", "val", "test") for i in store.split(s)]
    bounds, start = {}, 0
    for s in ("train", "val", "test"):
        n = len(store.split(s))
        if n:
            bounds[s] = f"{start}:{start + n}"
        start += n
    if sorted(order) != list(range(n_eps)):
        raise DatasetError(f"{store.root}/meta.json's splits do not cover each episode once")
    task = cfg.task or _default_task(meta)
    has_ee, has_act = EE_POS in keys, ACTIONS in keys
    has_obj, has_eta = OBJECT_POS in keys, ETA_START in keys and ETA_TARGET in keys

    first = store.episode(0, [k for k in (EE_POS, ACTIONS, OBJECT_POS) if k in keys])
    features: dict[str, Any] = {
        cfg.image_key: {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": cfg.vcodec if cfg.vcodec != "libsvtav1" else "av1",
                "video.pix_fmt": cfg.pix_fmt,
                "video.is_depth_map": False,
                "video.fps": fps_info,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    }
    if has_ee:
        features[STATE] = {"dtype": "float32", "shape": [3], "names": ["ee_x", "ee_y", "ee_z"]}
    if has_act:
        a = first[ACTIONS].shape[-1]
        names = ["dx", "dy", "dz"] if a == 3 else [f"a{i}" for i in range(a)]
        features[ACTION] = {"dtype": "float32", "shape": [a], "names": names}
    if has_obj:
        k = first[OBJECT_POS].shape[1]
        names = [f"object{i}_{c}" for i in range(k) for c in "xyz"]
        features[ENV_STATE] = {"dtype": "float32", "shape": [3 * k], "names": names}
    if has_eta:
        features[ETA_START_COL] = {"dtype": "bool", "shape": [1], "names": None}
        features[ETA_TARGET_COL] = {"dtype": "float32", "shape": [3], "names": ["eta_x", "eta_y", "eta_z"]}
    features.update(
        {
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        }
    )

    def vec(x: np.ndarray, dtype: Any) -> pa.Array:
        x = np.asarray(x, dtype).reshape(len(x), -1)
        return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])

    episodes_rows: list[dict[str, Any]] = []
    all_cols: dict[str, list[np.ndarray]] = {STATE: [], ACTION: [], ENV_STATE: [], ETA_TARGET_COL: [], "eta_s": []}
    pixel_sum = np.zeros(3)
    pixel_sq = np.zeros(3)
    pixel_min, pixel_max = np.full(3, 255.0), np.zeros(3)
    ts = (np.arange(n_frames) / float(fps)).astype(np.float32)
    video = None
    tables: list[pa.Table] = []
    file_no = -1
    bar = tqdm(total=n_eps, desc="export-lerobot", unit="ep", disable=not progress, dynamic_ncols=True)

    def flush(file_no: int) -> None:
        nonlocal video
        if video is not None:
            video.close()
            video = None
        if tables:
            chunk, fidx = divmod(file_no, 1000)
            path = tmp / DATA_PATH.format(chunk_index=chunk, file_index=fidx)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(tables), path, compression="snappy")
            tables.clear()

    try:
        for new_idx, src in enumerate(order):
            if new_idx % cfg.episodes_per_file == 0:
                flush(file_no)
                file_no += 1
                chunk, fidx = divmod(file_no, 1000)
                video = _VideoWriter(
                    tmp / VIDEO_PATH.format(video_key=cfg.image_key, chunk_index=chunk, file_index=fidx),
                    fps,
                    (h, w),
                    cfg,
                )
            chunk, fidx = divmod(file_no, 1000)
            ep = store.episode(src)
            frames = np.asarray(ep[FRAMES])
            from_ts = video.frames / float(fps)
            video.write(frames)
            f64 = frames.reshape(-1, 3).astype(np.float64)
            pixel_sum += f64.sum(0)
            pixel_sq += (f64 * f64).sum(0)
            pixel_min = np.minimum(pixel_min, f64.min(0))
            pixel_max = np.maximum(pixel_max, f64.max(0))
            cols: dict[str, Any] = {}
            ep_stats: dict[str, Any] = {}
            if has_ee:
                cols[STATE] = vec(ep[EE_POS], np.float32)
                all_cols[STATE].append(np.asarray(ep[EE_POS], np.float32))
                ep_stats[STATE] = _feature_stats(ep[EE_POS])
            if has_act:
                cols[ACTION] = vec(ep[ACTIONS], np.float32)
                all_cols[ACTION].append(np.asarray(ep[ACTIONS], np.float32))
                ep_stats[ACTION] = _feature_stats(ep[ACTIONS])
            if has_obj:
                obj = np.asarray(ep[OBJECT_POS], np.float32).reshape(n_frames, -1)
                cols[ENV_STATE] = vec(obj, np.float32)
                all_cols[ENV_STATE].append(obj)
                ep_stats[ENV_STATE] = _feature_stats(obj)
            if has_eta:
                cols[ETA_START_COL] = pa.array(np.asarray(ep[ETA_START], bool))
                cols[ETA_TARGET_COL] = vec(ep[ETA_TARGET], np.float32)
                all_cols[ETA_TARGET_COL].append(np.asarray(ep[ETA_TARGET], np.float32))
                all_cols["eta_s"].append(np.asarray(ep[ETA_START], np.float64))
            first_index = new_idx * n_frames
            cols.update(
                timestamp=pa.array(ts),
                frame_index=pa.array(np.arange(n_frames, dtype=np.int64)),
                episode_index=pa.array(np.full(n_frames, new_idx, np.int64)),
                index=pa.array(np.arange(first_index, first_index + n_frames, dtype=np.int64)),
                task_index=pa.array(np.zeros(n_frames, np.int64)),
            )
            tables.append(pa.table(cols))
            ep_stats[cfg.image_key] = _feature_stats(frames, image=True)
            ep_stats[cfg.image_key]["count"] = [n_frames]
            row: dict[str, Any] = {
                "episode_index": new_idx,
                "tasks": [task],
                "length": n_frames,
                "data/chunk_index": chunk,
                "data/file_index": fidx,
                "dataset_from_index": first_index,
                "dataset_to_index": first_index + n_frames,
                f"videos/{cfg.image_key}/chunk_index": chunk,
                f"videos/{cfg.image_key}/file_index": fidx,
                f"videos/{cfg.image_key}/from_timestamp": from_ts,
                f"videos/{cfg.image_key}/to_timestamp": from_ts + n_frames / float(fps),
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
                "source_episode": int(src),
            }
            for feat, st in ep_stats.items():
                for stat, value in st.items():
                    row[f"stats/{feat}/{stat}"] = value
            episodes_rows.append(row)
            bar.update(1)
        flush(file_no)
    finally:
        bar.close()
        if video is not None:
            video.close()

    # episodes, tasks, stats, info
    ep_path = tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes_rows), ep_path, compression="snappy")
    pq.write_table(
        pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([task])}).replace_schema_metadata(
            {b"pandas": json.dumps(_pandas_index_meta()).encode()}
        ),
        tmp / TASKS_PATH,
    )
    total = n_eps * n_frames
    mean = pixel_sum / total / (h * w)
    std = np.sqrt(np.maximum(pixel_sq / total / (h * w) - mean**2, 0.0))
    stats: dict[str, Any] = {
        cfg.image_key: {
            "min": (pixel_min / 255.0).reshape(3, 1, 1).tolist(),
            "max": (pixel_max / 255.0).reshape(3, 1, 1).tolist(),
            "mean": (mean / 255.0).reshape(3, 1, 1).tolist(),
            "std": (std / 255.0).reshape(3, 1, 1).tolist(),
            "count": [total],
        }
    }
    for feat in (STATE, ACTION, ENV_STATE, ETA_TARGET_COL):
        if all_cols[feat]:
            stats[feat] = _feature_stats(np.concatenate(all_cols[feat]))
    if has_eta:
        stats[ETA_START_COL] = _feature_stats(np.concatenate(all_cols["eta_s"]))
    idx = np.arange(total, dtype=np.float64)
    stats["index"] = _feature_stats(idx)
    stats["frame_index"] = _feature_stats(np.tile(np.arange(n_frames), n_eps))
    stats["episode_index"] = _feature_stats(np.repeat(np.arange(n_eps), n_frames))
    stats["timestamp"] = _feature_stats(np.tile(ts, n_eps))
    stats["task_index"] = _feature_stats(np.zeros(total))
    own = {
        "source": str(store.root),
        "kind": meta.get("kind"),
        "ee_frame": meta.get("ee_frame"),
        "action": meta.get("action"),
        "frame_period_s": 1.0 / float(fps),
        "splits": bounds,
    }
    if isinstance(meta.get("camera"), dict):
        own["camera"] = meta["camera"]
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": cfg.robot_type,
        "total_episodes": n_eps,
        "total_frames": total,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps_info,
        "splits": bounds,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
        "imagine_ros": own,
    }
    (tmp / "meta").mkdir(exist_ok=True)
    (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=4) + "\n", encoding="utf-8")
    (tmp / "meta" / "stats.json").write_text(json.dumps(stats, indent=4) + "\n", encoding="utf-8")
    return {
        "episodes": n_eps,
        "frames": total,
        "fps": float(fps),
        "image_key": cfg.image_key,
        "features": [k for k in features if k not in FRAME_COLUMNS],
        "splits": bounds,
        "files": file_no + 1,
        "task": task,
    }


def _pandas_index_meta() -> dict[str, Any]:
    """pandas metadata that makes ``pd.read_parquet(meta/tasks.parquet)`` index the tasks by their string, as
    LeRobot writes them (``DataFrame({"task_index": ...}, index=tasks)``)."""
    return {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": None, "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "pandas_version": "2.2.0",
    }


# ----------------------------------------------------------------------------------------------------------------------
# import


@dataclass
class ImportConfig:
    """Settings of :func:`import_lerobot` (``--`` flags of ``import-lerobot``)."""

    image_key: str | None = None  # default: the folder's only image/video feature
    state_key: str = STATE
    ee_columns: tuple[str, ...] = ("0", "1", "2")  # indices or names of the state feature's entries
    action_key: str | None = ACTION  # None or missing: the end effector's displacement
    episode_frames: int | None = None  # default: the shortest episode's length
    image_size: int = 64
    resize: str = "crop"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    shard_size: int = 16

    def check(self) -> None:
        from imagine_ros.pipeline import RESIZE_MODES

        for name, value, low in (
            ("episode-frames", self.episode_frames, 2),
            ("image-size", self.image_size, 1),
            ("shard-size", self.shard_size, 1),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"--{name} must be an integer >= {low}, got {value!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if len(self.ee_columns) != 3:
            raise ConfigError(f"--ee-columns needs three entries (x y z), got {list(self.ee_columns)}")


def read_info(root: Path) -> dict[str, Any]:
    """``meta/info.json`` of a LeRobot v3.x folder; DatasetError (one line) for anything else."""
    path = root / "meta" / "info.json"
    if not root.is_dir():
        raise DatasetError(f"no LeRobot dataset folder at {root}")
    if not path.exists():
        legacy = "a LeRobot v1 folder" if (root / "meta_data").exists() else "not a LeRobot dataset folder"
        raise DatasetError(f"{root} has no meta/info.json ({legacy}); import-lerobot reads LeRobot format v3.x")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({_one_line(e)})") from None
    version = str(info.get("codebase_version", "?")) if isinstance(info, dict) else "?"
    if not re.fullmatch(r"v3\.\d+", version):
        hint = " (convert it with LeRobot's convert_dataset_v21_to_v30 first)" if version.startswith("v2") else ""
        raise DatasetError(f"{root} is LeRobot format {version}; import-lerobot reads v3.x{hint}")
    for k in ("fps", "features", "data_path", "total_episodes"):
        if k not in info:
            raise DatasetError(f"{path} lacks {k!r}; it is not a complete LeRobot v3 description")
    return info


def _pick_image_key(info: dict, wanted: str | None, root: Path) -> tuple[str, str]:
    images = {k: f["dtype"] for k, f in info["features"].items() if f.get("dtype") in ("video", "image")}
    listing = ", ".join(f"{k} ({v})" for k, v in sorted(images.items())) or "none"
    if wanted is None:
        if len(images) != 1:
            raise DatasetError(f"{root} has {len(images)} image keys; choose one with --image-key: {listing}")
        wanted = next(iter(images))
    if wanted not in images:
        raise DatasetError(f"image key {wanted!r} is not in {root}; its image keys: {listing}")
    return wanted, images[wanted]


def _ee_indices(info: dict, cfg: ImportConfig, root: Path) -> list[int]:
    feats = info["features"]
    vectors = sorted(k for k, f in feats.items() if f.get("dtype", "").startswith("float") and k not in FRAME_COLUMNS)
    if cfg.state_key not in feats:
        raise DatasetError(f"state key {cfg.state_key!r} is not in {root}; its float features: {', '.join(vectors)}")
    f = feats[cfg.state_key]
    width = int(np.prod(f.get("shape") or [1]))
    names = f.get("names")
    if isinstance(names, dict):  # LeRobot v2 style {"motors": [...]}
        names = next(iter(names.values()), None)
    names = [str(n) for n in names] if isinstance(names, list) and len(names) == width else None
    out = []
    for c in cfg.ee_columns:
        if re.fullmatch(r"\d+", c):
            i = int(c)
        elif names and c in names:
            i = names.index(c)
        else:
            raise DatasetError(
                f"--ee-columns {c!r} is not an entry of {cfg.state_key}: give indices 0..{width - 1}"
                + (f" or names: {', '.join(names)}" if names else "")
            )
        if not 0 <= i < width:
            raise DatasetError(f"--ee-columns {c!r} is out of range: {cfg.state_key} has {width} entries")
        out.append(i)
    return out


def _column(table: Any, key: str) -> np.ndarray:
    col = table.column(key).combine_chunks()
    import pyarrow as pa

    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
        values = col.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


def import_lerobot(
    src: str | os.PathLike, out: str | os.PathLike, config: ImportConfig | None = None, progress: bool = True
) -> dict[str, Any]:
    """Import the LeRobot v3.x folder ``src`` as a dataset folder ``out`` (module docstring). Returns a summary."""
    cfg = config or ImportConfig()
    cfg.check()
    _need_extra()
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    info = read_info(src)
    image_key, image_dtype = _pick_image_key(info, cfg.image_key, src)
    ee_idx = _ee_indices(info, cfg, src)
    from imagine_ros.sim.storage import move_into_place, refuse_existing_out, staging_folder

    refuse_existing_out(out)
    try:
        episodes, data = _read_tables(src, info)
    except ImagineRosError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot read the LeRobot folder {src}: {_one_line(e)}") from None
    tmp = staging_folder(out)
    try:
        summary = _import(src, info, episodes, data, image_key, image_dtype, ee_idx, tmp, out, cfg, progress)
        move_into_place(tmp, out)
    except ImagineRosError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot import {src}: {_one_line(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return {**summary, "out": str(out), "seconds": seconds, "frames_per_s": summary["frames"] / max(seconds, 1e-9)}


def _read_tables(src: Path, info: dict) -> tuple[list[dict[str, Any]], Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ep_files = sorted((src / "meta" / "episodes").glob("*/*.parquet"))
    if not ep_files:
        raise DatasetError(f"{src} has no episodes metadata (meta/episodes/chunk-*/file-*.parquet)")
    keep = None
    rows: list[dict[str, Any]] = []
    for p in ep_files:
        t = pq.read_table(p)
        keep = [c for c in t.column_names if not c.startswith("stats/")]
        rows += t.select(keep).to_pylist()
    rows.sort(key=lambda r: int(r["episode_index"]))
    data_files = sorted((src / "data").glob("*/*.parquet"))
    if not data_files:
        raise DatasetError(f"{src} has no frame data (data/chunk-*/file-*.parquet)")
    tables = [pq.read_table(p) for p in data_files]
    data = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    for c in ("episode_index", "frame_index"):
        if c not in data.column_names:
            raise DatasetError(f"{src}'s frame data lacks the column {c!r}")
    return rows, data


def _splits_from_info(info: dict, n_src: int) -> dict[str, range] | None:
    ranges = {}
    for name, value in (info.get("splits") or {}).items():
        m = re.fullmatch(r"(\d+):(\d+)", str(value))
        if not m or name not in ("train", "val", "test"):
            return None
        ranges[name] = range(int(m.group(1)), int(m.group(2)))
    covered = sorted(i for r in ranges.values() for i in r)
    if not ranges.get("val") and not ranges.get("test"):
        return None  # LeRobot's usual {"train": "0:N"}: split by the fractions instead
    return ranges if covered == list(range(n_src)) else None


def _import(
    src: Path,
    info: dict,
    episodes: list[dict[str, Any]],
    data: Any,
    image_key: str,
    image_dtype: str,
    ee_idx: list[int],
    tmp: Path,
    out: Path,
    cfg: ImportConfig,
    progress: bool,
) -> dict[str, Any]:
    import cv2
    from tqdm.auto import tqdm

    from imagine_ros.pipeline import prepare_image
    from imagine_ros.sim.storage import _atomic_write_text, make_splits, new_meta, scan_folder, shard_name, write_shard

    fps = float(info["fps"])
    lengths = [int(r["length"]) for r in episodes]
    n_frames = cfg.episode_frames or min(lengths)
    pieces = [(e, s) for e, n in enumerate(lengths) for s in range(0, n - n_frames + 1, n_frames)]
    if not pieces:
        raise DatasetError(
            f"no episode of {src} has --episode-frames {n_frames} frames (the longest has {max(lengths)})"
        )
    dropped_frames = sum(lengths) - len(pieces) * n_frames
    ep_col = _column(data, "episode_index").astype(np.int64)
    fr_col = _column(data, "frame_index").astype(np.int64)
    row_of = {(int(e), int(f)): i for i, (e, f) in enumerate(zip(ep_col, fr_col))}
    state = _column(data, cfg.state_key).astype(np.float64).reshape(len(ep_col), -1)
    use_action = cfg.action_key is not None and cfg.action_key in data.column_names
    action = _column(data, cfg.action_key).astype(np.float32).reshape(len(ep_col), -1) if use_action else None
    has_eta = ETA_START_COL in data.column_names and ETA_TARGET_COL in data.column_names
    if has_eta:
        eta_s = _column(data, ETA_START_COL).astype(bool).reshape(-1)
        eta_t = _column(data, ETA_TARGET_COL).astype(np.float32).reshape(len(ep_col), -1)
    if image_dtype == "image":
        images = data.column(image_key).combine_chunks()

    src_splits = _splits_from_info(info, len(episodes))
    if src_splits is not None:
        piece_split = {
            name: [i for i, (e, _) in enumerate(pieces) if int(episodes[e]["episode_index"]) in r]
            for name, r in src_splits.items()
        }
        splits = {k: piece_split.get(k, []) for k in ("train", "val", "test")}
    else:
        splits = make_splits(len(pieces), cfg.seed, cfg.val_fraction, cfg.test_fraction)
    meta = new_meta(
        kind=KIND,
        config={"import": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}},
        num_episodes=len(pieces),
        episodes_per_shard=cfg.shard_size,
        seed=cfg.seed,
        frames_per_episode=n_frames,
        image_size=(cfg.image_size, cfg.image_size),
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        extra={
            "frame_period_s": 1.0 / fps,
            "action": f"{cfg.action_key} of the LeRobot dataset"
            if use_action
            else "end-effector displacement: actions[t] = ee_pos[t + 1] - ee_pos[t], the last one 0",
            "ee_frame": (info.get("imagine_ros") or {}).get("ee_frame") or f"{cfg.state_key}{ee_idx}",
            "ground_truth": False,
            "source": {"lerobot": str(src), "codebase_version": info["codebase_version"], "image_key": image_key},
        },
    )
    meta["splits"] = splits
    camera = (info.get("imagine_ros") or {}).get("camera")
    if isinstance(camera, dict):
        meta["camera"] = camera

    video_cache: dict[tuple[int, int], np.ndarray] = {}  # (chunk, file) -> every frame, decoded once
    source_size = None
    batch: list[dict[str, np.ndarray]] = []
    shard = 0
    bar = tqdm(total=len(pieces), desc="import-lerobot", unit="ep", disable=not progress, dynamic_ncols=True)
    try:
        for p, (e, start) in enumerate(pieces):
            row = episodes[e]
            ep_index = int(row["episode_index"])
            try:
                rows = np.array([row_of[(ep_index, start + t)] for t in range(n_frames)])
            except KeyError as err:
                raise DatasetError(f"episode {ep_index} of {src} lacks frame {err.args[0][1]} in its data") from None
            if image_dtype == "video":
                frames = _episode_video(src, info, row, image_key, start, n_frames, fps, video_cache)
            else:
                frames = []
                for r in rows:
                    blob = images[int(r)].as_py()
                    raw = blob.get("bytes") if isinstance(blob, dict) else blob
                    if raw is None and isinstance(blob, dict) and blob.get("path"):
                        raw = (src / blob["path"]).read_bytes()
                    bgr = cv2.imdecode(np.frombuffer(raw or b"", np.uint8), cv2.IMREAD_COLOR)
                    if bgr is None:
                        raise DatasetError(f"episode {ep_index} frame {int(fr_col[r])}: {image_key} does not decode")
                    frames.append(bgr[..., ::-1])
                frames = np.stack(frames)
            if source_size is None:
                source_size = frames.shape[1:3]
            try:
                small = np.stack(
                    [prepare_image(np.ascontiguousarray(f), cfg.image_size, cfg.resize)[0] for f in frames]
                )
            except ValueError as err:
                raise DatasetError(f"{image_key}: {err}") from None
            ee = state[rows][:, ee_idx].astype(np.float32)
            if use_action:
                act = action[rows]
            else:
                act = np.zeros_like(ee)
                act[:-1] = np.diff(ee, axis=0)
            ep: dict[str, np.ndarray] = {FRAMES: small, EE_POS: ee, ACTIONS: act}
            if has_eta:
                ep[ETA_START] = eta_s[rows]
                ep[ETA_TARGET] = eta_t[rows]
            ep["source_episode"] = np.int64(ep_index)
            ep["source_frame"] = np.int64(start)
            ep[INDEX] = np.int64(p)
            batch.append(ep)
            if len(batch) == cfg.shard_size or p == len(pieces) - 1:
                write_shard(tmp / shard_name(shard), batch)
                batch, shard = [], shard + 1
            bar.update(1)
    finally:
        bar.close()
    _atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    scan_folder(tmp, meta, require_complete=True)
    return {
        "episodes": len(pieces),
        "frames_per_episode": n_frames,
        "frames": len(pieces) * n_frames,
        "source_episodes": len(episodes),
        "dropped_frames": dropped_frames,
        "image_key": image_key,
        "source_image_size": list(source_size) if source_size is not None else None,
        "image_size": [cfg.image_size, cfg.image_size],
        "ee": f"{cfg.state_key}{ee_idx}",
        "actions": cfg.action_key if use_action else "end-effector displacement",
        "eta": has_eta,
        "splits": {k: len(v) for k, v in splits.items()},
        "splits_from": "info.json" if src_splits is not None else "fractions",
        "fps": fps,
    }


def _episode_video(
    src: Path,
    info: dict,
    row: dict[str, Any],
    key: str,
    start: int,
    n: int,
    fps: float,
    cache: dict[tuple[int, int], Any],
) -> np.ndarray:
    try:
        chunk, fidx = int(row[f"videos/{key}/chunk_index"]), int(row[f"videos/{key}/file_index"])
        from_ts = float(row[f"videos/{key}/from_timestamp"])
    except (KeyError, TypeError):
        raise DatasetError(f"the episodes metadata of {src} has no video location for {key!r}") from None
    path = src / str(info.get("video_path") or VIDEO_PATH).format(video_key=key, chunk_index=chunk, file_index=fidx)
    if not path.exists():
        raise DatasetError(f"the video {path} is missing")
    if (chunk, fidx) not in cache:
        cache.clear()  # one file's frames at a time (episodes are stored in file order)
        cache[(chunk, fidx)] = _all_frames(path, fps)
    stamps, frames = cache[(chunk, fidx)]
    wanted = from_ts + (start + np.arange(n)) / fps
    i = np.clip(np.searchsorted(stamps, wanted), 1, max(len(stamps) - 1, 1))
    i = np.where(np.abs(stamps[i - 1] - wanted) <= np.abs(stamps[np.minimum(i, len(stamps) - 1)] - wanted), i - 1, i)
    i = np.minimum(i, len(stamps) - 1)
    err = np.abs(stamps[i] - wanted)
    if np.any(err > 0.5 / fps):
        k = int(np.argmax(err))
        raise DatasetError(
            f"the video {path} has no frame at {wanted[k]:.4f} s (nearest {stamps[i[k]]:.4f} s); "
            "the episodes metadata and the video disagree"
        )
    return frames[i]


def _all_frames(path: Path, fps: float) -> tuple[np.ndarray, np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames, stamps = [], []
            for frame in container.decode(stream):
                stamps.append(float(frame.pts * frame.time_base) if frame.pts is not None else len(stamps) / fps)
                frames.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, IndexError) as e:
        raise DatasetError(f"cannot decode the video {path}: {_one_line(e)}") from None
    if not frames:
        raise DatasetError(f"the video {path} has no frames")
    stamps_arr = np.asarray(stamps)
    order = np.argsort(stamps_arr, kind="stable")
    return stamps_arr[order], np.stack(frames)[order]
