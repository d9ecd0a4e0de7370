"""Model checkpoints: ``NAME.safetensors`` (weights and buffers) + ``NAME.json`` (everything else). Never pickle.

The JSON holds the method name, its config, the condition normaliser's statistics, the data config (image size,
horizon, dataset), the training step, the command that produced it and the weights' SHA-256, so that
:func:`load_checkpoint` rebuilds the model from the two files alone and refuses anything that does not fit.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from imagine_ros.errors import ConfigError, ImagineRosError
from imagine_ros.models import get_method
from imagine_ros.models.base import Method

FORMAT_NAME = "imagine_ros.checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ImagineRosError):
    """A checkpoint that cannot be loaded: missing, truncated, foreign, of an unknown method or mismatched config."""


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, json) paths for ``path`` given as ``NAME``, ``NAME.json`` or ``NAME.safetensors``."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` a temporary file beside ``path``, sync it and move it onto ``path`` (readers see the old file or
    the new one, never a part)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as contiguous CPU tensors (safetensors refuses shared or strided storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(
    path: str | os.PathLike,
    model: Method,
    *,
    step: int = 0,
    normalizer: dict | None = None,
    data: dict | None = None,
    command: list[str] | str | None = None,
    extra: dict | None = None,
) -> tuple[Path, Path]:
    """Write ``model`` as a checkpoint at ``path`` (both files atomically; JSON last). Returns (weights, json)."""
    weights, meta_path = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(weights, lambda tmp: save_file(state_tensors(model), str(tmp), metadata={"format": FORMAT_NAME}))
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "method": model.name,
        "config": model.config.to_dict(),
        "normalizer": normalizer,
        "data": data or {"image_size": model.config.image_size, "horizon": model.config.horizon},
        "step": int(step),
        "command": command,
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        **(extra or {}),
    }
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8"))
    return weights, meta_path


@dataclass
class LoadedCheckpoint:
    model: Method
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    _, meta_path = checkpoint_paths(path)
    if not meta_path.exists():
        raise CheckpointError(f"no checkpoint at {path}: {meta_path} does not exist")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path} is not valid JSON ({e}); the checkpoint is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{meta_path} is not an imagine_ros checkpoint (format is not {FORMAT_NAME!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} has checkpoint version {meta.get('version')}; expected {FORMAT_VERSION}")
    return meta


def read_verified_weights(
    meta_path: Path, meta: dict[str, Any], default: Path, error: type[Exception] = CheckpointError
) -> tuple[Path, dict[str, torch.Tensor]]:
    """The path and the tensors (on the CPU) of the safetensors file that the JSON ``meta`` (read from ``meta_path``)
    names under ``"weights"`` (else ``default``), beside it, after checking that it exists and matches
    ``"weights_sha256"``. Raises ``error`` saying which check failed. Shared by every two-file format here
    (checkpoints, flow networks, end-effector detectors)."""
    weights = meta_path.with_name(str(meta.get("weights", default.name)))
    if not weights.exists():
        raise error(f"{meta_path} lacks its weights file {weights.name}")
    if meta.get("weights_sha256") and sha256_file(weights) != meta["weights_sha256"]:
        raise error(f"{weights} does not match the hash in {meta_path.name} (truncated or replaced)")
    try:
        return weights, load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise error(f"{weights} cannot be read as safetensors ({e})") from None


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint from its two files (no other input) on ``device``, in eval mode."""
    weights, meta_path = checkpoint_paths(path)
    meta = read_checkpoint_meta(path)
    try:
        cls = get_method(str(meta.get("method")))
        config = cls.Config.from_dict(meta.get("config") or {})
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {meta_path} does not fit this imagine_ros: {e}") from None
    weights, state = read_verified_weights(meta_path, meta, weights)
    model = cls(config)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise CheckpointError(f"weights in {weights.name} do not match the {cls.name} config ({'; '.join(parts)})")
    model.load_state_dict(state, strict=True)
    return LoadedCheckpoint(model=model.to(device).eval(), meta=meta)
