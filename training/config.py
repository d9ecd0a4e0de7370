"""Settings of a training run: :class:`TrainConfig`, light to import (no torch), so that ``imagine-ros train``'s
flags are generated from its fields (name, default and the ``help`` of each field's metadata) without loading the
models. The run folder's ``config.json`` holds the same names; :mod:`imagine_ros.training.trainer` runs it.

Field metadata read by :mod:`imagine_ros.cli._dataclass_flags`: ``help`` (the fields the command line offers; ``data``,
``out``, ``seed``, ``device`` and ``progress`` are the command line's common flags), ``choices``, ``metavar``, and
``flag`` where the flag keeps an older spelling than the field (``--config`` for ``preset``, ``--set`` for
``overrides``, ``--workers`` for ``num_workers``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from imagine_ros.constants import METHOD_NAMES, MODEL_PRESETS
from imagine_ros.errors import ConfigError

LR_SCHEDULES = ("constant", "cosine")


def _help(text: str, **cli: Any) -> dict[str, Any]:
    return {"help": text, **cli}


@dataclass
class TrainConfig:
    """Settings of a training run (``imagine-ros train`` flags of the same names, see each field's help)."""

    method: str = field(metadata=_help("method to train", choices=METHOD_NAMES))
    data: str  # dataset folder
    out: str  # run folder
    preset: str = field(default="small", metadata=_help("model config preset", choices=MODEL_PRESETS, flag="--config"))
    overrides: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "override a model config field, e.g. --set horizon=5 (repeatable)", flag="--set", metavar="KEY=VALUE"
        ),
    )
    steps: int = field(default=2000, metadata=_help("optimizer steps in all"))
    batch_size: int = field(default=16, metadata=_help("clips per step and process"))
    lr: float | None = field(default=None, metadata=_help("learning rate (default: the method's)"))
    betas: tuple[float, float] | None = None  # Adam betas; None: the method's
    weight_decay: float = 0.0
    # "constant", or "cosine": every optimizer's learning rate follows lr * (m + (1 - m) (1 + cos(pi step / steps)) / 2)
    # from its initial value down to m = lr_min_ratio of it at the last step (a function of the step: resumes exactly)
    lr_schedule: str = field(
        default="constant",
        metadata=_help(
            "constant, or cosine: from the learning rate down to --lr-min-ratio of it at the last step",
            choices=LR_SCHEDULES,
        ),
    )
    lr_min_ratio: float = field(
        default=0.05, metadata=_help("cosine: the learning rate at the last step as a fraction of the first")
    )
    grad_clip: float | None = field(
        default=None, metadata=_help("max gradient norm per optimizer, 0 = off (default: the method's)")
    )
    seed: int = 0  # of the weights and of the data order
    device: str = "auto"
    amp: bool = field(default=True, metadata=_help("bfloat16 mixed precision on CUDA (ignored on CPU)"))
    num_workers: int = field(default=2, metadata=_help("DataLoader workers", flag="--workers"))
    stride: int = 1  # between clip windows inside an episode
    log_every: int = field(default=10, metadata=_help("steps between logs"))
    ckpt_every: int = field(default=250, metadata=_help("steps between checkpoints"))
    val_every: int = field(default=500, metadata=_help("steps between validations"))
    val_clips: int = field(default=16, metadata=_help("validation clips"))
    val_samples: int = field(default=8, metadata=_help("N of PSNR@N/SSIM@N"))
    gif_clips: int = 4
    keep_checkpoints: int = 2
    progress: bool = True
    stage: int | None = field(
        default=None, metadata=_help("training stage of a multi-stage method (cinn: 1 VAE-GAN, 2 INN)")
    )
    init: str | None = field(
        default=None,
        metadata=_help(
            "start from the weights of a run folder or checkpoint (cinn --stage 2: the stage-1 run)",
            metavar="RUN_OR_CKPT",
        ),
    )

    def __post_init__(self) -> None:
        from imagine_ros.models import get_method  # torch: only when a run is configured, not for --help
        from imagine_ros.training.steps import get_step

        get_method(self.method)
        get_step(self.method)
        if self.preset not in MODEL_PRESETS:
            raise ConfigError(f"unknown config preset {self.preset!r}; expected one of {', '.join(MODEL_PRESETS)}")
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "val_every", "val_samples", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.val_clips < 0 or self.gif_clips < 0 or (self.grad_clip or 0) < 0:
            raise ConfigError("num_workers, val_clips, gif_clips and grad_clip must be >= 0")
        if self.stage is not None and (
            not isinstance(self.stage, int) or isinstance(self.stage, bool) or self.stage < 1
        ):
            raise ConfigError(f"stage must be a positive integer, got {self.stage!r}")
        if self.betas is not None:
            self.betas = tuple(self.betas)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ConfigError(f"lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")

    def lr_factor(self, step: int) -> float:
        """The factor of the initial learning rate for optimizer step ``step`` (0-based) of ``steps``."""
        if self.lr_schedule == "constant":
            return 1.0
        m = self.lr_min_ratio
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * min(step, self.steps) / self.steps))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    #: settings that may change between a run and its resume
    RESUMABLE_CHANGES = ("steps", "num_workers", "log_every", "val_every", "ckpt_every", "progress", "keep_checkpoints")
