"""A small optical-flow network trained on the simulator's ground-truth flows: a learned replacement for OpenCV DIS.

Methods without native flows (Visual Dynamics, ImaGINator, cINN) get flows estimated from their frames. OpenCV DIS
(:func:`imagine_ros.flow.dis_flows`) fails at 64 x 64 on small plain objects beside the large textured arm; this
network learns the task from pairs (frame ``s``, frame ``s + t``, true forward flow ``s -> s + t``) of a dataset
recorded with ground truth (:meth:`imagine_ros.training.clips.ClipDataset.flow_pair`).

Convention (the same as :func:`~imagine_ros.flow.dis_flows`): the forward flow of pixel ``p`` of the first image is the
displacement ``(dx, dy)`` in pixels (x right, y down) to where that surface point is in the second image, so
``second(p + flow(p)) ≈ first(p)``. :meth:`FlowNet.estimate` has ``dis_flows``'s signature and can stand in for it
anywhere (:class:`imagine_ros.predictor.Predictor` ``flow_net``, :class:`imagine_ros.planning.runner.ReflowPredictor`);
predictions with its flows carry ``flow_source == "flownet"``. The network and its files import no training code (a
:class:`~imagine_ros.predictor.Predictor` loads one without the dataset code or the simulator); the training part
(:class:`FlowPairs`, :func:`validate_flownet`, :func:`train_flownet`) imports :mod:`imagine_ros.training` when called.

Files: ``NAME.json`` (format, config, ``meta``: training command, data, steps, validation figures) and
``NAME.safetensors`` (weights); never pickle (:func:`save_flownet`, :func:`load_flownet`).

A training run folder (:func:`train_flownet`, ``imagine-ros flownet``)::

    OUT/run.json                    the run's settings (a resume must match them; only the steps may grow)
    OUT/checkpoints/step_000250/    flownet.json|.safetensors + train.json|.safetensors (optimizer, RNG, step); the
                                    newest complete one only (written beside it, then renamed into place)
    OUT/tb/                         TensorBoard scalars (train/..., val/...)
    OUT/flownet.json|.safetensors   the final network, with its validation figures in the JSON's ``meta``

The pairs of step ``k`` are drawn from ``(seed, k)`` alone, so a resumed run (killed or finished and asked for more
steps) sees the data an uninterrupted run would, and on the same device reaches the same weights.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset

from imagine_ros.constants import X0
from imagine_ros.errors import ConfigError
from imagine_ros.models.base import check_int, check_ints, check_number
from imagine_ros.models.checkpoint import (
    CheckpointError,
    atomic_write,
    checkpoint_paths,
    read_verified_weights,
    sha256_file,
    state_tensors,
)
from imagine_ros.models.frames import frames_to_tensor, tensor_to_frames

FORMAT_NAME = "imagine_ros.flownet"
FORMAT_VERSION = 1
#: A pixel "moves" when its true flow is at least this long (pixels): the loss weights it more, validation reports it.
MOVING_PX = 0.5
#: Loss weight of a moving pixel relative to a static one.
MOVING_WEIGHT = 10.0
CHECKPOINTS = "checkpoints"


# ------------------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class FlowNetConfig:
    """Size of a :class:`FlowNet`; the defaults are the ``small`` preset.

    image_size: side of the square images it takes (pixels); must be divisible by ``2 ** len(channels)``.
    channels: feature channels of the encoder levels, each at half the resolution of the one before.
    flow_scale: pixels per unit of the output head (the head works in O(1) units; flows of several pixels are common).
    """

    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 96)
    flow_scale: float = 8.0

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"image_size": 16, "channels": (8, 16), "flow_scale": 2.0},
        "small": {},
    }

    def __post_init__(self) -> None:
        check_int("image_size", self.image_size)
        check_ints("channels", self.channels)
        check_number("flow_scale", self.flow_scale, positive=True)
        halvings = 2 ** len(self.channels)
        if self.image_size % halvings:
            raise ConfigError(
                f"image_size {self.image_size} must be divisible by 2 ** len(channels) = {halvings} (each of the "
                f"{len(self.channels)} encoder levels halves it)"
            )

    @classmethod
    def preset(cls, name: str) -> FlowNetConfig:
        if name not in cls.presets:
            raise ConfigError(f"unknown flow network preset {name!r}; expected one of {', '.join(cls.presets)}")
        return cls(**cls.presets[name])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowNetConfig:
        """Rebuild from :meth:`to_dict`; unknown keys are a mismatch, not something to ignore."""
        if not isinstance(d, dict):
            raise ConfigError(f"a flow network config must be a JSON object, got {d!r}")
        unknown = sorted(set(d) - {"image_size", "channels", "flow_scale"})
        if unknown:
            raise ConfigError(f"FlowNetConfig has no field(s) {', '.join(map(repr, unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ----------------------------------------------------------------------------------------------------------- network
class FlowNet(nn.Module):
    """A small U-Net that estimates the forward flow between two images (module docstring for the convention).

    Input: both images and their difference (9 channels). Encoder: per level a stride-2 3x3 convolution and a 3x3
    convolution (LeakyReLU). Decoder: bilinear upsampling, concatenation with the encoder level of that size and a 3x3
    convolution, back to half resolution, where a 3x3 head (initialised small, so initial flows are well under a
    pixel, and scaled by ``flow_scale``) gives the flow, upsampled bilinearly to full resolution. Channels-last
    layout (faster CPU convolutions).

    ``meta``: the ``meta`` of the file it was loaded from (training command, data, validation figures), else {}.
    """

    def __init__(self, config: FlowNetConfig | None = None):
        super().__init__()
        config = FlowNetConfig() if config is None else config
        if not isinstance(config, FlowNetConfig):
            raise ConfigError(f"FlowNet needs a FlowNetConfig, got {type(config).__name__}")
        self.config = config
        self.meta: dict[str, Any] = {}
        chans = config.channels

        def act() -> nn.Module:
            return nn.LeakyReLU(0.1)

        self.down = nn.ModuleList()
        prev = 9
        for c in chans:
            self.down.append(nn.Sequential(nn.Conv2d(prev, c, 3, 2, 1), act(), nn.Conv2d(c, c, 3, 1, 1), act()))
            prev = c
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(deep + skip, skip, 3, 1, 1), act())
            for deep, skip in zip(chans[:0:-1], chans[-2::-1])
        )
        self.head = nn.Conv2d(chans[0], 2, 3, 1, 1)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
        self.to(memory_format=torch.channels_last)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """x0, x1: (N, 3, S, S) images in [-1, 1], S = ``config.image_size`` -> (N, 2, S, S) float forward flow
        x0 -> x1 in pixels, channels (dx, dy)."""
        s = self.config.image_size
        if x0.ndim != 4 or tuple(x0.shape[1:]) != (3, s, s) or x1.shape != x0.shape:
            raise ValueError(f"x0 and x1 must both be (N, 3, {s}, {s}), got {tuple(x0.shape)} and {tuple(x1.shape)}")
        h = torch.cat([x0, x1, x1 - x0], 1).contiguous(memory_format=torch.channels_last)
        skips = []
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        for layer, skip in zip(self.up, reversed(skips[:-1])):
            h = layer(
                torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)
            )
        flow = self.head(h) * self.config.flow_scale
        return F.interpolate(flow, size=(s, s), mode="bilinear", align_corners=False)

    def estimate(self, x0: np.ndarray, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Forward flows from one image to each of several frames, exactly as :func:`imagine_ros.flow.dis_flows`.

        x0: (S, S, 3) uint8 RGB; frames: (..., S, S, 3) uint8 RGB, S = ``config.image_size`` -> (..., S, S, 2) float32
        pixels, where ``frames[i](p + flow[i](p)) ≈ x0(p)``. Runs on the network's device in chunks of ``batch_size``
        pairs; raises ``ValueError`` naming the expected shapes.
        """
        x0, frames = np.asarray(x0), np.asarray(frames)
        s = self.config.image_size
        if (
            x0.shape != (s, s, 3)
            or frames.ndim < 3
            or frames.shape[-3:] != (s, s, 3)
            or x0.dtype != np.uint8
            or frames.dtype != np.uint8
        ):
            raise ValueError(
                f"x0 must be ({s}, {s}, 3) uint8 and frames (..., {s}, {s}, 3) uint8 (this flow network's image_size "
                f"is {s}), got {x0.shape} {x0.dtype} and {frames.shape} {frames.dtype}"
            )
        device = next(self.parameters()).device
        first = frames_to_tensor(x0).to(device)[None]
        flat = frames.reshape(-1, s, s, 3)
        out = np.empty((len(flat), s, s, 2), np.float32)
        with torch.inference_mode():
            for lo in range(0, len(flat), batch_size):
                second = frames_to_tensor(flat[lo : lo + batch_size]).to(device)
                flow = self(first.expand(len(second), -1, -1, -1), second)
                out[lo : lo + len(second)] = flow.float().permute(0, 2, 3, 1).cpu().numpy()
        return out.reshape(*frames.shape[:-1], 2)


# ------------------------------------------------------------------------------------------------------------- files
def save_flownet(net: FlowNet, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``net`` as ``NAME.safetensors`` + ``NAME.json`` (``path`` = NAME, NAME.json or NAME.safetensors; both
    files atomically, the JSON last). ``meta`` (JSON-safe: training command, data, steps, validation figures) is stored
    under the JSON's ``"meta"``. Returns (weights, json)."""
    weights, meta_path = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(weights, lambda tmp: save_file(state_tensors(net), str(tmp), metadata={"format": FORMAT_NAME}))
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": net.config.to_dict(),
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        "meta": meta or {},
    }
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8"))
    return weights, meta_path


def load_flownet(path: str | os.PathLike, device: str | torch.device = "cpu") -> FlowNet:
    """The :class:`FlowNet` saved at ``path`` (NAME, NAME.json or NAME.safetensors) on ``device``, in eval mode, with
    the file's ``meta``. A missing, damaged, foreign or mismatched file raises :class:`CheckpointError` saying which."""
    weights, meta_path = checkpoint_paths(path)
    if not meta_path.exists():
        raise CheckpointError(
            f"no flow network at {path}: {meta_path} does not exist (train one with imagine-ros flownet)"
        )
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path} is not valid JSON ({e}); the flow network file is damaged") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise CheckpointError(
            f"{meta_path} is not a flow network (format {found!r}, expected {FORMAT_NAME!r}; train one with "
            "imagine-ros flownet)"
        )
    if doc.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} has flow network version {doc.get('version')}; expected {FORMAT_VERSION}")
    try:
        config = FlowNetConfig.from_dict(doc.get("config"))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"flow network {meta_path} does not fit this imagine_ros: {e}") from None
    weights, state = read_verified_weights(meta_path, doc, weights)
    net = FlowNet(config)
    own = net.state_dict()
    mismatched = sorted(set(own) ^ set(state)) + sorted(
        k for k in set(own) & set(state) if own[k].shape != state[k].shape
    )
    if mismatched:
        raise CheckpointError(
            f"weights in {weights.name} do not match the config in {meta_path.name} ({', '.join(mismatched[:3])}"
            f"{' ...' if len(mismatched) > 3 else ''})"
        )
    net.load_state_dict(state, strict=True)
    net.meta = dict(doc.get("meta") or {})
    return net.to(device).eval()


# ----------------------------------------------------------------------------------------------------------- training
def flow_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean end-point error (Euclidean length of the flow difference, pixels) of (N, 2, H, W) flows, each pixel whose
    true flow is at least :data:`MOVING_PX` long weighted :data:`MOVING_WEIGHT` times -> (loss, logs: loss, mean EPE
    over all pixels and over the moving ones)."""
    epe = (pred - target).square().sum(1).add(1e-6).sqrt()  # the small term keeps the gradient finite at zero error
    moving = target.square().sum(1) >= MOVING_PX**2
    weight = 1.0 + (MOVING_WEIGHT - 1.0) * moving.to(epe.dtype)
    loss = (weight * epe).sum() / weight.sum()
    logs = {"loss": loss.item(), "epe": epe.detach().mean().item()}
    if moving.any():
        logs["epe_moving"] = epe.detach()[moving].mean().item()
    return loss, logs


class FlowPairs(Dataset):
    """The (frame s, frame s + t, true flow) pairs of a dataset split: item ``(i, t)`` is
    :meth:`ClipDataset.flow_pair` ``(i, t)`` of every window of ``horizon + 1`` frames (stride 1), resized to
    ``image_size`` (flows in that size's pixels)."""

    def __init__(self, data: str | os.PathLike, split: str, horizon: int, image_size: int):
        from imagine_ros.training.clips import GT_FLOW, ClipDataset  # training only: kept off the inference imports

        # a ground-truth key: a dataset without ground truth is refused here, saying what it lacks
        self.clips = ClipDataset(data, split, horizon=horizon, image_size=image_size, keys=(X0, GT_FLOW), eta="reached")
        self.horizon = self.clips.horizon

    def __len__(self) -> int:
        return len(self.clips) * self.horizon

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        return self.clips.flow_pair(*item)

    def draw(self, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """``n`` items ``(window, t)`` chosen uniformly by ``rng``: distinct while there are enough, else repeated."""
        flat = rng.choice(len(self), size=n, replace=n > len(self))
        return [(int(k) // self.horizon, int(k) % self.horizon + 1) for k in flat]


def validate_flownet(
    net: FlowNet,
    data: str | os.PathLike,
    split: str = "val",
    pairs: int = 256,
    horizon: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean end-point error (pixels) of the network, of OpenCV DIS and of zero flow on the same ``pairs`` pairs of a
    split (chosen by ``seed``, distinct while there are enough), both images as uint8 at the network's size.

    Over every visible pixel of the first image ("all") and over the visible pixels whose true flow is at least
    :data:`MOVING_PX` long ("moving"). Returns {"split", "pairs", "moving_px", "pixels", "moving_pixels", "epe":
    {"net" | "dis" | "zero": {"all": px, "moving": px}}} (JSON-safe; None where there was no such pixel).
    """
    from imagine_ros.flow import dis_flows
    from imagine_ros.training.clips import GT_FLOW, PAIR_FRAME, VISIBLE

    ds = FlowPairs(data, split, horizon, net.config.image_size)
    items = ds.draw(min(int(pairs), len(ds)), np.random.default_rng([int(seed), 0x7A1]))
    estimators = {"net": net.estimate, "dis": dis_flows}
    sums = {name: np.zeros(2) for name in [*estimators, "zero"]}
    counts = np.zeros(2, np.int64)
    for item in items:
        pair = ds[item]
        x0, x1 = tensor_to_frames(pair[X0]), tensor_to_frames(pair[PAIR_FRAME])
        truth = pair[GT_FLOW].permute(1, 2, 0).numpy()
        visible = pair[VISIBLE].numpy() > 0.5
        moving = visible & (np.linalg.norm(truth, axis=-1) >= MOVING_PX)
        counts += (int(visible.sum()), int(moving.sum()))
        flows = {name: est(x0, x1[None])[0] for name, est in estimators.items()}
        for name, flow in {**flows, "zero": np.zeros_like(truth)}.items():
            epe = np.linalg.norm(flow - truth, axis=-1)
            sums[name] += (float(epe[visible].sum()), float(epe[moving].sum()))

    def mean(total: float, count: int) -> float | None:
        return total / count if count else None  # None (JSON null): no such pixel among the pairs

    return {
        "split": split,
        "pairs": len(items),
        "moving_px": MOVING_PX,
        "pixels": int(counts[0]),
        "moving_pixels": int(counts[1]),
        "epe": {name: {"all": mean(s[0], counts[0]), "moving": mean(s[1], counts[1])} for name, s in sums.items()},
    }


def validation_table(validation: dict[str, Any]) -> str:
    """A Markdown table of :func:`validate_flownet`'s figures (EPE in pixels; "-" where there was no such pixel)."""
    labels = {"net": "flow network", "dis": "OpenCV DIS", "zero": "zero flow"}

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    rows = [
        f"| flows ({validation['split']} split, {validation['pairs']} pairs) | EPE, visible px | "
        f"EPE, moving px (true flow >= {validation['moving_px']} px) |",
        "|---|---|---|",
    ]
    for name, epe in validation["epe"].items():
        rows.append(f"| {labels.get(name, name)} | {cell(epe['all'])} | {cell(epe['moving'])} |")
    share = validation["moving_pixels"] / max(validation["pixels"], 1)
    rows.append(f"\n{validation['pixels']} visible pixels, {share:.1%} of them moving")
    return "\n".join(rows)


def _latest_checkpoint(out: Path) -> Path | None:
    done = [p for p in (out / CHECKPOINTS).glob("step_*") if p.is_dir()]
    return max(done, key=lambda p: int(p.name.split("_")[1])) if done else None


def _save_checkpoint(out: Path, net: FlowNet, opt: torch.optim.Optimizer, step: int, meta: dict[str, Any]) -> None:
    from imagine_ros.training.train_state import save_train_state

    root = out / CHECKPOINTS
    name = f"step_{step:06d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_flownet(net, tmp / "flownet", {**meta, "step": step})
    # the data of a step is a function of (seed, step): no data position to store (epoch, batch 0)
    save_train_state(tmp / "train", {"flownet": opt}, _no_scaler(), step=step, epoch=0, batch=0)
    shutil.rmtree(root / name, ignore_errors=True)
    os.replace(tmp, root / name)
    for old in root.glob("step_*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _no_scaler() -> torch.amp.GradScaler:
    """The (disabled) loss scaler the training state stores: full-precision training needs no loss scaling."""
    return torch.amp.GradScaler("cuda", enabled=False)


def train_flownet(
    data: str | os.PathLike,
    out: str | os.PathLike,
    steps: int,
    *,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    config: str | FlowNetConfig = "small",
    horizon: int = 10,
    val_pairs: int = 256,
    num_workers: int = 1,
    log_every: int = 25,
    ckpt_every: int = 250,
    device: str | torch.device | None = "auto",
    progress: bool = True,
    resume: bool = False,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train a :class:`FlowNet` on the ground-truth flows of ``data``'s train split into ``out`` (module docstring).

    Each step draws ``batch_size`` pairs (window of ``horizon + 1`` frames, t uniform in 1..horizon) from ``(seed,
    step)``, loads them with a DataLoader of ``num_workers`` worker processes and takes an Adam step (``lr``) on
    :func:`flow_loss`. TensorBoard scalars every ``log_every`` steps, a checkpoint every ``ckpt_every`` steps and at
    the end; ``resume`` continues the run in ``out`` from its newest checkpoint (its settings must match; ``steps`` may
    grow). At the end :func:`validate_flownet` on ``val_pairs`` pairs of the val split (0: none) and the network
    with those figures in ``out/flownet.json``. ``config``: a preset name ("tiny", "small") or a FlowNetConfig;
    ``command``: recorded in the files. Returns {"step", "validation" (or None), "flownet": path of the JSON}.
    """
    from torch.utils.data import DataLoader
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from imagine_ros.predictor import resolve_device
    from imagine_ros.training.clips import GT_FLOW, PAIR_FRAME
    from imagine_ros.training.train_state import load_train_state

    cfg = FlowNetConfig.preset(config) if isinstance(config, str) else config
    if not isinstance(cfg, FlowNetConfig):
        raise ConfigError(f"config must be a preset name or a FlowNetConfig, got {type(config).__name__}")
    for name, value, least in (
        ("steps", steps, 1),
        ("batch_size", batch_size, 1),
        ("horizon", horizon, 1),
        ("val_pairs", val_pairs, 0),
        ("num_workers", num_workers, 0),
        ("log_every", log_every, 1),
        ("ckpt_every", ckpt_every, 1),
    ):
        check_int(name, value, least)
    check_number("lr", lr, positive=True)
    out, dev = Path(out), resolve_device(device)
    pairs = FlowPairs(data, "train", horizon, cfg.image_size)
    settings = {
        "data": str(Path(data).resolve()),
        "config": cfg.to_dict(),
        "horizon": horizon,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }
    run_file = out / "run.json"
    if resume:
        if not run_file.exists():
            raise ConfigError(f"resume: {out} holds no flow network run (no run.json); start it without --resume")
        old = json.loads(run_file.read_text(encoding="utf-8"))
        for k, v in settings.items():
            if old.get(k) != v:
                raise ConfigError(f"resume: {k} is {v!r} but the run in {out} has {old.get(k)!r}; use the same {k}")
    elif run_file.exists():
        raise ConfigError(
            f"{out} already holds a flow network run; pass --resume to continue it or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")

    torch.manual_seed(seed)
    net = FlowNet(cfg).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start, latest = 0, _latest_checkpoint(out) if resume else None
    if latest is not None:
        net.load_state_dict(load_flownet(latest / "flownet", device=dev).state_dict())
        start = load_train_state(latest / "train", {"flownet": opt}, _no_scaler(), device=dev)["step"]
    if start > steps:
        raise ConfigError(f"the run in {out} is at step {start}; ask for at least {start} steps")
    meta = {
        "command": list(command) if command is not None else None,
        "data": {**pairs.clips.describe(), "dataset": settings["data"]},
        "steps": steps,
        **{k: settings[k] for k in ("batch_size", "lr", "seed")},
    }
    batches = [pairs.draw(batch_size, np.random.default_rng([seed, step])) for step in range(start, steps)]
    loader = DataLoader(pairs, batch_sampler=batches, num_workers=num_workers, pin_memory=dev.type == "cuda")
    tb = SummaryWriter(str(out / "tb"), purge_step=start or None)
    bar = tqdm(total=steps, initial=start, desc="train flownet", disable=not progress, dynamic_ncols=True)
    step = start
    t_last, step_last = time.perf_counter(), step
    validation = None
    try:
        net.train()
        for batch in loader:
            loss, logs = flow_loss(net(batch[X0].to(dev), batch[PAIR_FRAME].to(dev)), batch[GT_FLOW].to(dev))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite flow network loss at step {step}: {loss.item()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == steps:
                now = time.perf_counter()
                logs["steps_per_s"] = (step - step_last) / max(now - t_last, 1e-9)
                t_last, step_last = now, step
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()}, refresh=False)
                for k, v in logs.items():
                    tb.add_scalar(f"train/{k}", v, step)
            if step % ckpt_every == 0 or step == steps:
                _save_checkpoint(out, net, opt, step, meta)
        net.eval()
        if val_pairs:
            validation = validate_flownet(net, data, "val", val_pairs, horizon, seed)
            for name, epe in validation["epe"].items():
                for k, v in epe.items():
                    if v is not None:
                        tb.add_scalar(f"val/epe_{k}/{name}", v, step)
    finally:
        bar.close()
        tb.close()
    meta.update(step=step, validation=validation)
    _, final = save_flownet(net, out / "flownet", meta)
    return {"step": step, "validation": validation, "flownet": str(final)}
