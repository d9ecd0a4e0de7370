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
#: Upper bounds of config values. A config (a checkpoint's JSON, ``--config``, a preset override) beyond them is
#: refused with a :class:`ConfigError` before anything is built: a typo or a forged file must not allocate terabytes
#: (``bank_size`` 1e12) or sample for ever (``horizon`` 1e9). The presets stay well inside.
MAX_IMAGE_SIZE = 1024
MAX_HORIZON = 256
MAX_CONDITION_DIM = 64
MAX_WIDTH = 8192  # bound of integer config fields and of tuple entries (widths, sizes, counts, bins)
MAX_STEPS = 10**9  # bound of step counts (config fields named *_steps) and the default of check_int
#: integer config fields with their own bound (the others: MAX_WIDTH, or MAX_STEPS for *_steps)
FIELD_MAXIMA = {
    "image_size": MAX_IMAGE_SIZE,
    "horizon": MAX_HORIZON,
    "condition_dim": MAX_CONDITION_DIM,
    "bank_size": 1 << 16,
}
MAX_TUPLE = 64  # entries of a tuple field
MAX_NUMBER = 1e6  # magnitude of float fields (weights, scales, rates)
MAX_STR = 4096  # characters of a string field (a path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int = 1, maximum: int = MAX_STEPS) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an int (not a bool) in [``minimum``, ``maximum``]."""
    if not _is_int(value) or not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")


def check_ints(
    name: str, value: Any, allow_empty: bool = False, length: int | None = None, maximum: int = MAX_WIDTH
) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a tuple of ints in [1, ``maximum``] (at most
    :data:`MAX_TUPLE` of them, or exactly ``length`` if given)."""
    ok = isinstance(value, tuple) and (bool(value) or allow_empty) and len(value) <= MAX_TUPLE
    if not ok or not all(_is_int(v) and 1 <= v <= maximum for v in value):
        raise ConfigError(f"{name} must be a tuple of at most {MAX_TUPLE} integers in [1, {maximum}], got {value!r}")
    if length is not None and len(value) != length:
        raise ConfigError(f"{name} must have {length} entries, got {len(value)} ({value!r})")


def check_number(name: str, value: Any, positive: bool = False, maximum: float = MAX_NUMBER) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number in [0, ``maximum``] ((0, ``maximum``] with
    ``positive``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0) or value > maximum:
        raise ConfigError(
            f"{name} must be a finite number in {'(0' if positive else '[0'}, {maximum:g}], got {value!r}"
        )


#: integer config fields where -1 means "auto" (the others are >= 0)
SIGNED_FIELDS = ("temporal_doublings",)


def int_maximum(name: str) -> int:
    """The largest value of the integer config field ``name``."""
    return FIELD_MAXIMA.get(name, MAX_STEPS if name.endswith("_steps") else MAX_WIDTH)


def check_field_type(name: str, kind: str, value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` has the type a field annotated ``kind`` (``"int"``, ``"float"``,
    ``"bool"``, ``"str"``, ``"tuple[int, ...]"``, ``"tuple[str, ...]"``) takes, within the bounds every field of that
    type has (integers in [0 (-1 for SIGNED_FIELDS), :func:`int_maximum`], numbers of magnitude <= MAX_NUMBER,
    strings of <= MAX_STR characters, tuples of <= MAX_TUPLE entries); the config classes check the tight,
    field-specific ranges."""
    if kind == "int":
        check_int(name, value, minimum=-1 if name in SIGNED_FIELDS else 0, maximum=int_maximum(name))
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or abs(value) > MAX_NUMBER:
            raise ConfigError(f"{name} must be a finite number of magnitude <= {MAX_NUMBER:g}, got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif kind == "str":
        if not isinstance(value, str) or len(value) > MAX_STR:
            raise ConfigError(f"{name} must be a string of at most {MAX_STR} characters, got {value!r:.80}")
    elif kind in ("tuple[int, ...]", "tuple[str, ...]"):
        item = int if kind == "tuple[int, ...]" else str
        ok = isinstance(value, tuple) and len(value) <= MAX_TUPLE
        ok = ok and all(isinstance(v, item) and not isinstance(v, bool) for v in value)
        if ok and item is int:
            ok = all(0 <= v <= MAX_WIDTH for v in value)
        if ok and item is str:
            ok = all(len(v) <= MAX_STR for v in value)
        if not ok:
            what = f"integers in [0, {MAX_WIDTH}]" if item is int else "strings"
            raise ConfigError(f"{name} must be a list of at most {MAX_TUPLE} {what}, got {value!r:.120}")
    else:  # a field type this check does not know: a new field must be given a rule here
        raise ConfigError(f"{name} has a type ({kind}) without a validation rule")


@dataclass(frozen=True)
class MethodConfig:
    """Fields every method has. Subclasses add their own, with defaults = the ``small`` preset."""

    image_size: int = 64  # square input/output side, pixels
    horizon: int = 10  # future frames per sample
    condition_dim: int = 3  # size of η (0: the method ignores conditions)

    def __post_init__(self) -> None:
        """Every field: its type and range (loose here by type, tight in each subclass's ``__post_init__``)."""
        check_int("image_size", self.image_size, minimum=16, maximum=MAX_IMAGE_SIZE)
        check_int("horizon", self.horizon, minimum=1, maximum=MAX_HORIZON)
        check_int("condition_dim", self.condition_dim, minimum=0, maximum=MAX_CONDITION_DIM)
        for f in fields(self):
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            check_field_type(f.name, kind, getattr(self, f.name))

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
        if not isinstance(d, Mapping):
            raise ConfigError(f"a {cls.__name__} must be a mapping of field names to values, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(map(repr, unknown[:10]))}")
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
        :class:`~imagine_ros.models.conditioning.ConditionNormalizer`; every conditioned method), ``"direction"``, a
        one-hot push-direction class (ImaGINator's paper-style label), or ``""`` for a model without one."""
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
