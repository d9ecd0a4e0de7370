"""``copy_last``: the floor every metric and experiment is compared with — the future is the input, repeated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from imagine_ros.models.base import Method, MethodConfig, Sample


@dataclass(frozen=True)
class CopyLastConfig(MethodConfig):
    condition_dim: int = 0

    presets: ClassVar[dict] = {"tiny": {"image_size": 16, "horizon": 3}, "small": {}, "paper": {"horizon": 15}}


class CopyLast(Method):
    """Repeats x0 for every future step and sample; zero (native) flow, everything visible."""

    name = "copy_last"
    Config = CopyLastConfig
    native_flow = True
    trainable = False

    def sample(self, x0, condition, num_samples, generator=None) -> Sample:
        b, _, h, w = x0.shape
        t = self.config.horizon
        frames = x0[:, None, None].expand(b, num_samples, t, 3, h, w).contiguous()
        flows = torch.zeros(b, num_samples, t, 2, h, w, device=x0.device, dtype=x0.dtype)
        masks = torch.ones(b, num_samples, t, 1, h, w, device=x0.device, dtype=x0.dtype)
        return Sample(frames=frames, flows=flows, masks=masks)
