"""Compare predictors on the same clips of a dataset split: PSNR@N, SSIM@N (best of N samples) and diversity.

Every predictor sees the same clips (fixed by a seed), the same number of samples and its own checkpoint's image
size and horizon (clips are read at each model's size and horizon, so all rows of a table should share them). The
condition η is the clip's true end-effector position at its last frame, in metres, as a user would pass it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imagine_ros.constants import CONDITION, EE, FUTURE, X0
from imagine_ros.models import build
from imagine_ros.models.frames import tensor_to_frames
from imagine_ros.predictor import Predictor, PredictorProtocol, conditions_for
from imagine_ros.training.clips import ClipDataset, fixed_clips
from imagine_ros.training.metrics import best_of_n


@dataclass
class EvalResult:
    name: str
    method: str
    psnr: float
    ssim: float
    diversity: float
    clips: int
    samples: int
    seconds_per_clip: float
    flow_source: str

    def row(self) -> str:
        return (
            f"| {self.name} | {self.method} | {self.psnr:.2f} | {self.ssim:.4f} | {self.diversity:.4f} | "
            f"{self.seconds_per_clip * 1000:.0f} |"
        )


def evaluate(
    predictor: PredictorProtocol,
    data: str | Path,
    split: str = "val",
    clips: int = 64,
    samples: int = 8,
    seed: int = 0,
    batch: int = 8,
    name: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """PSNR@N / SSIM@N / diversity of ``predictor`` on ``clips`` fixed clips of ``split`` (see module docstring)."""
    from tqdm.auto import tqdm

    ds = ClipDataset(data, split, horizon=predictor.horizon, stride=predictor.horizon, image_size=predictor.image_size)
    chosen = fixed_clips(ds, min(clips, len(ds)), seed=seed)
    scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": [], "diversity": []}
    source, seconds = "", 0.0
    for i in tqdm(range(0, len(chosen), batch), desc=f"evaluate {name or predictor.method}", disable=not progress):
        chunk = chosen[i : i + batch]
        images = tensor_to_frames(torch.stack([c[X0] for c in chunk]))
        eta = np.stack([c[CONDITION].numpy() for c in chunk])
        conds = conditions_for(predictor, eta, np.stack([c[EE][0].numpy() for c in chunk]))
        t0 = time.perf_counter()
        pred = predictor.predict(images, conds, num_samples=samples, seed=seed + i)
        seconds += time.perf_counter() - t0
        source = pred.flow_source
        frames = torch.from_numpy(pred.frames).movedim(-1, -3).float().div(127.5).sub(1)  # (B, N, T, 3, H, W)
        truth = torch.stack([c[FUTURE] for c in chunk])
        truth = tensor_to_frames(truth)  # quantised like the predictions, so copy_last of a still scene is exact
        m = best_of_n(frames, torch.from_numpy(truth).movedim(-1, -3).float().div(127.5).sub(1))
        for k in scores:
            scores[k].append(m[k])
    means = {k: float(torch.cat(v).mean()) for k, v in scores.items()}
    return EvalResult(
        name=name or predictor.method,
        method=predictor.method,
        clips=len(chosen),
        samples=samples,
        seconds_per_clip=seconds / max(1, len(chosen)),
        flow_source=source,
        **means,
    )


def copy_last_like(predictor: PredictorProtocol) -> Predictor:
    """The ``copy_last`` floor at another predictor's image size and horizon."""
    model = build("copy_last", "small", image_size=predictor.image_size, horizon=predictor.horizon)
    return Predictor(model, device="cpu")


def table(results: list[EvalResult], split: str, data: str | Path) -> str:
    n = results[0].samples if results else 0
    head = (
        f"Dataset {data}, split {split}, {results[0].clips if results else 0} clips, N = {n} samples per clip\n\n"
        f"| predictor | method | PSNR@{n} (dB) | SSIM@{n} | diversity | ms per clip |\n|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(r.row() for r in results)])


def write_results(results: list[EvalResult], out: str | Path, split: str, data: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=1) + "\n")
    (out / "table.md").write_text(table(results, split, data) + "\n")
    return out
