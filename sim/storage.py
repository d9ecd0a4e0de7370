"""Episode datasets on disk: HDF5 shards + ``meta.json``, written atomically and resumable.

Layout of a dataset folder::

    meta.json            settings, camera, split by episode, shard list (written first, atomically)
    shard-00000.h5       episodes [0, S)      one dataset per key, first axis = episode in the shard
    shard-00001.h5       episodes [S, 2S)
    ...

Every shard is a pure function of the settings in ``meta.json`` and its episode indices (each episode has its own
seed), so a collection killed at any moment and run again produces exactly the files an uninterrupted run would.
A shard is first written as ``.shard-XXXXX.h5.<pid>.tmp`` and renamed into place only after it is closed and synced;
a file under the final name is therefore always complete, and leftovers ``*.tmp`` are deleted on resume.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from imagine_ros.constants import FRAMES, INDEX, SEED, SPLITS
from imagine_ros.errors import DatasetError

FORMAT_NAME = "imagine_ros.episodes"
FORMAT_VERSION = 1
META_FILE = "meta.json"
SHARD_RE = re.compile(r"^shard-(\d{5})\.h5$")
TMP_RE = re.compile(r"^\.shard-\d{5}\.h5\.\d+\.tmp$")
#: Files a user may keep beside the data without it counting as foreign (previews, notes).
ALLOWED_EXTRA = re.compile(r"^(README.*|.*\.gif|.*\.mp4|.*\.png|.*\.txt|\.DS_Store)$")

EpisodeFn = Callable[[dict, int, int], dict]
#: Episode keys of per-frame images, stored one frame per HDF5 chunk so that reading a window is cheap.
PER_FRAME_IMAGES = (FRAMES, "depth", "instance")


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.h5"


def episode_seed(base_seed: int, index: int) -> int:
    """Seed of episode ``index``: independent streams per episode, stable across worker counts and resumes."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def make_splits(num_episodes: int, seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    """Split episode indices (never frames) into train/val/test with a seeded permutation.

    Each of val and test gets at least one episode when the fractions are positive and there are >= 3 episodes.
    """
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise DatasetError(f"split fractions val={val_fraction}, test={test_fraction} must be >= 0 and sum below 1")
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(num_episodes)

    def count(fraction: float) -> int:
        n = int(round(fraction * num_episodes))
        return max(n, 1) if fraction > 0 and num_episodes >= 3 else n

    n_val, n_test = count(val_fraction), count(test_fraction)
    test = sorted(int(i) for i in order[:n_test])
    val = sorted(int(i) for i in order[n_test : n_test + n_val])
    train = sorted(int(i) for i in order[n_test + n_val :])
    return {"train": train, "val": val, "test": test}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_shard(path: Path, episodes: list[dict[str, Any]], compression: int = 4) -> None:
    """Write ``episodes`` (dicts of equal-shaped arrays) as one shard, atomically.

    Arrays are stacked along a new first axis. Frames are chunked per frame so that reading a window is cheap.
    """
    path = Path(path)
    if not episodes:
        raise ValueError("a shard needs at least one episode")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    keys = list(episodes[0].keys())
    try:
        with h5py.File(tmp, "w", libver="v110", track_order=False) as f:
            for key in keys:
                data = np.stack([np.asarray(ep[key]) for ep in episodes])
                kwargs: dict[str, Any] = {"track_times": False}
                if data.ndim >= 2 and data.nbytes > 4096:
                    chunks = (1, 1, *data.shape[2:]) if key in PER_FRAME_IMAGES else None
                    kwargs.update(compression="gzip", compression_opts=compression, shuffle=True, chunks=chunks or True)
                f.create_dataset(key, data=data, **kwargs)
            f.attrs["complete"] = True
            f.attrs["num_episodes"] = len(episodes)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------------------------------------
# meta.json


def read_meta(root: Path) -> dict:
    root = Path(root)
    path = root / META_FILE
    if not root.is_dir():
        raise DatasetError(f"{root} is not a dataset folder (it does not exist or is not a folder)")
    if not path.exists():
        raise DatasetError(f"{root} is not a dataset folder: it has no {META_FILE}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise DatasetError(f"{path} is not an imagine_ros dataset description (format is not {FORMAT_NAME!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise DatasetError(f"{path} has format version {meta.get('version')}; this imagine_ros reads {FORMAT_VERSION}")
    return meta


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} != {b!r}"]


def settings_of(meta: dict) -> dict:
    """The part of ``meta`` that determines the episodes (what a resume must match)."""
    return {k: meta[k] for k in ("kind", "config", "num_episodes", "episodes_per_shard", "seed", "splits_config")}


# ----------------------------------------------------------------------------------------------------------------------
# writing a whole dataset (resumable, parallel)


@dataclass
class CollectReport:
    root: Path
    shards_total: int
    shards_written: list[int] = field(default_factory=list)
    shards_skipped: list[int] = field(default_factory=list)
    frames_written: int = 0
    seconds: float = 0.0


def new_meta(
    kind: str,
    config: dict,
    num_episodes: int,
    episodes_per_shard: int,
    seed: int,
    frames_per_episode: int,
    image_size: tuple[int, int],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    extra: dict | None = None,
) -> dict:
    """Describe a dataset. ``config`` is what ``episode_fn`` receives; ``extra`` (e.g. the camera) is stored as is."""
    if num_episodes < 1:
        raise DatasetError(f"--episodes must be at least 1, got {num_episodes}")
    if episodes_per_shard < 1:
        raise DatasetError(f"--shard-size must be at least 1, got {episodes_per_shard}")
    splits = make_splits(num_episodes, seed, val_fraction, test_fraction)
    num_shards = (num_episodes + episodes_per_shard - 1) // episodes_per_shard
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "num_episodes": int(num_episodes),
        "episodes_per_shard": int(episodes_per_shard),
        "num_shards": int(num_shards),
        "seed": int(seed),
        "frames_per_episode": int(frames_per_episode),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "splits_config": {"val_fraction": float(val_fraction), "test_fraction": float(test_fraction)},
        "splits": splits,
        **(extra or {}),
    }
    return json.loads(json.dumps(meta))  # exactly what meta.json will hold (tuples become lists), so resumes compare


def _shard_episodes(meta: dict, shard: int) -> range:
    s = meta["episodes_per_shard"]
    return range(shard * s, min((shard + 1) * s, meta["num_episodes"]))


def _write_one_shard(root: str, meta: dict, shard: int, episode_fn: EpisodeFn, parent_pid: int | None) -> int:
    """Worker: generate the episodes of one shard and write it. Returns the number of frames written."""
    episodes = []
    for index in _shard_episodes(meta, shard):
        if parent_pid is not None and os.getppid() != parent_pid:  # the collector was killed: stop, leave no file
            raise SystemExit(1)
        ep = episode_fn(meta["config"], index, episode_seed(meta["seed"], index))
        ep[SEED] = np.int64(episode_seed(meta["seed"], index))
        ep[INDEX] = np.int64(index)
        episodes.append(ep)
    write_shard(Path(root) / shard_name(shard), episodes)
    return sum(len(ep[FRAMES]) for ep in episodes)


def prepare_folder(root: Path, meta: dict) -> list[int]:
    """Create ``root`` (or check that it holds the same settings) and return the shards still to write.

    Raises :class:`DatasetError` for a folder with other settings, foreign files or a corrupt shard; nothing that is
    already collected is touched.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    if (root / META_FILE).exists():
        old = read_meta(root)
        diffs = _diff(settings_of(old), settings_of(meta))
        if diffs:
            raise DatasetError(
                f"{root} holds a dataset with other settings ({'; '.join(diffs[:3])}"
                f"{'; ...' if len(diffs) > 3 else ''}); choose another --out or the same settings"
            )
    else:
        others = [p.name for p in root.iterdir() if not ALLOWED_EXTRA.match(p.name)]
        if others:
            raise DatasetError(
                f"{root} is not empty and has no {META_FILE} (found {others[0]!r}); choose another --out"
            )
        _atomic_write_text(root / META_FILE, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    for p in root.iterdir():
        if TMP_RE.match(p.name):
            p.unlink()  # a shard that a killed run left half-written
    scan_folder(root, meta, require_complete=False)
    return [s for s in range(meta["num_shards"]) if not (root / shard_name(s)).exists()]


def write_dataset(
    root: Path,
    meta: dict,
    episode_fn: EpisodeFn,
    workers: int = 1,
    progress: bool = True,
    desc: str = "collect",
) -> CollectReport:
    """Write every missing shard of the dataset described by ``meta`` into ``root`` with ``workers`` processes.

    ``episode_fn(config, index, seed) -> dict of arrays`` must be a picklable top-level function and deterministic in
    its arguments. Resumes a killed run: complete shards are kept, half-written ones are discarded.
    """
    import time

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    root = Path(root)
    todo = prepare_folder(root, meta)
    report = CollectReport(root=root, shards_total=meta["num_shards"])
    report.shards_skipped = [s for s in range(meta["num_shards"]) if s not in todo]
    n_todo_eps = sum(len(_shard_episodes(meta, s)) for s in todo)
    bar = tqdm(total=n_todo_eps, desc=desc, unit="ep", disable=not progress or not todo, dynamic_ncols=True)
    try:
        if workers <= 1 or len(todo) <= 1:
            for s in todo:
                report.frames_written += _write_one_shard(str(root), meta, s, episode_fn, None)
                report.shards_written.append(s)
                bar.update(len(_shard_episodes(meta, s)))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # pybullet and h5py are not fork-safe once initialised
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
                futures = {pool.submit(_write_one_shard, str(root), meta, s, episode_fn, os.getpid()): s for s in todo}
                for fut in as_completed(futures):
                    report.frames_written += fut.result()
                    report.shards_written.append(futures[fut])
                    bar.update(len(_shard_episodes(meta, futures[fut])))
    finally:
        bar.close()
    report.shards_written.sort()
    report.seconds = time.perf_counter() - t0
    return report


# ----------------------------------------------------------------------------------------------------------------------
# reading


def scan_folder(root: Path, meta: dict, require_complete: bool = True) -> list[Path]:
    """Check the folder's files against ``meta``; return the shard paths. Foreign or corrupt files raise."""
    shards: list[Path] = []
    for p in sorted(Path(root).iterdir()):
        if p.name == META_FILE or TMP_RE.match(p.name) or ALLOWED_EXTRA.match(p.name) or p.name.startswith(".meta"):
            continue
        m = SHARD_RE.match(p.name)
        if not m:
            raise DatasetError(f"foreign file in dataset folder {root}: {p.name!r} (move it elsewhere)")
        if int(m.group(1)) >= meta["num_shards"]:
            raise DatasetError(f"{p} is beyond the {meta['num_shards']} shards that {META_FILE} describes")
        _check_shard(p, len(_shard_episodes(meta, int(m.group(1)))))
        shards.append(p)
    if require_complete and len(shards) != meta["num_shards"]:
        missing = sorted(set(range(meta["num_shards"])) - {int(SHARD_RE.match(p.name).group(1)) for p in shards})
        raise DatasetError(
            f"dataset {root} is incomplete: {len(shards)} of {meta['num_shards']} shards "
            f"(first missing: {shard_name(missing[0])}); run the same collect command again to finish it"
        )
    return shards


def _check_shard(path: Path, expected_episodes: int) -> None:
    try:
        with h5py.File(path, "r") as f:
            ok = bool(f.attrs.get("complete", False)) and FRAMES in f
            n = int(f.attrs.get("num_episodes", -1))
            if ok and f[FRAMES].shape[0] != n:
                ok = False
    except OSError as e:
        raise DatasetError(f"corrupt shard {path}: cannot be read as HDF5 ({str(e).splitlines()[0]})") from None
    if not ok:
        raise DatasetError(f"corrupt shard {path}: it is not marked complete or lacks {FRAMES!r}")
    if n != expected_episodes:
        raise DatasetError(f"corrupt shard {path}: holds {n} episodes, {META_FILE} says {expected_episodes}")


class EpisodeStore:
    """Random access to the episodes of a dataset folder.

    HDF5 handles are opened lazily per process, so the store can be handed to DataLoader workers.
    """

    def __init__(self, root: str | os.PathLike, check: bool = True):
        self.root = Path(root)
        self.meta = read_meta(self.root)
        if check:
            scan_folder(self.root, self.meta, require_complete=True)
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.meta["num_episodes"])

    @property
    def frames_per_episode(self) -> int:
        return int(self.meta["frames_per_episode"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w = self.meta["image_size"]
        return int(h), int(w), 3

    def split(self, name: str) -> list[int]:
        if name not in SPLITS and name != "all":
            raise DatasetError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)} or 'all'")
        return list(range(len(self))) if name == "all" else list(self.meta["splits"][name])

    def _file(self, shard: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked into a DataLoader worker: never share HDF5 handles across processes
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = h5py.File(self.root / shard_name(shard), "r")
        return f

    def _locate(self, index: int) -> tuple[h5py.File, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"episode {index} out of range [0, {len(self)})")
        shard, offset = divmod(int(index), int(self.meta["episodes_per_shard"]))
        return self._file(shard), offset

    def keys(self) -> list[str]:
        return list(self._file(0).keys())

    def episode(self, index: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        f, offset = self._locate(index)
        return {k: f[k][offset] for k in (keys or f.keys())}

    def read(self, index: int, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``key`` of episode ``index`` for time steps [start, stop) (only those chunks are decompressed)."""
        f, offset = self._locate(index)
        ds = f[key]
        if ds.ndim == 1:
            return ds[offset]
        return ds[offset, start:stop]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
