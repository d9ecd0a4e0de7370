"""Training clips from a dataset folder (see DESIGN.md "Contracts": Clip).

A clip is a window of ``horizon + 1`` consecutive frames of one episode (windows never cross episodes; the split is by
episode, from ``meta.json``). The window starting at frame ``s`` of episode ``e`` (``T`` = horizon) gives:

==================  =====================  ==========================================================================
key                 shape, dtype           meaning
==================  =====================  ==========================================================================
``x0``              (3, H, W) float32      frame ``s``, in [-1, 1]
``future``          (T, 3, H, W) float32   frames ``s + 1 .. s + T``, in [-1, 1]
``ee``              (T + 1, 3) float32     ``ee_pos[s .. s + T]``, metres (never normalised)
``actions``         (T, A) float32         ``actions[s .. s + T - 1]`` (``actions[t]`` moves frame t to t + 1)
``condition``       (3,) float32           η, normalised if a normaliser is given: the commanded target of the segment
                                           that starts at ``s`` (planning-matched data), else ``ee_pos[s + T]`` (BAIR)
``episode``         int                    episode index in the dataset
``start``           int                    ``s``
==================  =====================  ==========================================================================

Optional keys (ask with ``keys=``; they need a dataset recorded with ground truth, see
:mod:`imagine_ros.sim.ground_truth`):

==================  =====================  ==========================================================================
``flow``            (T, 2, H, W) float32   ground-truth forward flow ``s -> s + t`` of every pixel of frame ``s`` (px)
``visible``         (T, H, W) float32      1 where that pixel's surface point is still visible at ``s + t``, else 0
``flow_back``       (T, 2, H, W) float32   ground-truth backward flow ``s + t -> s`` of every pixel of frame ``s + t``
``visible_back``    (T, H, W) float32      1 where that pixel of frame ``s + t`` is visible in frame ``s``
``part_kind``       (H, W) int64           what each pixel of frame ``s`` shows: 0 static or nothing, 1 the arm,
                                           2 an object
==================  =====================  ==========================================================================

:meth:`ClipDataset.flow_pair` gives one pair of a clip, frame ``s`` and frame ``s + t`` with the ground-truth flow
between them, without reading the frames in between (the training pairs of :mod:`imagine_ros.flownet`).

Which windows carry η (``eta=``): in a planning-matched dataset (``imagine-ros collect --policy planning``) a window
is a clip only where a segment starts (``eta_start``), and η is that segment's commanded target (``"commanded"``,
the default for such data): exactly what the planner sends. Elsewhere (BAIR-style data, or ``eta="reached"``) every
window is a clip and η is where the hand is at its last frame.

Pixel values map ``uint8 v -> v / 127.5 - 1`` (0 -> -1, 255 -> 1; :mod:`imagine_ros.models.frames`, where
:func:`~imagine_ros.models.frames.tensor_to_frames` inverts it). The condition normaliser is
:class:`imagine_ros.models.conditioning.ConditionNormalizer` (checkpoint metadata, beside the models).
Only the frames a window needs are read (HDF5 chunks are one frame each), and the HDF5 files are opened lazily in each
process, so a :class:`ClipDataset` can be handed to a ``DataLoader`` with worker processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from imagine_ros.constants import ACTIONS, CLIP_ACTIONS, CONDITION, EE, EE_POS, FRAMES, FUTURE, SPLITS, X0
from imagine_ros.errors import ConfigError, DatasetError
from imagine_ros.models.conditioning import DEFAULT_MIN_STD, NORMALIZER_TYPE, ConditionNormalizer  # noqa: F401
from imagine_ros.models.frames import frames_to_tensor, resize_images, tensor_to_frames  # noqa: F401
from imagine_ros.sim.ground_truth import DEPTH, GT_KEYS, INSTANCE, PART_IDS, PART_POSE, forward_flow, part_index
from imagine_ros.sim.storage import EpisodeStore

# DEFAULT_MIN_STD, NORMALIZER_TYPE and tensor_to_frames are imported above only to be re-exported, for the callers that
# still import them from here; their home is imagine_ros.models.conditioning / imagine_ros.models.frames.
ETA_START = "eta_start"  # the collection's keys (imagine_ros.sim.collect); repeated to keep this import light
ETA_TARGET = "eta_target"


def has_planned_segments(store: EpisodeStore) -> bool:
    """Whether a dataset was collected with the planning-matched policy (it has ``eta_start``/``eta_target``)."""
    return ETA_START in store.keys() and ETA_TARGET in store.keys()


def ground_truth_of(store: EpisodeStore) -> tuple[np.ndarray, np.ndarray]:
    """The camera (K, T_cam_world) a dataset's ground-truth flows need; a dataset without ground truth raises
    :class:`DatasetError` naming what it lacks."""
    missing = [k for k in GT_KEYS if k not in store.keys()]
    if missing:
        raise DatasetError(
            f"{store.root} has no ground truth (it lacks {', '.join(missing)}): it was collected without it "
            "(--no-ground-truth, an imagine_ros before ground truth, Shapes or an imported recording), so it cannot "
            "give ground-truth flows or visibility; collect it again with ground truth (the default)"
        )
    try:
        cam = store.meta["camera"]
        return np.asarray(cam["K"], dtype=np.float64), np.asarray(cam["T_cam_world"], dtype=np.float64)
    except (KeyError, TypeError):
        raise DatasetError(
            f"{store.root}/meta.json has no camera (K, T_cam_world); ground-truth flows need it"
        ) from None


#: Traceability keys of every clip (plain ints; ``default_collate`` makes them (B,) int64 tensors).
EPISODE = "episode"
START = "start"
#: The clip keys a :class:`ClipDataset` produces by default (EPISODE and START always come).
CLIP_KEYS: tuple[str, ...] = (X0, FUTURE, EE, CLIP_ACTIONS, CONDITION)
GT_FLOW = "flow"
VISIBLE = "visible"
GT_FLOW_BACK = "flow_back"
VISIBLE_BACK = "visible_back"
PART_KIND = "part_kind"
#: The later frame of a :meth:`ClipDataset.flow_pair` (its first frame is ``x0``).
PAIR_FRAME = "frame"
#: Ground-truth clip keys (datasets recorded with ground truth only).
GT_CLIP_KEYS: tuple[str, ...] = (GT_FLOW, VISIBLE, GT_FLOW_BACK, VISIBLE_BACK, PART_KIND)
ETA_MODES = ("auto", "commanded", "reached")


# ----------------------------------------------------------------------------------------------------------------------
# pixels


def _size_pair(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        pair = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size)
    ):
        pair = (int(image_size[0]), int(image_size[1]))
    else:
        raise ConfigError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(pair) < 1:
        raise ConfigError(f"image_size must be positive, got {image_size!r}")
    return pair


# ----------------------------------------------------------------------------------------------------------------------
# the dataset


def window_starts_of(num_frames: int, horizon: int, stride: int) -> range:
    """Start frames of the windows of one episode: ``range(0, num_frames - horizon, stride)``.

    That is ``ceil((num_frames - horizon) / stride)`` windows; the last frame of a window is ``s + horizon``.
    """
    return range(0, num_frames - horizon, stride)


class ClipDataset(Dataset):
    """Every window of ``horizon + 1`` frames inside the episodes of one split (module docstring for the clips).

    root_or_store: a dataset folder or an open :class:`EpisodeStore` (shared, not copied).
    split: "train", "val", "test" (by episode, from ``meta.json``) or "all".
    horizon: T, the number of future frames (>= 1, at most frames per episode - 1).
    stride: frames between consecutive window starts of an episode (>= 1).
    image_size: output (H, W) (or one int for squares); None keeps the stored size. Area interpolation.
    normalizer: applied to ``condition`` when given (``ee`` stays in metres).
    keys: the clip keys to produce, a subset of :data:`CLIP_KEYS` (EPISODE and START always come); frames are not
        read when neither ``x0`` nor ``future`` is asked for.

    ``window_starts[i] == (episode, start)`` of item ``i``: episodes in increasing order, starts increasing within an
    episode, so samplers can reproduce (and log) an order.
    """

    def __init__(
        self,
        root_or_store: str | os.PathLike | EpisodeStore,
        split: str = "train",
        horizon: int = 1,
        stride: int = 1,
        image_size: int | Sequence[int] | None = None,
        normalizer: ConditionNormalizer | None = None,
        keys: Iterable[str] = CLIP_KEYS,
        eta: str = "auto",
    ):
        self.store = root_or_store if isinstance(root_or_store, EpisodeStore) else EpisodeStore(root_or_store)
        if split not in SPLITS and split != "all":
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or 'all'")
        for name, value in (("horizon", horizon), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        self.keys = tuple(keys)
        unknown = [k for k in self.keys if k not in CLIP_KEYS + GT_CLIP_KEYS]
        if unknown:
            raise ConfigError(
                f"unknown clip key {unknown[0]!r}; expected some of {', '.join(CLIP_KEYS + GT_CLIP_KEYS)}"
            )
        if eta not in ETA_MODES:
            raise ConfigError(f"eta must be one of {', '.join(ETA_MODES)}, got {eta!r}")
        if normalizer is not None and not isinstance(normalizer, ConditionNormalizer):
            raise ConfigError(f"normalizer must be a ConditionNormalizer, got {type(normalizer).__name__}")
        self.split, self.horizon, self.stride = split, int(horizon), int(stride)
        self.normalizer = normalizer
        self.num_frames = self.store.frames_per_episode
        if self.horizon > self.num_frames - 1:
            raise ConfigError(
                f"horizon {self.horizon} needs episodes of at least {self.horizon + 1} frames, but the episodes of "
                f"{self.store.root} have {self.num_frames} frames (horizon at most {self.num_frames - 1})"
            )
        h, w, _ = self.store.image_shape
        self.data_size = (h, w)
        self.image_size = _size_pair(image_size) or self.data_size
        self.episodes = self.store.split(split)
        if not self.episodes:
            raise DatasetError(f"split {split!r} of {self.store.root} has no episodes")
        self.gt = ground_truth_of(self.store) if any(k in GT_CLIP_KEYS for k in self.keys) else None
        planned = has_planned_segments(self.store)
        self.eta = ("commanded" if planned else "reached") if eta == "auto" else eta
        if self.eta == "commanded":
            if not planned:
                raise DatasetError(
                    f"{self.store.root} has no planned segments (it was not collected with --policy planning or "
                    "mixed); use eta='reached' (η = where the hand is at a clip's last frame)"
                )
            seg = int(self.store.meta["config"]["policy"]["horizon"])
            if seg != self.horizon:
                raise ConfigError(
                    f"the planned segments of {self.store.root} last {seg} frames but the horizon is {self.horizon}; "
                    f"train with horizon {seg} or use eta='reached'"
                )
            self.window_starts = [
                (e, int(s))
                for e in self.episodes
                for s in np.flatnonzero(self.store.read(e, ETA_START))
                if s + self.horizon <= self.num_frames - 1
            ]
            if not self.window_starts:
                raise DatasetError(f"split {split!r} of {self.store.root} has no planned segment (all BAIR episodes)")
        else:
            self.window_starts: list[tuple[int, int]] = [
                (e, s) for e in self.episodes for s in window_starts_of(self.num_frames, self.horizon, self.stride)
            ]

    def __len__(self) -> int:
        return len(self.window_starts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self.window_starts)
        if not -n <= i < n:
            raise IndexError(f"clip {i} out of range [0, {n})")
        episode, s = self.window_starts[i]
        t = self.horizon
        clip: dict[str, Any] = {}
        want_x0, want_future = X0 in self.keys, FUTURE in self.keys
        if want_x0 or want_future:
            first = s if want_x0 else s + 1
            images = frames_to_tensor(self.store.read(episode, FRAMES, first, s + t + 1))
            images = resize_images(images, self.image_size)
            if want_x0:
                clip[X0] = images[0]
            if want_future:
                clip[FUTURE] = images[1:] if want_x0 else images
        if EE in self.keys or CONDITION in self.keys:
            ee = np.asarray(self.store.read(episode, EE_POS, s, s + t + 1), dtype=np.float32)
            if EE in self.keys:
                clip[EE] = torch.from_numpy(ee.copy())
            if CONDITION in self.keys:
                eta = ee[-1] if self.eta == "reached" else self.store.read(episode, ETA_TARGET, s, s + 1)[0]
                if self.normalizer is not None:
                    eta = self.normalizer.normalize(eta).astype(np.float32)
                clip[CONDITION] = torch.from_numpy(np.ascontiguousarray(eta))
        if CLIP_ACTIONS in self.keys:
            clip[CLIP_ACTIONS] = torch.from_numpy(
                np.asarray(self.store.read(episode, ACTIONS, s, s + t), dtype=np.float32).copy()
            )
        if self.gt is not None:
            clip.update(self._ground_truth(episode, s))
        clip[EPISODE] = int(episode)
        clip[START] = int(s)
        return clip

    def _ground_truth(self, episode: int, s: int) -> dict[str, torch.Tensor]:
        """The asked-for ground-truth keys of the window at ``s`` (module docstring), at :attr:`image_size`."""
        t = self.horizon
        depth = np.asarray(self.store.read(episode, DEPTH, s, s + t + 1), dtype=np.float32)
        inst = self.store.read(episode, INSTANCE, s, s + t + 1)
        pose = self.store.read(episode, PART_POSE, s, s + t + 1)
        parts = self.store.read(episode, PART_IDS)
        out: dict[str, torch.Tensor] = {}
        if GT_FLOW in self.keys or VISIBLE in self.keys:
            flow, vis = forward_flow(depth[0], inst[0], pose[0], pose[1:], depth[1:], parts, *self.gt)
            out[GT_FLOW], out[VISIBLE] = self._resized(flow, vis)
        if GT_FLOW_BACK in self.keys or VISIBLE_BACK in self.keys:
            pairs = [
                forward_flow(depth[k], inst[k], pose[k], pose[:1], depth[:1], parts, *self.gt) for k in range(1, t + 1)
            ]
            flow = np.concatenate([f for f, _ in pairs])
            vis = np.concatenate([v for _, v in pairs])
            out[GT_FLOW_BACK], out[VISIBLE_BACK] = self._resized(flow, vis)
        if PART_KIND in self.keys:
            idx = part_index(inst[0], parts)
            robot = int(parts[0][0])  # the arm's parts come first, then the objects (imagine_ros.sim.ground_truth)
            body = np.where(idx >= 0, np.asarray(parts)[np.maximum(idx, 0), 0], -1)
            kind = np.where(idx < 0, 0, np.where(body == robot, 1, 2)).astype(np.int64)
            if self.image_size != self.data_size:  # nearest: a kind is a label
                rows = (np.arange(self.image_size[0]) + 0.5) * self.data_size[0] / self.image_size[0]
                cols = (np.arange(self.image_size[1]) + 0.5) * self.data_size[1] / self.image_size[1]
                kind = kind[rows.astype(int)[:, None], cols.astype(int)[None, :]]
            out[PART_KIND] = torch.from_numpy(kind)
        return {k: v for k, v in out.items() if k in self.keys}

    def flow_pair(self, i: int, t: int) -> dict[str, torch.Tensor]:
        """Frame ``s`` and frame ``s + t`` of clip ``i`` (1 <= t <= horizon) with the ground-truth forward flow between
        them, reading only those two frames: the training pairs of :mod:`imagine_ros.flownet`.

        Returns ``x0`` and :data:`PAIR_FRAME` (3, H, W) float32 in [-1, 1], ``flow`` (2, H, W) float32 pixels
        (``s -> s + t``, as ``flow[t - 1]`` of the clip) and ``visible`` (H, W) float32, at :attr:`image_size`.
        Needs a dataset with ground truth (:func:`ground_truth_of` says what a dataset lacks).
        """
        n = len(self.window_starts)
        if not -n <= i < n:
            raise IndexError(f"clip {i} out of range [0, {n})")
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= self.horizon:
            raise ValueError(f"t must be an integer in [1, {self.horizon}], got {t!r}")
        episode, s = self.window_starts[i]
        gt = self.gt if self.gt is not None else ground_truth_of(self.store)

        def both(key: str) -> np.ndarray:
            return np.concatenate([self.store.read(episode, key, k, k + 1) for k in (s, s + t)])

        images = resize_images(frames_to_tensor(both(FRAMES)), self.image_size)
        depth, inst, pose = np.asarray(both(DEPTH), dtype=np.float32), both(INSTANCE), both(PART_POSE)
        flow, vis = forward_flow(
            depth[0], inst[0], pose[0], pose[1:], depth[1:], self.store.read(episode, PART_IDS), *gt
        )
        flow, vis = self._resized(flow, vis)
        return {X0: images[0], PAIR_FRAME: images[1], GT_FLOW: flow[0], VISIBLE: vis[0]}

    def _resized(self, flow: np.ndarray, visible: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, H, W, 2) pixels and (T, H, W) bool at the data's size -> (T, 2, h, w) and (T, h, w) float32 at the
        clip's size (area averages; flows scaled to the new pixels)."""
        f = torch.from_numpy(np.ascontiguousarray(flow)).permute(0, 3, 1, 2).contiguous()
        v = torch.from_numpy(np.ascontiguousarray(visible)).to(torch.float32)
        if self.image_size != self.data_size:
            scale = torch.tensor([self.image_size[1] / self.data_size[1], self.image_size[0] / self.data_size[0]])
            f = F.interpolate(f, size=self.image_size, mode="area") * scale[None, :, None, None]
            v = F.interpolate(v[:, None], size=self.image_size, mode="area")[:, 0]
        return f, v

    def describe(self) -> dict[str, Any]:
        """JSON-safe data config for checkpoints (image size, horizon, ...)."""
        return json.loads(
            json.dumps(
                {
                    "root": str(self.store.root),
                    "kind": self.store.meta.get("kind"),
                    "split": self.split,
                    "horizon": self.horizon,
                    "stride": self.stride,
                    "image_size": list(self.image_size),
                    "data_image_size": list(self.data_size),
                    "frames_per_episode": self.num_frames,
                    "eta": self.eta,
                    "num_windows": len(self),
                }
            )
        )

    def __repr__(self) -> str:
        return (
            f"ClipDataset({str(self.store.root)!r}, split={self.split!r}, horizon={self.horizon}, "
            f"stride={self.stride}, image_size={self.image_size}, windows={len(self)})"
        )


def fixed_clips(dataset: Dataset, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct clips of ``dataset`` chosen by ``seed`` (same dataset + seed -> same clips), in dataset order.

    For validation images/GIFs. Raises :class:`ConfigError` when the dataset has fewer than ``n`` clips.
    """
    size = len(dataset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"number of fixed clips must be an integer >= 0, got {n!r}")
    if n > size:
        raise ConfigError(f"asked for {n} fixed clips but the dataset has only {size}")
    chosen = np.random.default_rng([int(seed), 0xC11B]).choice(size, size=int(n), replace=False)
    return [dataset[int(i)] for i in sorted(chosen.tolist())]
