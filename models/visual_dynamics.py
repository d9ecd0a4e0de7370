"""``visual_dynamics``: the cross convolutional network of Xue, Wu, Bouman and Freeman (Visual Dynamics, TPAMI).

A conditional VAE over the *difference image* ``v = J - I`` between a frame ``I`` and the next frame ``J``
(documented in ``docs/methods/visual-dynamics.md``)::

    motion encoder   q(z | I, v)  concat(I, v) -> conv blocks with 2x2 max-pools -> linear conv head at z_size x z_size
                                   -> mean and log-variance, each (z_channels, z_size, z_size) (paper: 128x5x5 = 3200-d)
    kernel decoder   z (+ eta)   -> conv + BN + ReLU -> linear conv -> num_scales x num_kernels kernels of k x k
    image encoders   I (+ eta)   -> one unshared encoder per level of the image pyramid -> num_kernels maps at 1/4 size
    cross conv       each feature map convolved with its own predicted kernel (:func:`cross_convolve`)
    motion decoder   all scales upsampled to H x W, concatenated -> conv dk x dk + BN + ReLU -> 1x1 + BN + ReLU ... ->
                     1x1 linear -> 3 channels = the predicted *scaled* difference image ``v_hat * target_scale``

At test time ``J_hat = clamp(I + v_hat(I, z), -1, 1)``; videos are extrapolated with the same ``z`` for every step,
``I_{t+1} = I_t + v_hat(I_t, z)``. ``z`` comes from a bank of posterior means recorded during training (the paper's
"empirical distribution of training posteriors", a ring buffer saved with the weights) or from the prior N(0, I).

Where the condition eta (normalised end-effector target, ``condition_dim`` numbers) enters is the config field
``condition_inputs``: ``"kernels"`` tiles eta over the z map before the kernel decoder (eta steers the motion),
``"image"`` tiles eta as extra input channels of every image encoder (eta can interact with where things are). The
default is both. The motion encoder never sees eta, so a bank or analogy z combines with any eta. A missing
condition (``None``) for a conditioned model means eta = 0, i.e. the training mean of the normalised condition.

Deviations from the paper, all config values: the paper's sixth motion-encoder conv is the linear head that outputs
mean and log-variance (it cannot have BN + ReLU); its max-pools go after each block while the map stays at least
``z_size``, and the head is a valid conv that lands exactly on ``z_size``; the kernel decoder's second conv is linear
(kernels of either sign); the kernel decoder's input z map is resized to ``kernel_size`` when ``z_size`` differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from imagine_ros.errors import ConfigError
from imagine_ros.models.base import Method, MethodConfig, Sample, check_int, check_ints, check_number, randn

SAMPLE_SOURCES = ("bank", "prior")
CONDITION_INPUTS = ("kernels", "image")
#: log-variance is clamped to this range before exp() (a diverging posterior must not make inf/NaN)
LOGVAR_RANGE = (-20.0, 10.0)


# ----------------------------------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class VisualDynamicsConfig(MethodConfig):
    """Cross convolutional network sizes and loss weights. Defaults = the ``small`` preset (64x64, 2 CPU cores).

    Loss per pair ``(I, J)``: ``beta * KL(q(z|I, v) || N(0, I)) + recon_weight * ||v * target_scale - f(z, I)||^2``
    (sums over z dimensions and pixels, mean over pairs), ``recon_weight`` = lambda = 1 / (2 sigma^2) with sigma in
    target units (``v`` is in [-1, 1] image units, so ``target_scale = 50`` is the paper's ``v * 100`` for [0, 1]
    images). beta warms up geometrically: ``kl_weight * min(1, beta_start * 2 ** (step / beta_doubling_steps))``
    (``beta_start = 1`` switches warm-up off).
    """

    # motion encoder: widths of the 5x5 conv + BN + ReLU blocks (max-pools in between); a linear conv head follows
    motion_channels: tuple[int, ...] = (48, 48, 64, 64, 128)
    z_channels: int = 8  # z is (z_channels, z_size, z_size): 8 x 5 x 5 = 200 numbers
    z_size: int = 5
    # kernel decoder: width of its hidden 5x5 conv; outputs num_scales * num_kernels kernels of kernel_size^2
    kernel_channels: int = 64
    num_kernels: int = 16  # kernels (= image feature maps) per scale
    kernel_size: int = 5  # odd
    num_scales: int = 4
    pyramid_top: int = 64  # side of the largest pyramid level (image_size * 2^k); the others halve: 64/32/16/8
    # image encoders (one per scale): hidden 5x5 conv + BN + ReLU widths, then one to num_kernels; 2 max-pools
    image_channels: tuple[int, ...] = (32, 32, 32)
    # motion decoder: widths of conv(decoder_kernel) + BN + ReLU, then 1x1 + BN + ReLU ..., then a linear 1x1 to 3.
    # A quarter of the paper's 128: the full-resolution 9x9 conv is most of the CPU cost (64 wide: ~3x slower steps)
    decoder_channels: tuple[int, ...] = (32, 32)
    decoder_kernel: int = 9  # odd
    # loss
    target_scale: float = 50.0  # the network regresses v * target_scale
    recon_weight: float = 0.5  # lambda = 1 / (2 sigma^2), sigma = 1 target unit
    kl_weight: float = 1.0  # beta after warm-up
    beta_start: float = 1e-3
    beta_doubling_steps: int = 100
    pairs_per_clip: int = 2  # consecutive frame pairs drawn per training clip (0: all T pairs)
    # sampling
    bank_size: int = 4096  # posterior means kept (ring buffer, saved with the weights)
    sample_from: str = "bank"  # "bank" (empty bank -> prior) or "prior"
    condition_inputs: tuple[str, ...] = CONDITION_INPUTS  # where eta enters (module docstring); ignored if dim 0

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "image_size": 16,
            "horizon": 3,
            "motion_channels": (8, 8),
            "z_channels": 2,
            "z_size": 3,
            "kernel_channels": 8,
            "num_kernels": 4,
            "kernel_size": 3,
            "num_scales": 2,
            "pyramid_top": 16,
            "image_channels": (8,),
            "decoder_channels": (16, 16),
            "decoder_kernel": 5,
            "bank_size": 16,
        },
        "small": {},
        "paper": {
            "image_size": 128,
            "motion_channels": (96, 96, 128, 128, 256),  # + the linear head to 2 x 128 = the paper's sixth conv
            "z_channels": 128,  # 128 x 5 x 5 = 3200
            "z_size": 5,
            "kernel_channels": 128,
            "num_kernels": 32,
            "kernel_size": 5,
            "num_scales": 4,
            "pyramid_top": 256,  # 256/128/64/32 for 128-px input (spec)
            "image_channels": (64, 64, 64),  # + 32 = {64, 64, 64, 32}
            "decoder_channels": (128, 128),
            "decoder_kernel": 9,
            "bank_size": 1024,
        },
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ints("motion_channels", self.motion_channels)
        check_ints("image_channels", self.image_channels, allow_empty=True)
        check_ints("decoder_channels", self.decoder_channels)
        for name in ("z_channels", "z_size", "kernel_channels", "num_kernels", "kernel_size", "num_scales"):
            check_int(name, getattr(self, name))
        for name in ("bank_size", "beta_doubling_steps"):
            check_int(name, getattr(self, name))
        check_int("pairs_per_clip", self.pairs_per_clip, minimum=0)
        for name in ("kernel_size", "decoder_kernel"):
            value = getattr(self, name)
            check_int(name, value)
            if value % 2 == 0:
                raise ConfigError(f"{name} must be odd (same-size convolution), got {value}")
        if self.z_size > self.image_size:
            raise ConfigError(f"z_size must be <= image_size ({self.image_size}), got {self.z_size}")
        check_int("pyramid_top", self.pyramid_top)
        ratio = self.pyramid_top // self.image_size
        if self.pyramid_top % self.image_size or ratio & (ratio - 1):
            raise ConfigError(f"pyramid_top must be image_size ({self.image_size}) times 2**k, got {self.pyramid_top}")
        smallest = self.pyramid_top >> (self.num_scales - 1)
        if smallest < 4 or smallest << (self.num_scales - 1) != self.pyramid_top:
            raise ConfigError(f"num_scales={self.num_scales} halves pyramid_top={self.pyramid_top} below 4 px or oddly")
        check_number("target_scale", self.target_scale, positive=True)
        check_number("recon_weight", self.recon_weight, positive=True)
        check_number("kl_weight", self.kl_weight)
        check_number("beta_start", self.beta_start, positive=True)
        if self.beta_start > 1:
            raise ConfigError(f"beta_start must be in (0, 1], got {self.beta_start!r}")
        if self.sample_from not in SAMPLE_SOURCES:
            raise ConfigError(f"sample_from must be one of {', '.join(SAMPLE_SOURCES)}, got {self.sample_from!r}")
        inputs = self.condition_inputs
        if not isinstance(inputs, tuple) or len(set(inputs)) != len(inputs) or not set(inputs) <= set(CONDITION_INPUTS):
            raise ConfigError(f"condition_inputs must be distinct names from {CONDITION_INPUTS}, got {inputs!r}")
        if self.condition_dim and not inputs:
            raise ConfigError("condition_inputs is empty but condition_dim > 0 (set condition_dim=0 for no condition)")

    @property
    def z_dim(self) -> int:
        """Numbers in one latent z (``z_channels * z_size ** 2``)."""
        return self.z_channels * self.z_size**2


# ----------------------------------------------------------------------------------------------------------------------
# cross convolution


def cross_convolve(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve every feature map with its own kernel: one grouped ``conv2d``, no loop over the batch.

    features: (B, C, H, W) float; kernels: (B, C, k, k) float, k odd. Returns (B, C, H, W): ``out[b, c] =
    features[b, c] (*) kernels[b, c]`` (cross-correlation as ``F.conv2d``, zero padding ``k // 2``, no bias).
    """
    if features.ndim != 4 or kernels.ndim != 4 or kernels.shape[:2] != features.shape[:2]:
        raise ValueError(
            f"features (B, C, H, W) and kernels (B, C, k, k) must agree, got {tuple(features.shape)}, "
            f"{tuple(kernels.shape)}"
        )
    b, c, h, w = features.shape
    k = kernels.shape[-1]
    if kernels.shape[-2] != k or k % 2 == 0:
        raise ValueError(f"kernels must be square with an odd side, got {tuple(kernels.shape[-2:])}")
    out = F.conv2d(features.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, k, k), padding=k // 2, groups=b * c)
    return out.view(b, c, h, w)


def cross_convolve_loop(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Reference of :func:`cross_convolve` with a Python loop over the batch (tests and benchmarks only).

    features: (B, C, H, W); kernels: (B, C, k, k). Returns (B, C, H, W).
    """
    c, k = features.shape[1], kernels.shape[-1]
    outs = [F.conv2d(f[None], w[:, None], padding=k // 2, groups=c) for f, w in zip(features, kernels)]
    return torch.cat(outs, 0)


# ----------------------------------------------------------------------------------------------------------------------
# building blocks


def _block(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _tile(condition: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """condition (B, C) -> (B, C, h, w) with the spatial size of ``like`` (B, *, h, w)."""
    return condition[:, :, None, None].to(like.dtype).expand(-1, -1, *like.shape[-2:])


class MotionEncoder(nn.Module):
    """q(z | I, v): concat(I, v) (B, 6, H, W) -> mean and log-variance, each (B, z_channels, z_size, z_size)."""

    def __init__(self, cfg: VisualDynamicsConfig):
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = 6, cfg.image_size
        for i, cout in enumerate(cfg.motion_channels):
            layers += _block(cin, cout, 5)
            cin = cout
            if i < len(cfg.motion_channels) - 1 and size // 2 >= cfg.z_size:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 2 * cfg.z_channels, size - cfg.z_size + 1)  # valid conv: size -> z_size

    def forward(self, image: torch.Tensor, diff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.head(self.body(torch.cat([image, diff], 1))).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)


class KernelDecoder(nn.Module):
    """z map (B, z_channels [+ C], z_size, z_size) -> kernels (B, num_scales, num_kernels, k, k)."""

    def __init__(self, cfg: VisualDynamicsConfig, cond_channels: int):
        super().__init__()
        self.k, self.scales, self.kernels = cfg.kernel_size, cfg.num_scales, cfg.num_kernels
        self.net = nn.Sequential(
            *_block(cfg.z_channels + cond_channels, cfg.kernel_channels, 5),
            nn.Conv2d(cfg.kernel_channels, cfg.num_scales * cfg.num_kernels, 5, padding=2),
        )

    def forward(self, zmap: torch.Tensor) -> torch.Tensor:
        if zmap.shape[-1] != self.k:
            zmap = F.interpolate(zmap, size=(self.k, self.k), mode="bilinear", align_corners=True)
        return self.net(zmap).view(zmap.shape[0], self.scales, self.kernels, self.k, self.k)


class ImageEncoder(nn.Module):
    """One pyramid level (B, 3 [+ C], h, w) -> num_kernels feature maps (B, num_kernels, h / 4, w / 4)."""

    def __init__(self, cfg: VisualDynamicsConfig, cond_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3 + cond_channels
        widths = (*cfg.image_channels, cfg.num_kernels)
        for i, cout in enumerate(widths):
            layers += _block(cin, cout, 5)
            cin = cout
            if i < 2:  # 2x2 max-pools after the first two blocks
                layers.append(nn.MaxPool2d(2))
        layers += [nn.MaxPool2d(2)] * max(0, 2 - len(widths))  # a one-block encoder still reaches 1/4 size
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class MotionDecoder(nn.Module):
    """Cross-convolved maps, all scales upsampled to H x W and concatenated -> scaled difference (B, 3, H, W)."""

    def __init__(self, cfg: VisualDynamicsConfig):
        super().__init__()
        layers: list[nn.Module] = []
        cin = cfg.num_scales * cfg.num_kernels
        for i, cout in enumerate(cfg.decoder_channels):
            layers += _block(cin, cout, cfg.decoder_kernel if i == 0 else 1)
            cin = cout
        layers.append(nn.Conv2d(cin, 3, 1))
        self.net = nn.Sequential(*layers)
        self.size = cfg.image_size

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        up = [F.interpolate(m, size=(self.size, self.size), mode="bilinear", align_corners=False) for m in maps]
        return self.net(torch.cat(up, 1))


# ----------------------------------------------------------------------------------------------------------------------
# the method


class VisualDynamics(Method):
    """Cross convolutional network (module docstring). Training goes through :meth:`forward` (the trainer may wrap
    the module in DDP); the loss lives in :mod:`imagine_ros.training.steps.visual_dynamics`.

    Buffers (saved in ``state_dict``): ``bank`` (bank_size, z_dim) posterior means, ``bank_count`` () int64 = how
    many means were ever written; the first ``min(bank_count, bank_size)`` rows are filled, the next write goes to
    row ``bank_count % bank_size``. Use ``.eval()`` for sampling (BatchNorm).
    """

    name = "visual_dynamics"
    Config = VisualDynamicsConfig
    native_flow = False

    def __init__(self, config: VisualDynamicsConfig):
        super().__init__(config)
        cfg = config
        self.cond_dim = cfg.condition_dim
        self.cond_kernels = cfg.condition_dim if "kernels" in cfg.condition_inputs else 0
        self.cond_image = cfg.condition_dim if "image" in cfg.condition_inputs else 0
        self.motion_encoder = MotionEncoder(cfg)
        self.kernel_decoder = KernelDecoder(cfg, self.cond_kernels)
        self.image_encoders = nn.ModuleList(ImageEncoder(cfg, self.cond_image) for _ in range(cfg.num_scales))
        self.motion_decoder = MotionDecoder(cfg)
        self.register_buffer("bank", torch.zeros(cfg.bank_size, cfg.z_dim))
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.int64))

    # -- checks and helpers --------------------------------------------------------------------------------------------

    def _condition(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor | None:
        """Checks x (B, 3, S, S) and condition (B, C); returns the condition to use (None when unconditioned)."""
        self.check_inputs(x, condition)
        if not self.cond_dim:
            return None
        if condition is None:
            return x.new_zeros(x.shape[0], self.cond_dim)
        return condition.to(device=x.device, dtype=x.dtype)

    def _check_pair(self, name: str, x: torch.Tensor, other: torch.Tensor) -> None:
        if tuple(other.shape) != tuple(x.shape):
            raise ValueError(f"{name} must have the shape of x0 {tuple(x.shape)}, got {tuple(other.shape)}")

    def _check_z(self, z: torch.Tensor, batch: int) -> None:
        if tuple(z.shape) != (batch, self.config.z_dim):
            raise ValueError(f"z must have shape ({batch}, {self.config.z_dim}), got {tuple(z.shape)}")

    def _pyramid(self, image: torch.Tensor) -> list[torch.Tensor]:
        top = self.config.pyramid_top
        level = image
        if top != image.shape[-1]:
            level = F.interpolate(image, size=(top, top), mode="bilinear", align_corners=False)
        levels = [level]
        for _ in range(self.config.num_scales - 1):
            level = F.avg_pool2d(level, 2)
            levels.append(level)
        return levels

    def kernels(self, z: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """Motion kernels. z: (B, z_dim); condition: (B, C) or None (as returned by the checks).
        Returns (B, num_scales, num_kernels, k, k)."""
        cfg = self.config
        zmap = z.reshape(z.shape[0], cfg.z_channels, cfg.z_size, cfg.z_size)
        if self.cond_kernels and condition is not None:
            zmap = torch.cat([zmap, _tile(condition, zmap)], 1)
        return self.kernel_decoder(zmap)

    def motion(self, image: torch.Tensor, kernels: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """Scaled difference image. image: (B, 3, H, W) in [-1, 1]; kernels: (B, S, K, k, k) from :meth:`kernels`.
        Returns (B, 3, H, W) float, ``v_hat * target_scale``."""
        maps = []
        for s, (level, encoder) in enumerate(zip(self._pyramid(image), self.image_encoders)):
            if self.cond_image and condition is not None:
                level = torch.cat([level, _tile(condition, level)], 1)
            maps.append(cross_convolve(encoder(level), kernels[:, s]))
        return self.motion_decoder(maps)

    def _rollout(self, x: torch.Tensor, z: torch.Tensor, condition: torch.Tensor | None, horizon: int) -> torch.Tensor:
        """x (B, 3, H, W), z (B, z_dim) -> (B, horizon, 3, H, W): I_{t+1} = clamp(I_t + v_hat(I_t, z))."""
        kernels = self.kernels(z, condition)  # the same z, hence the same kernels, for every step
        frames = []
        for _ in range(horizon):
            x = (x + self.motion(x, kernels, condition) / self.config.target_scale).clamp(-1.0, 1.0)
            frames.append(x)
        return torch.stack(frames, 1)

    # -- public API ----------------------------------------------------------------------------------------------------

    def encode(
        self, x0: torch.Tensor, x1: torch.Tensor, condition: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z | x0, x1 - x0). x0, x1: (B, 3, H, W) float in [-1, 1]; condition: (B, C) or None (checked
        only: the motion encoder does not see eta). Returns mean and log-variance, each (B, z_dim)."""
        self._condition(x0, condition)
        self._check_pair("x1", x0, x1)
        mean, logvar = self.motion_encoder(x0, x1 - x0)
        return mean.flatten(1), logvar.flatten(1)

    def decode(self, x0: torch.Tensor, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Next frame. x0: (B, 3, H, W) float in [-1, 1]; z: (B, z_dim); condition: (B, C) or None (= 0).
        Returns (B, 3, H, W) float in [-1, 1]: ``clamp(x0 + v_hat(x0, z))``."""
        cond = self._condition(x0, condition)
        self._check_z(z, x0.shape[0])
        pred = self.motion(x0, self.kernels(z, cond), cond)
        return (x0 + pred / self.config.target_scale).clamp(-1.0, 1.0)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, condition: torch.Tensor | None = None) -> dict:
        """Training pass on frame pairs. x0, x1: (B, 3, H, W) float in [-1, 1] (x1 = the next frame);
        condition: (B, C) or None. Returns a dict of (B, ...) tensors: ``mean``, ``logvar`` (B, z_dim) of
        q(z | x0, x1 - x0), ``z`` (B, z_dim) reparameterised sample, ``pred`` (B, 3, H, W) the predicted scaled
        difference ``f(z, x0)``, ``target`` (B, 3, H, W) the true scaled difference ``(x1 - x0) * target_scale``."""
        cond = self._condition(x0, condition)
        self._check_pair("x1", x0, x1)
        diff = x1 - x0
        mean, logvar = self.motion_encoder(x0, diff)
        mean, logvar = mean.flatten(1), logvar.flatten(1)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        pred = self.motion(x0, self.kernels(z, cond), cond)
        return {"mean": mean, "logvar": logvar, "z": z, "pred": pred, "target": diff * self.config.target_scale}

    @property
    def bank_filled(self) -> int:
        """Rows of :attr:`bank` that hold posterior means."""
        return min(int(self.bank_count), self.config.bank_size)

    @torch.no_grad()
    def update_bank(self, mean: torch.Tensor) -> None:
        """Write posterior means (N, z_dim) into the ring buffer (oldest overwritten; only the last bank_size kept
        when N > bank_size)."""
        size = self.config.bank_size
        mean = mean.detach().reshape(mean.shape[0], -1).to(self.bank.device)
        self._check_z(mean, mean.shape[0])
        count = int(self.bank_count)
        if mean.shape[0] > size:
            count += mean.shape[0] - size
            mean = mean[-size:]
        rows = (torch.arange(mean.shape[0], device=self.bank.device) + count) % size
        self.bank[rows] = mean.to(self.bank.dtype)
        self.bank_count.fill_(count + mean.shape[0])

    def sample_z(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> torch.Tensor:
        """``n`` latents (n, z_dim): uniformly chosen bank rows (config ``sample_from="bank"``; an empty bank falls
        back to the prior) or N(0, I). All randomness comes from ``generator`` (global RNG if None)."""
        device = self.bank.device if device is None else device
        filled = self.bank_filled
        if self.config.sample_from == "bank" and filled:
            gen_device = generator.device if generator is not None else device
            rows = torch.randint(filled, (n,), generator=generator, device=gen_device).to(self.bank.device)
            return self.bank[rows].to(device)
        return randn((n, self.config.z_dim), generator, device)

    @torch.no_grad()
    def sample(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> Sample:
        """Futures by extrapolation with one z per sample. x0: (B, 3, H, W) float in [-1, 1]; condition: (B, C) or
        None. Returns ``Sample(frames=(B, N, T, 3, H, W) float in [-1, 1])``, T = config.horizon."""
        cond = self._condition(x0, condition)
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        b, n = x0.shape[0], num_samples
        z = self.sample_z(b * n, generator, x0.device).to(x0.dtype)
        x = x0.repeat_interleave(n, 0)
        c = None if cond is None else cond.repeat_interleave(n, 0)
        frames = self._rollout(x, z, c, self.config.horizon)
        return Sample(frames=frames.view(b, n, *frames.shape[1:]))

    @torch.no_grad()
    def analogy(
        self,
        ref_a: torch.Tensor,
        ref_b: torch.Tensor,
        x0: torch.Tensor,
        condition: torch.Tensor | None = None,
        horizon: int | None = None,
    ) -> torch.Tensor:
        """Visual analogy: the motion ref_a -> ref_b (posterior mean z) applied to x0 and rolled out.
        ref_a, ref_b: (B, 3, H, W) or (1, 3, H, W) float in [-1, 1]; x0: (B, 3, H, W); condition: (B, C) or None.
        Returns (B, T, 3, H, W) float in [-1, 1], T = horizon (default config.horizon)."""
        cond = self._condition(x0, condition)
        horizon = self.config.horizon if horizon is None else horizon
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        mean, _ = self.encode(ref_a, ref_b)
        if mean.shape[0] not in (1, x0.shape[0]):
            raise ValueError(f"ref_a/ref_b batch must be 1 or {x0.shape[0]}, got {mean.shape[0]}")
        return self._rollout(x0, mean.expand(x0.shape[0], -1).to(x0.dtype), cond, horizon)
