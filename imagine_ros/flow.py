"""Optical flow estimated from frames (for methods without native flows): OpenCV's DIS optical flow.

:class:`imagine_ros.flownet.FlowNet` is a learned alternative with the same interface (``FlowNet.estimate``).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Flow sources a :class:`imagine_ros.prediction.Prediction` can name: the method's own flows, OpenCV DIS on its frames,
#: the flow network of :mod:`imagine_ros.flownet` on its frames, the simulator's ground truth.
FLOW_SOURCES = ("native", "dis", "flownet", "ground_truth")


def dis_flows(x0: np.ndarray, frames: np.ndarray, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> np.ndarray:
    """Forward flows from one image to each of several frames.

    x0: (H, W, 3) uint8 RGB; frames: (..., H, W, 3) uint8 RGB -> (..., H, W, 2) float32 pixels, where
    ``frames[i](p + flow[i](p)) ≈ x0(p)`` (the displacement of each input pixel to where it is in frame i).
    """
    x0 = np.asarray(x0)
    frames = np.asarray(frames)
    if x0.ndim != 3 or x0.shape[-1] != 3 or frames.shape[-3:] != x0.shape:
        raise ValueError(f"x0 must be (H, W, 3) and frames (..., H, W, 3) of its size, got {x0.shape}, {frames.shape}")
    dis = cv2.DISOpticalFlow_create(preset)
    g0 = cv2.cvtColor(np.ascontiguousarray(x0, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    flat = frames.reshape(-1, *x0.shape)
    out = np.empty((len(flat), *x0.shape[:2], 2), np.float32)
    for i, f in enumerate(flat):
        out[i] = dis.calc(g0, cv2.cvtColor(np.ascontiguousarray(f, dtype=np.uint8), cv2.COLOR_RGB2GRAY), None)
    return out.reshape(*frames.shape[:-1], 2)
