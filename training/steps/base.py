"""The per-method part of training: which optimizers, which of them to update at a step, and the loss of each.

The shared loop (:mod:`imagine_ros.training.trainer`) owns everything else: devices, DDP, mixed precision, gradient
clipping, the optimizer steps, checkpoints, logging and validation. A step computes losses; it never steps an
optimizer itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from imagine_ros.models.base import Method

if TYPE_CHECKING:
    from imagine_ros.training.trainer import TrainConfig


class TrainStep(ABC):
    """Training logic of one method (see module docstring)."""

    #: gradient-norm clip used when the run does not set one (``--grad-clip``); None = no clipping
    default_grad_clip: ClassVar[float | None] = 1.0

    def __init__(self, model: Method, train_config: TrainConfig):
        self.model = model
        self.cfg = train_config

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizer name -> optimizer (built once by the loop, checkpointed under that name)."""

    def phases(self, step: int) -> list[str]:
        """Names of the optimizers to update at ``step``, in order (GAN alternation, training stages).

        Default: the single optimizer named ``"model"``.
        """
        return ["model"]

    @abstractmethod
    def loss(
        self, phase: str, batch: dict[str, torch.Tensor], model: nn.Module, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss of ``phase`` and floats to log. ``model`` is the (possibly DDP-wrapped) module to call
        ``forward`` on; ``batch`` holds ``x0 (B,3,H,W)``, ``future (B,T,3,H,W)`` in [-1, 1], ``condition (B,C)``."""

    def after_step(self, batch: dict[str, torch.Tensor]) -> None:  # noqa: B027 (an optional hook)
        """Optional hook after all phases of a step (e.g. update a bank of posteriors)."""
