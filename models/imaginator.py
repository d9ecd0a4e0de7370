"""``imaginator``: ImaGINator (Wang, Bilinski, Bremond, Dantcheva, WACV 2020), a conditional spatio-temporal GAN.

One step from (image, condition, noise) to a whole video (documented in ``docs/methods/imaginator.md``)::

    encoder      x0 (B, 3, S, S) -> L conv blocks (k4 s2 p1, BN, LeakyReLU 0.2), keeping every map
                 h1 (S/2) ... hL (4 x 4); a valid 4x4 conv on hL -> appearance code a (B, appearance_dim)
    decoder      concat[z, c, a] as a 1x1x1 volume -> L + 1 transposed blocks; block 0 makes t0 x 4 x 4, every later
                 block doubles the spatial side (and, in the last ``doublings`` blocks, the number of frames);
                 after each block but the last: concat the encoder map of the same side repeated over time and the
                 condition c tiled over T x H x W ("spatio-temporal fusion"); the last block ends in tanh
    D_I          spectral-norm Conv2d (k4 s2 p1) + LeakyReLU x L, Conv2d k4 -> one logit per frame (unconditional)
    D_V          spectral-norm Conv3d (k4 s2 p1) + LeakyReLU x L, c tiled and concatenated after the first layer,
                 Conv3d over the rest of the volume -> one logit per video (conditional)

A transposed block is either the paper's factorised **(1+2)D** block (``block="1+2d"``): ConvTranspose3d over time
(k_t x 1 x 1) -> BN -> LeakyReLU -> ConvTranspose3d over space (1 x k_s x k_s) -> BN -> LeakyReLU (tanh in the RGB
block); or, for the paper's ablation, one full **3D** transposed convolution (``block="3d"``, k_t x k_s x k_s) -> BN ->
LeakyReLU (tanh). Both give the same output shape for every stride (:func:`block_output_shape`).

Horizon: T = t0 * 2**doublings. ``temporal_doublings=-1`` picks the most doublings (at most L) that divide T and
leave t0 >= 2 (the paper's 32 frames: t0 = 2, 4 doublings; 16 frames: t0 = 2, 3 doublings, "drop one temporal
doubling"; our 10-frame clips: t0 = 5, 1 doubling). Blocks that do not double time use a temporal kernel 3, stride 1,
padding 1. The doublings are put in the last blocks: the high-resolution blocks are the narrow ones, so the wide
low-resolution blocks work on few frames (cheapest on a CPU).

Condition c (``condition_dim`` numbers): ``condition="eta"`` is the normalised end-effector target η, as for every
method; ``condition="direction"`` is the paper-style one-hot class label, here the discretised push direction of the
clip (:func:`push_direction`, ``direction_bins`` classes; ``condition_dim`` must equal ``direction_bins``). A missing
condition (``None``) for a conditioned model means c = 0 (η = the training mean; no class).

The discriminators belong to the module (checkpointed with it, trained by
:class:`~imagine_ros.training.steps.imaginator.ImaGINatorStep`); :meth:`ImaGINator.sample` uses only the generator.
The model has no native flows: the Predictor estimates them from the frames with OpenCV DIS (``flow_source="dis"``).

Deviations from the paper/authors' code, all config values: widths (``channels``, ``mid_channels``,
``disc_channels``, ``z_dim``, ``appearance_dim``) come from the config (``paper`` = the paper's); ``mid_channels=()``
gives every (1+2)D block the width that matches the parameter count of the 3D block it replaces (R(2+1)D rule,
``mid = k_t k_s^2 c_in c_out / (k_t c_in + k_s^2 c_out)``), so the ablation compares equal-size generators; D_V's
temporal kernel is 3 (stride 1) where fewer than 4 frames are left; the initialisation N(0, 0.02) / BN N(1, 0.02)
covers the transposed 3D convolutions too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from imagine_ros.constants import EE, X0
from imagine_ros.errors import ConfigError
from imagine_ros.models.base import Method, MethodConfig, Sample, check_int, check_ints, randn

BLOCKS = ("1+2d", "3d")
CONDITIONS = ("eta", "direction")
#: forward() phases (one call per training phase, so that DistributedDataParallel sees one forward per backward)
PHASES = ("G", "D_I", "D_V")
LEAK = 0.2


# ----------------------------------------------------------------------------------------------------------------------
# push direction: the paper-style class label


def push_direction(displacement: torch.Tensor, bins: int) -> torch.Tensor:
    """Discretised direction of a displacement in the table plane.

    displacement: (..., D) float, D >= 2, metres in the robot base frame (only x and y are used). Class ``k`` of
    ``bins`` covers the angles ``atan2(dy, dx)`` in ``[(k - 1/2), (k + 1/2)) * 2 pi / bins``: class 0 is centred on
    +x, classes go counter-clockwise (+y = class ``bins / 4`` for bins divisible by 4). A zero displacement is class 0.
    Returns (...,) int64 in ``[0, bins)``.
    """
    if displacement.ndim < 1 or displacement.shape[-1] < 2:
        raise ValueError(f"displacement must be (..., D) with D >= 2, got {tuple(displacement.shape)}")
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    d = displacement.detach().to(torch.float64)
    angle = torch.atan2(d[..., 1], d[..., 0])  # (-pi, pi]
    width = 2 * math.pi / bins
    return (torch.floor((angle + width / 2) / width).long() % bins).to(torch.int64)


def direction_condition(ee: torch.Tensor, bins: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot push-direction condition of clips: the class of the end-effector displacement over each clip.

    ee: (B, T + 1, 3) float, the clip's end-effector track in metres (``batch["ee"]`` of a
    :class:`~imagine_ros.training.clips.ClipDataset` clip); the displacement is ``ee[:, -1] - ee[:, 0]``.
    Returns (B, bins) ``dtype`` one-hot (see :func:`push_direction` for the classes).
    """
    if ee.ndim != 3 or ee.shape[1] < 2 or ee.shape[2] < 2:
        raise ValueError(f"ee must be (B, T + 1, 3) with T >= 1, got {tuple(ee.shape)}")
    cls = push_direction(ee[:, -1] - ee[:, 0], bins)
    return F.one_hot(cls, bins).to(device=ee.device, dtype=dtype)


# ----------------------------------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class ImaGINatorConfig(MethodConfig):
    """ImaGINator sizes. Defaults = the ``small`` preset (64 x 64, 10 frames, 2 CPU cores).

    ``channels`` are the encoder widths from the first (S/2) to the last (4 x 4) level; there are
    ``log2(image_size / 4)`` of them, and the decoder mirrors them. ``mid_channels`` are the hidden widths of the
    ``len(channels) + 1`` (1+2)D decoder blocks (``()``: parameter-matched to the 3D blocks, see module docstring).
    Loss weight and optimizer settings of training are in :mod:`imagine_ros.training.steps.imaginator`.
    """

    # small: about 4.1 GFLOP per training clip (all three phases; G 5.0M parameters)
    channels: tuple[int, ...] = (24, 48, 96, 192)
    mid_channels: tuple[int, ...] = ()
    disc_channels: tuple[int, ...] = (16, 32, 64, 128)
    z_dim: int = 64  # noise z
    appearance_dim: int = 64  # appearance code a (the paper: 100)
    block: str = "1+2d"  # "1+2d" (the paper's) or "3d" (the paper's ablation: full transposed 3D convolutions)
    temporal_doublings: int = -1  # -1: auto (module docstring)
    condition: str = "eta"  # "eta" or "direction" (one-hot push direction; condition_dim = direction_bins)
    direction_bins: int = 8
    l1_weight: float = 100.0  # the paper's lambda of the L1 term
    init_std: float = 0.02  # std of the N(0, std) initial (transposed) convolution weights (the paper's 0.02)

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "image_size": 16,
            "horizon": 4,
            "channels": (8, 16),
            "disc_channels": (8, 16),
            "z_dim": 8,
            "appearance_dim": 8,
            # the paper's 0.02 suits its ~1000-wide layers; ~100x narrower, an untrained tiny model's eval-mode
            # output would be constant to 8 bits (noise invisible); 0.1 keeps signals, and the seed, visible
            "init_std": 0.1,
        },
        "small": {},
        "paper": {
            "horizon": 32,
            "channels": (64, 128, 256, 512),
            "mid_channels": (4096, 3072, 1536, 768, 36),
            "disc_channels": (64, 128, 256, 512),
            "z_dim": 512,
            "appearance_dim": 100,
        },
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ints("channels", self.channels)
        check_ints("mid_channels", self.mid_channels, allow_empty=True)
        check_ints("disc_channels", self.disc_channels)
        levels = len(self.channels)
        if self.image_size != 4 * 2**levels:
            raise ConfigError(
                f"image_size must be 4 * 2 ** len(channels) = {4 * 2**levels} for {levels} encoder levels, "
                f"got {self.image_size}"
            )
        if self.mid_channels and len(self.mid_channels) != levels + 1:
            raise ConfigError(
                f"mid_channels must be () or hold {levels + 1} widths (one per decoder block), got {self.mid_channels}"
            )
        if len(self.disc_channels) != levels:
            raise ConfigError(f"disc_channels must hold {levels} widths (like channels), got {self.disc_channels}")
        check_int("z_dim", self.z_dim)
        check_int("appearance_dim", self.appearance_dim)
        if self.block not in BLOCKS:
            raise ConfigError(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        if self.condition not in CONDITIONS:
            raise ConfigError(f"condition must be one of {', '.join(CONDITIONS)}, got {self.condition!r}")
        check_int("direction_bins", self.direction_bins, minimum=2)
        if self.condition == "direction" and self.condition_dim != self.direction_bins:
            raise ConfigError(
                f"condition='direction' needs condition_dim = direction_bins ({self.direction_bins}), "
                f"got condition_dim={self.condition_dim}"
            )
        check_int("temporal_doublings", self.temporal_doublings, minimum=-1)
        ok = isinstance(self.l1_weight, (int, float)) and not isinstance(self.l1_weight, bool)
        if not ok or not math.isfinite(self.l1_weight) or self.l1_weight < 0:
            raise ConfigError(f"l1_weight must be a finite number >= 0, got {self.l1_weight!r}")
        ok = isinstance(self.init_std, (int, float)) and not isinstance(self.init_std, bool)
        if not ok or not math.isfinite(self.init_std) or self.init_std <= 0:
            raise ConfigError(f"init_std must be a finite number > 0, got {self.init_std!r}")
        self.temporal_plan()  # raises for an impossible horizon

    def temporal_plan(self) -> tuple[int, int]:
        """(t0, doublings): frames made by the first decoder block and the number of later blocks that double
        them (the last ones), ``t0 * 2 ** doublings == horizon``."""
        levels, t = len(self.channels), self.horizon
        if self.temporal_doublings == -1:
            d = 0
            for k in range(levels, 0, -1):
                if t % 2**k == 0 and t // 2**k >= 2:
                    d = k
                    break
            return t // 2**d, d
        d = self.temporal_doublings
        if d > levels or t % 2**d:
            raise ConfigError(
                f"temporal_doublings={d} needs at most {levels} doublings and a horizon divisible by 2 ** {d}, "
                f"got horizon {t}"
            )
        return t // 2**d, d


# ----------------------------------------------------------------------------------------------------------------------
# building blocks


@dataclass(frozen=True)
class BlockSpec:
    """Kernel/stride/padding of one transposed block, over time and space."""

    k_t: int
    s_t: int
    p_t: int
    k_s: int
    s_s: int
    p_s: int


def _out_len(n: int, k: int, s: int, p: int) -> int:
    return (n - 1) * s - 2 * p + k


def block_output_shape(spec: BlockSpec, t: int, h: int, w: int) -> tuple[int, int, int]:
    """(T, H, W) a transposed block with ``spec`` makes of a (t, h, w) input (the same for 1+2D and 3D)."""
    return (
        _out_len(t, spec.k_t, spec.s_t, spec.p_t),
        _out_len(h, spec.k_s, spec.s_s, spec.p_s),
        _out_len(w, spec.k_s, spec.s_s, spec.p_s),
    )


def matched_mid(spec: BlockSpec, cin: int, cout: int) -> int:
    """Hidden width of a (1+2)D block with the parameter count of the 3D block it replaces (R(2+1)D rule)."""
    kt, ks2 = spec.k_t, spec.k_s**2
    return max(1, (kt * ks2 * cin * cout) // (kt * cin + ks2 * cout))


class TransposedBlock(nn.Module):
    """A decoder block: (B, cin, t, h, w) -> (B, cout, T, H, W) with (T, H, W) = :func:`block_output_shape`.

    ``kind="1+2d"``: temporal ConvTranspose3d (k_t, 1, 1) -> BN -> LeakyReLU -> spatial ConvTranspose3d (1, k_s, k_s)
    -> BN -> LeakyReLU; ``kind="3d"``: one ConvTranspose3d (k_t, k_s, k_s) -> BN -> LeakyReLU. ``last=True`` replaces
    the final BN + LeakyReLU by tanh (the RGB block).
    """

    def __init__(self, kind: str, cin: int, cout: int, spec: BlockSpec, mid: int | None = None, last: bool = False):
        super().__init__()
        if kind not in BLOCKS:
            raise ConfigError(f"block kind must be one of {', '.join(BLOCKS)}, got {kind!r}")
        self.kind, self.spec = kind, spec
        layers: list[nn.Module] = []
        if kind == "1+2d":
            mid = matched_mid(spec, cin, cout) if mid is None else mid
            layers += [
                nn.ConvTranspose3d(cin, mid, (spec.k_t, 1, 1), (spec.s_t, 1, 1), (spec.p_t, 0, 0), bias=False),
                nn.BatchNorm3d(mid),
                nn.LeakyReLU(LEAK, inplace=True),
                nn.ConvTranspose3d(
                    mid, cout, (1, spec.k_s, spec.k_s), (1, spec.s_s, spec.s_s), (0, spec.p_s, spec.p_s), bias=last
                ),
            ]
        else:
            layers.append(
                nn.ConvTranspose3d(
                    cin,
                    cout,
                    (spec.k_t, spec.k_s, spec.k_s),
                    (spec.s_t, spec.s_s, spec.s_s),
                    (spec.p_t, spec.p_s, spec.p_s),
                    bias=last,
                )
            )
        layers += [nn.Tanh()] if last else [nn.BatchNorm3d(cout), nn.LeakyReLU(LEAK, inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """The paper's initialisation, for every (transposed) convolution including ConvTranspose3d: weights N(0, std)
    (the paper: std 0.02), biases 0; batch-norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _tile(condition: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """condition (B, C) -> (B, C, *like.shape[2:]) (tiled over time and space of ``like``)."""
    view = condition.to(like.dtype).reshape(*condition.shape, *([1] * (like.ndim - 2)))
    return view.expand(-1, -1, *like.shape[2:])


# ----------------------------------------------------------------------------------------------------------------------
# generator


class Encoder(nn.Module):
    """x0 (B, 3, S, S) -> appearance code (B, appearance_dim) and the maps [h1 (S/2), ..., hL (4 x 4)]."""

    def __init__(self, cfg: ImaGINatorConfig):
        super().__init__()
        blocks = []
        cin = 3
        for cout in cfg.channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(LEAK, inplace=True)
                )
            )
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, cfg.appearance_dim, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return self.head(x).flatten(1), maps


def decoder_specs(cfg: ImaGINatorConfig) -> list[BlockSpec]:
    """The ``len(channels) + 1`` decoder block specs: block 0 makes t0 x 4 x 4 of a 1 x 1 x 1 volume; every later
    block doubles the spatial side and, in the last ``doublings`` blocks, the number of frames."""
    t0, doublings = cfg.temporal_plan()
    levels = len(cfg.channels)
    specs = [BlockSpec(t0, 1, 0, 4, 1, 0)]
    for i in range(1, levels + 1):
        doubles = i > levels - doublings
        specs.append(BlockSpec(4, 2, 1, 4, 2, 1) if doubles else BlockSpec(3, 1, 1, 4, 2, 1))
    return specs


class Generator(nn.Module):
    """G(x0, c, z) -> video. See the module docstring; shapes in :meth:`forward`."""

    def __init__(self, cfg: ImaGINatorConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        c, levels = cfg.condition_dim, len(cfg.channels)
        specs = decoder_specs(cfg)
        outs = [cfg.channels[levels - 1 - i] for i in range(levels)] + [3]
        blocks = []
        cin = cfg.z_dim + c + cfg.appearance_dim
        for i, (spec, cout) in enumerate(zip(specs, outs)):
            mid = cfg.mid_channels[i] if cfg.mid_channels else None
            blocks.append(TransposedBlock(cfg.block, cin, cout, spec, mid=mid, last=i == levels))
            if i < levels:
                cin = cout + cfg.channels[levels - 1 - i] + c  # + the fused encoder map + the tiled condition
        self.blocks = nn.ModuleList(blocks)
        init_weights(self, cfg.init_std)

    def encode(self, x0: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x0 (B, 3, S, S) in [-1, 1] -> appearance (B, appearance_dim), maps [(B, channels[i], S / 2**(i+1), ...)]."""
        return self.encoder(x0)

    def decode(
        self, appearance: torch.Tensor, maps: list[torch.Tensor], condition: torch.Tensor | None, z: torch.Tensor
    ) -> torch.Tensor:
        """appearance (B, A), maps from :meth:`encode`, condition (B, C) or None (C = 0), z (B, z_dim)
        -> video (B, T, 3, S, S) in [-1, 1]."""
        parts = [z, appearance] if condition is None else [z, condition.to(z.dtype), appearance]
        x = torch.cat(parts, 1)[:, :, None, None, None]  # (B, z + c + a, 1, 1, 1)
        levels = len(maps)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < levels:  # spatio-temporal fusion
                h = maps[levels - 1 - i]
                fused = [x, h[:, :, None].expand(-1, -1, x.shape[2], -1, -1)]
                if condition is not None:
                    fused.append(_tile(condition, x))
                x = torch.cat(fused, 1)
        return x.transpose(1, 2)  # (B, C, T, H, W) -> (B, T, C, H, W)

    def forward(self, x0: torch.Tensor, condition: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """x0 (B, 3, S, S) in [-1, 1], condition (B, C) or None, z (B, z_dim) -> (B, T, 3, S, S) in [-1, 1]."""
        appearance, maps = self.encode(x0)
        return self.decode(appearance, maps, condition, z)


# ----------------------------------------------------------------------------------------------------------------------
# discriminators


def _sn_conv(conv: nn.Module, std: float) -> nn.Module:
    init_weights(conv, std)
    return spectral_norm(conv)


class ImageDiscriminator(nn.Module):
    """D_I, unconditional: frames (B, 3, S, S) in [-1, 1] -> logits (B,)."""

    def __init__(self, cfg: ImaGINatorConfig):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in cfg.disc_channels:
            layers += [_sn_conv(nn.Conv2d(cin, cout, 4, 2, 1), cfg.init_std), nn.LeakyReLU(LEAK, inplace=True)]
            cin = cout
        layers.append(_sn_conv(nn.Conv2d(cin, 1, 4, 1, 0), cfg.init_std))
        self.net = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames).flatten()


def _temporal(t: int) -> tuple[int, int, int]:
    """D_V's temporal kernel, stride, padding at t frames: halve while at least 4 are left, else keep t."""
    return (4, 2, 1) if t >= 4 else (3, 1, 1)


class VideoDiscriminator(nn.Module):
    """D_V, conditional: video (B, T, 3, S, S) in [-1, 1], condition (B, C) or None -> logits (B,).

    The condition is tiled over the volume and concatenated after the first layer."""

    def __init__(self, cfg: ImaGINatorConfig):
        super().__init__()
        t, c = cfg.horizon, cfg.condition_dim
        layers = []
        cin = 3
        for i, cout in enumerate(cfg.disc_channels):
            kt, st, pt = _temporal(t)
            layers.append(
                _sn_conv(nn.Conv3d(cin + (c if i == 1 else 0), cout, (kt, 4, 4), (st, 2, 2), (pt, 1, 1)), cfg.init_std)
            )
            t = _out_len_conv(t, kt, st, pt)
            cin = cout
        self.layers = nn.ModuleList(layers)
        self.head = _sn_conv(nn.Conv3d(cin, 1, (t, 4, 4)), cfg.init_std)
        self.cond = c

    def forward(self, video: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        x = video.transpose(1, 2)  # (B, 3, T, H, W)
        for i, layer in enumerate(self.layers):
            if i == 1 and self.cond:
                cond = condition if condition is not None else x.new_zeros(x.shape[0], self.cond)
                x = torch.cat([x, _tile(cond, x)], 1)
            x = F.leaky_relu(layer(x), LEAK, inplace=True)
        return self.head(x).flatten()


def _out_len_conv(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


# ----------------------------------------------------------------------------------------------------------------------
# the method


class ImaGINator(Method):
    """The generator (:attr:`generator`) and both discriminators (:attr:`d_image`, :attr:`d_video`) of ImaGINator."""

    name = "imaginator"
    Config = ImaGINatorConfig
    native_flow = False

    def __init__(self, config: ImaGINatorConfig):
        super().__init__(config)
        self.generator = Generator(config)
        self.d_image = ImageDiscriminator(config)
        self.d_video = VideoDiscriminator(config)

    # -- helpers -------------------------------------------------------------------------------------------------------

    def _condition(self, x0: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor | None:
        """Checked condition in x0's dtype/device; None for an unconditioned model, zeros for a missing one."""
        self.check_inputs(x0, condition)
        if not self.config.condition_dim:
            return None
        if condition is None:
            return x0.new_zeros(x0.shape[0], self.config.condition_dim)
        return condition.to(device=x0.device, dtype=x0.dtype)

    def _check_video(self, name: str, video: torch.Tensor) -> None:
        s, t = self.config.image_size, self.config.horizon
        if video.ndim != 5 or tuple(video.shape[1:]) != (t, 3, s, s):
            raise ValueError(f"{name} must have shape (B, {t}, 3, {s}, {s}), got {tuple(video.shape)}")

    # -- public API ----------------------------------------------------------------------------------------------------

    @property
    def condition_kind(self) -> str:
        if not self.config.condition_dim:
            return ""
        return "direction" if self.config.condition == "direction" else "eta"

    def batch_condition(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """``condition="direction"``: the one-hot push direction (B, direction_bins) of ``batch["ee"]`` (B, T + 1, 3)
        metres (:func:`direction_condition`); otherwise as :meth:`Method.batch_condition`."""
        if self.condition_kind != "direction":
            return super().batch_condition(batch)
        if EE not in batch:
            raise ValueError("condition='direction' needs the clips' end-effector track batch['ee'] (B, T + 1, 3)")
        return direction_condition(batch[EE], self.config.direction_bins, dtype=batch[X0].dtype)

    def generate(self, x0: torch.Tensor, condition: torch.Tensor | None, z: torch.Tensor | None = None) -> torch.Tensor:
        """One video per input. x0 (B, 3, S, S) in [-1, 1]; condition (B, C) or None; z (B, z_dim) or None (drawn
        from the global RNG). Returns (B, T, 3, S, S) in [-1, 1]."""
        cond = self._condition(x0, condition)
        if z is None:
            z = torch.randn(x0.shape[0], self.config.z_dim, device=x0.device, dtype=x0.dtype)
        elif tuple(z.shape) != (x0.shape[0], self.config.z_dim):
            raise ValueError(f"z must have shape ({x0.shape[0]}, {self.config.z_dim}), got {tuple(z.shape)}")
        return self.generator(x0, cond, z.to(x0.dtype))

    def forward(
        self,
        phase: str,
        x0: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        real: torch.Tensor | None = None,
        fake: torch.Tensor | None = None,
        frame_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Everything one training phase needs, in one call (one forward per backward, as DDP wants).

        - ``"G"``: x0 (B, 3, S, S), condition (B, C) | None, frame_index (B,) int64 -> ``fake`` (B, T, 3, S, S),
          ``logit_video`` D_V(fake, c) (B,), ``logit_image`` D_I(fake[b, frame_index[b]]) (B,). z from the global RNG.
        - ``"D_I"``: real, fake frames (B, 3, S, S) -> ``logit_real``, ``logit_fake`` (B,).
        - ``"D_V"``: real, fake videos (B, T, 3, S, S), condition (B, C) | None -> ``logit_real``, ``logit_fake``.
        """
        if phase == "G":
            fake = self.generate(x0, condition)
            cond = self._condition(x0, condition)
            frames = fake[torch.arange(fake.shape[0], device=fake.device), frame_index]
            return {"fake": fake, "logit_video": self.d_video(fake, cond), "logit_image": self.d_image(frames)}
        if phase == "D_I":
            return {"logit_real": self.d_image(real), "logit_fake": self.d_image(fake)}
        if phase == "D_V":
            self._check_video("real", real)
            self._check_video("fake", fake)
            if self.config.condition_dim and condition is None:
                condition = real.new_zeros(real.shape[0], self.config.condition_dim)
            cond = condition if self.config.condition_dim else None
            return {"logit_real": self.d_video(real, cond), "logit_fake": self.d_video(fake, cond)}
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")

    @torch.no_grad()
    def sample(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> Sample:
        """Futures from the generator alone, one z ~ N(0, I) per sample. x0 (B, 3, S, S) in [-1, 1]; condition (B, C)
        or None. Returns ``Sample(frames=(B, N, T, 3, S, S) in [-1, 1])``; flows None (the Predictor uses DIS)."""
        cond = self._condition(x0, condition)
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        b, n = x0.shape[0], num_samples
        z = randn((b * n, self.config.z_dim), generator, x0.device).to(x0.dtype)
        appearance, maps = self.generator.encode(x0)  # once per input, repeated for its samples
        rep = [m.repeat_interleave(n, 0) for m in maps]
        c = None if cond is None else cond.repeat_interleave(n, 0)
        frames = self.generator.decode(appearance.repeat_interleave(n, 0), rep, c, z)
        return Sample(frames=frames.reshape(b, n, *frames.shape[1:]))
