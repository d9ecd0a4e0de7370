"""``Prediction``: what every Predictor (in process or remote) returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """Sampled futures of a batch of images.

    frames: (B, N, T, H, W, 3) uint8 RGB — N samples of T future frames per input image.
    flows:  (B, N, T, H, W, 2) float32 — for each pixel of the input image, its displacement (dx, dy) in pixels to
            where it is at future step t (forward flow, input -> frame t).
    flow_source: "native" (the method predicts flows), "dis" (estimated from the frames with OpenCV DIS),
            "flownet" (estimated from the frames with :class:`imagine_ros.flownet.FlowNet`) or "ground_truth" (the
            simulator-backed predictor); :data:`imagine_ros.flow.FLOW_SOURCES`.
    frames_synthesised: False for a flows-only prediction (``predict(..., flows_only=True)``): ``frames`` then only
            repeats the input image (a read-only broadcast, no memory) and must not be shown as a future.
    masks:  (B, N, T, H, W) float32 in [0, 1] — visibility of input pixels at step t, when the method has them.
    condition: (B, C) float32, the η used (in the caller's units, not normalised), or None.
    method: the method's registry name; timing: seconds spent per stage ("model", "flow", "total").
    """

    frames: np.ndarray
    flows: np.ndarray
    flow_source: str
    method: str
    condition: np.ndarray | None = None
    masks: np.ndarray | None = None
    timing: dict[str, float] = field(default_factory=dict)
    frames_synthesised: bool = True

    def __post_init__(self) -> None:
        b, n, t, h, w, c = self.frames.shape
        if c != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be (B, N, T, H, W, 3) uint8, got {self.frames.shape} {self.frames.dtype}")
        if self.flows.shape != (b, n, t, h, w, 2) or self.flows.dtype != np.float32:
            raise ValueError(f"flows must be {(b, n, t, h, w, 2)} float32, got {self.flows.shape} {self.flows.dtype}")

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]

    @property
    def num_samples(self) -> int:
        return self.frames.shape[1]

    @property
    def horizon(self) -> int:
        return self.frames.shape[2]
