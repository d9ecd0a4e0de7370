"""imagine_ros.models: one module per method, shared layers, and the explicit method registry.

``METHODS`` maps a method name to its class; checkpoints, the trainer, the Predictor and the CLI look methods up here
and nowhere else.
"""

from __future__ import annotations

from imagine_ros.errors import ConfigError
from imagine_ros.models.base import PRESETS, Method, MethodConfig, Sample
from imagine_ros.models.cinn import CINN
from imagine_ros.models.copy_last import CopyLast
from imagine_ros.models.imaginator import ImaGINator
from imagine_ros.models.imagineflow import ImagineFlow
from imagine_ros.models.visual_dynamics import VisualDynamics

METHODS: dict[str, type[Method]] = {
    CopyLast.name: CopyLast,
    VisualDynamics.name: VisualDynamics,
    ImaGINator.name: ImaGINator,
    ImagineFlow.name: ImagineFlow,
    CINN.name: CINN,
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None


def build(name: str, preset: str = "small", **overrides) -> Method:
    """A fresh model of method ``name`` with config ``preset`` (tiny/small/paper) and field overrides."""
    cls = get_method(name)
    return cls(cls.Config.preset(preset, **overrides))


__all__ = ["METHODS", "PRESETS", "Method", "MethodConfig", "Sample", "build", "get_method"]
