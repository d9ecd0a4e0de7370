"""Per-method training steps, registered by method name (the same names as :data:`imagine_ros.models.METHODS`)."""

from __future__ import annotations

from imagine_ros.errors import ConfigError
from imagine_ros.training.steps.base import TrainStep
from imagine_ros.training.steps.cinn import CINNStep
from imagine_ros.training.steps.imaginator import ImaGINatorStep
from imagine_ros.training.steps.imagineflow import ImagineFlowStep
from imagine_ros.training.steps.visual_dynamics import VisualDynamicsStep

STEPS: dict[str, type[TrainStep]] = {
    "visual_dynamics": VisualDynamicsStep,
    "imaginator": ImaGINatorStep,
    "imagineflow": ImagineFlowStep,
    "cinn": CINNStep,
}


def get_step(method: str) -> type[TrainStep]:
    try:
        return STEPS[method]
    except KeyError:
        trainable = ", ".join(sorted(STEPS))
        raise ConfigError(f"method {method!r} has no training step (trainable methods: {trainable})") from None


__all__ = ["STEPS", "TrainStep", "get_step"]
