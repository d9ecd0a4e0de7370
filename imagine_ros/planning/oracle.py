"""The oracle planner: CEM over η scored by simulating every candidate in a clone of the simulator (upper bound).

The clone is a second :class:`~imagine_ros.sim.env.PushEnv` with the same config, built from the same object specs
(so its bodies have the same ids), whose camera is switched off (physics only). Before each plan the clone copies the
real environment's dynamic state (object poses and velocities, arm joint positions and velocities, the hand target,
the goal) and saves it with pybullet's ``saveState``; every candidate starts from ``restoreState`` of that snapshot,
so the real environment is never touched and the candidates all start from the same state.

A candidate η is executed like the real one (:func:`eta_actions`: from the current hand target to η over ``horizon``
frames), and costs the designated object's distance to the goal (metres), summed over the simulated
frames with the last frame weighted ``last_step_weight`` — the designated-pixel cost with the true object in place of
the predicted map.
"""

from __future__ import annotations

import time

import numpy as np

from imagine_ros.planning.cem import PlannerConfig, PlanResult, cem
from imagine_ros.planning.costs import step_weights
from imagine_ros.sim.env import PushEnv
from imagine_ros.sim.motion import eta_actions  # noqa: F401  (the executor lives beside the simulator)


class _CameraOff:
    """Stands in for the clone scene's renderer: the oracle needs physics only (rendering is half a step's cost)."""

    def __init__(self, height: int, width: int):
        self.image = np.zeros((height, width, 3), np.uint8)

    def __call__(self, segmentation: bool = False) -> np.ndarray:
        return self.image


def copy_state(src: PushEnv, dst: PushEnv) -> None:
    """Make ``dst`` (built from ``src``'s object specs) hold ``src``'s dynamic state (module docstring)."""
    a, b = src.scene, dst.scene
    if len(a.objects) != len(b.objects) or a.robot != b.robot or a.objects != b.objects:
        raise RuntimeError("the clone's bodies do not match the environment's; rebuild it with sync(rebuild=True)")
    ca, cb = a.client, b.client
    for body in a.objects:
        pos, orn = ca.getBasePositionAndOrientation(body)
        lin, ang = ca.getBaseVelocity(body)
        cb.resetBasePositionAndOrientation(body, pos, orn)
        cb.resetBaseVelocity(body, lin, ang)
    for j in range(ca.getNumJoints(a.robot)):
        q, v = ca.getJointState(a.robot, j)[:2]
        cb.resetJointState(b.robot, j, q, v)
    for i, spec in enumerate(a.specs):
        b.specs[i].xy, b.specs[i].yaw = spec.xy, spec.yaw
    # the hand target and the task live in the env object (no public setters: the clone is this module's own)
    dst._target = src.ee_target
    dst._goal = np.array(src._goal, dtype=np.float64)
    dst._target_object = int(src._target_object)


class OraclePlanner:
    """CEM over η where each candidate is simulated in a cloned simulator (module docstring).

    env: the real task-mode environment (read, never stepped); horizon: frames a candidate is simulated (use the
    models' horizon so the oracle plans what they plan).
    """

    def __init__(
        self,
        env: PushEnv,
        config: PlannerConfig | None = None,
        eta_low: np.ndarray | None = None,
        eta_high: np.ndarray | None = None,
        horizon: int = 10,
    ):
        self.env = env
        self.config = config or PlannerConfig(samples=60, iterations=3, elites=6)
        self.eta_low = np.asarray(env.hand_low if eta_low is None else eta_low, dtype=np.float64)
        self.eta_high = np.asarray(env.hand_high if eta_high is None else eta_high, dtype=np.float64)
        self.horizon = int(horizon)
        self.clone = PushEnv(config=env.config)
        h, w = env.config.image_size
        self.clone.scene.render = _CameraOff(h, w)  # physics only
        self._built_for: list | None = None

    def close(self) -> None:
        self.clone.close()

    def sync(self, rebuild: bool = False) -> int:
        """Copy the environment's state into the clone (rebuilding its world when the scene changed);
        returns the pybullet state id of the snapshot."""
        specs = self.env.scene.specs
        key = [(s.shape, s.size, s.height, s.mass) for s in specs]
        if rebuild or self._built_for != key:
            from dataclasses import replace

            self.clone.scene.build([replace(s) for s in specs])
            self._built_for = key
        copy_state(self.env, self.clone)
        return self.clone.scene.client.saveState()

    def _simulate(self, snapshot: int, eta: np.ndarray, weights: np.ndarray) -> float:
        c = self.clone
        c.scene.client.restoreState(snapshot)
        c._target = self.env.ee_target
        c.np_random = np.random.default_rng(0)  # respawns in the clone are reproducible
        goal = np.asarray(self.env._goal[:2], dtype=np.float64)
        k = int(self.env._target_object)
        cost = 0.0
        for t, a in enumerate(eta_actions(c.ee_target, eta, self.horizon, c.config.max_step)):
            _, _, _, _, info = c.step(a)
            cost += weights[t] * float(np.linalg.norm(info["object_pos"][k, :2] - goal))
        return cost

    def plan(self, seed: int | None = None) -> PlanResult:
        """Choose η for the environment's current state; cost in metres (module docstring)."""
        t0 = time.perf_counter()
        snapshot = self.sync()
        weights = step_weights(self.horizon, self.config.last_step_weight)
        rng = np.random.default_rng(seed)
        calls = {"n": 0}

        def score(cand: np.ndarray, it: int) -> np.ndarray:
            calls["n"] += len(cand)
            return np.array([self._simulate(snapshot, eta, weights) for eta in cand])

        try:
            eta, cost, per_it = cem(score, self.eta_low, self.eta_high, self.config, rng)
        finally:
            self.clone.scene.client.removeState(snapshot)
        return PlanResult(
            eta=eta.astype(np.float32),
            cost=cost,
            costs=per_it,
            prediction=None,
            designated_next=None,
            seconds=time.perf_counter() - t0,
            predict_calls=0,
        )
