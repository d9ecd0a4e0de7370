"""imagine_ros.planning: visual-foresight planning over η with predicted flows, an oracle, and the experiments.

- :class:`PlannerConfig`, :class:`CEMPlanner`, :class:`PlanResult` (:mod:`.cem`): CEM over η on any Predictor.
- :mod:`.costs`: designated pixels moved along predicted flows; goal-image cost.
- :class:`OraclePlanner` (:mod:`.oracle`): CEM scored by simulating candidates in a cloned simulator.
- :mod:`.runner` (``imagine-ros plan-eval``) and :mod:`.demo` (``imagine-ros demo``).
"""

from imagine_ros.planning.cem import CEMPlanner, PlannerConfig, PlanResult, cem
from imagine_ros.planning.costs import designated_pixel_cost, goal_image_cost, propagate_map, propagate_points
from imagine_ros.planning.oracle import OraclePlanner, eta_actions

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
