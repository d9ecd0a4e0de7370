"""Controllability: how well does a conditioned method put the end effector where η says?

For fixed clips of a split (x0 = the clip's first frame; the same clips and seeds for every predictor), each predictor
samples N futures under three conditions:

- ``true``: η = the clip's real end-effector position at its last frame (what the model was trained with);
- ``random``: η drawn uniformly in the hand's workspace (x, y in ``meta.json["scene"]`` ``hand_low..hand_high``), at
  a height drawn from the training split's recorded end-effector heights (the heights the arm really uses: mostly
  the pushing height, sometimes lifted);
- ``shuffled``: the true η of another clip (a random permutation without fixed points, so no clip keeps its own η).

The control is the ``shuffled`` futures measured against the clip's *own* true η (``shuffled→true``): a model that
ignores η puts the arm where it would anyway, so ``shuffled→true`` stays at ``true``; a model that obeys η follows
the other clip's η, so ``shuffled`` is small and ``shuffled→true`` grows to about the distance between the two clips'
targets.

The end-effector detector (:mod:`imagine_ros.evaluation.ee_detector`) finds the end effector in the *last* predicted
frame; the score is its distance in pixels (of the dataset's camera image) to the projection of η through the
dataset's camera, averaged over samples, then over clips (mean and median over clips). For scale, the detector's own
error on the real last frames of the same clips is reported beside it (``detector`` column): distances near it mean
the arm is where η says, up to what the detector can tell.

Methods without a condition (``copy_last``) are evaluated the same way with ``conditions=None``: their last frame is
(for copy_last) x0, so their score is how far η lies from the arm's start — the floor a controllable model must beat.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from imagine_ros.constants import CONDITION, EE_POS, FUTURE, X0
from imagine_ros.errors import ConfigError, DatasetError
from imagine_ros.evaluation.ee_detector import EEDetector, camera_from_meta, error_summary, rescale_pixels

#: The conditions every predictor is scored under, in table order.
CONDITIONS = ("true", "random", "shuffled")


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random cyclic permutation of range(n) (Sattolo's algorithm): ``perm[i] != i`` for every i when
    n > 1 (n = 1 gives [0], the only permutation)."""
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i: this is what makes the result a single n-cycle
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def random_reachable(n: int, store, rng: np.random.Generator) -> np.ndarray:
    """``n`` random reachable end-effector positions (n, 3) float32 metres (module docstring): x, y uniform in the
    workspace of ``store.meta["scene"]``, z resampled from the training split's recorded end-effector heights."""
    scene = store.meta.get("scene")
    if not isinstance(scene, dict) or "hand_low" not in scene:
        raise DatasetError(f"{store.root} has no hand workspace in meta.json (needs a pushing dataset)")
    lo, hi = np.asarray(scene["hand_low"], np.float64), np.asarray(scene["hand_high"], np.float64)
    episodes = store.split("train") or store.split("all")
    heights = np.concatenate([np.asarray(store.read(i, EE_POS), np.float64)[:, 2] for i in episodes])
    xy = rng.uniform(lo[:2], hi[:2], size=(n, 2))
    z = rng.choice(heights, size=n)
    return np.concatenate([xy, z[:, None]], 1).astype(np.float32)


@dataclass
class ControllabilityResult:
    """Pixel distances (mean, median over clips; each clip the mean over its samples) from the end effector detected
    in the last predicted frame to η's projection, per condition; ``detector_*`` is the detector's error on the real
    last frames of the same clips; ``start_*`` the distance from the real arm at x0 to the true η (how far it moves)."""

    name: str
    method: str
    condition_dim: int
    clips: int
    samples: int
    true_mean: float
    true_median: float
    random_mean: float
    random_median: float
    shuffled_mean: float
    shuffled_median: float
    shuffled_to_true_mean: float
    shuffled_to_true_median: float
    detector_mean: float
    detector_median: float
    start_mean: float
    seconds: float

    def row(self) -> str:
        def cell(kind: str) -> str:
            return f"{getattr(self, kind + '_mean'):.2f} ({getattr(self, kind + '_median'):.2f})"

        return (
            f"| {self.name} | {self.method} | {cell('true')} | {cell('random')} | {cell('shuffled')} | "
            f"{cell('shuffled_to_true')} | {cell('detector')} |"
        )


def controllability(
    predictor,
    data: str | os.PathLike,
    detector: EEDetector,
    split: str = "test",
    clips: int = 64,
    samples: int = 4,
    seed: int = 0,
    batch: int = 8,
    name: str | None = None,
    progress: bool = True,
) -> tuple[ControllabilityResult, dict[str, np.ndarray]]:
    """Score ``predictor`` (any :class:`imagine_ros.predictor.PredictorProtocol`) on ``clips`` fixed clips of ``split``
    of the pushing dataset ``data`` (module docstring).

    Returns the summary and the raw arrays: ``eta_<condition>`` (K, 3) metres, ``target_<condition>`` (K, 2) pixels,
    ``detected_<condition>`` (K, N, 2) pixels, ``dist_<condition>`` (K, N) pixels, ``detector_error`` (K,),
    ``permutation`` (K,) for K clips and N samples.
    """
    from tqdm.auto import tqdm

    from imagine_ros.models.frames import tensor_to_frames
    from imagine_ros.predictor import conditions_for
    from imagine_ros.sim.storage import EpisodeStore
    from imagine_ros.training.clips import EPISODE, START, ClipDataset, fixed_clips

    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise ConfigError(f"--clips must be an integer >= 1, got {clips!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"--samples must be an integer >= 1, got {samples!r}")
    store = EpisodeStore(data)
    camera = camera_from_meta(store.meta)
    cam_size = (camera.height, camera.width)
    size = (predictor.image_size, predictor.image_size)
    ds = ClipDataset(
        store,
        split,
        horizon=predictor.horizon,
        stride=predictor.horizon,
        image_size=predictor.image_size,
        keys=(X0, FUTURE, CONDITION),
    )
    chosen = fixed_clips(ds, min(clips, len(ds)), seed=seed)
    k = len(chosen)
    rng = np.random.default_rng([int(seed), 0xC0E7])
    perm = derangement(k, rng)
    eta_true = np.stack([c[CONDITION].numpy() for c in chosen]).astype(np.float32)
    etas = {"true": eta_true, "random": random_reachable(k, store, rng), "shuffled": eta_true[perm]}
    targets = {c: camera.project(e.astype(np.float64)) for c, e in etas.items()}
    x0 = tensor_to_frames(torch.stack([c[X0] for c in chosen]))  # (K, h, w, 3) uint8 at the model's size
    last = tensor_to_frames(torch.stack([c[FUTURE][-1] for c in chosen]))
    start = np.stack([store.read(c[EPISODE], EE_POS, c[START], c[START] + 1)[0] for c in chosen])
    detector_error = np.linalg.norm(rescale_pixels(detector.detect(last), size, cam_size) - targets["true"], axis=-1)
    detected = {c: np.zeros((k, samples, 2)) for c in CONDITIONS}
    t0 = time.perf_counter()
    conditioned = bool(predictor.condition_dim)
    steps = [(c, i) for c in (CONDITIONS if conditioned else CONDITIONS[:1]) for i in range(0, k, batch)]
    for cond, i in tqdm(steps, desc=f"controllability {name or predictor.method}", disable=not progress):
        eta = conditions_for(predictor, etas[cond][i : i + batch], start[i : i + batch]) if conditioned else None
        pred = predictor.predict(x0[i : i + batch], eta, num_samples=samples, seed=seed + i)  # same noise per cond
        uv = detector.detect(np.ascontiguousarray(pred.frames[:, :, -1]))  # (b, N, 2) at the model's size
        detected[cond][i : i + batch] = rescale_pixels(uv, size, cam_size)
    if not conditioned:  # η is not an input: the same futures are scored against each condition's η
        detected["random"] = detected["shuffled"] = detected["true"]
    seconds = time.perf_counter() - t0
    dist = {c: np.linalg.norm(detected[c] - targets[c][:, None], axis=-1) for c in CONDITIONS}
    per_clip = {c: error_summary(dist[c].mean(1)) for c in CONDITIONS}
    shuffled_to_true = np.linalg.norm(detected["shuffled"] - targets["true"][:, None], axis=-1)
    per_clip["shuffled_to_true"] = error_summary(shuffled_to_true.mean(1))
    det = error_summary(detector_error)
    result = ControllabilityResult(
        name=name or predictor.method,
        method=predictor.method,
        condition_dim=int(predictor.condition_dim),
        clips=k,
        samples=samples,
        **{f"{c}_{s}": per_clip[c][s] for c in (*CONDITIONS, "shuffled_to_true") for s in ("mean", "median")},
        detector_mean=det["mean"],
        detector_median=det["median"],
        start_mean=float(np.linalg.norm(camera.project(start.astype(np.float64)) - targets["true"], axis=-1).mean()),
        seconds=seconds,
    )
    raw = {
        **{f"eta_{c}": etas[c] for c in CONDITIONS},
        **{f"target_{c}": targets[c] for c in CONDITIONS},
        **{f"detected_{c}": detected[c] for c in CONDITIONS},
        **{f"dist_{c}": dist[c] for c in CONDITIONS},
        "dist_shuffled_to_true": shuffled_to_true,
        "detector_error": detector_error,
        "permutation": perm,
    }
    return result, raw


def table(results: list[ControllabilityResult], split: str, data: str | os.PathLike, detector_meta: dict) -> str:
    """Markdown table of ``results`` with a header naming the data, clips, samples and the detector's test error."""
    r0 = results[0] if results else None
    ev = detector_meta.get("eval_error") or {}
    det = (
        f"; detector error on the {detector_meta.get('eval_split', 'test')} split's real frames: median "
        f"{ev['median']:.2f} px, p90 {ev['p90']:.2f} px"
        if ev
        else ""
    )
    head = (
        f"Dataset {data}, split {split}, {r0.clips if r0 else 0} clips, N = {r0.samples if r0 else 0} samples per "
        f"clip{det}.\nDistance in pixels from the end effector detected in the last predicted frame to the projection "
        f"of η: mean (median) over clips. `shuffled→true`: the futures sampled with another clip's η, measured "
        f"against the clip's own true η. A model that obeys η has `true`, `random` and `shuffled` small and "
        f"`shuffled→true` large; one that ignores η has `shuffled→true` equal to `true`.\n\n"
        "| predictor | method | true η px | random η px | shuffled η px | shuffled→true px | detector px |\n"
        "|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(r.row() for r in results)])


def write_results(
    results: list[ControllabilityResult],
    out: str | os.PathLike,
    split: str,
    data: str | os.PathLike,
    detector_meta: dict,
    command: list[str] | None = None,
) -> Path:
    """Write ``results.json`` and ``table.md`` into the folder ``out`` (created). Returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "data": str(data),
        "split": split,
        "detector": {k: detector_meta.get(k) for k in ("data", "eval_split", "eval_error", "baseline_error")},
        "command": command,
        "results": [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(r).items()} for r in results
        ],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    (out / "table.md").write_text(table(results, split, data, detector_meta) + "\n", encoding="utf-8")
    return out
