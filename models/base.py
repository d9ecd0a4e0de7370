"""The contract every method fulfils: a config dataclass with presets, and a module that samples futures.

Shapes (B = batch, N = samples per input, T = horizon, C = condition size):

- input ``x0``: (B, 3, H, W) float in [-1, 1]
- ``condition``: (B, C) float (normalised η) or ``None``
- :class:`Sample.frames`: (B, N, T, 3, H, W) float in [-1, 1]
- :class:`Sample.flows`: (B, N, T, 2, H, W) float, pixels, forward (input -> frame t), or ``None`` when the method has
  no native flows (the Predictor then estimates them from the frames)
- :class:`Sample.masks`: (B, N, T, 1, H, W) float in [0, 1] (visibility), or ``None``

A method's *training step* (losses, optimizers, stages) lives in :mod:`imagine_ros.training.steps`, not here.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from imagine_ros.constants import CONDITION
from imagine_ros.errors import ConfigError

PRESETS = ("tiny", "small", "paper")


# ------------------------------------------------------------------------------------- config field checks
def check_int(name: str, value: Any, minimum: int = 1) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_ints(name: str, value: Any, allow_empty: bool = False, length: int | None = None) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a tuple of positive ints (of ``length`` entries if given)."""
    ok = isinstance(value, tuple) and (bool(value) or allow_empty)
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise ConfigError(f"{name} must be a tuple of positive integers, got {value!r}")
    if length is not None and len(value) != length:
        raise ConfigError(f"{name} must have {length} entries, got {len(value)} ({value!r})")


def check_number(name: str, value: Any, positive: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number >= 0 (> 0 with ``positive``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ConfigError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")


@dataclass(frozen=True)
class MethodConfig:
    """Fields every method has. Subclasses add their own, with defaults = the ``small`` preset."""

    image_size: int = 64  # square input/output side, pixels
    horizon: int = 10  # future frames per sample
    condition_dim: int = 3  # size of η (0: the method ignores conditions)

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ConfigError(f"image_size must be an integer >= 16, got {self.image_size!r}")
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ConfigError(f"horizon must be an integer >= 1, got {self.horizon!r}")
        if not isinstance(self.condition_dim, int) or self.condition_dim < 0:
            raise ConfigError(f"condition_dim must be an integer >= 0, got {self.condition_dim!r}")

    #: preset name -> field overrides of the defaults (subclasses fill it)
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "small": {}, "paper": {}}

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MethodConfig:
        if name not in cls.presets:
            raise ConfigError(f"unknown config preset {name!r}; expected one of {', '.join(cls.presets)}")
        return cls.from_dict({**cls.presets[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodConfig:
        """Rebuild from :meth:`to_dict`; unknown keys are a mismatch, not something to ignore."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(map(repr, unknown))}")
        kwargs = {}
        for k, v in d.items():  # JSON turns tuples into lists: turn them back where the field is a tuple
            kwargs[k] = tuple(v) if isinstance(v, list) and isinstance(known[k].default, tuple) else v
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class Sample:
    """What :meth:`Method.sample` returns (shapes in the module docstring)."""

    frames: torch.Tensor
    flows: torch.Tensor | None = None
    masks: torch.Tensor | None = None


class Method(nn.Module, ABC):
    """Base class of all methods. Subclasses set ``name``, ``Config`` and ``native_flow`` and implement
    :meth:`sample`. ``self.config`` holds the (frozen) config the module was built from."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    native_flow: ClassVar[bool] = False
    trainable: ClassVar[bool] = True

    def __init__(self, config: MethodConfig):
        super().__init__()
        if not isinstance(config, self.Config):
            raise ConfigError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    @abstractmethod
    def sample(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> Sample:
        """Sample ``num_samples`` futures per input (shapes in the module docstring)."""

    @property
    def condition_kind(self) -> str:
        """What the condition is: ``"eta"``, the end-effector target η (normalised by the data's
        :class:`~imagine_ros.training.clips.ConditionNormalizer`; every conditioned method), ``"direction"``, a one-hot
        push-direction class (ImaGINator's paper-style label), or ``""`` for a model without one."""
        return "eta" if self.config.condition_dim else ""

    def sample_flows(
        self,
        x0: torch.Tensor,
        condition: torch.Tensor | None,
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | None:
        """Forward flows (B, N, T, 2, H, W) pixels without synthesising frames, for methods whose flows do not depend
        on their frames (planning needs only flows); None (the default) where the method cannot."""
        return None

    @property
    def extra_clip_keys(self) -> tuple[str, ...]:
        """Optional clip keys the training step needs besides the default ones (e.g. ground-truth ``"flow"`` and
        ``"visible"``, :mod:`imagine_ros.training.clips`); none by default."""
        return ()

    def batch_condition(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The condition of a batch of training clips (:class:`~imagine_ros.training.clips.ClipDataset` keys):
        ``batch["condition"]`` (B, C), the normalised η, or None for a model without a condition."""
        if not self.config.condition_dim:
            return None
        return batch[CONDITION]

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def check_inputs(self, x0: torch.Tensor, condition: torch.Tensor | None) -> None:
        """Raise ``ValueError`` naming the expected shape when the inputs do not fit this model."""
        s = self.config.image_size
        if x0.ndim != 4 or tuple(x0.shape[1:]) != (3, s, s):
            raise ValueError(f"x0 must have shape (B, 3, {s}, {s}), got {tuple(x0.shape)}")
        if condition is not None and self.config.condition_dim:
            want = (x0.shape[0], self.config.condition_dim)
            if tuple(condition.shape) != want:
                raise ValueError(f"condition must have shape {want}, got {tuple(condition.shape)}")


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Normal noise drawn on the generator's device (CPU generators give the same numbers on every machine)."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)
