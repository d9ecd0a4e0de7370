"""Frames as the models see them: uint8 RGB ``(..., H, W, 3)`` <-> float32 ``(..., 3, H, W)`` in [-1, 1].

Pixel values map ``uint8 v -> v / 127.5 - 1`` (0 -> -1, 255 -> 1); :func:`tensor_to_frames` inverts
:func:`frames_to_tensor` exactly. Shared by the training clips (:mod:`imagine_ros.training.clips`), the
:class:`~imagine_ros.predictor.Predictor` and the flow network; it imports only numpy and torch, so that loading a model
for inference does not import the dataset or simulator code.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` in [-1, 1] (``v / 127.5 - 1``)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (..., H, W, 3) uint8, got {tuple(x.shape)} {x.dtype}")
    return x.movedim(-1, -3).to(torch.float32).div(127.5).sub(1.0).contiguous()


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float ``(..., 3, H, W)`` in [-1, 1] -> uint8 RGB ``(..., H, W, 3)`` (clipped, rounded; inverts
    :func:`frames_to_tensor` exactly)."""
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"images must be (..., 3, H, W), got {tuple(x.shape)}")
    v = ((x.detach().to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return v.movedim(-3, -1).cpu().numpy()


def resize_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, 3, H, W)`` images to ``size = (h, w)`` with area interpolation (box average when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="area")
