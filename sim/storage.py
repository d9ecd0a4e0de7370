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

Every shard carries its own checksum: the file starts with an HDF5 user block of :data:`SHARD_USERBLOCK` bytes (which
HDF5 skips) holding ``imagine_ros.shard sha256=<hex>``, the SHA-256 of every byte after the block. The reader
(:class:`EpisodeStore`) verifies it when it opens a dataset and names a shard that does not match; a resumed collection
verifies it too and collects such a shard again (a shard is a pure function of the settings and its seeds). Shards of
datasets written before checksums (a plain HDF5 file) are read unverified, with one warning per dataset and process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import warnings
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

#: Bytes of the HDF5 user block at the start of a shard that holds its checksum (0: write legacy shards without one).
SHARD_USERBLOCK = 512
CHECKSUM_MAGIC = b"imagine_ros.shard sha256="
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Bounds of a dataset's size, checked (one line, before anything is allocated or written) by :func:`check_sizes`.
MAX_EPISODES = 1_000_000
MAX_SHARD_EPISODES = 10_000
MAX_FRAMES = 100_000
#: frames of one shard are held in memory while it is written: at most this many bytes of RGB frames
MAX_SHARD_BYTES = 4 << 30

EpisodeFn = Callable[[dict, int, int], dict]
#: Episode keys of per-frame images, stored one frame per HDF5 chunk so that reading a window is cheap.
PER_FRAME_IMAGES = (FRAMES, "depth", "instance")


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.h5"


def episode_seed(base_seed: int, index: int) -> int:
    """Seed of episode ``index``: independent streams per episode, stable across worker counts and resumes."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def _count_ok(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and lo <= value <= hi


def check_sizes(
    num_episodes: Any, episodes_per_shard: Any, frames_per_episode: Any, image_size: tuple[int, int] | None = None
) -> None:
    """Raise :class:`DatasetError` (one line) unless the sizes of a dataset are integers within
    [1, :data:`MAX_EPISODES`] episodes, [1, :data:`MAX_SHARD_EPISODES`] episodes per shard and [1, :data:`MAX_FRAMES`]
    frames per episode, and one shard's RGB frames (``episodes_per_shard x frames x H x W x 3`` bytes, held in
    memory while it is written) fit in :data:`MAX_SHARD_BYTES`. Nothing is allocated before this check."""
    for flag, value, hi in (
        ("--episodes", num_episodes, MAX_EPISODES),
        ("--shard-size", episodes_per_shard, MAX_SHARD_EPISODES),
        ("--frames", frames_per_episode, MAX_FRAMES),
    ):
        if not _count_ok(value, 1, hi):
            raise DatasetError(f"{flag} must be an integer in [1, {hi:,}], got {value!r}")
    if image_size is not None:
        h, w = (int(v) for v in image_size)
        per_shard = min(int(episodes_per_shard), int(num_episodes)) * int(frames_per_episode) * h * w * 3
        if per_shard > MAX_SHARD_BYTES:
            raise DatasetError(
                f"one shard of {min(int(episodes_per_shard), int(num_episodes))} episodes x {frames_per_episode} "
                f"frames of {h} x {w} would hold {per_shard / 2**30:.1f} GiB of frames in memory (at most "
                f"{MAX_SHARD_BYTES / 2**30:.0f} GiB); use a smaller --shard-size"
            )


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


def refuse_existing_out(out: Path) -> None:
    """Raise DatasetError when ``out`` exists and is not an empty folder (an output folder is never overwritten)."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise DatasetError(f"{out} exists already; choose another --out (an existing folder is never overwritten)")


def staging_folder(out: Path) -> Path:
    """A fresh hidden folder beside ``out`` to build an output in (``out`` itself must not exist, or be empty); hand it
    to :func:`move_into_place` when complete, remove it otherwise. Importers use it so that nothing partial is left."""
    refuse_existing_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename the complete folder ``tmp`` (:func:`staging_folder`) to ``out``, unless ``out`` appeared meanwhile."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise DatasetError(f"{out} appeared while it was being written; it was left untouched")
    if out.exists():
        out.rmdir()  # an empty folder given as --out
    os.rename(tmp, out)


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
    """Write ``episodes`` (dicts of equal-shaped arrays) as one shard, atomically, with its checksum.

    Arrays are stacked along a new first axis. Frames are chunked per frame so that reading a window is cheap. The
    SHA-256 of the HDF5 data goes into the user block at the start of the file (module docstring).
    """
    path = Path(path)
    if not episodes:
        raise ValueError("a shard needs at least one episode")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    keys = list(episodes[0].keys())
    try:
        userblock = {"userblock_size": SHARD_USERBLOCK} if SHARD_USERBLOCK else {}
        with h5py.File(tmp, "w", libver="v110", track_order=False, **userblock) as f:
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
            if SHARD_USERBLOCK:
                fh.write(_checksum_block(_sha256_after(fh, SHARD_USERBLOCK)))
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _sha256_after(fh, offset: int) -> str:
    """SHA-256 of the bytes of the open binary file ``fh`` from ``offset`` to its end; leaves ``fh`` at 0."""
    h = hashlib.sha256()
    fh.seek(offset)
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    fh.seek(0)
    return h.hexdigest()


def _checksum_block(hexdigest: str) -> bytes:
    text = CHECKSUM_MAGIC + hexdigest.encode("ascii") + b"\n"
    return text + b"\0" * (SHARD_USERBLOCK - len(text))


#: shards verified by this process: resolved path -> (size, mtime_ns, inode) when verified (a file that changes is
#: verified again; one that does not is not hashed again, e.g. by each split's ClipDataset)
_VERIFIED: dict[str, tuple[int, int, int]] = {}
_WARNED_UNVERIFIED: set[str] = set()


def verify_shard(path: Path) -> bool:
    """Check the checksum a shard carries. True: it matches; False: the shard has none (a plain HDF5 file written
    before checksums). Raises :class:`DatasetError` naming the file when it does not match or is damaged."""
    path = Path(path)
    try:
        st = path.stat()
        key = str(path.resolve())
        if _VERIFIED.get(key) == (st.st_size, st.st_mtime_ns, st.st_ino):
            return True
        with open(path, "rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
            if head == HDF5_SIGNATURE:
                return False
            fh.seek(0)
            block = fh.read(512)
            if not block.startswith(CHECKSUM_MAGIC):
                raise DatasetError(f"corrupt shard {path}: it starts with neither a checksum nor an HDF5 signature")
            expected = block[len(CHECKSUM_MAGIC) : len(CHECKSUM_MAGIC) + 64].decode("ascii", "replace")
            actual = _sha256_after(fh, len(block))
    except OSError as e:
        raise DatasetError(f"corrupt shard {path}: cannot be read ({e})") from None
    if actual != expected:
        raise DatasetError(
            f"corrupt shard {path}: its SHA-256 does not match the checksum it carries (a flipped bit or a partial "
            "overwrite)"
        )
    _VERIFIED[key] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return True


def _warn_unverified(root: Path, names: list[str]) -> None:
    key = str(Path(root).resolve())
    if names and key not in _WARNED_UNVERIFIED:
        _WARNED_UNVERIFIED.add(key)
        warnings.warn(
            f"dataset {root}: {len(names)} shard(s) carry no checksum (written before imagine_ros checked shards, "
            f"e.g. {names[0]}); they are read unverified",
            UserWarning,
            stacklevel=3,
        )


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
    shards_redone: list[int] = field(default_factory=list)  # found corrupt on resume, deleted and written again
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
    check_sizes(num_episodes, episodes_per_shard, frames_per_episode, image_size)
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


def prepare_folder(root: Path, meta: dict, corrupt: list[int] | None = None) -> list[int]:
    """Create ``root`` (or check that it holds the same settings) and return the shards still to write.

    A shard that fails its checks (checksum, HDF5 structure, episode count) is reported on stderr, deleted and
    returned among the shards to write (its index appended to ``corrupt``): shards are pure functions of the settings
    and their seeds. Raises :class:`DatasetError` for a folder with other settings or foreign files; nothing that is
    already collected and intact is touched.
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

    def redo(path: Path, error: DatasetError) -> None:
        print(f"imagine-ros: {error}; collecting it again", file=sys.stderr, flush=True)
        path.unlink()
        if corrupt is not None:
            corrupt.append(int(SHARD_RE.match(path.name).group(1)))

    scan_folder(root, meta, require_complete=False, on_corrupt=redo)
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
    redone: list[int] = []
    todo = prepare_folder(root, meta, redone)
    report = CollectReport(root=root, shards_total=meta["num_shards"], shards_redone=redone)
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


def scan_folder(
    root: Path,
    meta: dict,
    require_complete: bool = True,
    on_corrupt: Callable[[Path, DatasetError], None] | None = None,
) -> list[Path]:
    """Check the folder's files against ``meta``, each shard's checksum included; return the shard paths. Foreign
    files raise; a corrupt shard raises too, or, with ``on_corrupt``, is passed to it and left out. Shards without a
    checksum (older datasets) are accepted with one warning per dataset and process."""
    shards: list[Path] = []
    unverified: list[str] = []
    for p in sorted(Path(root).iterdir()):
        if p.name == META_FILE or TMP_RE.match(p.name) or ALLOWED_EXTRA.match(p.name) or p.name.startswith(".meta"):
            continue
        m = SHARD_RE.match(p.name)
        if not m:
            raise DatasetError(f"foreign file in dataset folder {root}: {p.name!r} (move it elsewhere)")
        if int(m.group(1)) >= meta["num_shards"]:
            raise DatasetError(f"{p} is beyond the {meta['num_shards']} shards that {META_FILE} describes")
        try:
            if not _check_shard(p, len(_shard_episodes(meta, int(m.group(1))))):
                unverified.append(p.name)
        except DatasetError as e:
            if on_corrupt is None:
                raise
            on_corrupt(p, e)
            continue
        shards.append(p)
    _warn_unverified(Path(root), unverified)
    if require_complete and len(shards) != meta["num_shards"]:
        missing = sorted(set(range(meta["num_shards"])) - {int(SHARD_RE.match(p.name).group(1)) for p in shards})
        raise DatasetError(
            f"dataset {root} is incomplete: {len(shards)} of {meta['num_shards']} shards "
            f"(first missing: {shard_name(missing[0])}); run the same collect command again to finish it"
        )
    return shards


def _check_shard(path: Path, expected_episodes: int) -> bool:
    """Raise :class:`DatasetError` naming ``path`` unless it is an intact shard of ``expected_episodes`` episodes;
    return whether its checksum was verified (False: it has none)."""
    verified = verify_shard(path)
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
    return verified


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
            path = self.root / shard_name(shard)
            try:
                f = self._files[shard] = h5py.File(path, "r")
            except OSError as e:
                raise DatasetError(f"corrupt shard {path}: cannot be read as HDF5 ({str(e).splitlines()[0]})") from None
        return f

    def _corrupt(self, f: h5py.File, key: str, e: Exception) -> DatasetError:
        return DatasetError(f"corrupt shard {f.filename}: {key!r} cannot be read ({str(e).splitlines()[0]})")

    def _locate(self, index: int) -> tuple[h5py.File, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"episode {index} out of range [0, {len(self)})")
        shard, offset = divmod(int(index), int(self.meta["episodes_per_shard"]))
        return self._file(shard), offset

    def keys(self) -> list[str]:
        return list(self._file(0).keys())

    def episode(self, index: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        f, offset = self._locate(index)
        out = {}
        for k in keys or f.keys():
            try:
                out[k] = f[k][offset]
            except (OSError, RuntimeError) as e:
                raise self._corrupt(f, k, e) from None
        return out

    def read(self, index: int, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``key`` of episode ``index`` for time steps [start, stop) (only those chunks are decompressed)."""
        f, offset = self._locate(index)
        try:
            ds = f[key]
            if ds.ndim == 1:
                return ds[offset]
            return ds[offset, start:stop]
        except (OSError, RuntimeError) as e:
            raise self._corrupt(f, key, e) from None

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
