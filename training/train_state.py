"""What a resumed run needs besides the model: optimizer states, the loss scaler, RNG states and the data position.

Stored like model checkpoints, without pickle: tensors in ``NAME.safetensors``, everything else in ``NAME.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from imagine_ros.errors import ImagineRosError


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by a reference, collecting the tensors under unique names."""
    if torch.is_tensor(obj):
        tensors[prefix] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), _split(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _key(k: Any) -> Any:
    return {"__int__": k} if isinstance(k, int) else k


def _join(obj: Any, tensors: dict[str, torch.Tensor], device: torch.device) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {(k["__int__"] if isinstance(k, dict) else k): _join(v, tensors, device) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_join(v, tensors, device) for v in obj]
    return obj


def save_train_state(
    path: str | os.PathLike,
    optimizers: dict[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    *,
    step: int,
    epoch: int,
    batch: int,
) -> None:
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = {
        "step": int(step),
        "epoch": int(epoch),
        "batch": int(batch),
        "optimizers": {name: _split(opt.state_dict(), f"opt/{name}", tensors) for name, opt in optimizers.items()},
        "scaler": scaler.state_dict(),
        "rng": {"torch": _split(torch.get_rng_state(), "rng/torch", tensors)},
    }
    if torch.cuda.is_available():
        tree["rng"]["cuda"] = _split(torch.cuda.get_rng_state_all(), "rng/cuda", tensors)
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(tree) + "\n", encoding="utf-8")


def load_train_state(
    path: str | os.PathLike,
    optimizers: dict[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> dict[str, int]:
    """Restore optimizers, scaler and RNG from ``path``; returns ``{"step", "epoch", "batch"}``."""
    path = Path(path)
    try:
        tree = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        tensors = load_file(str(path.with_suffix(".safetensors")))
    except (OSError, ValueError) as e:
        raise ImagineRosError(f"training state {path} cannot be read ({e}); delete the checkpoint folder") from None
    if set(tree["optimizers"]) != set(optimizers):
        raise ImagineRosError(
            f"training state {path} has optimizers {sorted(tree['optimizers'])}, this method uses {sorted(optimizers)}"
        )
    for name, opt in optimizers.items():
        opt.load_state_dict(_join(tree["optimizers"][name], tensors, device))
    if tree["scaler"]:
        scaler.load_state_dict(tree["scaler"])
    torch.set_rng_state(_join(tree["rng"]["torch"], tensors, device))
    if "cuda" in tree["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(_join(tree["rng"]["cuda"], tensors, device))
    return {k: int(tree[k]) for k in ("step", "epoch", "batch")}
