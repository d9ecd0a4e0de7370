"""One training loop for every method.

Each method supplies a :class:`~imagine_ros.training.steps.TrainStep` (its optimizers, which of them to update at a
step, the loss of each); this loop does the rest: device selection, ``torchrun``/DistributedDataParallel, mixed
precision on CUDA, gradient clipping, seeding, resumable checkpoints, TensorBoard scalars, validation (PSNR@N,
SSIM@N, diversity) with sample GIFs, and a progress bar.

A run folder::

    RUN/config.json                the run's settings (a resume must match them)
    RUN/checkpoints/latest         name of the newest complete checkpoint folder (replaced atomically)
    RUN/checkpoints/step_000500/   model.safetensors + model.json (a loadable model checkpoint) and
                                   train.safetensors + train.json (optimizers, scaler, RNG, data position)
    RUN/model.safetensors|json     the final model (also written at every checkpoint: the newest model)
    RUN/metrics.jsonl              validation results, one JSON object per line
    RUN/samples/step_000500.gif    sampled futures on fixed validation clips (rows: clips; columns: truth, samples)
    RUN/tb/                        TensorBoard event files

Resume (``--resume``) after a kill -9 continues from the newest checkpoint with the same step count, optimizer
state, RNG state and data order: with the same device and settings the weights equal those of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from imagine_ros.constants import CONDITION, EE, X0
from imagine_ros.errors import ConfigError
from imagine_ros.models import build
from imagine_ros.models.checkpoint import save_checkpoint
from imagine_ros.models.conditioning import ConditionNormalizer
from imagine_ros.models.frames import tensor_to_frames
from imagine_ros.training.clips import CLIP_KEYS, ClipDataset, fixed_clips
from imagine_ros.training.config import TrainConfig
from imagine_ros.training.metrics import best_of_n
from imagine_ros.training.steps import get_step
from imagine_ros.training.train_state import load_train_state, save_train_state


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutations, split across DDP ranks, that can start in the middle of an epoch.

    Epoch ``e`` uses ``randperm(n, seed + e)``; rank ``r`` of ``w`` takes positions ``r, r + w, ...``, cut to a whole
    number of batches so every rank runs the same number of steps.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.batches_per_epoch = (n // world) // batch_size
        if self.batches_per_epoch < 1:
            raise ConfigError(
                f"the training split has {n} clips: too few for batch size {batch_size} on {world} process(es)"
            )
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.start_batch = epoch, batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g)[self.rank :: self.world]
        order = order[: self.batches_per_epoch * self.batch_size]
        return iter(order[self.start_batch * self.batch_size :].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available; under torchrun each process takes ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def load_init(model: nn.Module, init: str | os.PathLike) -> None:
    """Copy the weights of checkpoint ``init`` (a ``NAME.json``/``NAME`` or a run folder, whose ``model.json`` is
    used) into ``model``; the checkpoint's method and config must equal the model's."""
    from imagine_ros.models.checkpoint import load_checkpoint

    path = Path(init)
    if path.is_dir():
        path = path / "model.json"
    ckpt = load_checkpoint(path)
    if ckpt.model.name != model.name:
        raise ConfigError(f"--init {init} holds a {ckpt.model.name} model, not {model.name}")
    if ckpt.model.config != model.config:
        old, new = ckpt.model.config.to_dict(), model.config.to_dict()
        changed = [k for k in sorted(new) if old.get(k) != new.get(k)]
        widened = [k for k in changed if k in WIDENING_FIELDS and not old.get(k) and new.get(k)]
        widened += [k for k in changed if k in WIDTH_FIELDS and _wider(old.get(k), new.get(k))]
        structural = [k for k in changed if not _loss_only_field(k) and k not in widened]
        if structural:
            diffs = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} here" for k in structural]
            raise ConfigError(
                f"--init {init} has another model config ({'; '.join(diffs[:3])}); use the same --config/--set "
                f"(only loss weights may differ, {', '.join(WIDENING_FIELDS)} may be switched on and "
                f"{', '.join(WIDTH_FIELDS)} may grow)"
            )
        print(f"note: --init {init}: training with other settings ({', '.join(changed)})", file=sys.stderr)
    layouts = [m.channel_layout() if hasattr(m, "channel_layout") else None for m in (ckpt.model, model)]
    model.load_state_dict(widen_state(ckpt.model.state_dict(), model.state_dict(), *layouts))


#: Config switches that only append input channels to some layers, or add modules that start as the identity:
#: ``--init`` from a checkpoint without them copies its weights, gives new inputs zero weights and new modules the
#: fresh model's initialisation, so training starts from exactly the checkpoint's function.
WIDENING_FIELDS = ("condition_maps", "out_fusion")
#: Width lists that may grow entry by entry (same length, each at least the old): the model's ``channel_layout``
#: says where the old channels go; new channels start with zero weight into the layers they feed.
WIDTH_FIELDS = ("gen_channels",)


def _wider(old: Any, new: Any) -> bool:
    return (
        isinstance(old, (list, tuple))
        and isinstance(new, (list, tuple))
        and len(old) == len(new)
        and all(n >= o for o, n in zip(old, new))
    )


def widen_state(
    old: dict[str, torch.Tensor],
    new: dict[str, torch.Tensor],
    old_layout: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
    new_layout: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
) -> dict[str, torch.Tensor]:
    """``old`` fitted to the shapes of ``new``, so that the model computes what the old one did.

    Without layouts: a weight whose input dimension (dim 1) grew keeps its old slice ``[:, :c_old]`` and gets zeros
    for the new inputs; an entry that ``old`` lacks (a module a widening switch adds) is taken from ``new``.
    With layouts (``Method.channel_layout()`` of the old and the new model: module path -> output and input channel
    segments), a layer whose segments grew keeps each old segment at the start of its new one: new output channels
    (and their normalisation entries) keep ``new``'s initialisation, new input channels get zero weights, so they
    change nothing until training moves them. Every other shape must match (load_state_dict reports it)."""
    out = dict(old)
    for key, target in new.items():
        have = old.get(key)
        if have is None:
            out[key] = target
            continue
        if have.shape == target.shape:
            continue
        module = key.rsplit(".", 1)[0]
        for prefix in (module, module.rsplit(".", 1)[0]):  # a TimeBlock's conv and norm share the block's layout
            if old_layout and new_layout and prefix in old_layout and prefix in new_layout:
                out[key] = _widen_segments(have, target, old_layout[prefix], new_layout[prefix])
                break
        else:
            if have.dim() >= 2 and have.shape[0] == target.shape[0] and have.shape[2:] == target.shape[2:]:
                if have.shape[1] < target.shape[1]:
                    grown = torch.zeros_like(target)
                    grown[:, : have.shape[1]] = have
                    out[key] = grown
    return out


def _segment_index(old: tuple[int, ...], new: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where old channels go among new ones (segment by segment, each at its segment's start) and which new
    channels are new: (old_count,) indices, (new_count,) bool."""
    if len(old) != len(new) or any(o > n for o, n in zip(old, new)):
        raise ConfigError(f"cannot widen channel segments {old} to {new}")
    index, fresh, start = [], torch.ones(sum(new), dtype=torch.bool), 0
    for o, n in zip(old, new):
        index.extend(range(start, start + o))
        fresh[start : start + o] = False
        start += n
    return torch.tensor(index, dtype=torch.long), fresh


def _widen_segments(have: torch.Tensor, target: torch.Tensor, old_seg: tuple, new_seg: tuple) -> torch.Tensor:
    out_index, _ = _segment_index(old_seg[0], new_seg[0])
    grown = target.clone()
    if have.dim() >= 2:
        in_index, in_fresh = _segment_index(old_seg[1], new_seg[1])
        grown[:, in_fresh] = 0
        grown[out_index[:, None], in_index[None, :]] = have
    else:  # bias and normalisation entries of the outputs
        grown[out_index] = have
    return grown


def _loss_only_field(name: str) -> bool:
    """Config fields that change the training loss, not the model: fine-tuning may change them (``--init``)."""
    return name.endswith(("_weight", "_boost")) or name in (
        "flow_supervision",
        "loss_steps",
        "mask_temperature",
        "gt_flow_loss",
    )


class Trainer:
    """Runs a :class:`TrainConfig` (see module docstring). ``Trainer(cfg).fit()``."""

    def __init__(self, cfg: TrainConfig, command: list[str] | None = None, resume: bool = False):
        self.cfg = cfg
        self.command = command if command is not None else sys.argv
        self.resume = resume
        self.out = Path(cfg.out)
        self.device = _resolve_device(cfg.device)
        self.dist = _init_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    # ------------------------------------------------------------------------------------------------------ setup
    def _check_run_folder(self) -> None:
        cfg_path = self.out / "config.json"
        if self.resume:
            if not cfg_path.exists():
                raise ConfigError(f"--resume: {self.out} holds no run (no config.json); start it without --resume")
            old = json.loads(cfg_path.read_text())
            new = self.cfg.to_dict()
            diffs = [
                k
                for k in sorted(set(old) | set(new))
                if k not in TrainConfig.RESUMABLE_CHANGES and old.get(k) != new.get(k)
            ]
            if diffs:
                k = diffs[0]
                raise ConfigError(
                    f"--resume: setting {k!r} differs from the run in {self.out} "
                    f"({old.get(k)!r} there, {new.get(k)!r} now)"
                )
        elif cfg_path.exists():
            raise ConfigError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")

    def _build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts them)
        model = build(cfg.method, cfg.preset, **cfg.overrides)
        if cfg.init:
            load_init(model, cfg.init)
        self.model = model.to(self.device)
        mc = model.config
        self.train_set = ClipDataset(
            cfg.data,
            "train",
            horizon=mc.horizon,
            stride=cfg.stride,
            image_size=mc.image_size,
            keys=CLIP_KEYS + tuple(model.extra_clip_keys),
        )
        self.normalizer = ConditionNormalizer.fit(self.train_set.store)
        self.train_set.normalizer = self.normalizer
        if model.condition_kind == "eta" and mc.condition_dim != self.normalizer.dim:
            raise ConfigError(
                f"{cfg.method} expects a condition of size {mc.condition_dim}, the data gives {self.normalizer.dim}"
            )
        splits = self.train_set.store.meta["splits"]
        val_split = "val" if splits.get("val") else "train"  # a dataset without a val split validates on train
        if val_split != "val" and self.dist.main:
            print(f"note: {cfg.data} has no validation split; validating on training clips", file=sys.stderr)
        val = ClipDataset(
            cfg.data,
            val_split,
            horizon=mc.horizon,
            stride=mc.horizon,
            image_size=mc.image_size,
            normalizer=self.normalizer,
        )
        self.val_clips = fixed_clips(val, min(cfg.val_clips, len(val)), seed=cfg.seed) if cfg.val_clips else []
        self.sampler = ResumableSampler(len(self.train_set), cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world)
        self.step_impl = get_step(cfg.method)(model, cfg)
        self.optimizers = self.step_impl.optimizers()
        self.grad_clip = self.step_impl.default_grad_clip if cfg.grad_clip is None else cfg.grad_clip
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped: nn.Module = DDP(model, device_ids=ids, find_unused_parameters=True)
        else:
            self.wrapped = model
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)  # bfloat16 autocast needs no loss scaling

    def _loader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            num_workers=self.cfg.num_workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            generator=torch.Generator().manual_seed(self.cfg.seed),  # keeps the global RNG out of the loader
        )

    # ---------------------------------------------------------------------------------------------- checkpoints
    def _data_config(self) -> dict[str, Any]:
        return {**self.train_set.describe(), "dataset": str(self.cfg.data)}

    def _save(self, step: int, epoch: int, batch: int) -> None:
        if not self.dist.main:
            return
        ckpt_root = self.out / "checkpoints"
        name = f"step_{step:06d}"
        folder = ckpt_root / name
        tmp = ckpt_root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        common = dict(step=step, normalizer=self.normalizer.to_dict(), data=self._data_config(), command=self.command)
        save_checkpoint(tmp / "model", self.model, **common)
        save_train_state(tmp / "train", self.optimizers, self.scaler, step=step, epoch=epoch, batch=batch)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        latest = ckpt_root / "latest"
        tmp_latest = ckpt_root / ".latest.tmp"
        tmp_latest.write_text(name + "\n")
        os.replace(tmp_latest, latest)
        save_checkpoint(self.out / "model", self.model, **common)
        olds = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
        for p in olds[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(p, ignore_errors=True)

    def _restore(self) -> tuple[int, int, int]:
        """Load the newest checkpoint into model/optimizers/scaler/RNG; return (step, epoch, batch)."""
        from imagine_ros.models.checkpoint import load_checkpoint

        latest = self.out / "checkpoints" / "latest"
        if not latest.exists():
            return 0, 0, 0  # killed before its first checkpoint: start over
        folder = self.out / "checkpoints" / latest.read_text().strip()
        ckpt = load_checkpoint(folder / "model", device=self.device)
        self.model.load_state_dict(ckpt.model.state_dict())
        state = load_train_state(folder / "train", self.optimizers, self.scaler, device=self.device)
        return state["step"], state["epoch"], state["batch"]

    # -------------------------------------------------------------------------------------------------- validate
    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        if not self.val_clips:
            return {}
        was_training = model.training
        model.eval()
        g = torch.Generator().manual_seed(cfg.seed + 1)
        results: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": [], "diversity": []}
        samples_for_gif = []
        for i in range(0, len(self.val_clips), 8):
            chunk = self.val_clips[i : i + 8]
            x0 = torch.stack([c["x0"] for c in chunk]).to(self.device)
            future = torch.stack([c["future"] for c in chunk]).to(self.device)
            cond = model.batch_condition(
                {k: torch.stack([c[k] for c in chunk]).to(self.device) for k in (X0, EE, CONDITION)}
            )
            out = model.sample(x0, cond, cfg.val_samples, generator=g)
            m = best_of_n(out.frames, future)
            for k in results:
                results[k].append(m[k].cpu())
            if len(samples_for_gif) < cfg.gif_clips:
                samples_for_gif.append((x0.cpu(), future.cpu(), out.frames.cpu()))
        metrics = {
            f"val/{k}@{cfg.val_samples}" if k != "diversity" else "val/diversity": float(torch.cat(v).mean())
            for k, v in results.items()
        }
        if samples_for_gif:
            self._write_gif(step, samples_for_gif)
        if was_training:
            model.train()
        return metrics

    def _write_gif(self, step: int, chunks) -> None:
        from imagine_ros.viz import video_grid, write_gif

        x0 = torch.cat([c[0] for c in chunks])[: self.cfg.gif_clips]
        future = torch.cat([c[1] for c in chunks])[: self.cfg.gif_clips]
        samples = torch.cat([c[2] for c in chunks])[: self.cfg.gif_clips, :4]
        truth = torch.cat([x0[:, None], future], 1)[:, None]  # (B, 1, T+1, 3, H, W)
        pred = torch.cat([x0[:, None, None].expand(-1, samples.shape[1], 1, -1, -1, -1), samples], 2)
        grid = video_grid(tensor_to_frames(torch.cat([truth, pred], 1)))
        write_gif(self.out / "samples" / f"step_{step:06d}.gif", grid, fps=4, scale=2)
        if self.tb is not None:
            strip = np.concatenate(list(grid), axis=1)  # time along x
            self.tb.add_image("samples", strip, step, dataformats="HWC")

    # ------------------------------------------------------------------------------------------------------- fit
    def fit(self) -> dict[str, float]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        if self.dist.main:
            self._check_run_folder()
        self._build()
        start, epoch, batch_in_epoch = self._restore() if self.resume else (0, 0, 0)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
        self.tb = None
        if self.dist.main:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tb"), purge_step=start if start else None)
        last_metrics: dict[str, float] = {}
        bar = tqdm(
            total=cfg.steps,
            initial=start,
            desc=f"train {cfg.method}",
            disable=not (cfg.progress and self.dist.main),
            dynamic_ncols=True,
        )
        self.model.train()
        step = start
        t_last, steps_last = time.perf_counter(), step
        try:
            while step < cfg.steps:
                self.sampler.set_position(epoch, batch_in_epoch)
                for batch in self._loader():
                    batch = _to(batch, self.device)
                    logs = self._train_step(batch, step)
                    step += 1
                    batch_in_epoch += 1
                    if batch_in_epoch >= self.sampler.batches_per_epoch:
                        epoch, batch_in_epoch = epoch + 1, 0
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        now = time.perf_counter()
                        logs["steps_per_s"] = (step - steps_last) / max(now - t_last, 1e-9)
                        t_last, steps_last = now, step
                        bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()}, refresh=False)
                        if self.tb is not None:
                            for k, v in logs.items():
                                self.tb.add_scalar(f"train/{k}", v, step)
                    if step % cfg.ckpt_every == 0 or step == cfg.steps:
                        self._save(step, epoch, batch_in_epoch)
                        self._barrier()
                    if (step % cfg.val_every == 0 or step == cfg.steps) and self.dist.main:
                        last_metrics = self.validate(step)
                        self._log_metrics(step, last_metrics)
                    if step >= cfg.steps:
                        break
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.close()
        return last_metrics

    def _barrier(self) -> None:
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def _train_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        logs: dict[str, float] = {}
        factor = self.cfg.lr_factor(step)
        for phase in self.step_impl.phases(step):
            opt = self.optimizers[phase]
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                loss, phase_logs = self.step_impl.loss(phase, batch, self.wrapped, step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite {phase} loss at step {step}: {loss.item()}")
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip or math.inf)  # also measures the norm
            logs[f"grad_norm/{phase}"] = float(norm)
            self.scaler.step(opt)
            self.scaler.update()
            logs.update(phase_logs)
        if self.cfg.lr_schedule != "constant":
            logs["lr_factor"] = factor
        self.step_impl.after_step(batch)
        return {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(float(v))}


def train(cfg: TrainConfig, resume: bool = False, command: list[str] | None = None) -> dict[str, float]:
    """Run a training job; returns the final validation metrics."""
    return Trainer(cfg, command=command, resume=resume).fit()
