"""Training step of ``cinn`` (:mod:`imagine_ros.models.cinn`), in two stages chosen by ``TrainConfig.stage``.

Stage 1 (``--stage 1``, the default when no stage is given): the video VAE-GAN and the x0 embedder. Optimizers
``vae`` (encoder + decoder), ``disc_s``, ``disc_t`` (Adam, lr ``lr_stage1`` = 2e-4, betas (0.5, 0.9), weight decay
1e-5 as the paper) and ``embedder`` (same settings). Phases per step: ``vae, embedder`` during the first
``warmup_steps`` steps, then ``vae, disc_s, disc_t, embedder``. The discriminators judge the fake videos of the same
step's ``vae`` phase (detached). Losses (means; weights from the model config)::

    vae      l1_weight * |X^ - X| + perceptual_weight * P(X^, X) + kl_weight * KL(q(z|X) || N(0, I))
             [+ gan_weight * (-mean D_S(frames of X^) - mean D_T(window of X^)) + fm_weight * FM_L1(D_T)]
    disc_s   0.5 * [mean relu(1 - D_S(real frames)) + mean relu(1 + D_S(fake frames))]   (disc_s_frames each)
    disc_t   0.5 * [mean relu(1 - D_T(real)) + mean relu(1 + D_T(fake))] + r1_weight * R1(real)
             (one random contiguous window of min(disc_t_window, T) frames; R1 = mean_b |grad_x D_T(x)|^2)
    embedder |x0^ - x0| + emb_kl_weight * KL

P is :class:`imagine_ros.models.perceptual.PerceptualLoss` (VGG-19 from ``perceptual_weights``, else the SSIM + L1
substitute), on every frame. KL is summed over z and averaged over the batch.

Stage 2 (``--stage 2 --init STAGE1_RUN``): only the INN, optimizer ``inn`` (Adam, lr ``lr_stage2``, betas
(0.9, 0.99), amsgrad). z is drawn from the frozen q(z | X); the loss is ``NLL = mean(0.5 |nu|^2 - logdet)``, also
logged per dimension (``nll_per_dim``). The run refuses a model whose stage 1 never trained.

``after_step`` counts the completed steps of the stage in the model's ``stage_steps`` buffer (saved with it), which
is how sampling knows whether to use the INN.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imagine_ros.constants import CONDITION, FUTURE, X0
from imagine_ros.errors import ConfigError
from imagine_ros.models.cinn import CINN
from imagine_ros.models.invertible import ActNorm, nll
from imagine_ros.models.perceptual import PerceptualLoss
from imagine_ros.training.steps.base import TrainStep

STAGES = (1, 2)
STAGE1_BETAS = (0.5, 0.9)
STAGE1_WEIGHT_DECAY = 1e-5
STAGE2_BETAS = (0.9, 0.99)


def kl_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over dims, mean over the batch. mean, logvar: (B, D)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``0.5 * [mean relu(1 - real) + mean relu(1 + fake)]`` on logits of any shape."""
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """R1 = mean over the batch of the squared norm of d sum(logits) / d inputs (inputs: (B, ...), requires grad).
    Differentiable (create_graph)."""
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def random_window(t: int, window: int, device: torch.device) -> slice:
    """A random contiguous window of ``min(window, t)`` frames of ``t`` (global RNG)."""
    w = min(window, t)
    start = int(torch.randint(t - w + 1, (1,), device=device)) if t > w else 0
    return slice(start, start + w)


def random_frames(video: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` frames drawn without replacement (global RNG) from all frames of video (B, T, 3, H, W) -> (n', 3, H, W),
    n' = min(n, B * T)."""
    flat = video.flatten(0, 1)
    idx = torch.randperm(flat.shape[0], device=video.device)[: min(n, flat.shape[0])]
    return flat[idx]


class CINNStep(TrainStep):
    """See module docstring. ``train_config.stage`` (1 or 2; None = 1) picks the stage."""

    default_grad_clip = None  # stage 1 as the paper (no clipping); stage 2 sets 10 in __init__

    def __init__(self, model: CINN, train_config: Any):
        if not isinstance(model, CINN):
            raise ConfigError(f"CINNStep trains a CINN model, got {type(model).__name__}")
        super().__init__(model, train_config)
        stage = getattr(train_config, "stage", None)
        stage = 1 if stage is None else stage
        if stage not in STAGES:
            raise ConfigError(f"cinn trains in stage 1 (video VAE-GAN) or 2 (INN); got --stage {stage!r}")
        self.stage = stage
        if stage == 2:
            self.default_grad_clip = 10.0
            if int(model.stage_steps[0]) == 0:
                raise ConfigError(
                    "cinn stage 2 needs a trained stage 1: pass --init STAGE1_RUN (a stage-1 run folder or its "
                    "model.json)"
                )
        self.perceptual = PerceptualLoss(model.config.perceptual_weights or None).to(model.device)
        self._fake: torch.Tensor | None = None

    # -- optimizers and phases -----------------------------------------------------------------------------------------

    def _lr(self, default: float) -> float:
        lr = getattr(self.cfg, "lr", None)
        return default if lr is None else lr

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        m, c = self.model, self.model.config
        betas = getattr(self.cfg, "betas", None)
        if self.stage == 2:
            opt = torch.optim.Adam(
                m.inn.parameters(),
                lr=self._lr(c.lr_stage2),
                betas=STAGE2_BETAS if betas is None else tuple(betas),
                amsgrad=True,
            )
            return {"inn": opt}
        wd = getattr(self.cfg, "weight_decay", 0.0) or STAGE1_WEIGHT_DECAY

        def adam(params) -> torch.optim.Optimizer:
            b = STAGE1_BETAS if betas is None else tuple(betas)
            return torch.optim.Adam(params, lr=self._lr(c.lr_stage1), betas=b, weight_decay=wd)

        return {
            "vae": adam([*m.encoder.parameters(), *m.decoder.parameters()]),
            "disc_s": adam(m.disc_s.parameters()),
            "disc_t": adam(m.disc_t.parameters()),
            "embedder": adam(m.embedder.parameters()),
        }

    def gan_active(self, step: int) -> bool:
        return self.stage == 1 and step >= self.model.config.warmup_steps

    def phases(self, step: int) -> list[str]:
        if self.stage == 2:
            return ["inn"]
        if self.gan_active(step):
            return ["vae", "disc_s", "disc_t", "embedder"]
        return ["vae", "embedder"]

    # -- losses --------------------------------------------------------------------------------------------------------

    def loss(
        self, phase: str, batch: dict[str, torch.Tensor], model: nn.Module, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: ``x0 (B, 3, H, W)``, ``future (B, T, 3, H, W)`` in [-1, 1], ``condition (B, C)``; ``model``: the
        (possibly DDP-wrapped) CINN. Returns the scalar loss of ``phase`` and floats to log."""
        allowed = ("inn",) if self.stage == 2 else ("vae", "disc_s", "disc_t", "embedder")
        if phase not in allowed:
            raise ValueError(f"cinn stage {self.stage} has phases {', '.join(allowed)}; got {phase!r}")
        return getattr(self, f"_loss_{phase}")(batch, model, step)

    def _loss_vae(self, batch, model, step):
        c = self.model.config
        future = batch[FUTURE]
        out = model("vae", batch[X0], future)
        fake = out["fake"]
        l1 = (fake - future).abs().mean()
        perc = self.perceptual(fake.flatten(0, 1).float(), future.flatten(0, 1).float())
        kl = kl_normal(out["mean"].float(), out["logvar"].float())
        loss = c.l1_weight * l1 + c.perceptual_weight * perc + c.kl_weight * kl
        logs = {"l1": l1.item(), "perceptual": perc.item(), "kl": kl.item()}
        if self.gan_active(step):
            win = random_window(future.shape[1], c.disc_t_window, future.device)
            logits_t, feats_fake = model("disc_t", fake[:, win])
            with torch.no_grad():
                _, feats_real = model("disc_t", future[:, win])
            fm = sum((a - b).abs().mean() for a, b in zip(feats_fake, feats_real)) / len(feats_fake)
            if not self._disc_s_ready():  # ActNorm's data-dependent init: on real frames, not on the first fakes
                with torch.no_grad():
                    model("disc_s", random_frames(future, c.disc_s_frames))
            logits_s = model("disc_s", random_frames(fake, c.disc_s_frames))
            g_gan = -logits_s.mean() - logits_t.mean()
            loss = loss + c.gan_weight * g_gan + c.fm_weight * fm
            logs.update({"g_gan": g_gan.item(), "feature_matching": fm.item()})
        self._fake = fake.detach()
        logs["loss_vae"] = loss.item()
        return loss, logs

    def _disc_s_ready(self) -> bool:
        return all(bool(m.initialized) for m in self.model.disc_s.modules() if isinstance(m, ActNorm))

    def _fake_or_raise(self) -> torch.Tensor:
        if self._fake is None:
            raise RuntimeError("the discriminator phases need the fakes of the same step's 'vae' phase first")
        return self._fake

    def _loss_disc_s(self, batch, model, step):
        n = self.model.config.disc_s_frames
        real = model("disc_s", random_frames(batch[FUTURE], n))
        fake = model("disc_s", random_frames(self._fake_or_raise(), n))
        loss = hinge_d(real, fake)
        return loss, {"d_s": loss.item(), "d_s_real": real.mean().item(), "d_s_fake": fake.mean().item()}

    def _loss_disc_t(self, batch, model, step):
        c = self.model.config
        future = batch[FUTURE]
        win = random_window(future.shape[1], c.disc_t_window, future.device)
        real_in = future[:, win].detach().requires_grad_(True)
        real, _ = model("disc_t", real_in)
        fake, _ = model("disc_t", self._fake_or_raise()[:, win])
        hinge = hinge_d(real, fake)
        r1 = r1_penalty(real, real_in) if c.r1_weight else real.new_zeros(())
        loss = hinge + c.r1_weight * r1
        logs = {"d_t": hinge.item(), "r1": r1.item(), "d_t_real": real.mean().item(), "d_t_fake": fake.mean().item()}
        return loss, logs

    def _loss_embedder(self, batch, model, step):
        x0 = batch[X0]
        out = model("embed", x0)
        l1 = (out["recon"] - x0).abs().mean()
        kl = kl_normal(out["mean"].float(), out["logvar"].float())
        loss = l1 + self.model.config.emb_kl_weight * kl
        return loss, {"emb_l1": l1.item(), "emb_kl": kl.item()}

    def _loss_inn(self, batch, model, step):
        cond = batch.get(CONDITION) if self.model.config.condition_dim else None
        out = model("inn_nll", batch[X0], batch[FUTURE], cond)
        loss = nll(out["nu"].float(), out["logdet"].float())
        d = self.model.config.z_dim
        return loss, {"nll": loss.item(), "nll_per_dim": loss.item() / d, "logdet": out["logdet"].mean().item()}

    def after_step(self, batch: dict[str, torch.Tensor]) -> None:
        """Count the completed step of this stage in the model (``stage_steps``); drop the cached fakes."""
        self._fake = None
        with torch.no_grad():
            self.model.stage_steps[self.stage - 1] += 1
