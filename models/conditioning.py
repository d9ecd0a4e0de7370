"""The condition normaliser: checkpoint metadata that maps η (end-effector positions, metres) to what a model takes.

:class:`ConditionNormalizer` is fitted on a dataset's training split by the trainer and stored in every checkpoint's
JSON (``"normalizer"``, :meth:`ConditionNormalizer.to_dict`); the :class:`~imagine_ros.predictor.Predictor` rebuilds it
with :meth:`ConditionNormalizer.from_dict`. It lives beside the models, not the training code, so that loading a model
for inference imports neither the dataset code (h5py) nor the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from imagine_ros.constants import EE_POS
from imagine_ros.errors import ConfigError, DatasetError

#: Default floor of the normaliser's standard deviation, in the data's units (metres: 1 mm).
DEFAULT_MIN_STD = 1e-3
NORMALIZER_TYPE = "condition_normalizer"

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class EpisodeSource(Protocol):
    """What :meth:`ConditionNormalizer.fit` reads: an :class:`imagine_ros.sim.storage.EpisodeStore` (a protocol, so
    that this module does not import the dataset code)."""

    root: Any

    def split(self, name: str) -> list[int]: ...

    def read(self, index: int, key: str, start: int = 0, stop: int | None = None) -> np.ndarray: ...


class ConditionNormalizer:
    """Per-dimension standardisation ``(x - mean) / std`` of the condition eta (end-effector positions).

    Fitted on the training split (:meth:`fit`) and stored in checkpoints (:meth:`to_dict` is JSON-safe). ``std`` is
    floored at ``min_std`` so that a dimension that never varies (e.g. Shapes' all-zero ee_pos) is only centred, never
    divided by zero. Works on numpy arrays and torch tensors ``(..., C)``; returns the input's type, dtype and device.
    """

    def __init__(self, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray, min_std: float = 0.0):
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape or mean.size == 0:
            raise ConfigError(f"normaliser mean and std must be equal-length vectors, got {mean.shape}, {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ConfigError("normaliser mean and std must be finite")
        min_std = float(min_std)
        if not (math.isfinite(min_std) and min_std >= 0):
            raise ConfigError(f"normaliser min_std must be finite and >= 0, got {min_std}")
        std = np.maximum(std, min_std)
        if (std <= 0).any():
            raise ConfigError(f"normaliser std must be > 0, got {std.tolist()} (use min_std > 0)")
        self.mean, self.std, self.min_std = mean, std, min_std

    @property
    def dim(self) -> int:
        return int(self.mean.size)

    @classmethod
    def fit(
        cls,
        store: EpisodeSource,
        indices: Iterable[int] | None = None,
        key: str = EE_POS,
        min_std: float = DEFAULT_MIN_STD,
    ) -> ConditionNormalizer:
        """Mean and (population) std per dimension of ``key`` over every frame of episodes ``indices``.

        indices: episode indices, default ``store.split("train")`` (never fit on val/test). Raises
        :class:`DatasetError` when there are none.
        """
        idx = store.split("train") if indices is None else [int(i) for i in indices]
        if not idx:
            raise DatasetError(f"cannot fit a condition normaliser on no episodes of {store.root}")
        total, total_sq, count = None, None, 0
        for i in idx:
            v = np.asarray(store.read(i, key), dtype=np.float64)
            v = v.reshape(-1, v.shape[-1])
            total = v.sum(0) if total is None else total + v.sum(0)
            total_sq = (v * v).sum(0) if total_sq is None else total_sq + (v * v).sum(0)
            count += len(v)
        mean = total / count
        var = np.maximum(total_sq / count - mean * mean, 0.0)
        return cls(mean, np.sqrt(var), min_std=min_std)

    def _prepare(self, x: ArrayT) -> tuple[ArrayT, Any, Any]:
        """``x`` as a float array/tensor (integers become float32) and mean, std in its dtype and device."""
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x)
        if tuple(x.shape[-1:]) != (self.dim,):
            raise ValueError(f"condition must be (..., {self.dim}), got shape {tuple(x.shape)}")
        if isinstance(x, torch.Tensor):
            x = x if x.is_floating_point() else x.to(torch.float32)
            return (
                x,
                torch.as_tensor(self.mean, dtype=x.dtype, device=x.device),
                torch.as_tensor(self.std, dtype=x.dtype, device=x.device),
            )
        x = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
        return x, self.mean.astype(x.dtype), self.std.astype(x.dtype)

    def normalize(self, x: ArrayT) -> ArrayT:
        """``(x - mean) / std``; x: (..., C) numpy array or torch tensor (integer input becomes float32)."""
        x, mean, std = self._prepare(x)
        return (x - mean) / std

    def denormalize(self, x: ArrayT) -> ArrayT:
        """``x * std + mean``, the inverse of :meth:`normalize`."""
        x, mean, std = self._prepare(x)
        return x * std + mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (plain floats; float64 values round-trip exactly through ``json``)."""
        return {
            "type": NORMALIZER_TYPE,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "min_std": self.min_std,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConditionNormalizer:
        """Rebuild from :meth:`to_dict` output (e.g. a checkpoint's JSON); malformed input raises ConfigError."""
        if not isinstance(d, Mapping) or d.get("type", NORMALIZER_TYPE) != NORMALIZER_TYPE:
            raise ConfigError(f"not a condition normaliser description: {d!r}")
        missing = [k for k in ("mean", "std") if k not in d]
        if missing:
            raise ConfigError(f"condition normaliser description lacks {missing[0]!r}")
        try:
            return cls(d["mean"], d["std"], min_std=d.get("min_std", 0.0))
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"malformed condition normaliser description ({e})") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConditionNormalizer):
            return NotImplemented
        return (
            np.array_equal(self.mean, other.mean) and np.array_equal(self.std, other.std)
        ) and self.min_std == other.min_std

    def __repr__(self) -> str:
        return f"ConditionNormalizer(mean={self.mean.tolist()}, std={self.std.tolist()}, min_std={self.min_std})"
