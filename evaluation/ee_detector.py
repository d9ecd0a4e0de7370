"""An end-effector detector for simulator frames: a small CNN that maps an RGB frame to the pixel of the end effector.

It measures controllability (:mod:`imagine_ros.evaluation.controllability`): where is the arm in a *generated* frame?

Labels are exact: the recorded end-effector positions ``ee_pos`` (metres, robot base frame) projected through the
dataset's camera (``meta.json["camera"]``, :class:`imagine_ros.sim.camera.Camera`), so a label is the pixel
``(u, v)`` of the fingertip point, in the camera's convention (u right, v down, the centre of pixel (row i, column j)
at (u, v) = (j, i)).

Model: a small U-Net-like encoder/decoder (BatchNorm, ReLU) ending in a one-channel heatmap at half the input
resolution; the position is the heatmap's soft-argmax (the expectation of the cell centres under its softmax), so it is
sub-pixel and differentiable. Loss: L1 on the position in pixels + cross-entropy of the heatmap against a Gaussian
around the label (which trains the heatmap fast in the first steps). Training augments with blur, noise and colour
jitter so that the detector also reads the softer frames that video models generate.

Files: ``NAME.safetensors`` (weights) + ``NAME.json`` (config, data, training settings, errors); never pickle.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imagine_ros.constants import EE_POS, FRAMES
from imagine_ros.errors import ConfigError, DatasetError, ImagineRosError

FORMAT_NAME = "imagine_ros.ee_detector"
FORMAT_VERSION = 1
#: File stem used when a detector path names a folder.
DEFAULT_STEM = "ee_detector"
LABEL_CONVENTION = (
    "pixel (u, v) of ee_pos projected through meta.json's camera: u right, v down, "
    "centre of pixel (row i, column j) at (u, v) = (j, i)"
)


class DetectorError(ImagineRosError):
    """A detector file that cannot be loaded (missing, damaged, foreign)."""


# ----------------------------------------------------------------------------------------------------------------------
# camera and labels


def camera_from_meta(meta: dict):
    """The :class:`imagine_ros.sim.camera.Camera` recorded in a dataset's ``meta.json`` (pushing datasets only)."""
    from imagine_ros.sim.camera import Camera, CameraConfig

    cam = meta.get("camera")
    if not isinstance(cam, dict) or "config" not in cam:
        raise DatasetError(
            f"the dataset ({meta.get('kind', '?')}) has no camera in meta.json; the end-effector detector needs a "
            "pushing dataset (imagine-ros collect)"
        )
    cfg = dict(cam["config"])
    cfg["target"] = tuple(cfg["target"])
    camera = Camera(CameraConfig(**cfg))
    if "T_cam_world" in cam and not np.allclose(camera.T_cam_world, np.asarray(cam["T_cam_world"]), atol=1e-6):
        raise DatasetError("the camera config in meta.json does not reproduce its recorded T_cam_world")
    return camera


def rescale_pixels(uv: np.ndarray, from_size: Sequence[int], to_size: Sequence[int]) -> np.ndarray:
    """Pixel coordinates (..., 2) = (u, v) in an image of ``from_size = (H, W)`` -> the same points after resizing
    the image to ``to_size = (H', W')``: ``u' = (u + 0.5) * W' / W - 0.5`` (pixel centres at integers)."""
    uv = np.asarray(uv, dtype=np.float64)
    scale = np.array([to_size[1] / from_size[1], to_size[0] / from_size[0]])
    return (uv + 0.5) * scale - 0.5


def load_labelled_frames(store, split: str = "train", max_episodes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of the episodes of ``split`` with its label.

    store: an open :class:`imagine_ros.sim.storage.EpisodeStore` of a pushing dataset.
    Returns ``frames (N, H, W, 3) uint8`` and ``uv (N, 2) float32`` pixels (module docstring for the convention).
    """
    episodes = store.split(split)
    if max_episodes is not None:
        episodes = episodes[: int(max_episodes)]
    if not episodes:
        raise DatasetError(f"split {split!r} of {store.root} has no episodes")
    camera = camera_from_meta(store.meta)
    frames = np.concatenate([store.read(i, FRAMES) for i in episodes])
    ee = np.concatenate([np.asarray(store.read(i, EE_POS), np.float64) for i in episodes])
    uv = camera.project(ee)
    if not np.isfinite(uv).all():
        raise DatasetError(f"some end-effector positions of {store.root} are behind the camera")
    return frames, uv.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture of :class:`EEDetector`."""

    image_size: tuple[int, int] = (64, 64)  # (H, W) the detector reads; other sizes are resized to it
    channels: tuple[int, ...] = (16, 24, 32, 48)  # widths at 1/2, 1/4, 1/8, 1/16 of the input resolution
    heatmap_stride: int = 2  # the heatmap is at input / heatmap_stride (2, 4, ... up to the coarsest level)

    def __post_init__(self) -> None:
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ConfigError(f"detector image_size must be (H, W) with sides >= 8, got {self.image_size!r}")
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ConfigError(f"detector channels must be >= 2 positive widths, got {self.channels!r}")
        levels = len(self.channels)
        if self.heatmap_stride not in [2**k for k in range(1, levels + 1)]:
            raise ConfigError(f"heatmap_stride must be a power of two in [2, {2**levels}], got {self.heatmap_stride}")
        if any(s % 2**levels for s in self.image_size):
            raise ConfigError(f"detector image sides must be multiples of {2**levels}, got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorConfig:
        known = set(cls.__dataclass_fields__)
        if set(d) - known:
            raise ConfigError(f"DetectorConfig has no field(s) {sorted(set(d) - known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class EEDetector(nn.Module):
    """Frame -> end-effector pixel (module docstring). ``forward`` works on tensors, :meth:`detect` on uint8 frames."""

    def __init__(self, config: DetectorConfig | None = None):
        super().__init__()
        self.config = config = config or DetectorConfig()
        c = config.channels
        self.stem = nn.Sequential(_conv(3, c[0], 2), _conv(c[0], c[0]))
        self.down = nn.ModuleList(
            nn.Sequential(_conv(c[i], c[i + 1], 2), _conv(c[i + 1], c[i + 1])) for i in range(len(c) - 1)
        )
        levels = len(c) - 1
        self.up_levels = levels + 1 - int(math.log2(config.heatmap_stride))  # decoder steps back up to the heatmap
        self.up = nn.ModuleList(
            _conv(c[levels - k] + c[levels - k - 1], c[levels - k - 1]) for k in range(self.up_levels)
        )
        self.head = nn.Conv2d(c[levels - self.up_levels], 1, 1)
        h, w = config.image_size
        s = config.heatmap_stride
        self.register_buffer("grid_u", (torch.arange(w // s, dtype=torch.float32) + 0.5) * s - 0.5, persistent=False)
        self.register_buffer("grid_v", (torch.arange(h // s, dtype=torch.float32) + 0.5) * s - 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 3, H, W) float in [-1, 1] at ``config.image_size`` -> (uv (B, 2) pixels, logits (B, h, w)) with
        (h, w) = (H, W) / heatmap_stride."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != tuple(self.config.image_size):
            raise ValueError(
                f"detector input must be (B, 3, {self.config.image_size[0]}, {self.config.image_size[1]})"
                f", got {tuple(x.shape)}"
            )
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips[-1]
        for k, block in enumerate(self.up):
            skip = skips[-2 - k]
            y = block(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="nearest"), skip], 1))
        logits = self.head(y)[:, 0]
        return self.soft_argmax(logits), logits

    def soft_argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, h, w) -> expected pixel (B, 2) = (u, v) under softmax(logits) over the cell centres."""
        p = logits.flatten(1).softmax(-1).view_as(logits)
        u = (p.sum(1) * self.grid_u).sum(-1)
        v = (p.sum(2) * self.grid_v).sum(-1)
        return torch.stack([u, v], -1)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def detect(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """frames: (..., H, W, 3) uint8 RGB of any size -> (..., 2) float64 pixels (u, v) in the frames' own pixel
        grid (frames of another size than ``config.image_size`` are resized with area interpolation and the
        positions mapped back)."""
        from imagine_ros.models.frames import frames_to_tensor

        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim < 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (..., H, W, 3) uint8 with at least one frame axis, got {frames.shape}")
        lead, size = frames.shape[:-3], frames.shape[-3:-1]
        flat = frames.reshape(-1, *frames.shape[-3:])
        was_training = self.training
        self.eval()
        out = []
        for i in range(0, len(flat), batch):
            x = frames_to_tensor(flat[i : i + batch]).to(self.device)
            if tuple(size) != tuple(self.config.image_size):
                x = F.interpolate(x, size=tuple(self.config.image_size), mode="area")
            out.append(self(x)[0].double().cpu().numpy())
        self.train(was_training)
        uv = np.concatenate(out) if out else np.zeros((0, 2))
        uv = rescale_pixels(uv, self.config.image_size, size)
        return uv.reshape(*lead, 2)


def detector_loss(
    uv: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, model: EEDetector, sigma: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 position loss (pixels) + heatmap cross-entropy against a Gaussian of ``sigma`` heatmap cells around
    ``target (B, 2)`` pixels. uv (B, 2), logits (B, h, w) from :meth:`EEDetector.forward`."""
    s = model.config.heatmap_stride
    du = (model.grid_u[None, :] - target[:, :1]) / s  # (B, w) in cells
    dv = (model.grid_v[None, :] - target[:, 1:]) / s  # (B, h)
    g = torch.exp(-0.5 * (dv[:, :, None] ** 2 + du[:, None, :] ** 2) / sigma**2)
    q = g / g.flatten(1).sum(-1).clamp_min(1e-12)[:, None, None]
    ce = -(q * logits.flatten(1).log_softmax(-1).view_as(logits)).flatten(1).sum(-1).mean()
    l1 = (uv - target).abs().sum(-1).mean()
    return l1 + ce, {"l1_px": float(l1.detach()), "heatmap_ce": float(ce.detach())}


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Label-preserving augmentation of (B, 3, H, W) images in [-1, 1]: per image, a 3x3 blur with probability 1/2,
    brightness/contrast jitter (+-10 %) and Gaussian noise with std up to 0.06."""
    b = x.shape[0]

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator).to(x.device)

    k = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    x = torch.where(rand(b, 1, 1, 1) < 0.5, blurred, x)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (0.9 + 0.2 * rand(b, 1, 1, 1)) + mean + 0.2 * (rand(b, 1, 1, 1) - 0.5)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    return (x + noise * 0.06 * rand(b, 1, 1, 1)).clamp(-1, 1)


# ----------------------------------------------------------------------------------------------------------------------
# errors, files


def pixel_errors(detector: EEDetector, frames: np.ndarray, uv: np.ndarray) -> dict[str, float]:
    """Euclidean pixel error of ``detector`` on frames (N, H, W, 3) uint8 with labels uv (N, 2):
    mean, median, 90th percentile, max and the number of frames."""
    err = np.linalg.norm(detector.detect(frames) - np.asarray(uv, np.float64), axis=-1)
    return error_summary(err)


def error_summary(err: np.ndarray) -> dict[str, float]:
    """mean / median / p90 / max of a vector of pixel distances (NaN when empty) and its length ``n``."""
    err = np.asarray(err, np.float64).ravel()
    if err.size == 0:
        return {"mean": math.nan, "median": math.nan, "p90": math.nan, "max": math.nan, "n": 0}
    return {
        "mean": float(err.mean()),
        "median": float(np.median(err)),
        "p90": float(np.percentile(err, 90)),
        "max": float(err.max()),
        "n": int(err.size),
    }


def detector_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, json) for ``path`` = ``NAME``/``NAME.json``/``NAME.safetensors``, or a folder (a path without
    suffix, or an existing folder) -> ``FOLDER/ee_detector.*``."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        stem = p.with_suffix("")
    elif p.is_dir() or not p.suffix:
        stem = p / DEFAULT_STEM
    else:
        raise ConfigError(f"a detector path is a folder or NAME.json/NAME.safetensors, got {path}")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_detector(path: str | os.PathLike, model: EEDetector, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (weights atomically, then the JSON with ``extra``). Returns the JSON path."""
    from safetensors.torch import save_file

    from imagine_ros.models.checkpoint import atomic_write, sha256_file

    weights, meta_path = detector_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT_NAME}))
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "label": LABEL_CONVENTION,
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        **(extra or {}),
    }
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8"))
    return meta_path


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[EEDetector, dict[str, Any]]:
    """Rebuild a detector from its two files, in eval mode on ``device``. Returns (model, the JSON as a dict)."""
    from imagine_ros.models.checkpoint import read_verified_weights

    weights, meta_path = detector_paths(path)
    if not meta_path.exists():
        raise DetectorError(
            f"no end-effector detector at {path}: {meta_path} does not exist (imagine-ros train-detector writes one)"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DetectorError(f"{meta_path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise DetectorError(f"{meta_path} is not an imagine_ros end-effector detector (format {FORMAT_NAME!r} v1)")
    weights, state = read_verified_weights(meta_path, meta, weights, DetectorError)
    try:
        model = EEDetector(DetectorConfig.from_dict(meta["config"]))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ConfigError) as e:
        raise DetectorError(f"{weights} does not hold the detector described by {meta_path.name} ({e})") from None
    return model.to(device).eval(), meta


# ----------------------------------------------------------------------------------------------------------------------
# training


@dataclass
class DetectorTrainConfig:
    """Settings of :func:`train_detector` (defaults: a few minutes on two CPU cores)."""

    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    seed: int = 0
    device: str = "auto"
    augment: bool = True
    eval_split: str = "test"
    max_episodes: int | None = None  # cap on training episodes (tests)
    model: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be positive, got {self.lr}")


@dataclass
class DetectorReport:
    """What :func:`train_detector` measured: pixel errors (:func:`error_summary`) on the training frames and on the
    evaluation split, the constant-guess baseline (the mean training label) on that split, and the files written."""

    path: Path | None
    train_error: dict[str, float]
    eval_error: dict[str, float]
    baseline_error: dict[str, float]
    eval_split: str
    steps: int
    seconds: float


def train_detector(
    data: str | os.PathLike,
    out: str | os.PathLike | None,
    config: DetectorTrainConfig | None = None,
    progress: bool = True,
    command: list[str] | None = None,
) -> tuple[EEDetector, DetectorReport]:
    """Train an :class:`EEDetector` on the train split of the pushing dataset ``data`` and measure it on
    ``config.eval_split``; save it to ``out`` (a folder or NAME.json; None: do not save)."""
    from tqdm.auto import tqdm

    from imagine_ros.models.frames import frames_to_tensor
    from imagine_ros.predictor import resolve_device
    from imagine_ros.sim.storage import EpisodeStore

    cfg = config or DetectorTrainConfig()
    store = EpisodeStore(data)
    h, w, _ = store.image_shape
    mcfg = (
        cfg.model
        if tuple(cfg.model.image_size) == (h, w)
        else DetectorConfig(**{**asdict(cfg.model), "image_size": (h, w)})
    )
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    frames, uv = load_labelled_frames(store, "train", cfg.max_episodes)
    eval_frames, eval_uv = load_labelled_frames(store, cfg.eval_split)
    model = EEDetector(mcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    frames_t = torch.from_numpy(frames)
    uv_t = torch.from_numpy(uv)
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(range(cfg.steps), desc="train-detector", disable=not progress)
    order = torch.randperm(len(frames), generator=gen)
    pos = 0
    for _ in bar:
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(len(frames), generator=gen), 0
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        x = frames_to_tensor(frames_t[idx]).to(device)
        if cfg.augment:
            x = augment(x, gen)
        target = uv_t[idx].to(device)
        pred, logits = model(x)
        loss, parts = detector_loss(pred, logits, target, model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(l1_px=f"{parts['l1_px']:.2f}")
    seconds = time.perf_counter() - t0
    model.eval()
    sub = np.random.default_rng(cfg.seed).choice(len(frames), min(len(frames), 1000), replace=False)
    report = DetectorReport(
        path=None,
        train_error=pixel_errors(model, frames[sub], uv[sub]),
        eval_error=pixel_errors(model, eval_frames, eval_uv),
        baseline_error=error_summary(np.linalg.norm(eval_uv - uv.mean(0), axis=-1)),
        eval_split=cfg.eval_split,
        steps=cfg.steps,
        seconds=seconds,
    )
    if out is not None:
        train_settings = {k: v for k, v in asdict(cfg).items() if k != "model"}
        report.path = save_detector(
            out,
            model,
            extra={
                "data": {"root": str(store.root), "image_size": [h, w], "train_frames": int(len(frames))},
                "training": {**train_settings, "seconds": round(seconds, 1), "device": str(device)},
                "train_error": report.train_error,
                "eval_split": cfg.eval_split,
                "eval_error": report.eval_error,
                "baseline_error": report.baseline_error,
                "command": command,
            },
        )
    return model, report
