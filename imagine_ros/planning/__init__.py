"""imagine_ros.planning: visual-foresight planning over η with predicted flows, an oracle, and the experiments.

- :class:`PlannerConfig`, :class:`CEMPlanner`, :class:`PlanResult` (:mod:`.cem`): CEM over η on any Predictor.
- :mod:`.costs`: designated pixels moved along predicted flows; goal-image cost.
- :class:`OraclePlanner` (:mod:`.oracle`): CEM scored by simulating candidates in a cloned simulator.
- :mod:`.runner` (``imagine-ros plan-eval``) and :mod:`.demo` (``imagine-ros demo``).

:class:`OraclePlanner` and :func:`eta_actions` need the simulator (pybullet): they are imported when first asked for,
so that the planner of the ROS prediction node (:mod:`imagine_ros.pipeline`) does not load the simulator.
"""

from __future__ import annotations

import importlib
from typing import Any

from imagine_ros.planning.cem import CEMPlanner, PlannerConfig, PlanResult, cem
from imagine_ros.planning.costs import designated_pixel_cost, goal_image_cost, propagate_map, propagate_points

_LAZY = {"OraclePlanner": "oracle", "eta_actions": "oracle"}

__all__ = [
    "CEMPlanner",
    "OraclePlanner",
    "PlanResult",
    "PlannerConfig",
    "cem",
    "designated_pixel_cost",
    "eta_actions",
    "goal_image_cost",
    "propagate_map",
    "propagate_points",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
