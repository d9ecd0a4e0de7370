"""How the hand executes a target η: the motion law shared by the planner's executor and the planning-matched
collection policy (:class:`imagine_ros.sim.policy.PlanningPolicy`), so that "the future given η" in the data is the
future of exactly the command the planner sends."""

from __future__ import annotations

import numpy as np


def eta_actions(start: np.ndarray, eta: np.ndarray, horizon: int, max_step: float) -> np.ndarray:
    """The hand displacements that execute η: (horizon, 3) metres from ``start`` (the current hand target, (3,)).

    The hand reaches η after ``horizon`` frames: x and y move in equal steps along the straight line, z moves to η's
    height as fast as ``max_step`` allows (so a hand that starts lifted pushes along the floor, not on a slope).
    """
    start = np.asarray(start, dtype=np.float64).reshape(3)
    eta = np.asarray(eta, dtype=np.float64).reshape(3)
    t = np.arange(horizon + 1, dtype=np.float64)
    path = start + (eta - start) * (t / horizon)[:, None]
    dz = eta[2] - start[2]
    path[:, 2] = start[2] + np.clip(dz, -max_step * t, max_step * t)
    path[-1] = eta
    return np.clip(np.diff(path, axis=0), -max_step, max_step)
