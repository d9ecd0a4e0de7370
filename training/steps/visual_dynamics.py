"""Training step of ``visual_dynamics`` (cross convolutional network, :mod:`imagine_ros.models.visual_dynamics`).

One Adam optimizer ``"model"`` (default lr 1e-3, betas (0.9, 0.999), as the public re-implementations; the
``TrainConfig`` values win when set). The model predicts one frame from the previous one, so a clip ``x0, future``
(T frames) holds T consecutive pairs ``(x0, future[0]), (future[0], future[1]), ..., (future[T-2], future[T-1])``;
each step draws ``pairs_per_clip`` of them per clip at random, without replacement (model config; 0 = all T), so a
batch of B clips costs ``B * pairs_per_clip`` pair passes whatever the horizon. Every pair of a clip keeps the clip's
condition eta (the end-effector target of the whole clip).

Loss (means over the pairs)::

    beta(step) * KL(q(z | I, v) || N(0, I))  +  recon_weight * || v * target_scale - f(z, I) ||^2
    beta(step) = kl_weight * min(1, beta_start * 2 ** (step / beta_doubling_steps))

KL is summed over z's dimensions and the squared error over pixels (a Gaussian log-likelihood with
``recon_weight = 1 / (2 sigma^2)``). The spec's warm-up doubles beta "when reconstruction is good enough"; here it
doubles on a fixed step schedule instead, so a resumed or multi-process run computes the same beta from the step.

Posterior bank: :meth:`VisualDynamicsStep.loss` keeps the (detached) posterior means of the pairs it just encoded and
:meth:`VisualDynamicsStep.after_step` writes them into the model's bank, so only steps the loop completed are
recorded (a ``loss`` call alone, e.g. for evaluation, never touches the bank). Under DDP every rank writes its own
means, but DDP broadcasts buffers from rank 0 at each forward, so the bank that is kept (and checkpointed by rank 0)
holds rank 0's posteriors.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from imagine_ros.constants import CONDITION, FUTURE, X0
from imagine_ros.errors import ConfigError
from imagine_ros.models.visual_dynamics import VisualDynamics
from imagine_ros.training.steps.base import TrainStep

DEFAULT_LR = 1e-3
DEFAULT_BETAS = (0.9, 0.999)


def consecutive_pairs(
    x0: torch.Tensor, future: torch.Tensor, pairs_per_clip: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frame pairs ``(I_t, I_{t+1})`` of each clip.

    x0: (B, 3, H, W); future: (B, T, 3, H, W). ``pairs_per_clip`` k in 1..T-1 draws k distinct t per clip from the
    global RNG (on the batch's device); 0 or >= T takes all T. Returns ``first, second`` (B * k, 3, H, W) and the
    clip index of each pair (B * k,) int64, pairs of one clip adjacent.
    """
    if x0.ndim != 4 or future.ndim != 5 or future.shape[0] != x0.shape[0] or future.shape[2:] != x0.shape[1:]:
        got = f"{tuple(x0.shape)}, {tuple(future.shape)}"
        raise ValueError(f"x0 (B, 3, H, W) and future (B, T, 3, H, W) must agree, got {got}")
    b, t = future.shape[:2]
    frames = torch.cat([x0[:, None], future], 1)  # (B, T + 1, 3, H, W)
    if 0 < pairs_per_clip < t:
        steps = torch.rand(b, t, device=x0.device).argsort(1)[:, :pairs_per_clip]
    else:
        steps = torch.arange(t, device=x0.device).expand(b, t)
    clip = torch.arange(b, device=x0.device)[:, None].expand_as(steps)
    return frames[clip, steps].flatten(0, 1), frames[clip, steps + 1].flatten(0, 1), clip.flatten()


class VisualDynamicsStep(TrainStep):
    """See module docstring. ``loss`` logs ``loss``, ``kl``, ``recon`` (per pair, target units), ``mse`` (per pixel,
    [-1, 1] image units) and ``beta``."""

    #: the reconstruction term is a sum over pixels in target units: early gradient norms of ``small`` on the pushing
    #: data measured 3e4-5e4, so the clip only stops blow-ups
    default_grad_clip = 1e5

    def __init__(self, model: VisualDynamics, train_config: Any):
        if not isinstance(model, VisualDynamics):
            raise ConfigError(f"VisualDynamicsStep trains a VisualDynamics model, got {type(model).__name__}")
        super().__init__(model, train_config)
        self._pending_means: torch.Tensor | None = None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr = getattr(self.cfg, "lr", None)
        betas = getattr(self.cfg, "betas", None)
        opt = torch.optim.Adam(
            self.model.parameters(),
            lr=DEFAULT_LR if lr is None else lr,
            betas=DEFAULT_BETAS if betas is None else tuple(betas),
            weight_decay=getattr(self.cfg, "weight_decay", 0.0),
        )
        return {"model": opt}

    def phases(self, step: int) -> list[str]:
        return ["model"]

    def beta(self, step: int) -> float:
        """KL weight at ``step``: ``kl_weight * min(1, beta_start * 2 ** (step / beta_doubling_steps))``."""
        c = self.model.config
        doublings = min(step / c.beta_doubling_steps, -math.log2(c.beta_start))  # capped: beta_start * 2^x <= 1
        return c.kl_weight * min(1.0, c.beta_start * 2.0**doublings)

    def loss(
        self, phase: str, batch: dict[str, torch.Tensor], model: nn.Module, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: ``x0 (B, 3, H, W)``, ``future (B, T, 3, H, W)`` in [-1, 1], ``condition (B, C)``; ``model``: the
        (possibly DDP-wrapped) VisualDynamics. Returns the scalar loss and the floats to log."""
        if phase != "model":
            raise ValueError(f"visual_dynamics has one phase, 'model'; got {phase!r}")
        c = self.model.config
        first, second, clip = consecutive_pairs(batch[X0], batch[FUTURE], c.pairs_per_clip)
        cond = batch.get(CONDITION) if c.condition_dim else None
        if cond is not None:
            cond = cond[clip]
        out = model(first, second, cond)
        mean, logvar = out["mean"].float(), out["logvar"].float()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()
        recon = (out["pred"].float() - out["target"].float()).square().flatten(1).sum(1).mean()
        beta = self.beta(step)
        loss = beta * kl + c.recon_weight * recon
        self._pending_means = out["mean"].detach()
        mse = recon.detach() / (first[0].numel() * c.target_scale**2)
        logs = {"loss": loss.item(), "kl": kl.item(), "recon": recon.item(), "mse": mse.item(), "beta": beta}
        return loss, logs

    def after_step(self, batch: dict[str, torch.Tensor]) -> None:
        """Write the posterior means of the step's pairs into the model's bank (see module docstring)."""
        if self._pending_means is not None:
            self.model.update_bank(self._pending_means)
            self._pending_means = None
