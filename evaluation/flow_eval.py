"""End-point error (EPE) of predicted forward flows against the simulator's true object motion.

A pushing dataset records every object's position ``object_pos (T, K, 3)`` (world frame, metres) and ``meta.json``
the camera, so the true image motion of each object is known: with ``P`` the camera projection
(:meth:`imagine_ros.sim.camera.Camera.project`, pixel centres at integers, rescaled to the predictor's image size),
the object ``k`` of a clip starting at frame ``s`` moves by ``d_t = P(p_{s+t,k}) - P(p_{s,k})`` pixels by future
step ``t``. A predictor's forward flow (input -> frame t, :class:`~imagine_ros.prediction.Prediction.flows`) is read
at the object's projected centre in the input ``P(p_{s,k})`` (bilinear) and compared::

    EPE(clip, k, n, t) = || flow_n[t](P(p_{s,k})) - d_t ||_2         pixels, sample n of N

Per (clip, object) pair the EPE is averaged over the T steps; ``best`` takes the best of the N samples (as PSNR@N),
``mean`` averages them. ``zero`` is the EPE of a zero flow (= the mean true displacement: what ``copy_last`` scores).
Pairs count only when the object's centre projects inside the image at frame ``s``; pairs whose object jumps more
than a quarter of the image between consecutive frames (the simulator respawned it) are left out. The ``moving``
rows restrict to pairs whose true displacement reaches ``moving_px`` (default 1 px) at some step — most objects stand
still in most clips, where every predictor that keeps still is right.

Predictors without native flows are scored on the flows the Predictor estimates from their frames (DIS optical
flow); the result says which (``flow_source``). Conditions are the clips' true eta (end-effector position at the last
frame, metres), as in :mod:`imagine_ros.evaluation.evaluate`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from imagine_ros.constants import CONDITION, FUTURE, OBJECT_POS, X0
from imagine_ros.errors import DatasetError
from imagine_ros.models.frames import tensor_to_frames
from imagine_ros.predictor import PredictorProtocol
from imagine_ros.training.clips import ClipDataset, fixed_clips

DEFAULT_MOVING_PX = 1.0


@dataclass
class FlowEvalResult:
    """EPE in pixels at the predictor's image size (module docstring)."""

    name: str
    method: str
    flow_source: str
    epe_best: float
    epe_mean: float
    epe_zero: float
    pairs: int
    moving_epe_best: float
    moving_epe_mean: float
    moving_epe_zero: float
    moving_pairs: int
    clips: int
    samples: int
    image_size: int
    horizon: int

    def row(self) -> str:
        return (
            f"| {self.name} | {self.method} | {self.flow_source} | {self.moving_epe_best:.2f} | "
            f"{self.moving_epe_mean:.2f} | {self.moving_epe_zero:.2f} | {self.moving_pairs} | {self.epe_best:.2f} | "
            f"{self.epe_mean:.2f} | {self.epe_zero:.2f} | {self.pairs} |"
        )


def camera_from_meta(meta: dict):
    """The dataset's :class:`~imagine_ros.sim.camera.Camera` from ``meta.json`` (its ``camera.config``)."""
    from imagine_ros.sim.camera import Camera, CameraConfig

    try:
        cfg = dict(meta["camera"]["config"])
    except (KeyError, TypeError):
        raise DatasetError(
            "the dataset's meta.json has no camera (camera.config); EPE needs a pushing dataset"
        ) from None
    cfg["target"] = tuple(cfg["target"])
    return Camera(CameraConfig(**cfg))


def object_tracks(camera, object_pos: np.ndarray, image_size: int) -> np.ndarray:
    """Projected object centres at ``image_size``. object_pos: (T, K, 3) world metres -> (T, K, 2) pixels (u, v)
    (u right, v down, pixel centres at integers; rescaled from the camera's image size; NaN behind the camera)."""
    uv = camera.project(np.asarray(object_pos, dtype=np.float64))
    scale = np.array([image_size / camera.width, image_size / camera.height])
    return (uv + 0.5) * scale - 0.5


def scorable_tracks(track: np.ndarray, image_size: int) -> np.ndarray:
    """(K,) bool: objects whose projected track (T + 1, K, 2) is finite, starts inside the image and never jumps
    more than a quarter of the image between frames (a jump is a respawn, not motion)."""
    jumps = np.linalg.norm(np.diff(track, axis=0), axis=-1).max(0)
    inside = np.all((track[0] >= -0.5) & (track[0] <= image_size - 0.5), -1)
    return np.isfinite(track).all(axis=(0, 2)) & (jumps <= image_size / 4) & inside


def sample_flow_at(flows: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear read of flow fields at sub-pixel points (clamped to the image).

    flows: (..., H, W, 2) float; points: (P, 2) pixels (u, v). Returns (..., P, 2).
    """
    h, w = flows.shape[-3:-1]
    u = np.clip(points[:, 0], 0, w - 1)
    v = np.clip(points[:, 1], 0, h - 1)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    top = flows[..., v0, u0, :] * (1 - fu) + flows[..., v0, u1, :] * fu
    bottom = flows[..., v1, u0, :] * (1 - fu) + flows[..., v1, u1, :] * fu
    return top * (1 - fv) + bottom * fv


def flow_epe(
    predictor: PredictorProtocol,
    data: str | Path,
    split: str = "val",
    clips: int = 64,
    samples: int = 8,
    seed: int = 0,
    batch: int = 8,
    name: str | None = None,
    moving_px: float = DEFAULT_MOVING_PX,
    progress: bool = True,
    gif: str | Path | None = None,
    gif_clips: int = 3,
) -> FlowEvalResult:
    """EPE of ``predictor``'s forward flows on ``clips`` fixed clips of ``split`` (module docstring). ``gif``: also
    write the first ``gif_clips`` clips' sampled futures with their flows and masks there (:func:`flow_gif`)."""
    from tqdm.auto import tqdm

    s, t = predictor.image_size, predictor.horizon
    ds = ClipDataset(data, split, horizon=t, stride=t, image_size=s, keys=(X0, FUTURE, CONDITION))
    camera = camera_from_meta(ds.store.meta)
    chosen = fixed_clips(ds, min(clips, len(ds)), seed=seed)
    per_pair_best, per_pair_mean, per_pair_zero, moving = [], [], [], []
    source = ""
    for i in tqdm(range(0, len(chosen), batch), desc=f"flow EPE {name or predictor.method}", disable=not progress):
        chunk = chosen[i : i + batch]
        images = tensor_to_frames(torch.stack([c[X0] for c in chunk]))
        conds = np.stack([c[CONDITION].numpy() for c in chunk]) if predictor.condition_dim else None
        pred = predictor.predict(images, conds, num_samples=samples, seed=seed + i)
        source = pred.flow_source
        if gif is not None and i == 0:
            truth = tensor_to_frames(torch.stack([c[FUTURE] for c in chunk]))
            flow_gif(gif, truth[:gif_clips], pred.frames[:gif_clips], pred.flows[:gif_clips], _masks(pred, gif_clips))
        for b, clip in enumerate(chunk):
            start = int(clip["start"])
            pos = ds.store.read(int(clip["episode"]), OBJECT_POS, start, start + t + 1)  # (T + 1, K, 3)
            track = object_tracks(camera, pos, s)  # (T + 1, K, 2)
            first = track[0]
            ok = scorable_tracks(track, s)
            if not ok.any():
                continue
            true = track[1:, ok] - first[None, ok]  # (T, P, 2)
            flows = sample_flow_at(pred.flows[b], first[ok])  # (N, T, P, 2)
            epe = np.linalg.norm(flows - true[None], axis=-1).mean(1)  # (N, P): mean over steps
            per_pair_best.append(epe.min(0))
            per_pair_mean.append(epe.mean(0))
            magnitude = np.linalg.norm(true, axis=-1)  # (T, P)
            per_pair_zero.append(magnitude.mean(0))
            moving.append(magnitude.max(0) >= moving_px)
    if not per_pair_best:
        raise DatasetError(f"no object of the {len(chosen)} chosen clips projects into the image; nothing to score")
    best, mean, zero = (np.concatenate(v) for v in (per_pair_best, per_pair_mean, per_pair_zero))
    mov = np.concatenate(moving)

    def avg(x: np.ndarray) -> float:
        return float(x.mean()) if x.size else float("nan")

    return FlowEvalResult(
        name=name or predictor.method,
        method=predictor.method,
        flow_source=source,
        epe_best=avg(best),
        epe_mean=avg(mean),
        epe_zero=avg(zero),
        pairs=int(best.size),
        moving_epe_best=avg(best[mov]),
        moving_epe_mean=avg(mean[mov]),
        moving_epe_zero=avg(zero[mov]),
        moving_pairs=int(mov.sum()),
        clips=len(chosen),
        samples=samples,
        image_size=s,
        horizon=t,
    )


def _masks(pred, clips: int) -> np.ndarray | None:
    return None if pred.masks is None else pred.masks[:clips]


def flow_gif(
    path: str | Path,
    truth: np.ndarray,
    frames: np.ndarray,
    flows: np.ndarray,
    masks: np.ndarray | None = None,
    max_magnitude: float | None = None,
    fps: float = 4.0,
    scale: int = 3,
) -> Path:
    """A GIF of sampled futures beside their flow colour maps and visibility masks.

    truth: (B, T, H, W, 3) uint8; frames: (B, N, T, H, W, 3) uint8; flows: (B, N, T, H, W, 2) pixels (forward);
    masks: (B, N, T, H, W) in [0, 1] or None. Per clip one row for the truth and one per sample; columns: frames,
    flow colours (hue = direction, saturation = magnitude up to ``max_magnitude``, default the largest shown),
    masks (white = visible; black = occluded or leaving the image). Returns the path.
    """
    from imagine_ros.viz import flow_to_rgb, video_grid, write_gif

    b, n, t, h, w, _ = frames.shape
    top = float(np.abs(flows).max()) if max_magnitude is None else max_magnitude
    colours = flow_to_rgb(flows, max_magnitude=max(top, 1e-6))
    if masks is None:
        mask_rgb = np.full_like(frames, 128)
    else:
        mask_rgb = np.repeat((np.clip(masks, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, -1)
    blank = np.full((b, 1, t, h, w, 3), 255, np.uint8)
    rows = np.concatenate(
        [
            np.stack([truth[:, None], blank, blank], 2),  # (B, 1, 3, T, H, W, 3)
            np.stack([frames, colours, mask_rgb], 2),  # (B, N, 3, T, H, W, 3)
        ],
        1,
    )
    grid = video_grid(rows.reshape(b * (n + 1), 3, t, h, w, 3))
    return write_gif(path, grid, fps=fps, scale=scale)


def table(results: list[FlowEvalResult], split: str, data: str | Path) -> str:
    r0 = results[0] if results else None
    n = r0.samples if r0 else 0
    head = (
        f"Dataset {data}, split {split}, {r0.clips if r0 else 0} clips, N = {n} samples, horizon "
        f"{r0.horizon if r0 else 0}, EPE in pixels at {r0.image_size if r0 else 0} px (object centres)\n\n"
        f"| predictor | method | flows | moving EPE@{n} | moving EPE mean | moving zero-flow | moving pairs | "
        f"EPE@{n} | EPE mean | zero-flow | pairs |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(r.row() for r in results)])


def write_results(results: list[FlowEvalResult], out: str | Path, split: str, data: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flow_epe.json").write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    (out / "flow_epe.md").write_text(table(results, split, data) + "\n")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# dense EPE against ground truth, and the push-outcome error

#: Push-outcome clips: an object moves at least this far (metres, xy) between the clip's first and last frame.
PUSH_THRESHOLD = 0.02


@dataclass
class DenseEvalResult:
    """Dense EPE (pixels at the predictor's size) on visible pixels, split by whether they truly move, and the
    push-outcome error (pixels) of objects carried along the predicted flows (see :func:`dense_eval`)."""

    name: str
    method: str
    flow_source: str
    moving_epe_best: float
    moving_epe_mean: float
    moving_zero: float
    static_epe_best: float
    static_epe_mean: float
    moving_clips: int
    push_mean: float
    push_median: float
    push_zero_mean: float
    push_zero_median: float
    push_gt_mean: float
    push_gt_median: float
    push_pairs: int
    clips: int
    samples: int
    image_size: int
    horizon: int
    moving_px: float

    def dense_row(self) -> str:
        return (
            f"| {self.name} | {self.flow_source} | {self.moving_epe_best:.2f} | {self.moving_epe_mean:.2f} | "
            f"{self.moving_zero:.2f} | {self.static_epe_best:.2f} | {self.static_epe_mean:.2f} |"
        )

    def push_row(self) -> str:
        return (
            f"| {self.name} | {self.flow_source} | {self.push_mean:.2f} / {self.push_median:.2f} | "
            f"{self.push_zero_mean:.2f} / {self.push_zero_median:.2f} | {self.push_gt_mean:.2f} / "
            f"{self.push_gt_median:.2f} | {self.push_mean / max(self.push_zero_mean, 1e-9):.0%} | {self.push_pairs} |"
        )


def dense_eval(
    predictor: PredictorProtocol,
    data: str | Path,
    split: str = "test",
    clips: int = 64,
    samples: int = 4,
    seed: int = 0,
    batch: int = 8,
    name: str | None = None,
    moving_px: float = 0.5,
    push_threshold: float = PUSH_THRESHOLD,
    progress: bool = True,
    shuffle_eta: bool = False,
) -> DenseEvalResult:
    """Dense flow EPE against the simulator's ground truth, and the push-outcome error, on ``clips`` fixed clips.

    The dataset must be recorded with ground truth (:mod:`imagine_ros.sim.ground_truth`); planning-matched data gives
    clips whose η is the commanded target. For every clip, the N sampled forward flows are compared with the true
    forward flow at the pixels of the input that are still visible at step t (the ground-truth visibility): pixels
    whose true motion is at least ``moving_px`` (the arm, pushed objects) and the others, each averaged per clip, then
    the best of the N samples (``best``) and their mean (``mean``); ``zero`` is a zero flow's EPE on the moving
    pixels (what a still prediction scores; on static pixels it is 0 by definition).

    Push outcome: in clips where an object moves at least ``push_threshold`` metres, the object's projected centre
    in the input is carried along the predicted flows of the last step exactly as the planner carries its
    designated pixel (:func:`imagine_ros.planning.costs.expected_positions`, bilinear splatting) and compared with
    the object's true projected centre at the last frame: the mean over samples per (clip, object), then mean and
    median over pairs, beside zero flow (no motion predicted) and the ground-truth flow carried the same way (the
    floor of this measure: the centre's pixel shows a surface point, not the centre itself).

    ``shuffle_eta``: every clip is predicted with the η of another of the chosen clips (a derangement drawn from
    ``seed``, :func:`imagine_ros.evaluation.controllability.derangement`) and scored against its own ground truth, with
    the same sampling seeds: a model whose flows follow η scores worse than with the clip's own η; one that ignores
    η scores the same. The row's name gets `` (shuffled η)``.
    """
    from tqdm.auto import tqdm

    from imagine_ros.constants import EE
    from imagine_ros.planning.costs import expected_positions
    from imagine_ros.predictor import conditions_for
    from imagine_ros.training.clips import GT_FLOW, VISIBLE

    s, t = predictor.image_size, predictor.horizon
    ds = ClipDataset(data, split, horizon=t, stride=t, image_size=s, keys=(X0, CONDITION, EE, GT_FLOW, VISIBLE))
    camera = camera_from_meta(ds.store.meta)
    chosen = fixed_clips(ds, min(clips, len(ds)), seed=seed)
    etas = np.stack([c[CONDITION].numpy() for c in chosen])
    if shuffle_eta:
        from imagine_ros.evaluation.controllability import derangement

        etas = etas[derangement(len(chosen), np.random.default_rng(seed))]
        name = f"{name or predictor.method} (shuffled η)"
    mov_best, mov_mean, mov_zero, st_best, st_mean = [], [], [], [], []
    push_err, push_zero, push_gt = [], [], []
    source = ""
    for i in tqdm(range(0, len(chosen), batch), desc=f"dense EPE {name or predictor.method}", disable=not progress):
        chunk = chosen[i : i + batch]
        images = tensor_to_frames(torch.stack([c[X0] for c in chunk]))
        eta = etas[i : i + batch]
        ee0 = np.stack([c[EE][0].numpy() for c in chunk])
        pred = predictor.predict(images, conditions_for(predictor, eta, ee0), num_samples=samples, seed=seed + i)
        source = pred.flow_source
        for b, clip in enumerate(chunk):
            gt = clip[GT_FLOW].numpy().transpose(0, 2, 3, 1)  # (T, H, W, 2)
            vis = clip[VISIBLE].numpy() > 0.5  # (T, H, W)
            mag = np.linalg.norm(gt, axis=-1)
            moving, static = vis & (mag >= moving_px), vis & (mag < moving_px)
            epe = np.linalg.norm(pred.flows[b] - gt[None], axis=-1)  # (N, T, H, W)
            if moving.any():
                e = epe[:, moving].mean(1)
                mov_best.append(e.min())
                mov_mean.append(e.mean())
                mov_zero.append(mag[moving].mean())
            if static.any():
                e = epe[:, static].mean(1)
                st_best.append(e.min())
                st_mean.append(e.mean())
            start = int(clip["start"])
            pos = ds.store.read(int(clip["episode"]), OBJECT_POS, start, start + t + 1)  # (T + 1, K, 3)
            track = object_tracks(camera, pos, s)  # (T + 1, K, 2)
            moved = np.linalg.norm(pos[-1, :, :2] - pos[0, :, :2], axis=-1) >= push_threshold
            for k in np.flatnonzero(moved & scorable_tracks(track, s)):
                start_px, end_px = track[0, k][None], track[-1, k]
                carried = expected_positions(start_px, pred.flows[b, :, -1])[:, 0]  # (N, 2)
                push_err.append(np.linalg.norm(carried - end_px, axis=-1).mean())
                push_zero.append(np.linalg.norm(start_px[0] - end_px))
                push_gt.append(np.linalg.norm(expected_positions(start_px, gt[-1])[0] - end_px))

    def avg(x: list) -> float:
        return float(np.mean(x)) if x else float("nan")

    def med(x: list) -> float:
        return float(np.median(x)) if x else float("nan")

    return DenseEvalResult(
        name=name or predictor.method,
        method=predictor.method,
        flow_source=source,
        moving_epe_best=avg(mov_best),
        moving_epe_mean=avg(mov_mean),
        moving_zero=avg(mov_zero),
        static_epe_best=avg(st_best),
        static_epe_mean=avg(st_mean),
        moving_clips=len(mov_best),
        push_mean=avg(push_err),
        push_median=med(push_err),
        push_zero_mean=avg(push_zero),
        push_zero_median=med(push_zero),
        push_gt_mean=avg(push_gt),
        push_gt_median=med(push_gt),
        push_pairs=len(push_err),
        clips=len(chosen),
        samples=samples,
        image_size=s,
        horizon=t,
        moving_px=moving_px,
    )


def dense_table(results: list[DenseEvalResult], split: str, data: str | Path) -> str:
    """Markdown: the dense EPE table and the push-outcome table (same clips, η and seeds for every row)."""
    if not results:
        return ""
    r0 = results[0]
    n = r0.samples
    return "\n".join(
        [
            f"Dataset {data}, split {split}, {r0.clips} clips (eta = each clip's own), N = {n} samples, horizon "
            f"{r0.horizon}, pixels at {r0.image_size} px; visible pixels only (ground-truth visibility)\n",
            f"| predictor | flows | moving EPE@{n} | moving EPE mean | moving zero-flow | static EPE@{n} | "
            "static EPE mean |",
            "|---|---|---|---|---|---|---|",
            *(r.dense_row() for r in results),
            "",
            f"Push outcome: {r0.push_pairs} (clip, object) pairs where the object moves >= 2 cm; the object's centre "
            "pixel carried along the last step's flows vs its true position (pixels, mean / median)\n",
            "| predictor | flows | predicted | zero flow | ground-truth flow | predicted / zero | pairs |",
            "|---|---|---|---|---|---|---|",
            *(r.push_row() for r in results),
        ]
    )


def write_dense_results(results: list[DenseEvalResult], out: str | Path, split: str, data: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dense_epe.json").write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    (out / "dense_epe.md").write_text(dense_table(results, split, data) + "\n")
    return out
