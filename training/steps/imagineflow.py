"""Training step of ``imagineflow`` (:mod:`imagine_ros.models.imagineflow`).

One Adam optimizer ``"model"`` (paper: lr 1e-3, betas (0.9, 0.999); the ``TrainConfig`` values win when set).
Per clip ``(I0, I_1..T)`` the model encodes z from the whole clip, generates forward and backward flows for all T
steps, runs the consistency tests and synthesises ``synth_steps`` of the T frames (both directions). With
``K = B * T`` (clip, t) pairs, masks ``M`` from the consistency test (constants: no gradient) and ``mean`` over all
elements::

    L_bi-vc = mean(M_{0<-t} |I0 - warp(I_t, W^f)|) + mean(M_{t<-0} |I_t - warp(I0, W^b)|)        [-1, 1] image units
    L_cc    = mean(M_{0<-t} |W^f + warp(W^b, W^f)|_1) + mean(M_{t<-0} |W^b + warp(W^f, W^b)|_1)  pixels
    L_pp    = sum over both directions of MSE(I~, I) + perceptual_weight * perceptual(I~, I)
              I~_{t<-0} = R(warp(I0, W^b), M_{t<-0}) vs I_t;  I~_{0<-t} = R(warp(I_t, W^f), M_{0<-t}) vs I0
    KL      = KL(q(z | clip) || N(0, I)), summed over z's dimensions, mean over clips
    TV      = mean |grad W^f| + mean |grad W^b| (pixels) + mean |grad I~| (both directions)
    mask    = mean(1 - sigmoid((threshold - delta) / mask_temperature)) over both directions

    loss = bivc_weight L_bi-vc + cc_weight L_cc + pp_weight L_pp + kl_weight KL + tv_weight TV + mask_weight mask
           + flow_supervision L_flow

``photometric_scales = n`` (not in the paper, 1 = off): L_bi-vc is the sum of the term above over the images as they
are and blurred by Gaussians of sigma 2, 4, ... 2^(n-1) px (``gaussian_blur``; both images of a pair blurred, the same
flows and hard masks). Measured on 24 validation clips of the pushing data (``plan5k``): at zero flow, the descent
direction of the full-resolution term has a cosine of 0.007 with the true flow over the moving pixels, and only 33 %
of them point within 90 degrees of it (the arm moves several pixels per frame, beyond a bilinear warp's reach); blurred
by sigma 2 / 4 px, 0.09 / 0.13 and 61 % / 65 %. Trained with the full-resolution term alone, the flows collapse to a
mean of 0.15 px within 300 steps while L_bi-vc stays at its zero-flow value.

``L_gt`` (not in the paper, off by default) uses the simulator's ground truth (clip keys ``flow``, ``visible``,
``flow_back``; datasets recorded with ground truth): ``gt_flow_weight`` times the L1 end-point error of the forward
flows of all T steps (upsampled to full resolution) against the true forward flows (or the squared end-point error,
``gt_flow_loss = "l2"``: the conditional mean instead of the median, so that an uncertain push still shows), with
pixels that truly move (|flow| > 0.5 px: the arm, pushed objects) weighted ``gt_moving_boost`` times more than static
ones; the same with ``gt_back_weight`` for the backward flows; and ``gt_mask_weight`` times the binary cross-entropy
of the soft forward consistency masks (the chosen steps) against the true visibility. It gives the flows the motion
the planner needs (where a pushed object goes) that the photometric terms barely see at 64 x 64.

``L_flow`` is not in the paper and is off by default (``flow_supervision = 0``): the mean end-point error (L1 over
dx, dy, pixels) of the chosen steps' full-resolution flows against OpenCV DIS flows of the same image pairs, computed
here on the CPU as pseudo-labels (W^f against DIS(I0 -> I_t), W^b against DIS(I_t -> I0)). On the pushing data the
photometric terms alone let the flows collapse to zero (most pixels are static and the arm moves several pixels per
frame, beyond the reach of a bilinear warp's gradient); the pseudo-labels give the flows the motion of the arm and
of pushed objects to start from.

The hard masks weight L_bi-vc, L_cc and feed the synthesis module; the anti-collapse term uses a soft version of the
same test (differentiable in the flows), so flows that fail the test everywhere cost ``mask_weight`` instead of
zeroing the masked losses. The ablation (``bidirectional=False``) has only the backward terms, masks of ones, no
L_cc and no mask term. The perceptual term is :class:`imagine_ros.models.perceptual.PerceptualLoss` with the config's
``perceptual_weights`` ("" = the SSIM + L1 substitute); the config, stored in every checkpoint, records which.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imagine_ros.constants import CONDITION, FUTURE, X0
from imagine_ros.errors import ConfigError
from imagine_ros.models.imagineflow import ImagineFlow, warp
from imagine_ros.models.perceptual import PerceptualLoss
from imagine_ros.training.steps.base import TrainStep

DEFAULT_LR = 1e-3
DEFAULT_BETAS = (0.9, 0.999)


def tv_l1(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean |x[.., y, x+1] - x[.., y, x]| + mean |x[.., y+1, x] - x[.., y, x]|.
    x: (..., H, W) float. Returns a scalar in x's units."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with standard deviation ``sigma`` px (kernel radius 3 sigma, edges
    replicated); sigma 0 returns x."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-taps.square() / (2 * sigma * sigma))
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def kl_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over dimensions, mean over rows. mean, logvar: (B, D)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()


def model_wants_gt(c) -> bool:
    return bool(c.gt_flow_weight or c.gt_back_weight or c.gt_mask_weight)


class ImagineFlowStep(TrainStep):
    """See module docstring. ``loss`` logs ``loss``, ``bivc``, ``cc``, ``pp``, ``kl``, ``tv``, ``mask`` (the
    anti-collapse term), ``visible`` (fraction of hard-visible pixels), ``flow_px`` (mean |W^b|_1) and ``mse``."""

    #: losses are means of order 0.1-1; the clip only stops rare blow-ups
    default_grad_clip = 10.0

    def __init__(self, model: ImagineFlow, train_config: Any):
        if not isinstance(model, ImagineFlow):
            raise ConfigError(f"ImagineFlowStep trains an ImagineFlow model, got {type(model).__name__}")
        super().__init__(model, train_config)
        cfg = model.config
        self.perceptual = PerceptualLoss(cfg.perceptual_weights or None, cfg.perceptual_layers).to(model.device)

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

    def _pp(self, synth: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mse = (synth - target).square().mean()
        return mse + self.model.config.perceptual_weight * self.perceptual(synth, target)

    def loss(
        self, phase: str, batch: dict[str, torch.Tensor], model: nn.Module, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: ``x0 (B, 3, H, W)``, ``future (B, T, 3, H, W)`` in [-1, 1], ``condition (B, C)``; ``model``: the
        (possibly DDP-wrapped) ImagineFlow. Returns the scalar loss and the floats to log."""
        if phase != "model":
            raise ValueError(f"imagineflow has one phase, 'model'; got {phase!r}")
        c = self.model.config
        if self.perceptual.net is not None and self.perceptual.mean.device != batch[X0].device:
            self.perceptual.to(batch[X0].device)
        cond = batch.get(CONDITION) if c.condition_dim else None
        out = model(batch[X0], batch[FUTURE], cond)
        src, tgt = out["source"], out["target"]
        m_t0 = out["mask_t0"]
        bivc = (m_t0 * (tgt - out["warped_t0"]).abs()).mean()
        blurred = [(gaussian_blur(src, 2.0**i), gaussian_blur(tgt, 2.0**i)) for i in range(1, c.photometric_scales)]
        for bs, bt in blurred:
            bivc = bivc + (m_t0 * (bt - warp(bs, out["flow_b"])).abs()).mean()
        pp = self._pp(out["synth_t0"], tgt)
        tv = tv_l1(out["backward"]) + tv_l1(out["synth_t0"])
        zero = torch.zeros((), device=src.device)
        cc, mask_term = zero, zero
        if out["forward"] is not None:
            m_0t = out["mask_0t"]
            bivc = bivc + (m_0t * (src - out["warped_0t"]).abs()).mean()
            for bs, bt in blurred:
                bivc = bivc + (m_0t * (bs - warp(bt, out["flow_f"])).abs()).mean()
            cc = (m_0t * out["delta_0t"]).mean() + (m_t0 * out["delta_t0"]).mean()
            pp = pp + self._pp(out["synth_0t"], src)
            tv = tv + tv_l1(out["forward"]) + tv_l1(out["synth_0t"])
            soft = [
                torch.sigmoid((out[f"threshold_{d}"].detach() - out[f"delta_{d}"]) / c.mask_temperature)
                for d in ("0t", "t0")
            ]
            mask_term = sum((1 - s).mean() for s in soft)
        kl = kl_normal(out["mean"].float(), out["logvar"].float())
        flow_l1 = zero
        if c.flow_supervision > 0:
            flow_l1 = self._flow_supervision(out)
        gt_terms = self._ground_truth_terms(out, batch) if model_wants_gt(c) else {}
        loss = (
            sum((w * gt_terms[k] for k, w in self._gt_weights().items() if k in gt_terms), zero)
            + c.flow_supervision * flow_l1
            + c.bivc_weight * bivc
            + c.cc_weight * cc
            + c.pp_weight * pp
            + c.kl_weight * kl
            + c.tv_weight * tv
            + c.mask_weight * mask_term
        )
        with torch.no_grad():
            visible = m_t0.mean() if out["forward"] is None else (out["mask_0t"].mean() + m_t0.mean()) / 2
            mse = (out["synth_t0"].clamp(-1, 1) - tgt).square().mean()
        logs = {
            "loss": loss.item(),
            "bivc": bivc.item(),
            "cc": cc.item(),
            "pp": pp.item(),
            "kl": kl.item(),
            "tv": tv.item(),
            "mask": float(mask_term.detach()) if torch.is_tensor(mask_term) else float(mask_term),
            "visible": visible.item(),
            "flow_px": out["backward"].detach().abs().sum(2).mean().item(),
            "mse": mse.item(),
        }
        if c.flow_supervision > 0:
            logs["flow_sup"] = flow_l1.item()
        logs.update({k: v.item() for k, v in gt_terms.items()})
        return loss, logs

    def _gt_weights(self) -> dict[str, float]:
        c = self.model.config
        return {"gt_epe": c.gt_flow_weight, "gt_back_epe": c.gt_back_weight, "gt_mask": c.gt_mask_weight}

    def _ground_truth_terms(self, out: dict[str, Any], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ground-truth terms (module docstring): ``gt_epe``, ``gt_back_epe`` (pixels, weighted) and ``gt_mask``
        (nats); also ``gt_epe_moving``, the plain EPE on moving pixels, and ``gt_epe_object``, on moving pixels of
        objects (what a push does to them; logs only, no gradient)."""
        from imagine_ros.models.imagineflow import upsample_flow

        c = self.model.config
        if "flow" not in batch:
            raise ConfigError(
                "gt_flow_weight/gt_mask_weight need ground-truth flows: the dataset must be recorded with ground truth"
            )
        s = c.image_size
        terms: dict[str, torch.Tensor] = {}

        objects = None
        if "part_kind" in batch:  # (B, H, W) -> (B * T, H, W), the input frame's labels
            kind = batch["part_kind"]
            objects = (kind == 2).to(out["backward"].dtype).repeat_interleave(c.horizon, 0)

        def weighted_epe(pred: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            diff = pred - truth
            epe = diff.abs().sum(1)  # (K, H, W) L1 over (dx, dy)
            scored = epe if c.gt_flow_loss == "l1" else diff.square().sum(1)  # or the squared end-point error
            moving = (truth.norm(dim=1) > 0.5).to(epe.dtype)
            w = 1.0 + c.gt_moving_boost * moving
            if c.gt_object_boost and objects is not None and objects.shape == w.shape:
                w = w + c.gt_object_boost * objects
            with torch.no_grad():
                plain = (epe * moving).sum() / moving.sum().clamp_min(1.0)
                if objects is not None and objects.shape == w.shape:  # moving object pixels: what a push does
                    pushed = moving * objects
                    terms["gt_epe_object"] = (epe * pushed).sum() / pushed.sum().clamp_min(1.0)
            return (w * scored).sum() / w.sum(), plain

        truth = batch["flow"].to(out["backward"].dtype).flatten(0, 1)  # (B * T, 2, H, W)
        if c.gt_flow_weight:
            wf = upsample_flow(out["forward"].flatten(0, 1), s)
            terms["gt_epe"], terms["gt_epe_moving"] = weighted_epe(wf, truth)
        if c.gt_back_weight:
            back = batch["flow_back"].to(truth.dtype).flatten(0, 1)
            terms["gt_back_epe"], _ = weighted_epe(upsample_flow(out["backward"].flatten(0, 1), s), back)
        if c.gt_mask_weight:
            vis = batch["visible"].to(truth.dtype).flatten(0, 1)[out["index"]][:, None]  # (K, 1, H, W)
            soft = torch.sigmoid((out["threshold_0t"].detach() - out["delta_0t"]) / c.mask_temperature)
            terms["gt_mask"] = torch.nn.functional.binary_cross_entropy(soft.clamp(1e-4, 1 - 1e-4), vis)
        return terms

    @staticmethod
    def _flow_supervision(out: dict[str, Any]) -> torch.Tensor:
        """Mean end-point error (pixels) of ``flow_b`` (and ``flow_f``) against DIS flows of ``source``/``target``."""
        from imagine_ros.flow import dis_flows
        from imagine_ros.models.frames import tensor_to_frames

        src = tensor_to_frames(out["source"].detach())  # (K, H, W, 3) uint8
        tgt = tensor_to_frames(out["target"].detach())
        dev = out["flow_b"].device
        backward = torch.from_numpy(np.stack([dis_flows(t, s[None])[0] for s, t in zip(src, tgt)])).to(dev)
        loss = (out["flow_b"] - backward.permute(0, 3, 1, 2)).abs().sum(1).mean()
        if out["flow_f"] is not None:
            forward = torch.from_numpy(np.stack([dis_flows(s, t[None])[0] for s, t in zip(src, tgt)])).to(dev)
            loss = loss + (out["flow_f"] - forward.permute(0, 3, 1, 2)).abs().sum(1).mean()
        return loss
