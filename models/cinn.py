"""``cinn``: image-to-video synthesis with a conditional invertible network (Dorkenwald et al., CVPR 2021).

Two stages (documented in ``docs/methods/cinn.md``), all parts in one module so that one checkpoint holds them:

stage 1 - conditional video VAE-GAN, trained with :class:`~imagine_ros.training.steps.cinn.CINNStep` ``stage=1``
    ``encoder``   q(z | X): 3D ResNet (BasicBlocks, GroupNorm) on the T future frames (not x0) -> mean, log-variance
                  of a ``z_dim`` latent (paper: 64)
    ``decoder``   p(X | x0, z): Linear(z) -> (C, 1, 4, 4), then video residual blocks, each with SPADE on x0 and
                  ADAIN of z, nearest up-sampling x2 in (T, H, W) per scale (time sizes end at ``horizon``), -> T
                  frames, tanh
    ``disc_s``    spatial per-frame PatchGAN (spectral norm + ActNorm); ``disc_t`` temporal 3D ResNet that also
                  returns its four stage features (feature matching)
    ``embedder``  an image VAE on x0 (encoder + its own small decoder); its posterior mean is the 64-d embedding
                  that conditions the INN (the paper trains a separate image VAE; here it trains in stage 1 as its
                  own phase and is frozen afterwards)
stage 2 - conditional INN ``inn``: ``nu = T(z; c)``, c = [embedding(x0), encode(eta)]; NLL loss; everything else
    frozen (:mod:`imagine_ros.models.invertible`).

Sampling: ``nu ~ N(0, I)`` -> ``z = T^-1(nu; c)`` -> ``X = G(x0, z)``. Before stage 2 has run (``stage_steps[1] == 0``,
e.g. while validating stage 1) z is drawn from the VAE prior N(0, I) instead. Longer videos than ``horizon``:
:meth:`CINN.generate` re-applies the decoder from the last generated frame with the *same* z of each sample.
Motion transfer: :meth:`CINN.transfer`, ``nu = T(mean q(z | query); c_query)``, ``z' = T^-1(nu; c_new)``.

Condition eta (the end-effector position at the clip's last frame, normalised by the checkpoint's normaliser): config
``eta_encoding``. ``"continuous"`` (default) appends the normalised 3 numbers to the embedding: the Predictor and the
planner pass continuous normalised eta, and CEM over eta needs a condition that varies smoothly. ``"onehot"`` is the
paper's encoding: each axis clipped to ``[-eta_range, eta_range]`` (normalised units, i.e. standard deviations), cut
into ``eta_bins`` bins, one-hot (3 x 10 = 30 numbers). ``control_mode`` (paper) makes the couplings of INN blocks
with ``i % 4 != 0`` see only c. A missing condition means eta = 0 (the training mean).

Deviations from the paper, all documented: ADAIN uses ``(1 + gamma)`` (gamma starts near 0, so the block starts near
the identity); time sizes of the decoder are ``ceil(T / 2^k)`` so any horizon works; the encoder pools its last map to
``enc_head_size`` before the two conv heads (the paper's (512, 1, 4, 4) map needs no pooling); the INN's affine scales
are soft-clamped (``inn_clamp``); learning-rate schedules (ExponentialLR, StepLR) are not used.

x0 blend (``x0_blend``, on in the ``small`` preset, off in ``paper``): the decoder's last layer gives 4 channels per
pixel and frame, an image ``rgb = tanh(.)`` and a mask ``m = sigmoid(.)``, and the frame is ``m * x0 + (1 - m) * rgb``.
The paper's decoder synthesises every frame whole; with the 8 full-resolution channels that two CPU cores allow, it
spends most of its early training re-drawing the static scene (measured: colour artefacts over the table after 800
steps), so the blend lets those few channels go to what moves. The mask's bias starts at 3 (m = 0.95).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from imagine_ros.errors import ConfigError
from imagine_ros.models.base import Method, MethodConfig, Sample, check_int, check_ints, check_number, randn
from imagine_ros.models.invertible import ActNorm, ConditionalINN

ETA_ENCODINGS = ("continuous", "onehot")
#: log-variance is clamped to this range before exp() (a diverging posterior must not make inf/NaN)
LOGVAR_RANGE = (-20.0, 10.0)
BASE_SIZE = 4  # spatial side of the decoder's first map
BLEND_INIT_LOGIT = 3.0  # x0_blend: initial logit of the mask (sigmoid 0.95)


# ----------------------------------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class CINNConfig(MethodConfig):
    """Sizes, loss weights and learning rates of both stages. Defaults = the ``small`` preset (64x64, 2 CPU cores).

    ``dec_channels`` has ``log2(image_size / 4) + 2`` entries: the head block at 4x4, one block after each x2
    up-sampling, one final block at full size (paper: 1024, 1024, 512, 256, 128, 64). ``enc_channels`` = stem + one
    width per stage (paper 64, 128, 256, 512, 512); ``disc_t_channels`` likewise (paper 64, 64, 128, 256, 512);
    ``disc_s_channels`` = the stride-2 convs then one stride-1 conv (paper 64, 128, 256, 512).
    """

    horizon: int = 10
    z_dim: int = 64
    # stage 1 generator
    enc_channels: tuple[int, ...] = (16, 32, 64, 64, 64)
    enc_blocks: int = 1  # BasicBlocks per encoder stage (paper 2)
    enc_head_size: int = 4
    dec_channels: tuple[int, ...] = (128, 128, 64, 32, 8, 8)  # narrow at 64 px: the full-size 3D convs dominate
    spade_hidden: int = 32
    #: not in the paper: each frame is a per-pixel blend of x0 and a synthesised image, m * x0 + (1 - m) * rgb, with
    #: the mask m from the decoder's last layer (starting near 1, i.e. near copying x0); false = the paper's decoder,
    #: whose frames are synthesised whole (module docstring "x0 blend")
    x0_blend: bool = False
    # discriminators
    disc_s_channels: tuple[int, ...] = (16, 32, 64, 64)
    disc_t_channels: tuple[int, ...] = (16, 16, 32, 64, 64)
    disc_t_window: int = 8  # contiguous frames D_T sees (paper 12); min(window, horizon)
    disc_s_frames: int = 8  # random frames D_S sees per step (paper 20)
    # image embedder (x0 -> emb_dim)
    emb_dim: int = 64
    emb_channels: tuple[int, ...] = (16, 32, 64, 64)  # stride-2 convs; the rest of the way to 4x4 reuses the last
    # stage 2 INN
    inn_blocks: int = 12
    inn_hidden: int = 256
    inn_depth: int = 2
    inn_alpha: float = 0.9
    inn_clamp: float = 2.0
    control_mode: bool = True
    eta_encoding: str = "continuous"
    eta_bins: int = 10
    eta_range: float = 2.5
    # stage 1 losses (spec: 10 L1 + 30 perceptual + 1e-5 KL + GAN + 10 feature matching; R1 10)
    l1_weight: float = 10.0
    perceptual_weight: float = 30.0
    kl_weight: float = 1e-5
    gan_weight: float = 1.0
    fm_weight: float = 10.0
    r1_weight: float = 10.0
    warmup_steps: int = 500  # stage-1 steps without GAN terms (paper: one epoch)
    emb_kl_weight: float = 1e-5
    perceptual_weights: str = ""  # VGG-19 features file; "" = the SSIM + L1 substitute (models/perceptual.py)
    # optimisers (the run's --lr overrides the one of its stage)
    lr_stage1: float = 2e-4
    lr_stage2: float = 1e-4  # paper 1e-5 at batch 50 for many epochs; small trains few steps

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "image_size": 16,
            "horizon": 3,
            "z_dim": 8,
            "enc_channels": (4, 8, 8),
            "enc_blocks": 1,
            "enc_head_size": 2,
            "dec_channels": (16, 8, 8, 4),
            "spade_hidden": 8,
            "disc_s_channels": (4, 8, 8),
            "disc_t_channels": (4, 4, 8),
            "disc_t_window": 3,
            "disc_s_frames": 4,
            "emb_dim": 6,
            "emb_channels": (4, 8),
            "inn_blocks": 4,
            "inn_hidden": 16,
            "inn_depth": 1,
            "warmup_steps": 2,
            "x0_blend": True,
        },
        "small": {"x0_blend": True},
        "paper": {
            "image_size": 64,
            "horizon": 16,
            "z_dim": 64,
            "enc_channels": (64, 128, 256, 512, 512),
            "enc_blocks": 2,
            "enc_head_size": 4,
            "dec_channels": (1024, 1024, 512, 256, 128, 64),
            "spade_hidden": 128,
            "disc_s_channels": (64, 128, 256, 512),
            "disc_t_channels": (64, 64, 128, 256, 512),
            "disc_t_window": 12,
            "disc_s_frames": 20,
            "emb_dim": 64,
            "emb_channels": (64, 128, 256, 256),
            "inn_blocks": 20,
            "inn_hidden": 512,
            "inn_depth": 2,
            "warmup_steps": 4000,
            "lr_stage2": 1e-5,
        },
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        n_up = self.num_upsamplings
        if BASE_SIZE << n_up != self.image_size:
            raise ConfigError(f"image_size must be 4 * 2**k (16, 32, 64, 128, ...), got {self.image_size}")
        for name in ("z_dim", "emb_dim"):
            check_int(name, getattr(self, name), minimum=2 if name == "z_dim" else 1)
        for name in ("enc_blocks", "enc_head_size", "spade_hidden", "disc_t_window", "disc_s_frames"):
            check_int(name, getattr(self, name))
        for name in ("inn_blocks", "inn_hidden", "eta_bins", "warmup_steps"):
            check_int(name, getattr(self, name), minimum=0 if name == "warmup_steps" else 1)
        check_int("inn_depth", self.inn_depth, minimum=0)
        check_ints("enc_channels", self.enc_channels)
        if len(self.enc_channels) < 2:
            raise ConfigError(f"enc_channels needs the stem and at least one stage, got {self.enc_channels!r}")
        check_ints("dec_channels", self.dec_channels, length=n_up + 2)
        check_ints("disc_s_channels", self.disc_s_channels)
        if len(self.disc_s_channels) < 2:
            raise ConfigError(f"disc_s_channels needs at least 2 entries, got {self.disc_s_channels!r}")
        if self.image_size >> (len(self.disc_s_channels) - 1) < 4:
            raise ConfigError(
                f"disc_s_channels has {len(self.disc_s_channels) - 1} stride-2 convs: too many for {self.image_size} px"
            )
        check_ints("disc_t_channels", self.disc_t_channels)
        if len(self.disc_t_channels) < 2:
            raise ConfigError(f"disc_t_channels needs the stem and at least one stage, got {self.disc_t_channels!r}")
        check_ints("emb_channels", self.emb_channels)
        if len(self.emb_channels) > n_up:
            raise ConfigError(f"emb_channels may have at most {n_up} stride-2 convs for {self.image_size} px")
        for name in ("inn_alpha", "inn_clamp", "eta_range", "lr_stage1", "lr_stage2"):
            check_number(name, getattr(self, name), positive=True)
        for name in ("l1_weight", "perceptual_weight", "kl_weight", "gan_weight", "fm_weight", "r1_weight"):
            check_number(name, getattr(self, name))
        check_number("emb_kl_weight", self.emb_kl_weight)
        if self.eta_encoding not in ETA_ENCODINGS:
            raise ConfigError(f"eta_encoding must be one of {', '.join(ETA_ENCODINGS)}, got {self.eta_encoding!r}")
        if not isinstance(self.x0_blend, bool):
            raise ConfigError(f"x0_blend must be true or false, got {self.x0_blend!r}")
        if not isinstance(self.control_mode, bool):
            raise ConfigError(f"control_mode must be true or false, got {self.control_mode!r}")
        if not isinstance(self.perceptual_weights, str):
            raise ConfigError(f"perceptual_weights must be a path or '', got {self.perceptual_weights!r}")

    @property
    def num_upsamplings(self) -> int:
        """x2 up-samplings of the decoder from 4x4 to image_size."""
        return max(0, round(math.log2(self.image_size / BASE_SIZE)))

    @property
    def eta_dim(self) -> int:
        """Numbers the encoded eta adds to the INN's condition."""
        if not self.condition_dim:
            return 0
        return self.condition_dim * (self.eta_bins if self.eta_encoding == "onehot" else 1)

    @property
    def time_sizes(self) -> tuple[int, ...]:
        """Frames of the decoder's map after each x2 up-sampling (the last equals horizon)."""
        n = self.num_upsamplings
        return tuple(math.ceil(self.horizon / 2 ** (n - 1 - i)) for i in range(n))


# ----------------------------------------------------------------------------------------------------------------------
# layers


def group_norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    """GroupNorm with 16 groups (the spec), fewer when ``channels`` is not a multiple of 16."""
    return nn.GroupNorm(math.gcd(16, channels), channels, affine=affine)


def _sn(module: nn.Module, use: bool) -> nn.Module:
    return spectral_norm(module) if use else module


class BasicBlock3d(nn.Module):
    """3D ResNet BasicBlock: conv3 -> GN -> ReLU -> conv3 -> GN, + shortcut (3x3x3 strided conv + GN when the shape
    changes). x: (B, cin, T, H, W) -> (B, cout, T', H', W'), stride = (st, ss, ss)."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int], sn: bool = False):
        super().__init__()
        self.conv1 = _sn(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), sn)
        self.norm1 = group_norm(cout)
        self.conv2 = _sn(nn.Conv3d(cout, cout, 3, 1, 1, bias=False), sn)
        self.norm2 = group_norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if cin != cout or stride != (1, 1, 1):
            self.shortcut = nn.Sequential(_sn(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), sn), group_norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


def _kaiming(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv3d) and not hasattr(m, "parametrizations"):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class VideoEncoder(nn.Module):
    """q(z | X). future: (B, T, 3, H, W) in [-1, 1] -> mean, logvar (B, z_dim) each."""

    def __init__(self, cfg: CINNConfig):
        super().__init__()
        ch = cfg.enc_channels
        self.stem = nn.Sequential(
            nn.Conv3d(3, ch[0], (3, 7, 7), (2, 2, 2), (1, 3, 3), bias=False), group_norm(ch[0]), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        cin = ch[0]
        for i, cout in enumerate(ch[1:]):
            s = 1 if i == 0 else 2
            for j in range(cfg.enc_blocks):
                blocks.append(BasicBlock3d(cin, cout, (s, s, s) if j == 0 else (1, 1, 1)))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        k = cfg.enc_head_size
        self.pool = nn.AdaptiveAvgPool3d((1, k, k))
        self.mean = nn.Conv2d(cin, cfg.z_dim, k)
        self.logvar = nn.Conv2d(cin, cfg.z_dim, k)
        _kaiming(self)

    def forward(self, future: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.pool(self.blocks(self.stem(future.transpose(1, 2)))).squeeze(2)
        return self.mean(h).flatten(1), self.logvar(h).flatten(1).clamp(*LOGVAR_RANGE)


class SPADE(nn.Module):
    """GroupNorm (no affine) of x, modulated by x0: ``norm * (1 + gamma(x0)) + beta(x0)``, broadcast over time.
    x: (B, C, T, H, W); x0: (B, 3, H0, W0) -> (B, C, T, H, W)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.norm = group_norm(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.LeakyReLU(0.2))
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        img = x0 if x0.shape[-2:] == size else F.interpolate(x0, size=size, mode="bilinear", align_corners=False)
        h = self.shared(img)
        return self.norm(x) * (1 + self.gamma(h)[:, :, None]) + self.beta(h)[:, :, None]


class ADAIN(nn.Module):
    """InstanceNorm3d (no affine) of x, modulated by z: ``norm * (1 + gamma(z)) + beta(z)``.
    x: (B, C, T, H, W); z: (B, z_dim) -> (B, C, T, H, W)."""

    def __init__(self, channels: int, z_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm3d(channels, affine=False)
        self.linear = nn.Linear(z_dim, 2 * channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.linear(z)[:, :, None, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class GeneratorBlock(nn.Module):
    """``x + conv1(lrelu(ADAIN(conv0(lrelu(SPADE(x, x0))), z)))`` (learned 1x1x1 shortcut on GN(x) when widths
    differ). x: (B, cin, T, H, W) -> (B, cout, T, H, W)."""

    def __init__(self, cin: int, cout: int, cfg: CINNConfig):
        super().__init__()
        mid = min(cin, cout)
        self.spade = SPADE(cin, cfg.spade_hidden)
        self.conv0 = spectral_norm(nn.Conv3d(cin, mid, 3, padding=1))
        self.adain = ADAIN(mid, cfg.z_dim)
        self.conv1 = spectral_norm(nn.Conv3d(mid, cout, 3, padding=1))
        self.shortcut: nn.Module = nn.Identity()
        if cin != cout:
            self.shortcut = nn.Sequential(group_norm(cin), spectral_norm(nn.Conv3d(cin, cout, 1, bias=False)))

    def forward(self, x: torch.Tensor, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.leaky_relu(self.spade(x, x0), 0.2))
        h = self.conv1(F.leaky_relu(self.adain(h, z), 0.2))
        return self.shortcut(x) + h


class VideoDecoder(nn.Module):
    """p(X | x0, z). x0: (B, 3, H, W) in [-1, 1]; z: (B, z_dim) -> (B, T, 3, H, W) in [-1, 1], T = horizon."""

    def __init__(self, cfg: CINNConfig):
        super().__init__()
        ch = cfg.dec_channels
        self.c0 = ch[0]
        self.fc = nn.Linear(cfg.z_dim, BASE_SIZE * BASE_SIZE * ch[0])
        self.head = GeneratorBlock(ch[0], ch[0], cfg)
        self.ups = nn.ModuleList(GeneratorBlock(ch[i], ch[i + 1], cfg) for i in range(len(ch) - 1))
        self.time_sizes = cfg.time_sizes
        self.blend = cfg.x0_blend
        self.out = nn.Conv3d(ch[-1], 4 if self.blend else 3, 3, padding=1)
        if self.blend:  # the mask channel starts at sigmoid(3) = 0.95: near a copy of x0
            with torch.no_grad():
                self.out.bias[3] = BLEND_INIT_LOGIT

    def forward(self, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.c0, 1, BASE_SIZE, BASE_SIZE)
        h = self.head(h, x0, z)
        for i, block in enumerate(self.ups):
            if i < len(self.time_sizes):
                size = (self.time_sizes[i], h.shape[-2] * 2, h.shape[-1] * 2)
                h = F.interpolate(h, size=size, mode="nearest")
            h = block(h, x0, z)
        out = self.out(F.leaky_relu(h, 0.2))
        if not self.blend:
            return torch.tanh(out).transpose(1, 2)
        m = torch.sigmoid(out[:, 3:])
        return (m * x0[:, :, None] + (1 - m) * torch.tanh(out[:, :3])).transpose(1, 2)


class _ActNormNoLogdet(ActNorm):
    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0]


class PatchDiscriminator(nn.Module):
    """Spatial D_S (PatchGAN, per frame). frames: (N, 3, H, W) in [-1, 1] -> logits (N, 1, h, w)."""

    def __init__(self, cfg: CINNConfig):
        super().__init__()
        ch = cfg.disc_s_channels
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(3, ch[0], 4, 2, 1)), nn.LeakyReLU(0.2)]
        for i in range(1, len(ch)):
            stride = 2 if i < len(ch) - 1 else 1
            layers += [spectral_norm(nn.Conv2d(ch[i - 1], ch[i], 4, stride, 1)), _ActNormNoLogdet(ch[i])]
            layers.append(nn.LeakyReLU(0.2))
        layers.append(spectral_norm(nn.Conv2d(ch[-1], 1, 4, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


class TemporalDiscriminator(nn.Module):
    """Temporal D_T (3D ResNet). video: (B, T, 3, H, W) in [-1, 1] -> logits (B,), stage features (list)."""

    def __init__(self, cfg: CINNConfig):
        super().__init__()
        ch = cfg.disc_t_channels
        self.stem = nn.Sequential(
            nn.Conv3d(3, ch[0], (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            group_norm(ch[0]),
            nn.ReLU(),
            nn.MaxPool3d(3, (1, 2, 2), 1),
        )
        stages = []
        cin = ch[0]
        for i, cout in enumerate(ch[1:]):
            ss = 1 if i < 2 else 2
            stages.append(
                nn.Sequential(BasicBlock3d(cin, cout, (2, ss, ss), sn=True), BasicBlock3d(cout, cout, (1, 1, 1)))
            )
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(cin, 1)
        _kaiming(self)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.stem(video.transpose(1, 2))
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return self.fc(h.mean(dim=(2, 3, 4))).squeeze(1), feats


class ImageVAE(nn.Module):
    """The x0 embedder: conv encoder -> mean, logvar (B, emb_dim); a small decoder reconstructs x0 from a sample
    (it exists only to train the encoder). x: (B, 3, H, W) in [-1, 1]."""

    def __init__(self, cfg: CINNConfig):
        super().__init__()
        enc: list[nn.Module] = []
        cin, size = 3, cfg.image_size
        widths = list(cfg.emb_channels) + [cfg.emb_channels[-1]] * (cfg.num_upsamplings - len(cfg.emb_channels))
        for cout in widths:
            enc += [nn.Conv2d(cin, cout, 4, 2, 1), group_norm(cout), nn.LeakyReLU(0.2)]
            cin, size = cout, size // 2
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.head = nn.Linear(cin * size * size, 2 * cfg.emb_dim)
        self.width = cin
        self.fc = nn.Linear(cfg.emb_dim, cin * BASE_SIZE * BASE_SIZE)
        dec: list[nn.Module] = []
        for cout in reversed(widths[:-1]):
            dec += [
                nn.Upsample(scale_factor=2),
                nn.Conv2d(cin, cout, 3, padding=1),
                group_norm(cout),
                nn.LeakyReLU(0.2),
            ]
            cin = cout
        dec += [nn.Upsample(scale_factor=2), nn.Conv2d(cin, 3, 3, padding=1), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.head(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, e: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.fc(e).view(e.shape[0], self.width, BASE_SIZE, BASE_SIZE))


# ----------------------------------------------------------------------------------------------------------------------
# the method

PARTS = ("vae", "disc_s", "disc_t", "embed", "inn_nll")


class CINN(Method):
    """See module docstring. ``forward(part, ...)`` serves the training step (one entry per part so that DDP sees
    every call); the public API is :meth:`encode`, :meth:`decode`, :meth:`generate`, :meth:`embed`,
    :meth:`to_nu`, :meth:`from_nu`, :meth:`sample_z`, :meth:`sample` and :meth:`transfer`."""

    name = "cinn"
    Config = CINNConfig

    def __init__(self, config: CINNConfig):
        super().__init__(config)
        cfg = config
        self.encoder = VideoEncoder(cfg)
        self.decoder = VideoDecoder(cfg)
        self.disc_s = PatchDiscriminator(cfg)
        self.disc_t = TemporalDiscriminator(cfg)
        self.embedder = ImageVAE(cfg)
        self.inn = ConditionalINN(
            cfg.z_dim,
            cfg.emb_dim + cfg.eta_dim,
            cfg.inn_blocks,
            cfg.inn_hidden,
            cfg.inn_depth,
            alpha=cfg.inn_alpha,
            clamp=cfg.inn_clamp,
            control_mode=cfg.control_mode and cfg.condition_dim > 0,
        )
        #: completed training steps of stage 1 and stage 2 (sampling uses the INN once stage 2 has run)
        self.register_buffer("stage_steps", torch.zeros(2, dtype=torch.int64))

    # -- checks and conditions -----------------------------------------------------------------------------------------

    def _condition(self, x0: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor | None:
        self.check_inputs(x0, condition)
        if not self.config.condition_dim:
            return None
        if condition is None:
            return x0.new_zeros(x0.shape[0], self.config.condition_dim)
        return condition.to(device=x0.device, dtype=x0.dtype)

    def _check_z(self, z: torch.Tensor, batch: int) -> None:
        if tuple(z.shape) != (batch, self.config.z_dim):
            raise ValueError(f"z must have shape ({batch}, {self.config.z_dim}), got {tuple(z.shape)}")

    def _check_video(self, name: str, video: torch.Tensor, batch: int | None = None) -> None:
        s = self.config.image_size
        if video.ndim != 5 or tuple(video.shape[2:]) != (3, s, s) or (batch is not None and video.shape[0] != batch):
            b = "B" if batch is None else batch
            raise ValueError(f"{name} must have shape ({b}, T, 3, {s}, {s}), got {tuple(video.shape)}")

    def encode_eta(self, condition: torch.Tensor | None, batch: int, like: torch.Tensor) -> torch.Tensor:
        """Normalised eta (B, condition_dim) -> (B, eta_dim) as config ``eta_encoding`` says (module docstring);
        None -> zeros (the training mean)."""
        cfg = self.config
        if not cfg.condition_dim:
            return like.new_zeros(batch, 0)
        if condition is None:
            condition = like.new_zeros(batch, cfg.condition_dim)
        condition = condition.to(like.dtype)
        if cfg.eta_encoding == "continuous":
            return condition
        u = ((condition + cfg.eta_range) / (2 * cfg.eta_range)).clamp(0, 1)
        idx = (u * cfg.eta_bins).long().clamp(max=cfg.eta_bins - 1)
        return F.one_hot(idx, cfg.eta_bins).to(like.dtype).flatten(1)

    @torch.no_grad()
    def embed(self, x0: torch.Tensor) -> torch.Tensor:
        """The x0 embedding: posterior mean of the image VAE. x0: (B, 3, H, W) in [-1, 1] -> (B, emb_dim)."""
        return self.embedder.encode(x0)[0]

    def inn_condition(self, x0: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """c = [embed(x0), encode_eta(condition)]: (B, emb_dim + eta_dim). x0: (B, 3, H, W); condition: (B, C)."""
        emb = self.embed(x0)
        return torch.cat([emb, self.encode_eta(condition, x0.shape[0], emb)], 1)

    # -- stage 1 -------------------------------------------------------------------------------------------------------

    def encode(self, future: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | X). future: (B, T, 3, H, W) in [-1, 1], T = horizon (not x0) -> mean, logvar (B, z_dim)."""
        self._check_video("future", future)
        if future.shape[1] != self.config.horizon:
            raise ValueError(f"future must have {self.config.horizon} frames, got {future.shape[1]}")
        return self.encoder(future)

    def decode(self, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """G(x0, z). x0: (B, 3, H, W) in [-1, 1]; z: (B, z_dim) -> (B, horizon, 3, H, W) in [-1, 1]."""
        self.check_inputs(x0, None)
        self._check_z(z, x0.shape[0])
        return self.decoder(x0, z.to(x0.dtype))

    def generate(self, x0: torch.Tensor, z: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Videos of any length: the decoder re-applied from the last generated frame, each sample keeping its own z
        for every chunk. x0: (B, 3, H, W); z: (B, z_dim) -> (B, length, 3, H, W), length default horizon."""
        length = self.config.horizon if length is None else length
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        chunks, x, have = [], x0, 0
        while have < length:
            frames = self.decode(x, z)
            chunks.append(frames)
            x, have = frames[:, -1], have + frames.shape[1]
        return torch.cat(chunks, 1)[:, :length]

    # -- stage 2 -------------------------------------------------------------------------------------------------------

    def to_nu(self, z: torch.Tensor, x0: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """nu = T(z; c). z: (B, z_dim); x0: (B, 3, H, W); condition: (B, C) normalised eta or None -> (B, z_dim)."""
        cond = self._condition(x0, condition)
        self._check_z(z, x0.shape[0])
        return self.inn(z.to(x0.dtype), self.inn_condition(x0, cond))[0]

    def from_nu(self, nu: torch.Tensor, x0: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """z = T^-1(nu; c). nu: (B, z_dim); x0: (B, 3, H, W); condition: (B, C) or None -> (B, z_dim)."""
        cond = self._condition(x0, condition)
        self._check_z(nu, x0.shape[0])
        return self.inn.inverse(nu.to(x0.dtype), self.inn_condition(x0, cond))

    @property
    def inn_trained(self) -> bool:
        return bool(self.stage_steps[1] > 0)

    def sample_z(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One latent per (input, sample): ``nu ~ N(0, I)`` drawn once from ``generator`` with shape
        (B, N, z_dim), mapped through T^-1 (prior N(0, I) itself before stage 2). Returns (B, N, z_dim)."""
        cond = self._condition(x0, condition)
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        b, n, d = x0.shape[0], num_samples, self.config.z_dim
        nu = randn((b, n, d), generator, x0.device).to(x0.dtype)
        if not self.inn_trained:
            return nu
        x = x0.repeat_interleave(n, 0)
        c = None if cond is None else cond.repeat_interleave(n, 0)
        return self.from_nu(nu.reshape(b * n, d), x, c).view(b, n, d)

    @torch.no_grad()
    def sample(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None = None,
        length: int | None = None,
    ) -> Sample:
        """x0: (B, 3, H, W) in [-1, 1]; condition: (B, C) normalised eta or None -> ``Sample(frames=(B, N, L, 3, H,
        W))``, L = length (default horizon; longer videos re-apply the decoder with the same z)."""
        z = self.sample_z(x0, condition, num_samples, generator)
        b, n = z.shape[:2]
        frames = self.generate(x0.repeat_interleave(n, 0), z.flatten(0, 1), length)
        return Sample(frames=frames.view(b, n, *frames.shape[1:]))

    @torch.no_grad()
    def transfer(
        self,
        query_video: torch.Tensor,
        x0_new: torch.Tensor,
        query_condition: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        length: int | None = None,
    ) -> torch.Tensor:
        """Motion transfer: the motion of ``query_video`` applied to new start frames (deterministic).

        query_video: (B, 1 + horizon, 3, H, W) in [-1, 1], frame 0 = the query's start frame; x0_new: (B, 3, H, W);
        query_condition: (B, C) normalised eta of the query (None: 0); condition: eta for the new videos (None: the
        query's). ``nu = T(mean q(z | query[1:]); c(query[0], query eta))``, ``z' = T^-1(nu; c(x0_new, eta))``
        (z' = the query's z before stage 2 has run). Returns (B, length, 3, H, W), length default horizon."""
        self._check_video("query_video", query_video, x0_new.shape[0])
        if query_video.shape[1] != self.config.horizon + 1:
            raise ValueError(f"query_video must have 1 + horizon = {self.config.horizon + 1} frames")
        q0 = query_video[:, 0]
        z, _ = self.encode(query_video[:, 1:])
        if self.inn_trained:
            qc = self._condition(q0, query_condition)
            nu = self.to_nu(z, q0, qc)
            z = self.from_nu(nu, x0_new, qc if condition is None else condition)
        return self.generate(x0_new, z, length)

    # -- training entry ------------------------------------------------------------------------------------------------

    def forward(self, part: str, *args: torch.Tensor | None) -> Any:
        """Training passes (one per part, see :mod:`imagine_ros.training.steps.cinn`):

        - ``"vae", x0, future`` -> dict ``mean, logvar, z`` (B, z_dim), ``fake`` (B, T, 3, H, W)
        - ``"disc_s", frames (N, 3, H, W)`` -> patch logits (N, 1, h, w)
        - ``"disc_t", video (B, T', 3, H, W)`` -> logits (B,), features
        - ``"embed", x0`` -> dict ``mean, logvar`` (B, emb_dim), ``recon`` (B, 3, H, W)
        - ``"inn_nll", x0, future, condition`` -> dict ``nu`` (B, z_dim), ``logdet`` (B,) with the encoder and the
          embedder frozen (no gradients), z drawn from q(z | future)
        """
        if part == "vae":
            x0, future = args
            mean, logvar = self.encode(future)
            z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
            return {"mean": mean, "logvar": logvar, "z": z, "fake": self.decode(x0, z)}
        if part == "disc_s":
            return self.disc_s(args[0])
        if part == "disc_t":
            return self.disc_t(args[0])
        if part == "embed":
            mean, logvar = self.embedder.encode(args[0])
            e = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
            return {"mean": mean, "logvar": logvar, "recon": self.embedder.decode(e)}
        if part == "inn_nll":
            x0, future, condition = args
            cond = self._condition(x0, condition)
            with torch.no_grad():
                mean, logvar = self.encode(future)
                z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
                c = self.inn_condition(x0, cond)
            nu, logdet = self.inn(z, c)
            return {"nu": nu, "logdet": logdet}
        raise ValueError(f"unknown part {part!r}; expected one of {', '.join(PARTS)}")
