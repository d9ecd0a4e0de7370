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
from imagine_ros.models.conditioning import ConditionNormalizer

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


def plain_file_name(name: Any) -> bool:
    """Whether ``name`` names a file in the folder it is read from: a non-empty string without a folder part, a
    drive, a NUL or a parent reference (``"model.safetensors"``, not ``"../x"``, ``"/etc/x"``, ``"a/b"``)."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name not in (".", "..")
        and not any(c in name for c in ("/", "\\", "\0", ":"))
    )


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold a NaN or an infinity."""
    return [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def read_verified_weights(
    meta_path: Path, meta: dict[str, Any], default: Path, error: type[Exception] = CheckpointError
) -> tuple[Path, dict[str, torch.Tensor]]:
    """The path and the tensors (on the CPU) of the safetensors file that the JSON ``meta`` (read from ``meta_path``)
    names under ``"weights"`` (else ``default``), beside it, after checking that the name is a plain file name (no
    folder), that the file exists, matches ``"weights_sha256"`` and holds only finite numbers. Raises ``error``
    saying which check failed. Shared by every two-file format here (checkpoints, flow networks, end-effector
    detectors)."""
    name = meta.get("weights", default.name)
    if not plain_file_name(name):
        raise error(
            f"{meta_path}: 'weights' must be the plain name of a file beside it (no folder part), got {name!r:.100}"
        )
    weights = meta_path.with_name(name)
    if not weights.is_file():
        raise error(f"{meta_path} lacks its weights file {weights.name}")
    expected = meta.get("weights_sha256")
    if expected is not None and not isinstance(expected, str):
        raise error(f"{meta_path}: 'weights_sha256' must be a hex string, got {expected!r:.100}")
    try:
        if expected and sha256_file(weights) != expected:
            raise error(f"{weights} does not match the hash in {meta_path.name} (truncated or replaced)")
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, error):
            raise
        raise error(f"{weights} cannot be read as safetensors ({e})") from None
    bad = non_finite_tensors(state)
    if bad:
        raise error(
            f"{weights} holds NaN or infinite values in {len(bad)} tensor(s) ({', '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}): the training diverged or the file is damaged"
        )
    return weights, state


#: a normaliser std below this (in the data's units, metres) would blow η up by more than 1e6 per metre
MIN_NORMALIZER_STD = 1e-6
#: normaliser statistics beyond this magnitude are not end-effector positions
MAX_NORMALIZER_VALUE = 1e6


def check_normalizer(meta_path: Path, model: Method, description: Any) -> None:
    """Raise :class:`CheckpointError` unless ``description`` (the JSON ``"normalizer"``) is None or a condition
    normaliser whose mean and std are finite, of magnitude <= MAX_NORMALIZER_VALUE, with std >= MIN_NORMALIZER_STD
    (after its ``min_std`` floor) and, for a model conditioned on η, ``condition_dim`` long. (Push-direction and
    unconditioned models ignore the normaliser, so its length is not theirs.)"""
    if description is None:
        return
    try:
        norm = ConditionNormalizer.from_dict(description)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {meta_path} has a bad normaliser: {e}") from None
    if model.condition_kind == "eta" and norm.dim != model.config.condition_dim:
        raise CheckpointError(
            f"checkpoint {meta_path}: the normaliser has {norm.dim} dimensions but the model's condition_dim is "
            f"{model.config.condition_dim}"
        )
    if (abs(norm.mean) > MAX_NORMALIZER_VALUE).any() or (norm.std > MAX_NORMALIZER_VALUE).any():
        raise CheckpointError(f"checkpoint {meta_path}: normaliser values beyond {MAX_NORMALIZER_VALUE:g}: {norm!r}")
    if (norm.std < MIN_NORMALIZER_STD).any():
        raise CheckpointError(
            f"checkpoint {meta_path}: normaliser std {norm.std.tolist()} is below {MIN_NORMALIZER_STD:g} "
            "(a vanishing std turns any η into a huge condition)"
        )


def _build_on_meta(cls: type[Method], config: Any) -> Method | None:
    """The model on PyTorch's meta device (shapes only, nothing allocated), or None where a method cannot be built
    there (its real build then checks the same)."""
    try:
        with torch.device("meta"):
            return cls(config)
    except ConfigError:
        raise
    except Exception:
        return None


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint from its two files (no other input) on ``device``, in eval mode.

    Everything is checked before the model is allocated: the config (each field's type and range,
    :class:`~imagine_ros.models.base.MethodConfig`), the normaliser (:func:`check_normalizer`), the weights file
    (:func:`read_verified_weights`: plain name, hash, finite numbers) and that its tensors are exactly the ones the
    config builds (compared on the meta device), so a forged config cannot make a model larger than its file."""
    weights, meta_path = checkpoint_paths(path)
    meta = read_checkpoint_meta(path)
    method, config_dict = meta.get("method"), meta.get("config")
    if not isinstance(method, str):
        raise CheckpointError(f"checkpoint {meta_path} names no method (got {method!r:.100})")
    if not isinstance(config_dict, dict):
        raise CheckpointError(f"checkpoint {meta_path} has no config object (got {type(config_dict).__name__})")
    step = meta.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {meta_path}: 'step' must be an integer >= 0, got {step!r:.100}")
    try:
        cls = get_method(method)
        config = cls.Config.from_dict(config_dict)
        shapes = _build_on_meta(cls, config)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {meta_path} does not fit this imagine_ros: {e}") from None
    if shapes is not None:
        check_normalizer(meta_path, shapes, meta.get("normalizer"))
    weights, state = read_verified_weights(meta_path, meta, weights)
    if shapes is not None:
        _check_state(weights, cls, shapes.state_dict(), state)
    checked, shapes = shapes is not None, None
    model = cls(config)
    if not checked:
        check_normalizer(meta_path, model, meta.get("normalizer"))
    _check_state(weights, cls, model.state_dict(), state)
    model.load_state_dict(state, strict=True)
    return LoadedCheckpoint(model=model.to(device).eval(), meta=meta)


def _check_state(
    weights: Path, cls: type[Method], own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the tensors (names and shapes) of ``own``."""
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
