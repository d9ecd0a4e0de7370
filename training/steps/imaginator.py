"""Training step of ``imaginator`` (conditional spatio-temporal GAN, :mod:`imagine_ros.models.imaginator`).

Three Adam optimizers, one per network: ``"G"`` (generator: encoder + decoder), ``"D_I"`` (image discriminator),
``"D_V"`` (video discriminator); the paper's settings are the defaults (lr 2e-4, betas (0.5, 0.999), no weight decay;
``TrainConfig.lr``/``betas``/``weight_decay`` win when set). Every step runs the phases ``G``, ``D_I``, ``D_V`` in that
order (one generator step, then one step of each discriminator), and no gradient clipping by default (the paper has
none; ``--grad-clip`` sets one). Losses (non-saturating GAN, binary cross-entropy on logits; c = the condition)::

    G:    l1_weight * |G(x0, c, z) - future|_1 (mean)  +  BCE(D_V(fake, c), 1)  +  BCE(D_I(fake[t]), 1)
    D_I:  BCE(D_I(future[t]), 1) + BCE(D_I(fake[t']), 0)       t, t' one random frame per clip
    D_V:  BCE(D_V(future, c), 1) + BCE(D_V(fake, c), 0)

The discriminator phases use the (detached) videos the ``G`` phase of the same step generated, so G runs once per
step and BatchNorm statistics are updated once; a discriminator phase called alone generates its own (no gradient).

Freezing: during the ``G`` phase the discriminators' parameters do not require gradients while the graph is built
(so ``backward`` leaves their ``.grad`` untouched); the discriminator phases see detached fakes, so neither the
generator nor the other discriminator gets a gradient there. Each optimizer therefore only ever steps on the gradient
of its own phase, with no change to the shared loop.

Condition: ``condition="eta"`` uses ``batch["condition"]`` (normalised η); ``condition="direction"`` replaces it by
the one-hot push direction of the clip's end-effector track ``batch["ee"]`` (:meth:`ImaGINator.batch_condition`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imagine_ros.constants import FUTURE, X0
from imagine_ros.errors import ConfigError
from imagine_ros.models.imaginator import ImaGINator
from imagine_ros.training.steps.base import TrainStep

DEFAULT_LR = 2e-4
DEFAULT_BETAS = (0.5, 0.999)
PHASES = ("G", "D_I", "D_V")


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` do not require gradients inside the block (restored afterwards; a graph built
    inside keeps them out of ``backward``)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class ImaGINatorStep(TrainStep):
    """See module docstring. Logs ``g_loss``, ``l1`` (mean absolute error in [-1, 1] units), ``g_adv_video``,
    ``g_adv_image``, ``d_image_loss``, ``d_video_loss`` and the discriminators' mean probabilities on real and fake
    (``d_image_real``, ``d_image_fake``, ``d_video_real``, ``d_video_fake``)."""

    default_grad_clip = None

    def __init__(self, model: ImaGINator, train_config: Any):
        if not isinstance(model, ImaGINator):
            raise ConfigError(f"ImaGINatorStep trains an ImaGINator model, got {type(model).__name__}")
        super().__init__(model, train_config)
        self._fake: tuple[int, torch.Tensor] | None = None  # (step, detached fakes of that step's G phase)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr = getattr(self.cfg, "lr", None)
        betas = getattr(self.cfg, "betas", None)
        kw = {
            "lr": DEFAULT_LR if lr is None else lr,
            "betas": DEFAULT_BETAS if betas is None else tuple(betas),
            "weight_decay": getattr(self.cfg, "weight_decay", 0.0),
        }
        m = self.model
        return {
            "G": torch.optim.Adam(m.generator.parameters(), **kw),
            "D_I": torch.optim.Adam(m.d_image.parameters(), **kw),
            "D_V": torch.optim.Adam(m.d_video.parameters(), **kw),
        }

    def phases(self, step: int) -> list[str]:
        return list(PHASES)

    def _fakes(self, batch: dict[str, torch.Tensor], cond: torch.Tensor | None, step: int) -> torch.Tensor:
        x0 = batch[X0]
        if self._fake is not None and self._fake[0] == step and self._fake[1].shape[0] == x0.shape[0]:
            return self._fake[1]
        with torch.no_grad():
            return self.model.generate(x0, cond).detach()

    def loss(
        self, phase: str, batch: dict[str, torch.Tensor], model: nn.Module, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: ``x0 (B, 3, H, W)``, ``future (B, T, 3, H, W)`` in [-1, 1], ``condition (B, C)`` (``ee (B, T + 1,
        3)`` for the direction condition); ``model``: the (possibly DDP-wrapped) ImaGINator. Returns the scalar loss
        of ``phase`` and the floats to log."""
        m = self.model
        x0, future = batch[X0], batch[FUTURE]
        cond = m.batch_condition(batch)
        b, t = future.shape[:2]
        if phase == "G":
            index = torch.randint(t, (b,), device=x0.device)
            with frozen(m.d_image, m.d_video):
                out = model("G", x0, cond, frame_index=index)
            fake = out["fake"]
            l1 = (fake.float() - future.float()).abs().mean()
            adv_v, adv_i = _bce(out["logit_video"], 1.0), _bce(out["logit_image"], 1.0)
            loss = m.config.l1_weight * l1 + adv_v + adv_i
            self._fake = (step, fake.detach())
            logs = {"g_loss": loss.item(), "l1": l1.item(), "g_adv_video": adv_v.item(), "g_adv_image": adv_i.item()}
            return loss, logs
        if phase == "D_I":
            fake = self._fakes(batch, cond, step)
            rows = torch.arange(b, device=x0.device)
            real_frames = future[rows, torch.randint(t, (b,), device=x0.device)]
            fake_frames = fake[rows, torch.randint(t, (b,), device=x0.device)]
            out = model("D_I", real=real_frames, fake=fake_frames)
            loss = _bce(out["logit_real"], 1.0) + _bce(out["logit_fake"], 0.0)
            return loss, {"d_image_loss": loss.item(), **self._probs("d_image", out)}
        if phase == "D_V":
            fake = self._fakes(batch, cond, step)
            out = model("D_V", condition=cond, real=future, fake=fake)
            loss = _bce(out["logit_real"], 1.0) + _bce(out["logit_fake"], 0.0)
            return loss, {"d_video_loss": loss.item(), **self._probs("d_video", out)}
        raise ValueError(f"imaginator phases are {', '.join(PHASES)}; got {phase!r}")

    @staticmethod
    def _probs(name: str, out: dict[str, torch.Tensor]) -> dict[str, float]:
        return {
            f"{name}_real": torch.sigmoid(out["logit_real"].detach().float()).mean().item(),
            f"{name}_fake": torch.sigmoid(out["logit_fake"].detach().float()).mean().item(),
        }

    def after_step(self, batch: dict[str, torch.Tensor]) -> None:
        self._fake = None
