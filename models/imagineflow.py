"""``imagineflow``: unsupervised bi-directional flow generation from one image with occlusion-aware synthesis
(Sheng et al., "Unsupervised Bi-directional Flow-based Video Generation from one Snapshot"; documented in
``docs/methods/imagineflow.md``), conditioned on the end-effector target eta.

A conditional VAE with four parts (videos inside the model are laid out (B, T, C, H, W))::

    motion encoder   q(z | I0, I_1..T)   the clip (B, T + 1, 3, H, W), average-pooled by motion_pool, as a 3D volume
                                          -> 3D convs (stride 2 in space, from the second on also in time) -> global
                                          average -> linear -> mean and log-variance (B, z_dim)
    image encoder    E(I0)               L = len(enc_channels) 2D convs of stride 2 -> content features c_m at
                                          H / 2^m (m = 1 .. L), then one valid conv -> top feature c_top (z_dim, 1, 1)
    flow generator   p(W^f, W^b | z, I0, eta)
                     z fused with c_top as a depthwise convolution (c_top is the 1x1 kernel: z * c_top per channel),
                     eta appended (the condition enters here), a linear layer lifts it to the motion volume
                     V (gen_top, T, H / 2^L, W / 2^L); then per level, down to H / flow_stride:
                       [2D-to-3D fusion: concat c_m to every time slice of V + one 3D conv]   (fusion="all" only)
                       nearest upsample x2 in space + 3D conv, 3D conv
                     -> one linear 3D conv head: forward and backward flows (2 + 2 channels, x flow_scale, pixels)
                     -> bilinear upsampling to H x W when flow_stride > 1 (the paper generates at full size: 1)
    synthesis        R(warped, mask)     a U-Net whose encoder is VGG-19 shaped up to relu4_1 (synth_convs convs per
                                          level, 2x2 max-pools), decoder mirrored with nearest upsampling, skips at
                                          relu{1,2,3}_1; input = warped frame (3) + its visibility mask (1); output =
                                          the warped frame + a predicted correction (3 channels)

The 3D convolutions (kernel time_kernel x 3 x 3) are :class:`TimeConv`: the same numbers as ``F.conv3d``, computed with
2D convolutions, because PyTorch's CPU conv3d backward is several times slower.
BatchNorm and LeakyReLU(0.2) after every hidden conv (He initialisation); the flow head and the synthesis output are
linear (the synthesis output starts at zero: R starts as the identity on the warped frame).

Flows and masks (all in pixels; ``x`` is a pixel position (x right, y down))::

    W^f_t (on frame 0's grid):  pixel x of I0 is at x + W^f_t(x) in I_t         forward flow, input -> frame t
    W^b_t (on frame t's grid):  pixel x of I_t came from x + W^b_t(x) in I0      backward flow, frame t -> input
    warp(I, W)(x) = I(x + W(x))  bilinear (grid_sample, align_corners=True)
    I_{t<-0} = warp(I0, W^b_t)   frame t rendered from the input;   I_{0<-t} = warp(I_t, W^f_t)
    M_{0<-t}(x) = [ |W^f + warp(W^b, W^f)|_1 < max(alpha, beta (|W^f|_1 + |warp(W^b, W^f)|_1)) ]   alpha=1, beta=0.1
    M_{t<-0} likewise with W^f and W^b swapped.

``M_{0<-t}`` is 1 where an input pixel is still visible in frame t (it fails the test where it leaves the image or
is covered); ``M_{t<-0}`` is 1 where a pixel of frame t can be seen in the input (0: disoccluded, to be synthesised).
Flows are warped with zero padding (a flow that leaves the image fails the test, so the band of pixels that move
out of view is marked occluded); images are warped with border padding.

Sampling (test time, as the paper): z ~ N(0, I); ``I~_t = R(warp(I0, W^b_t), M_{t<-0})``. :meth:`ImagineFlow.sample`
returns ``Sample(frames, flows=W^f (B, N, T, 2, H, W) pixels, masks=M_{0<-t} (B, N, T, 1, H, W) in {0, 1})``: the
forward flows of the contract with the visibility of each input pixel in frame t. :meth:`ImagineFlow.rollout`
returns everything (backward flows, both masks, the warped frames) for figures.

Paper ablation baseline (config flags, see ``ABLATION``): ``bidirectional=False`` (backward head only; no
consistency test, masks are all ones during training; the forward flows that sampling returns are the fixed-point
inverse of W^b, ``W^f(x) = -W^b(x + W^f(x))``, 10 iterations, and the masks are the consistency test of that pair),
``fusion="top"`` (only z * c_top, no 2D-to-3D fusion blocks), ``synthesis=False`` (frames are the warped inputs).

The condition eta (``condition_dim`` numbers, normalised) is appended to the fused top vector; ``condition_dim=0``
is the unconditioned paper model. With ``condition_maps`` (not in the paper) eta also enters every generator level
after its upsampling, as constant maps beside two pixel-coordinate maps (:func:`condition_maps`): the top's lift is
2 x 2 at 64 x 64, too coarse to say which pixels the hand's path to eta crosses. A missing condition (None) for a
conditioned model means eta = 0 (the training mean of the normalised condition). The motion encoder never sees eta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from imagine_ros.errors import ConfigError
from imagine_ros.models.base import Method, MethodConfig, Sample, check_int, check_ints, check_number, randn

FUSIONS = ("all", "top")
LOGVAR_RANGE = (-20.0, 10.0)
#: the paper's component-ablation baseline as config overrides (``--set`` each of them)
ABLATION: dict[str, Any] = {"bidirectional": False, "fusion": "top", "synthesis": False}
INVERSE_ITERATIONS = 10


# ----------------------------------------------------------------------------------------------------------------------
# warping and the forward-backward consistency test


def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=dtype)[:, None].expand(h, w)
    xs = torch.arange(w, device=device, dtype=dtype)[None, :].expand(h, w)
    return xs, ys


def warp(image: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Backward warp ``out(x) = image(x + flow(x))`` with bilinear sampling.

    image: (N, C, H, W) float; flow: (N, 2, H, W) float, pixels, channel 0 = dx (right), 1 = dy (down).
    padding_mode: ``"border"`` (images) or ``"zeros"`` (flows in the consistency test). Returns (N, C, H, W).
    """
    if image.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] != image.shape[0]:
        raise ValueError(
            f"image (N, C, H, W) and flow (N, 2, H, W) must agree, got {tuple(image.shape)}, {tuple(flow.shape)}"
        )
    if flow.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"flow must have the image's size {tuple(image.shape[-2:])}, got {tuple(flow.shape[-2:])}")
    h, w = flow.shape[-2:]
    xs, ys = _base_grid(h, w, flow.device, flow.dtype)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=True)


def consistency(
    flow: torch.Tensor, other: torch.Tensor, alpha: float = 1.0, beta: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-backward consistency test of ``flow`` (on grid A, pointing into grid B) against ``other`` (on grid B,
    pointing back into A).

    flow, other: (N, 2, H, W) pixels. Returns ``(visible, delta, threshold)``, each (N, 1, H, W):
    ``delta = |flow + warp(other, flow)|_1`` (pixels; ``other`` warped with zero padding),
    ``threshold = max(alpha, beta * (|flow|_1 + |warp(other, flow)|_1))`` and ``visible = (delta < threshold)`` as
    float in {0, 1} (no gradient). ``alpha`` and ``beta`` are in pixels / a ratio (paper: 1.0, 0.1).
    """
    if flow.shape != other.shape or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow and other must both be (N, 2, H, W), got {tuple(flow.shape)}, {tuple(other.shape)}")
    back = warp(other, flow, padding_mode="zeros")
    delta = (flow + back).abs().sum(1, keepdim=True)
    mag = flow.abs().sum(1, keepdim=True) + back.abs().sum(1, keepdim=True)
    threshold = torch.clamp(beta * mag, min=alpha)
    visible = (delta < threshold).to(flow.dtype).detach()
    return visible, delta, threshold


def invert_flow(flow: torch.Tensor, iterations: int = INVERSE_ITERATIONS) -> torch.Tensor:
    """Fixed-point inverse of a backward flow: ``inv(x) = -flow(x + inv(x))``, starting from ``-flow``.

    flow: (N, 2, H, W) pixels on grid B pointing into grid A. Returns (N, 2, H, W) pixels on grid A pointing into B
    (exact for translations away from the border; approximate near occlusions).
    """
    inv = -flow
    for _ in range(iterations):
        inv = -warp(flow, inv, padding_mode="border")
    return inv


# ----------------------------------------------------------------------------------------------------------------------
# config


GT_FLOW_LOSSES = ("l1", "l2")
MAX_PHOTOMETRIC_SCALES = 5  # photometric_scales: sigma up to 16 px


@dataclass(frozen=True)
class ImagineFlowConfig(MethodConfig):
    """ImagineFlow sizes, switches and loss weights. Defaults = the ``small`` preset (64x64, 2 CPU cores).

    Training loss (the step, :mod:`imagine_ros.training.steps.imagineflow`)::

        bivc_weight * L_bi-vc + cc_weight * L_cc + pp_weight * L_pp + kl_weight * KL
          + tv_weight * (TV(flows) + TV(synthesised frames)) + mask_weight * mean(1 - soft masks)
        L_pp = MSE + perceptual_weight * perceptual  (VGG-19 with a weights file, else 0.85 (1 - SSIM) / 2 + 0.15 L1)

    Paper weights: bivc 1.0, cc 0.05, pp 1.0 (perceptual lambda 1.0); KL, TV and the mask term are not given by the
    paper (mask: seg2vid's 0.1).
    """

    # motion encoder: 3D conv widths (3x3x3, stride 2 in space; stride 2 in time too from the second conv on)
    motion_channels: tuple[int, ...] = (8, 16, 32)
    motion_pool: int = 2  # the clip is average-pooled by this factor before the motion encoder (paper: 1)
    z_dim: int = 32
    # image encoder: widths of the stride-2 4x4 convs (L levels); image_size must be divisible by 2 ** L
    enc_channels: tuple[int, ...] = (16, 32, 32, 64, 64)
    # flow generator: gen_top = width of the lifted motion volume; gen_channels = width after each level (one
    # level per encoder level down to image_size / flow_stride: len = L - log2(flow_stride))
    gen_top: int = 32
    gen_channels: tuple[int, ...] = (32, 16, 16)
    flow_stride: int = 4  # flows are generated at image_size / flow_stride and upsampled bilinearly (paper: 1)
    time_kernel: int = 3  # temporal size of the generator's 3D kernels (1: per-frame 2D convs)
    flow_scale: float = 4.0  # pixels per unit of the flow heads' output
    # synthesis U-Net (VGG-19 shaped to relu4_1): widths and convs per level (paper: 64/128/256/512, 2/2/4/1)
    synth_channels: tuple[int, ...] = (8, 16, 32, 32)
    synth_convs: tuple[int, ...] = (1, 1, 1, 1)
    # paper ablation switches (ABLATION sets all three)
    bidirectional: bool = True
    fusion: str = "all"
    synthesis: bool = True
    # consistency test (pixels / ratio)
    alpha: float = 1.0
    beta: float = 0.1
    # loss weights (see the class docstring)
    bivc_weight: float = 1.0
    cc_weight: float = 0.05
    pp_weight: float = 1.0
    perceptual_weight: float = 1.0
    kl_weight: float = 1e-3
    tv_weight: float = 0.01
    mask_weight: float = 0.1
    mask_temperature: float = 0.25  # pixels: soft mask sigmoid((threshold - delta) / T) of the anti-collapse term
    # not in the paper (1 = its L_bi-vc at full resolution only): L_bi-vc is also taken, with the same flows and masks,
    # between images blurred by Gaussians of sigma 2, 4, ... 2^(n-1) px and summed; at full resolution the warp's
    # gradient at zero flow does not point along motions of several pixels, blurred it does (training step docstring)
    photometric_scales: int = 1
    # not in the paper (0 = its unsupervised training): weight of an L1 term pulling the chosen steps' flows towards
    # OpenCV DIS flows of the training clip (pseudo-labels, computed in the step); see the step's docstring
    flow_supervision: float = 0.0
    # not in the paper (0 = off): supervision by the simulator's ground truth (datasets recorded with it). L1 end-point
    # error of the forward flows of all T steps against the true forward flow, moving pixels (|flow| > 0.5 px)
    # weighted gt_moving_boost times more; the same for the backward flows (gt_back_weight; costs data-loading time);
    # binary cross-entropy of the soft forward consistency masks against the true visibility (gt_mask_weight)
    gt_flow_weight: float = 0.0
    gt_back_weight: float = 0.0
    gt_mask_weight: float = 0.0
    gt_moving_boost: float = 10.0
    gt_object_boost: float = 0.0  # pixels showing an object (not the arm) weigh this much more again
    # "l1": the ground-truth flow terms score the L1 end-point error, whose minimiser is the conditional median: a
    # push that is not certain (an object hit in fewer than half of the futures like this one) is predicted as no
    # motion at all. "l2": the squared end-point error (pixels^2), minimised by the conditional mean, so the flows at
    # an object grow with the chance and size of its push (what a planner's expected cost needs)
    gt_flow_loss: str = "l1"
    # not in the paper (False = its generator): eta also enters every generator level after the upsampling, as
    # condition_dim constant maps beside two pixel-coordinate maps (x, y in [-1, 1], as CoordConv), so the generator
    # can relate the target to image positions at 4x4 .. H / flow_stride instead of only through the top's lift
    condition_maps: bool = False
    # not in the paper (False = its generator): a residual block at the flow resolution that fuses the image encoder's
    # features of that resolution (the paper fuses every level down to full resolution; at flow_stride > 1 the last
    # level would otherwise see the image only at half the flow resolution, too coarse for 5-8 px objects). Its last
    # convolution starts at zero (the identity), so switching it on with --init starts from the checkpoint's function
    out_fusion: bool = False
    # training: time steps per clip that are upsampled, warped, tested, synthesised and scored (0: all T)
    loss_steps: int = 2
    # perceptual term: "" = the ssim_l1 substitute; a path = VGG-19 features weights (models/perceptual.py)
    perceptual_weights: str = ""
    perceptual_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")  # VGG-19 features compared

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "image_size": 16,
            "horizon": 3,
            "motion_channels": (4, 8),
            "motion_pool": 1,
            "z_dim": 8,
            "enc_channels": (8, 8, 16),
            "gen_top": 16,
            "gen_channels": (16, 8),
            "flow_stride": 2,
            "flow_scale": 1.0,
            "synth_channels": (4, 8, 8, 8),
            "synth_convs": (1, 1, 1, 1),
            "loss_steps": 0,
        },
        "small": {},
        "paper": {
            "image_size": 128,
            "horizon": 8,
            "motion_channels": (64, 128, 256, 512),
            "motion_pool": 1,
            "z_dim": 1024,
            "enc_channels": (64, 128, 256, 512, 512, 512),
            "gen_top": 512,
            "gen_channels": (512, 512, 256, 128, 64, 32),
            "flow_stride": 1,
            "flow_scale": 8.0,
            "synth_channels": (64, 128, 256, 512),
            "synth_convs": (2, 2, 4, 1),
            "loss_steps": 0,
        },
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("motion_channels", "enc_channels", "gen_channels", "synth_channels", "synth_convs"):
            check_ints(name, getattr(self, name))
        for name in ("z_dim", "gen_top", "time_kernel", "flow_stride", "motion_pool"):
            check_int(name, getattr(self, name))
        check_int("loss_steps", self.loss_steps, minimum=0)
        check_int("photometric_scales", self.photometric_scales, maximum=MAX_PHOTOMETRIC_SCALES)
        if self.time_kernel % 2 == 0:
            raise ConfigError(f"time_kernel must be odd, got {self.time_kernel}")
        levels = len(self.enc_channels)
        if self.image_size % (2**levels):
            raise ConfigError(f"image_size {self.image_size} must be divisible by 2 ** len(enc_channels) = {2**levels}")
        stride = self.flow_stride
        if stride & (stride - 1) or stride > 2**levels:
            raise ConfigError(f"flow_stride must be a power of 2 up to 2 ** len(enc_channels), got {stride}")
        gen_levels = levels - int(math.log2(stride))
        if len(self.gen_channels) != gen_levels:
            raise ConfigError(
                f"gen_channels needs {gen_levels} widths (len(enc_channels) = {levels} levels, flow_stride {stride}), "
                f"got {len(self.gen_channels)}"
            )
        if len(self.synth_channels) != 4 or len(self.synth_convs) != 4:
            raise ConfigError("synth_channels and synth_convs need 4 entries (VGG-19 levels up to relu4_1)")
        if self.image_size % 8:
            raise ConfigError(f"image_size must be divisible by 8 (synthesis U-Net), got {self.image_size}")
        if self.gt_flow_loss not in GT_FLOW_LOSSES:
            raise ConfigError(f"gt_flow_loss must be one of {', '.join(GT_FLOW_LOSSES)}, got {self.gt_flow_loss!r}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.out_fusion and stride == 1:
            raise ConfigError("out_fusion needs flow_stride >= 2 (no image features at full resolution)")
        for name in ("bidirectional", "synthesis", "condition_maps", "out_fusion"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_number("flow_scale", self.flow_scale, positive=True)
        check_number("alpha", self.alpha, positive=True)
        check_number("mask_temperature", self.mask_temperature, positive=True)
        for name in ("beta", "bivc_weight", "cc_weight", "pp_weight", "perceptual_weight", "kl_weight"):
            check_number(name, getattr(self, name))
        for name in (
            "tv_weight",
            "mask_weight",
            "flow_supervision",
            "gt_flow_weight",
            "gt_back_weight",
            "gt_mask_weight",
            "gt_moving_boost",
            "gt_object_boost",
        ):
            check_number(name, getattr(self, name))
        if (self.gt_flow_weight or self.gt_mask_weight) and not self.bidirectional:
            raise ConfigError("gt_flow_weight and gt_mask_weight train the forward branch: they need bidirectional")
        known = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
        layers = self.perceptual_layers
        if not isinstance(layers, tuple) or not layers or not set(layers) <= set(known):
            raise ConfigError(f"perceptual_layers must be names from {', '.join(known)}, got {layers!r}")
        if not isinstance(self.perceptual_weights, str):
            raise ConfigError(f"perceptual_weights must be a path string ('' = none), got {self.perceptual_weights!r}")

    @property
    def perceptual(self) -> str:
        """Which perceptual term the training step uses: ``"vgg19"`` or ``"ssim_l1"``."""
        return "vgg19" if self.perceptual_weights else "ssim_l1"


# ----------------------------------------------------------------------------------------------------------------------
# building blocks


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def _conv2d(cin: int, cout: int, k: int = 3, stride: int = 1, padding: int | None = None) -> nn.Sequential:
    pad = k // 2 if padding is None else padding
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout), _act())


class TimeConv(nn.Module):
    """A 3D convolution (kernel ``(kt, 3, 3)``, zero padding ``(kt // 2, 1, 1)``) on videos laid out as
    (B, T, C, H, W), computed with 2D convolutions (the same numbers as ``F.conv3d``, whose CPU backward is several
    times slower): at time stride 1 every frame once, with the ``kt`` temporal taps stacked along the outputs, summed
    with time shifts; at time stride > 1 over the time-shifted input slices stacked along channels. An optional
    ``static`` input, the same at every step, is convolved once per video (``benchmarks/bench_timeconv.py``).

    ``weight`` has Conv3d's layout (C_out, C_in, kt, 3, 3). ``stride``: spatial; ``time_stride``: temporal.
    x: (B, T, C_in, H, W) -> (B, T', C_out, H', W') with ``T' = (T - 1) // time_stride + 1``.
    """

    def __init__(self, cin: int, cout: int, kt: int = 3, stride: int = 1, time_stride: int = 1, bias: bool = False):
        super().__init__()
        if kt % 2 == 0:
            raise ValueError(f"temporal kernel size must be odd, got {kt}")
        self.kt, self.stride, self.time_stride = kt, stride, time_stride
        self.weight = nn.Parameter(torch.empty(cout, cin, kt, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv3d's default initialisation

    def forward(self, x: torch.Tensor, static: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, C, H, W). static: None or (B, C_s, H, W), an input that is the same at every time step, as if
        concatenated after x's channels (``weight`` then has C + C_s inputs); its kernels are applied once per
        video instead of once per frame (the generator's content features and condition maps)."""
        t, c, ts = x.shape[1], x.shape[2], self.time_stride
        if static is not None and ts != 1:
            raise ValueError("a static input needs time_stride 1")
        weight = self.weight if static is None else self.weight[:, :c]
        y = self._shifted(x, weight) if ts == 1 else self._stacked(x, weight)
        if static is not None:
            y = y + self._static_term(static, self.weight[:, c:], t)
        return y if self.bias is None else y + self.bias.view(1, 1, -1, 1, 1)

    def _stacked(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Time stride > 1: the ``kt`` time-shifted input slices stacked along channels, one 2D convolution."""
        b, t, c, h, w = x.shape
        kt, ts = self.kt, self.time_stride
        t_out = (t - 1) // ts + 1
        if kt > 1:
            pad = x.new_zeros(b, kt // 2, c, h, w)
            xp = torch.cat([pad, x, pad], 1)
            x = torch.cat([xp[:, k : k + ts * (t_out - 1) + 1 : ts] for k in range(kt)], 2)
        elif ts > 1:
            x = x[:, ::ts]
        weight = weight.permute(0, 2, 1, 3, 4).reshape(weight.shape[0], kt * c, 3, 3)
        x = x.reshape(b * t_out, kt * c, h, w).contiguous(memory_format=torch.channels_last)  # faster CPU kernels
        y = F.conv2d(x, weight, None, self.stride, 1)
        return y.view(b, t_out, *y.shape[1:])

    def _shifted(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Time stride 1: one 2D convolution of every frame with all ``kt`` temporal taps stacked along the output
        channels, then ``y_t = sum_k Y_{t + k - kt // 2, k}`` (no copies of the input: on CPU the stacking of
        shifted inputs cost more than the convolution)."""
        b, t, c, h, w = x.shape
        kt, cout = self.kt, weight.shape[0]
        taps = weight.permute(2, 0, 1, 3, 4).reshape(kt * cout, c, 3, 3)
        frames = x.reshape(b * t, c, h, w).contiguous(memory_format=torch.channels_last)
        big = F.conv2d(frames, taps, None, self.stride, 1)
        big = big.view(b, t, kt, cout, *big.shape[-2:])
        y = big[:, :, kt // 2].clone()
        for k in range(kt):
            d = k - kt // 2
            if d and abs(d) < t:
                lo, hi = max(0, -d), min(t, t - d)
                y[:, lo:hi] += big[:, lo + d : hi + d, k]
        return y

    def _static_term(self, static: torch.Tensor, weight: torch.Tensor, t: int) -> torch.Tensor:
        """The contribution of a time-constant input to each of t output steps: (B, t, C_out, H', W'). Step t_o
        sums the taps k whose input step t_o + k - kt // 2 lies inside the clip (zero padding drops the others)."""
        kt, cout = self.kt, weight.shape[0]
        taps = weight.permute(2, 0, 1, 3, 4).reshape(kt * cout, weight.shape[1], 3, 3)
        per_tap = F.conv2d(static.contiguous(memory_format=torch.channels_last), taps, None, self.stride, 1)
        per_tap = per_tap.view(static.shape[0], kt, cout, *per_tap.shape[-2:])
        steps = torch.arange(t, device=static.device)[:, None] + torch.arange(kt, device=static.device) - kt // 2
        valid = ((steps >= 0) & (steps < t)).to(per_tap.dtype)  # (t, kt)
        return torch.einsum("tk,bkchw->btchw", valid, per_tap)


class TimeBlock(nn.Module):
    """TimeConv + BatchNorm (statistics over batch, time and space, as BatchNorm3d) + LeakyReLU(0.2).
    x: (B, T, C_in, H, W) -> (B, T', C_out, H', W')."""

    def __init__(self, cin: int, cout: int, kt: int = 3, stride: int = 1, time_stride: int = 1):
        super().__init__()
        self.conv = TimeConv(cin, cout, kt, stride, time_stride)
        self.norm = nn.BatchNorm2d(cout)
        self.act = _act()

    def forward(self, x: torch.Tensor, static: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x, static)
        return self.act(self.norm(y.flatten(0, 1))).view(y.shape)


class ResidualFusion(nn.Module):
    """v + TimeConv(TimeBlock([v, static])): a video (B, T, C, h, w) and a time-constant input (B, C_s, h, w) ->
    (B, T, C, h, w). ``out`` is zeroed by :class:`ImagineFlow` after its initialisation: the block starts as the
    identity."""

    def __init__(self, c: int, c_static: int, kt: int):
        super().__init__()
        self.block = TimeBlock(c + c_static, c, kt)
        self.out = TimeConv(c, c, kt)

    def forward(self, v: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return v + self.out(self.block(v, static))


class MotionEncoder(nn.Module):
    """q(z | I0, I_1..T): the clip (B, T + 1, 3, H, W) -> mean, log-variance (B, z_dim)."""

    def __init__(self, cfg: ImagineFlowConfig):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(cfg.motion_channels):
            layers.append(TimeBlock(cin, cout, 3, stride=2, time_stride=1 if i == 0 else 2))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 2 * cfg.z_dim)
        self.pool = cfg.motion_pool

    def forward(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool > 1:
            pooled = F.avg_pool2d(clip.flatten(0, 1), self.pool)
            clip = pooled.view(*clip.shape[:2], *pooled.shape[1:])
        h = self.body(clip).mean(dim=(1, 3, 4))
        mean, logvar = self.head(h).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)


class ImageEncoder(nn.Module):
    """E(I0): (B, 3, H, W) -> content features [c_1 (B, enc_channels[0], H/2, W/2), ..., c_L] and the top feature
    c_top (B, z_dim) (a valid conv over c_L)."""

    def __init__(self, cfg: ImagineFlowConfig):
        super().__init__()
        self.levels = nn.ModuleList()
        cin = 3
        for cout in cfg.enc_channels:
            self.levels.append(_conv2d(cin, cout, 4, 2, 1))
            cin = cout
        side = cfg.image_size // 2 ** len(cfg.enc_channels)
        self.top = nn.Sequential(nn.Conv2d(cin, cfg.z_dim, side, bias=False), nn.BatchNorm2d(cfg.z_dim), _act())

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats = []
        h = x.contiguous(memory_format=torch.channels_last)
        for level in self.levels:
            h = level(h)
            feats.append(h)
        return feats, self.top(h).flatten(1)


class FlowGenerator(nn.Module):
    """p(W^f, W^b | z, I0, eta): z (B, z_dim), content features, eta (B, C) | None -> forward and backward flows,
    each (B, T, 2, H / flow_stride, W / flow_stride) in full-resolution pixels (forward None when
    ``bidirectional=False``)."""

    def __init__(self, cfg: ImagineFlowConfig):
        super().__init__()
        self.cfg = cfg
        levels = len(cfg.enc_channels)
        self.side = cfg.image_size // 2**levels
        numel = cfg.gen_top * cfg.horizon * self.side**2
        self.lift = nn.Sequential(
            nn.Linear(cfg.z_dim + cfg.condition_dim, numel, bias=False), nn.BatchNorm1d(numel), _act()
        )
        kt = cfg.time_kernel
        self.fuse = nn.ModuleList()
        self.up = nn.ModuleList()
        self.post = nn.ModuleList()
        cin = cfg.gen_top
        # condition maps (eta tiled + x, y coordinates) appended to each post block's input; appended last, so a
        # checkpoint without them widens by zero input weights (training.trainer.load_init)
        self.maps = cfg.condition_dim + 2 if cfg.condition_maps and cfg.condition_dim else 0
        for i, cout in enumerate(cfg.gen_channels):
            m = levels - 1 - i  # index of the content feature at this level's input size
            if cfg.fusion == "all":
                self.fuse.append(TimeBlock(cin + cfg.enc_channels[m], cin, kt))
            self.up.append(TimeBlock(cin, cout, kt))
            self.post.append(TimeBlock(cout + self.maps, cout, kt))
            cin = cout
        # the image features at the flow resolution (index into the encoder's levels), for out_fusion
        self.out_level = levels - len(cfg.gen_channels) - 1
        self.out_fusion = ResidualFusion(cin, cfg.enc_channels[self.out_level], kt) if cfg.out_fusion else None
        # one conv for both heads: channels 0-1 forward (dx, dy), 2-3 backward (or 0-1 backward alone)
        self.head = TimeConv(cin, 4 if cfg.bidirectional else 2, kt, bias=True)

    def forward(
        self, z: torch.Tensor, feats: list[torch.Tensor], top: torch.Tensor, condition: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        cfg = self.cfg
        b = z.shape[0]
        fused = z * top  # depthwise 1x1 convolution of the z map with c_top as the kernel
        if cfg.condition_dim:
            fused = torch.cat([fused, condition.to(fused.dtype)], 1)
        v = self.lift(fused).view(b, cfg.horizon, cfg.gen_top, self.side, self.side)  # (B, T, C, h, w)
        levels = len(feats)
        for i in range(len(self.up)):
            if cfg.fusion == "all":  # content features: the same at every time step (a static input)
                v = self.fuse[i](v, feats[levels - 1 - i])
            u = F.interpolate(v.flatten(0, 1), scale_factor=2, mode="nearest")
            v = self.up[i](u.view(*v.shape[:2], *u.shape[1:]))
            maps = condition_maps(condition.to(v.dtype), v.shape[-1]) if self.maps else None  # (B, C + 2, h, w)
            v = self.post[i](v, maps)
        if self.out_fusion is not None:
            v = self.out_fusion(v, feats[self.out_level])
        flows = (self.head(v) * cfg.flow_scale).contiguous()  # (B, T, 4 | 2, h, w)
        return (flows[:, :, :2], flows[:, :, 2:]) if cfg.bidirectional else (None, flows)


def condition_maps(condition: torch.Tensor, size: int) -> torch.Tensor:
    """The condition as maps: (B, C) -> (B, C + 2, size, size), each condition number constant over its map,
    then the pixel centres' x and y in [-1, 1] (x right, y down)."""
    b, c = condition.shape
    axis = (torch.arange(size, device=condition.device, dtype=condition.dtype) + 0.5) * (2.0 / size) - 1.0
    xs = axis.view(1, 1, 1, size).expand(b, 1, size, size)
    ys = axis.view(1, 1, size, 1).expand(b, 1, size, size)
    return torch.cat([condition.view(b, c, 1, 1).expand(b, c, size, size), xs, ys], 1)


def upsample_flow(flow: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of a flow field whose values are already in full-resolution pixels.
    flow: (N, 2, h, w) -> (N, 2, size, size) (unchanged when h == size)."""
    if flow.shape[-1] == size and flow.shape[-2] == size:
        return flow
    return F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False)


class SynthesisUNet(nn.Module):
    """R(warped, mask): (N, 3, H, W) in [-1, 1] + (N, 1, H, W) visibility -> (N, 3, H, W) (warped + correction)."""

    def __init__(self, cfg: ImagineFlowConfig):
        super().__init__()
        widths, convs = cfg.synth_channels, cfg.synth_convs
        self.enc = nn.ModuleList()
        cin = 4
        for w, n in zip(widths, convs):
            self.enc.append(nn.Sequential(*[_conv2d(cin if j == 0 else w, w) for j in range(n)]))
            cin = w
        self.dec = nn.ModuleList()
        for level in (2, 1, 0):  # mirrored: up to relu3_1's size, skip relu3_1, ... relu1_1
            w, n = widths[level], convs[level]
            self.dec.append(nn.Sequential(*[_conv2d(cin + w if j == 0 else w, w) for j in range(n)]))
            cin = w
        self.out = nn.Conv2d(cin, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.cat([warped, mask.to(warped.dtype)], 1).contiguous(memory_format=torch.channels_last)
        skips = []
        for i, block in enumerate(self.enc):
            if i:
                h = F.max_pool2d(h, 2)
            first = block[0](h)  # relu{i+1}_1
            skips.append(first)
            h = block[1:](first) if len(block) > 1 else first
        for block, skip in zip(self.dec, reversed(skips[:3])):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, skip], 1))
        return warped + self.out(h).contiguous()


# ----------------------------------------------------------------------------------------------------------------------
# the method


class ImagineFlow(Method):
    """See module docstring."""

    name = "imagineflow"
    Config = ImagineFlowConfig
    native_flow = True

    def __init__(self, config: ImagineFlowConfig):
        super().__init__(config)
        self.motion_encoder = MotionEncoder(config)
        self.image_encoder = ImageEncoder(config)
        self.generator = FlowGenerator(config)
        self.synthesis = SynthesisUNet(config) if config.synthesis else None
        for module in self.modules():  # He initialisation for LeakyReLU(0.2): activations keep their scale
            if isinstance(module, (nn.Conv2d, nn.Linear, TimeConv)) and module is not getattr(self.synthesis, "out", 0):
                nn.init.kaiming_normal_(module.weight, a=0.2)
        with torch.no_grad():
            self.generator.head.weight.mul_(0.25)  # small initial flows (near-identity warps), still z-dependent
            if self.generator.out_fusion is not None:
                self.generator.out_fusion.out.weight.zero_()  # the residual block starts as the identity

    def channel_layout(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """The generator's layers whose widths follow ``gen_channels``: module path -> (output segments, input
        segments), each a tuple of channel counts in the order the layer concatenates them (the video's channels
        first, then a static input: content features or condition maps). ``training.trainer.widen_state`` uses it
        to copy a checkpoint with narrower ``gen_channels`` into this model without changing its function."""
        cfg, gen = self.config, self.generator
        layout: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        levels = len(cfg.enc_channels)
        cin = cfg.gen_top
        for i, cout in enumerate(cfg.gen_channels):
            if cfg.fusion == "all":
                layout[f"generator.fuse.{i}"] = ((cin,), (cin, cfg.enc_channels[levels - 1 - i]))
            layout[f"generator.up.{i}"] = ((cout,), (cin,))
            layout[f"generator.post.{i}"] = ((cout,), (cout, gen.maps))  # maps: 0 without condition_maps
            cin = cout
        if gen.out_fusion is not None:
            layout["generator.out_fusion.block"] = ((cin,), (cin, cfg.enc_channels[gen.out_level]))
            layout["generator.out_fusion.out"] = ((cin,), (cin,))
        layout["generator.head"] = ((4 if cfg.bidirectional else 2,), (cin,))
        return layout

    @property
    def extra_clip_keys(self) -> tuple[str, ...]:
        c = self.config
        keys = ("flow", "visible") if c.gt_flow_weight or c.gt_mask_weight else ()
        keys += ("part_kind",) if c.gt_flow_weight else ()  # the object boost, and the log of the objects' EPE
        return keys + (("flow_back",) if c.gt_back_weight else ())

    # ----------------------------------------------------------------------------------------------- helpers
    def _condition(self, x0: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor | None:
        self.check_inputs(x0, condition)
        if not self.config.condition_dim:
            return None
        if condition is None:
            return torch.zeros(x0.shape[0], self.config.condition_dim, device=x0.device, dtype=x0.dtype)
        return condition.to(x0.dtype)

    def synthesize(self, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """warped: (N, 3, H, W) in [-1, 1]; mask: (N, 1, H, W) in [0, 1] -> (N, 3, H, W) (unclamped; the warped
        frame itself when ``synthesis=False``)."""
        return warped if self.synthesis is None else self.synthesis(warped, mask)

    def flows(
        self, x0: torch.Tensor, z: torch.Tensor, condition: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Forward and backward flows for latents z. x0: (B, 3, H, W) in [-1, 1]; z: (B, z_dim); condition (B, C) or
        None. Returns ``(W^f, W^b)``, each (B, T, 2, H, W) pixels (W^f is None when ``bidirectional=False``)."""
        cond = self._condition(x0, condition)
        if z.shape != (x0.shape[0], self.config.z_dim):
            raise ValueError(f"z must have shape ({x0.shape[0]}, {self.config.z_dim}), got {tuple(z.shape)}")
        feats, top = self.image_encoder(x0)
        return self.generator(z, feats, top, cond)

    # ----------------------------------------------------------------------------------------------- training
    def forward(
        self,
        x0: torch.Tensor,
        future: torch.Tensor,
        condition: torch.Tensor | None = None,
        loss_steps: int | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Training pass on clips. x0: (B, 3, H, W), future: (B, T, 3, H, W), both in [-1, 1]; condition (B, C) or
        None; loss_steps: time steps per clip to render at full resolution (default config.loss_steps; 0 = all T).

        Returns a dict (K = the B * k chosen (clip, t) pairs, k = loss_steps or T; h = H / flow_stride):
        ``mean``, ``logvar`` (B, z_dim); ``forward``, ``backward`` (B, T, 2, h, h) generated flows in full-resolution
        pixels (``forward`` None if not bidirectional); ``index`` (K,) int64 rows ``clip * T + t``;
        ``flow_f``, ``flow_b`` (K, 2, H, W) the chosen flows at full resolution; ``source`` (K, 3, H, W) = I0,
        ``target`` (K, 3, H, W) = I_t; ``warped_t0`` = warp(I0, W^b), ``warped_0t`` = warp(I_t, W^f) (K, 3, H, W);
        ``mask_t0``, ``mask_0t`` (K, 1, H, W) in {0, 1} and ``delta_*``, ``threshold_*`` (K, 1, H, W) pixels of the
        consistency tests; ``synth_t0`` = R(warped_t0, mask_t0), ``synth_0t`` = R(warped_0t, mask_0t) (K, 3, H, W).
        Without the forward branch, the ``*_0t``, ``delta_*``, ``threshold_*`` and ``flow_f`` entries are None and
        ``mask_t0`` is all ones.
        """
        cfg = self.config
        cond = self._condition(x0, condition)
        b, t, s = x0.shape[0], cfg.horizon, cfg.image_size
        if future.shape != (b, t, *x0.shape[1:]):
            raise ValueError(f"future must have shape {(b, t, *x0.shape[1:])}, got {tuple(future.shape)}")
        mean, logvar = self.motion_encoder(torch.cat([x0[:, None], future], 1))
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        fwd, bwd = self.flows(x0, z, cond)
        k = cfg.loss_steps if loss_steps is None else loss_steps
        if 0 < k < t:
            steps = torch.rand(b, t, device=x0.device).argsort(1)[:, :k]
        else:
            steps = torch.arange(t, device=x0.device).expand(b, t)
        clip = torch.arange(b, device=x0.device)[:, None].expand_as(steps)
        clip, steps = clip.flatten(), steps.flatten()
        source, target = x0[clip], future[clip, steps]
        wb = upsample_flow(bwd[clip, steps], s)
        out: dict[str, torch.Tensor | None] = {
            "mean": mean,
            "logvar": logvar,
            "forward": fwd,
            "backward": bwd,
            "index": clip * t + steps,
            "flow_b": wb,
            "source": source,
            "target": target,
            "warped_t0": warp(source, wb),
        }
        if fwd is not None:
            wf = upsample_flow(fwd[clip, steps], s)
            out["flow_f"] = wf
            out["warped_0t"] = warp(target, wf)
            out["mask_0t"], out["delta_0t"], out["threshold_0t"] = consistency(wf, wb, cfg.alpha, cfg.beta)
            out["mask_t0"], out["delta_t0"], out["threshold_t0"] = consistency(wb, wf, cfg.alpha, cfg.beta)
            out["synth_t0"] = self.synthesize(out["warped_t0"], out["mask_t0"])
            out["synth_0t"] = self.synthesize(out["warped_0t"], out["mask_0t"])
        else:
            for key in ("flow_f", "warped_0t", "mask_0t", "delta_0t", "threshold_0t", "delta_t0", "threshold_t0"):
                out[key] = None
            out["mask_t0"] = torch.ones_like(target[:, :1])
            out["synth_t0"] = self.synthesize(out["warped_t0"], out["mask_t0"])
            out["synth_0t"] = None
        return out

    # ----------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def rollout(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None = None,
        z: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Everything a sample is made of. x0: (B, 3, H, W) in [-1, 1]; condition (B, C) or None; z: (B * N, z_dim)
        or None (drawn from N(0, I) with ``generator``).

        Returns (shapes (B, N, T, ...)): ``frames`` (.., 3, H, W) in [-1, 1]; ``forward``, ``backward``
        (.., 2, H, W) pixels; ``mask_0t`` (visibility of input pixels in frame t, on the input's grid) and ``mask_t0``
        (visibility in the input of frame t's pixels, on frame t's grid) (.., 1, H, W) {0, 1}; ``warped``
        (.., 3, H, W) = warp(I0, W^b_t).
        """
        cfg = self.config
        b, n, t, s = x0.shape[0], num_samples, cfg.horizon, cfg.image_size
        fwd, bwd = self._generate(x0, condition, num_samples, generator, z)
        wb = upsample_flow(bwd.flatten(0, 1), s)
        wf = invert_flow(wb) if fwd is None else upsample_flow(fwd.flatten(0, 1), s)
        mask_0t, _, _ = consistency(wf, wb, cfg.alpha, cfg.beta)
        mask_t0, _, _ = consistency(wb, wf, cfg.alpha, cfg.beta)
        source = x0.repeat_interleave(n * t, 0)
        warped = warp(source, wb)
        frames = self.synthesize(warped, mask_t0).clamp(-1.0, 1.0)

        def shaped(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, n, t, *x.shape[1:])

        return {
            "frames": shaped(frames),
            "forward": shaped(wf),
            "backward": shaped(wb),
            "mask_0t": shaped(mask_0t),
            "mask_t0": shaped(mask_t0),
            "warped": shaped(warped),
        }

    @torch.no_grad()
    def sample_flows(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The forward flows :meth:`sample` would return for the same generator state, (B, N, T, 2, H, W) pixels,
        without the warps, consistency tests and synthesis (a fraction of the cost)."""
        b, t, s = x0.shape[0], self.config.horizon, self.config.image_size
        fwd, bwd = self._generate(x0, condition, num_samples, generator)
        wf = invert_flow(upsample_flow(bwd.flatten(0, 1), s)) if fwd is None else upsample_flow(fwd.flatten(0, 1), s)
        return wf.reshape(b, num_samples, t, *wf.shape[1:])

    def _generate(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None,
        z: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Generated flows (B * N, T, 2, h, h) for N samples per input: z drawn from N(0, I) with ``generator``
        unless given (B * N, z_dim)."""
        cfg = self.config
        cond = self._condition(x0, condition)
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        b, n = x0.shape[0], num_samples
        if z is None:
            z = randn((b * n, cfg.z_dim), generator, x0.device).to(x0.dtype)
        elif z.shape != (b * n, cfg.z_dim):
            raise ValueError(f"z must have shape ({b * n}, {cfg.z_dim}), got {tuple(z.shape)}")
        feats, top = self.image_encoder(x0)
        rep = [f.repeat_interleave(n, 0) for f in feats]
        c = None if cond is None else cond.repeat_interleave(n, 0)
        return self.generator(z, rep, top.repeat_interleave(n, 0), c)

    @torch.no_grad()
    def sample(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> Sample:
        """Futures with z ~ N(0, I). x0: (B, 3, H, W) float in [-1, 1]; condition: (B, C) or None. Returns
        ``Sample(frames (B, N, T, 3, H, W) in [-1, 1], flows (B, N, T, 2, H, W) forward flows input -> frame t in
        pixels (dx, dy), masks (B, N, T, 1, H, W) M_{0<-t} in {0, 1})``."""
        r = self.rollout(x0, condition, num_samples, generator)
        return Sample(frames=r["frames"], flows=r["forward"], masks=r["mask_0t"])
