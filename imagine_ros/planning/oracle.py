"""The oracle planner and the simulator-backed predictor: candidates executed in the real environment's own
simulator, from a snapshot.

Both save the environment's state with :meth:`~imagine_ros.sim.env.PushEnv.save_state` (pybullet's ``saveState`` on
the environment's own client: poses, velocities, contacts and solver state, plus the hand target, the task and the
random generator), execute each candidate η from it and restore it afterwards, so the candidates start from exactly
the state the real episode is in (restoring is bit-exact; a copied simulator is not: pybullet's contact and solver
caches do not copy) and the episode continues as if nothing had been simulated.

A candidate η is executed like the real one (:func:`eta_actions`: from the current hand target to η over ``horizon``
frames). The oracle costs it the designated object's true distance to the goal (metres), summed over the simulated
frames with the last frame weighted ``last_step_weight``. The simulator-backed predictor instead renders the frames
and returns them with their ground-truth forward flows, to be scored by the planner's own designated-pixel cost:
the upper bound of every learned predictor through exactly the same planner and cost.
"""

from __future__ import annotations

import time

import numpy as np

from imagine_ros.planning.cem import PlannerConfig, PlanResult, cem
from imagine_ros.planning.costs import step_weights
from imagine_ros.prediction import Prediction
from imagine_ros.sim.env import PushEnv
from imagine_ros.sim.ground_truth import forward_flow, part_poses
from imagine_ros.sim.motion import eta_actions


class OraclePlanner:
    """CEM over η where each candidate is simulated from a snapshot of the environment (module docstring).

    env: the real task-mode environment (restored after every candidate); horizon: frames a candidate is simulated
    (use the models' horizon so the oracle plans what they plan).
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

    def close(self) -> None:
        pass

    def _simulate(self, snapshot, eta: np.ndarray, weights: np.ndarray) -> float:
        env = self.env
        env.restore_state(snapshot)
        goal = np.asarray(env._goal[:2], dtype=np.float64)
        k = int(env._target_object)
        cost = 0.0
        with env.physics_only():
            for t, a in enumerate(eta_actions(env.ee_target, eta, self.horizon, env.config.max_step)):
                _, _, _, _, info = env.step(a)
                cost += weights[t] * float(np.linalg.norm(info["object_pos"][k, :2] - goal))
        return cost

    def plan(self, seed: int | None = None) -> PlanResult:
        """Choose η for the environment's current state; cost in metres (module docstring)."""
        t0 = time.perf_counter()
        env = self.env
        snapshot = env.save_state()
        weights = step_weights(self.horizon, self.config.last_step_weight)
        rng = np.random.default_rng(seed)

        def score(cand: np.ndarray, it: int) -> np.ndarray:
            return np.array([self._simulate(snapshot, eta, weights) for eta in cand])

        try:
            eta, cost, per_it = cem(score, self.eta_low, self.eta_high, self.config, rng)
        finally:
            env.restore_state(snapshot)
            env.discard_state(snapshot)
        return PlanResult(
            eta=eta.astype(np.float32),
            cost=cost,
            costs=per_it,
            prediction=None,
            designated_next=None,
            seconds=time.perf_counter() - t0,
            predict_calls=0,
        )


class SimPredictor:
    """A predictor backed by the simulator: each candidate η is executed in the environment from a snapshot of its
    current state, rendered, and returned with its ground-truth forward flows (``flow_source == "ground_truth"``).

    It predicts for the environment's *current* state, whatever image it is given (the planner passes the current
    camera image); every sample of a candidate is the same (the simulator is deterministic). ``image_size`` must be
    the environment's. Used by ``plan-eval`` as the upper bound of the learned predictors through the same cost.
    """

    method = "simulator"
    condition_kind = "eta"

    def __init__(self, env: PushEnv, horizon: int = 10):
        self.env = env
        self.horizon = int(horizon)
        self.image_size = int(env.config.image_size[0])
        self.condition_dim = 3
        cam = env.camera
        self._K, self._T = cam.K, cam.T_cam_world

    def predict(self, images, conditions=None, num_samples: int = 1, seed: int | None = None) -> Prediction:
        t0 = time.perf_counter()
        images = np.asarray(images)
        if conditions is None:
            raise ValueError("the simulator-backed predictor needs conditions (B, 3): the target eta of each image")
        etas = np.asarray(conditions, dtype=np.float64).reshape(len(images), 3)
        env, t, s = self.env, self.horizon, self.image_size
        snapshot = env.save_state()
        try:
            _, depth0, inst0 = env.scene.render_ground_truth()
            pose0 = part_poses(env.scene, env.parts)
            frames = np.zeros((len(etas), t, s, s, 3), np.uint8)
            flows = np.zeros((len(etas), t, s, s, 2), np.float32)
            for b, eta in enumerate(etas):
                env.restore_state(snapshot)
                depths, poses = np.zeros((t, s, s), np.float32), np.zeros((t, len(env.parts), 7), np.float32)
                with env.physics_only():
                    for k, a in enumerate(eta_actions(env.ee_target, eta, t, env.config.max_step)):
                        env.step(a)
                        frames[b, k], depths[k], _ = env.scene.render_ground_truth()
                        poses[k] = part_poses(env.scene, env.parts)
                flows[b], _ = forward_flow(depth0, inst0, pose0, poses, depths, env.parts, self._K, self._T)
        finally:
            env.restore_state(snapshot)
            env.discard_state(snapshot)
        n = int(num_samples)
        total = time.perf_counter() - t0
        return Prediction(
            frames=np.repeat(frames[:, None], n, 1),
            flows=np.repeat(flows[:, None], n, 1),
            flow_source="ground_truth",
            method=self.method,
            condition=etas.astype(np.float32),
            masks=None,
            timing={"model": total, "flow": 0.0, "total": total},
        )
