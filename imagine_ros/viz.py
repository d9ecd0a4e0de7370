"""Pictures people look at: animated GIFs of episodes / sampled futures, and optical-flow colour maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def video_grid(videos: np.ndarray, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """videos: (R, C, T, H, W, 3) uint8 -> (T, R*(H+pad)-pad, C*(W+pad)-pad, 3) uint8, one tile per (row, col)."""
    videos = np.asarray(videos)
    if videos.ndim != 6 or videos.shape[-1] != 3:
        raise ValueError(f"videos must have shape (rows, cols, T, H, W, 3), got {videos.shape}")
    r, c, t, h, w, _ = videos.shape
    out = np.full((t, r * (h + pad) - pad, c * (w + pad) - pad, 3), pad_value, np.uint8)
    for i in range(r):
        for j in range(c):
            out[:, i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = videos[i, j]
    return out


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 5.0, scale: int = 1) -> Path:
    """frames: (T, H, W, 3) uint8 -> an endlessly looping GIF at ``path`` (upscaled by ``scale``, nearest)."""
    from PIL import Image

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return path


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """flow: (..., H, W, 2) pixels -> (..., H, W, 3) uint8, hue = direction, saturation = magnitude (Middlebury-like).

    ``max_magnitude`` fixes the scale (pixels at full saturation); by default the largest magnitude in ``flow``.
    """
    import cv2

    flow = np.asarray(flow, dtype=np.float32)
    lead = flow.shape[:-3]
    flat = flow.reshape(-1, *flow.shape[-3:])
    mag = np.linalg.norm(flat, axis=-1)
    scale = float(max_magnitude) if max_magnitude else float(mag.max() or 1.0)
    out = np.empty((*flat.shape[:-1], 3), np.uint8)
    for i, f in enumerate(flat):
        ang = (np.degrees(np.arctan2(-f[..., 1], -f[..., 0])) + 180.0) / 2.0  # OpenCV hue is [0, 180)
        hsv = np.stack([ang, np.clip(mag[i] / scale, 0, 1) * 255, np.full_like(ang, 255)], -1).astype(np.uint8)
        out[i] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out.reshape(*lead, *out.shape[1:])
