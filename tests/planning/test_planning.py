"""Planning: designated-pixel propagation, CEM on a predictor of known behaviour, the oracle in the simulator, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imagine_ros.cli import main as cli_main
from imagine_ros.errors import ConfigError
from imagine_ros.planning import CEMPlanner, OraclePlanner, PlannerConfig, eta_actions, propagate_map
from imagine_ros.planning.costs import (
    designated_distances,
    designated_pixel_cost,
    expected_positions,
    point_map,
    propagate_points,
)
from imagine_ros.planning.runner import (
    DisFlowPredictor,
    OracleAgent,
    RandomAgent,
    TaskConfig,
    make_task_env,
    wilson_interval,
    workspace,
)
from imagine_ros.prediction import Prediction
from imagine_ros.predictor import PredictorProtocol

GAIN = 100.0  # pixels per metre
REF = np.array([0.55, 0.0])  # η (x, y) that moves nothing


class ShiftPredictor:
    """A real predictor of known behaviour: the whole image moves by GAIN * (η_xy - REF) pixels (η_x to the right,
    η_y down) from the first future frame on; η_z does nothing. Frames are the input rolled by the rounded shift."""

    image_size, horizon, condition_dim, method = 32, 4, 3, "shift"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, images, conditions=None, num_samples=1, seed=None) -> Prediction:
        images = np.asarray(images)
        b, s, t = len(images), self.image_size, self.horizon
        self.batches.append(b)
        shift = GAIN * (np.asarray(conditions, dtype=np.float64)[:, :2] - REF)  # (B, 2) pixels
        flows = np.broadcast_to(shift[:, None, None, None, None, :], (b, num_samples, t, s, s, 2))
        frames = np.empty((b, num_samples, t, s, s, 3), np.uint8)
        for i in range(b):
            dx, dy = np.round(shift[i]).astype(int)
            frames[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
        return Prediction(frames, np.ascontiguousarray(flows, dtype=np.float32), "native", self.method, conditions)


def blob_image(s: int = 32, centre=(12.0, 14.0), width: float = 5.0) -> np.ndarray:
    ys, xs = np.mgrid[:s, :s]
    v = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * width**2))
    return np.repeat((v * 255).astype(np.uint8)[..., None], 3, axis=-1)


# ------------------------------------------------------------------------------------------------ propagation
def test_integer_flow_moves_the_designated_pixel_by_hand_computed_amounts():
    flows = np.zeros((2, 8, 10, 2), np.float32)  # T = 2, H = 8, W = 10
    flows[0, 5, 3] = (2, -3)  # step 1: pixel (x=3, y=5) goes to (5, 2)
    flows[1, 5, 3] = (-3, 1)  # step 2: to (0, 6)
    maps = propagate_map(point_map(np.array([[3.0, 5.0]]), 8, 10)[0], flows)
    assert maps.shape == (2, 8, 10)
    assert maps[0, 2, 5] == pytest.approx(1.0) and maps[1, 6, 0] == pytest.approx(1.0)
    assert maps.sum() == pytest.approx(2.0)
    np.testing.assert_allclose(expected_positions(np.array([[3.0, 5.0]]), flows), [[[5, 2]], [[0, 6]]])


def test_subpixel_flow_and_subpixel_designated_pixel_split_mass_bilinearly():
    flows = np.zeros((1, 12, 12, 2), np.float32)
    flows[0, 7, 5] = (0.5, 0.25)  # (5, 7) -> (5.5, 7.25)
    m = propagate_map(point_map(np.array([[5.0, 7.0]]), 12, 12)[0], flows)[0]
    assert m[7, 5] == pytest.approx(0.375) and m[7, 6] == pytest.approx(0.375)
    assert m[8, 5] == pytest.approx(0.125) and m[8, 6] == pytest.approx(0.125)
    assert m.sum() == pytest.approx(1.0)
    # a designated point between two pixels whose flows differ: half goes to (6, 7), half to (6, 8)
    flows[0, 7, 5] = (1.0, 0.0)
    flows[0, 7, 6] = (0.0, 1.0)
    d = np.array([[5.5, 7.0]])
    m = propagate_map(point_map(d, 12, 12)[0], flows)[0]
    assert m[7, 6] == pytest.approx(0.5) and m[8, 6] == pytest.approx(0.5) and m.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(expected_positions(d, flows)[0, 0], [6.0, 7.5])
    # expected distance to a goal at (6, 10): 0.5 * 3 + 0.5 * 2
    assert designated_distances(d, np.array([6.0, 10.0]), flows)[0, 0] == pytest.approx(2.5)


def test_sparse_propagation_equals_dense_splatting_and_conserves_mass():
    rng = np.random.default_rng(0)
    flows = rng.uniform(-6, 6, (3, 2, 16, 20, 2)).astype(np.float32)  # leading (N, T); some go off the image
    designated = np.array([[4.3, 9.6], [15.0, 2.25]])
    pos, wts = propagate_points(designated, flows)
    assert pos.shape == (3, 2, 2, 16, 2)
    np.testing.assert_allclose(wts.sum(-1), 1.0)
    for k in range(2):
        dense = propagate_map(point_map(designated[k : k + 1], 16, 20)[0], flows)
        np.testing.assert_allclose(dense.sum((-2, -1)), 1.0)  # clamped at the border: nothing lost
        sparse = np.zeros_like(dense)
        for idx in np.ndindex(3, 2):
            np.add.at(sparse[idx], (pos[idx][k, :, 1].astype(int), pos[idx][k, :, 0].astype(int)), wts[idx][k])
        np.testing.assert_allclose(sparse, dense, atol=1e-12)


def test_cost_weights_the_last_step():
    flows = np.zeros((1, 1, 3, 16, 16, 2), np.float32)
    flows[0, 0, 2] = (4.0, 0.0)  # only the last step moves, onto the goal
    d, g = np.array([[2.0, 2.0]]), np.array([6.0, 2.0])
    assert designated_pixel_cost(flows, d, g, last_step_weight=10.0)[0] == pytest.approx(4 + 4 + 0)
    flows[0, 0, 2] = 0
    assert designated_pixel_cost(flows, d, g, last_step_weight=10.0)[0] == pytest.approx(4 + 4 + 40)


# ------------------------------------------------------------------------------------------------------- CEM
def test_cem_finds_the_eta_that_moves_the_designated_pixel_onto_the_goal():
    pred = ShiftPredictor()
    assert isinstance(pred, PredictorProtocol)
    cfg = PlannerConfig(max_batch=64, execute_steps=2)  # paper defaults: 200 samples, 3 iterations, 10 elites
    planner = CEMPlanner(pred, cfg, eta_low=(0.37, -0.18, 0.02), eta_high=(0.73, 0.18, 0.17))
    designated, goal = np.array([[10.0, 12.0]]), np.array([18.0, 7.0])  # needs a shift of (+8, -5) pixels
    res = planner.plan(blob_image(), designated, goal, seed=3)
    want = REF + (goal - designated[0]) / GAIN  # (0.63, -0.05)
    np.testing.assert_allclose(res.eta[:2], want, atol=0.01)
    assert res.eta.dtype == np.float32 and res.eta.shape == (3,)
    assert np.all(np.diff(res.costs) <= 0) and res.costs.shape == (3,) and res.cost == res.costs[-1]
    assert res.cost < 0.1 * designated_pixel_cost(np.zeros((1, 1, 4, 32, 32, 2)), designated, goal)[0]
    assert pred.batches == [64, 64, 64, 8] * 3 and res.predict_calls == 12  # batched, never above max_batch
    # the chosen candidate's futures and the carried-over designated pixel (mean of the splatted map)
    np.testing.assert_allclose(res.prediction.condition[0], res.eta)
    np.testing.assert_allclose(res.designated_next, designated + GAIN * (res.eta[:2] - REF), atol=1e-4)
    again = planner.plan(blob_image(), designated, goal, seed=3)
    np.testing.assert_array_equal(again.eta, res.eta)


class NaNPredictor(ShiftPredictor):
    """ShiftPredictor whose flows are NaN for candidates with η_x above ``nan_above`` (all of them by default)."""

    def __init__(self, nan_above: float = -np.inf) -> None:
        super().__init__()
        self.nan_above = nan_above

    def predict(self, images, conditions=None, num_samples=1, seed=None) -> Prediction:
        p = super().predict(images, conditions, num_samples, seed)
        flows = p.flows.copy()
        flows[np.asarray(conditions)[:, 0] > self.nan_above] = np.nan
        return Prediction(p.frames, flows, "native", self.method, conditions)


def test_cem_skips_non_finite_candidates_and_refuses_when_all_are():
    cfg = PlannerConfig(samples=64, iterations=2, elites=8, max_batch=16, execute_steps=2)
    designated, goal = np.array([[10.0, 12.0]]), np.array([12.0, 12.0])  # best: η_x = 0.57, just below the cut
    planner = CEMPlanner(NaNPredictor(nan_above=0.6), cfg, eta_low=(0.37, -0.18, 0.02), eta_high=(0.73, 0.18, 0.17))
    res = planner.plan(blob_image(), designated, goal, seed=0)
    assert res.eta[0] <= 0.6 and np.isfinite(res.cost)
    np.testing.assert_allclose(res.prediction.condition[0], res.eta)  # the kept futures are the chosen η's
    assert np.isfinite(res.prediction.flows).all()
    planner = CEMPlanner(NaNPredictor(), cfg, eta_low=(0.37, -0.18, 0.02), eta_high=(0.73, 0.18, 0.17))
    with pytest.raises(ValueError, match="non-finite"):
        planner.plan(blob_image(), designated, goal, seed=0)


def test_cem_with_the_goal_image_cost():
    pred = ShiftPredictor()
    image = blob_image()
    goal_image = np.roll(image, (4, -6), axis=(0, 1))  # the blob 6 px left, 4 px down
    cfg = PlannerConfig(samples=100, iterations=3, elites=8, cost="goal_image")
    res = CEMPlanner(pred, cfg, (0.37, -0.18, 0.02), (0.73, 0.18, 0.17)).plan(image, goal_image=goal_image, seed=0)
    np.testing.assert_allclose(res.eta[:2], REF + np.array([-6.0, 4.0]) / GAIN, atol=0.01)
    assert res.designated_next is None


def test_planner_refuses_what_it_cannot_use():
    with pytest.raises(ConfigError, match="elites"):
        PlannerConfig(samples=5, elites=10)
    with pytest.raises(ConfigError, match="cost"):
        PlannerConfig(cost="psnr")
    with pytest.raises(ConfigError, match="execute_steps"):
        CEMPlanner(ShiftPredictor(), PlannerConfig(execute_steps=5))
    planner = CEMPlanner(ShiftPredictor(), PlannerConfig(samples=4, elites=2))
    with pytest.raises(ValueError, match=r"\(32, 32, 3\) uint8"):
        planner.plan(np.zeros((16, 16, 3), np.uint8), np.zeros((1, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="designated"):
        planner.plan(np.zeros((32, 32, 3), np.uint8))


def test_dis_flow_predictor_estimates_flows_from_the_frames():
    pred = DisFlowPredictor(ShiftPredictor())
    image = np.ascontiguousarray(np.repeat(blob_image(width=3.0), 1, 0))
    out = pred.predict(image[None], np.array([[0.57, 0.0, 0.1]]), 1, seed=0)  # 2 px to the right
    assert out.flow_source == "dis" and out.flows.shape == (1, 1, 4, 32, 32, 2)
    assert out.flows[0, 0, -1, 10:18, 8:16, 0].mean() == pytest.approx(2.0, abs=0.5)


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)


# ---------------------------------------------------------------------------------------------------- simulator
def test_eta_actions_reach_eta_with_the_height_first():
    acts = eta_actions(np.array([0.5, 0.0, 0.12]), np.array([0.6, 0.05, 0.02]), 5, 0.07)
    np.testing.assert_allclose(np.array([0.5, 0.0, 0.12]) + acts.sum(0), [0.6, 0.05, 0.02])
    np.testing.assert_allclose(acts[:, 0], 0.02)
    np.testing.assert_allclose(acts[:, 2], [-0.07, -0.03, 0, 0, 0], atol=1e-12)


def test_oracle_succeeds_on_an_easy_task_and_leaves_the_real_env_alone():
    tc = TaskConfig(tasks=1, budget=12, horizon=6, execute_steps=3)
    env = make_task_env(tc)
    try:
        _, info = env.reset(seed=0)
        obj, hand = info["object_pos"][0, :2], env.ee_target[:2]
        goal = obj + 0.10 * (obj - hand) / np.linalg.norm(obj - hand)  # straight on, 10 cm: an easy push
        obs, info = env.reset(seed=0, options={"goal": goal})
        oracle = OraclePlanner(env, PlannerConfig(samples=24, iterations=2, elites=4), horizon=tc.horizon)
        before = (env.scene.object_poses()[0], env.ee_target.copy(), env.scene.ee_position().copy())
        frames, start = 0, info["distance"]
        while frames < tc.budget and not info["is_success"]:
            res = oracle.plan(seed=frames)
            if frames == 0:  # planning simulated 48 candidates and did not touch the real world
                pos, _ = env.scene.object_poses()
                np.testing.assert_array_equal(pos, before[0])
                np.testing.assert_array_equal(env.ee_target, before[1])
                np.testing.assert_array_equal(env.scene.ee_position(), before[2])
                assert res.costs.shape == (2,) and res.prediction is None
            for a in eta_actions(env.ee_target, res.eta, tc.horizon, env.config.max_step)[: tc.execute_steps]:
                obs, _, done, _, info = env.step(a)
                frames += 1
                if done:
                    break
        oracle.close()
    finally:
        env.close()
    assert start > 0.09 and info["is_success"], f"object still {info['distance']:.3f} m from the goal"


def test_max_lift_keeps_every_planner_at_the_pushing_height(tmp_path, capsys):
    tc = TaskConfig(tasks=1, budget=3, horizon=6, execute_steps=3)
    low, high = workspace(tc)
    assert high[2] - low[2] > 0.1  # the reachable box lets the hand lift 15 cm
    flat_low, flat = workspace(tc, max_lift=0.01)
    np.testing.assert_array_equal(flat_low, low)
    np.testing.assert_array_equal(flat[:2], high[:2])
    assert flat[2] == pytest.approx(low[2] + 0.01)
    with pytest.raises(ConfigError, match="max_lift must be >= 0 metres, got -0.01"):
        workspace(tc, max_lift=-0.01)

    env = make_task_env(tc)
    try:
        obs, info = env.reset(seed=3)
        rand = RandomAgent(flat_low, flat, tc.horizon)
        oracle = OracleAgent(PlannerConfig(samples=6, iterations=2, elites=2), tc.horizon, eta_low=flat_low,
                             eta_high=flat)  # fmt: skip
        for agent in (rand, oracle):
            agent.reset(env, obs, info, 3)
            etas = np.array([agent.act(env, obs, info, i).eta for i in range(3)])
            assert np.all(etas[:, 2] >= low[2] - 1e-6) and np.all(etas[:, 2] <= low[2] + 0.01 + 1e-6), agent.name
            assert etas[:, :2].std(0).min() > 0  # the plane is still searched
        oracle.close()
    finally:
        env.close()

    out = tmp_path / "plans"
    args = ["plan-eval", "--out", str(out), "--no-random", "--tasks", "1", "--budget", "3", "--oracle-samples", "4"]
    args += ["--oracle-iterations", "1", "--oracle-elites", "2", "--gifs", "0", "--no-progress", "--max-lift"]
    assert cli_main([*args, "0.02"]) == 0
    box = json.loads((out / "results.json").read_text())["eta_box"]
    assert box[1][2] == pytest.approx(box[0][2] + 0.02) and box[1][:2] == pytest.approx(high[:2].tolist())
    assert cli_main([*args, "-1"]) == 2
    assert "max_lift must be >= 0 metres, got -1.0" in capsys.readouterr().err

    # merge_plan_eval.py keeps the box and refuses to merge runs that searched different boxes, merged or not
    whole = tmp_path / "whole"
    assert cli_main(["plan-eval", "--out", str(whole), "--no-oracle", "--tasks", "1", "--budget", "3", "--gifs", "0",
                     "--no-progress"]) == 0  # fmt: skip
    merge = [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "merge_plan_eval.py"), "--out"]
    ok = subprocess.run([*merge, str(tmp_path / "m1"), str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((tmp_path / "m1" / "results.json").read_text())["eta_box"] == box
    for first in (out, tmp_path / "m1"):
        bad = subprocess.run([*merge, str(tmp_path / "m2"), str(first), str(whole)], capture_output=True, text=True)
        assert bad.returncode != 0 and "searched eta in another box" in bad.stderr


# --------------------------------------------------------------------------------------------------------- demo
@pytest.fixture(scope="module")
def tiny_eta_checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint("visual_dynamics")  # tests/conftest.py


@pytest.mark.slow
def test_demo_runs_end_to_end_through_a_local_broker(tiny_eta_checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["demo", "--checkpoint", str(tiny_eta_checkpoint), "--out", str(out), "--tasks", "2", "--budget", "3"]
    assert cli_main([*args, "--samples", "6", "--iterations", "2", "--elites", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == str(out)
    results = json.loads((out / "results.json").read_text())
    assert [p["planner"] for p in results["planners"]] == ["random", "visual_dynamics (remote)"]
    assert all(p["tasks"] == 2 for p in results["planners"]) and results["task_config"]["env_seeds"] == [0, 1]
    assert results["predictor"].startswith("tcp://127.0.0.1:")
    model_eps = results["episodes"]["visual_dynamics (remote)"]
    assert all(e["frames"] == 3 or e["success"] for e in model_eps)
    assert all(len(e["plan_seconds"]) == e["plans"] >= 1 for e in model_eps)
    gifs = sorted((out / "episodes").glob("*.gif"))
    assert len(gifs) == 4 and all(g.stat().st_size > 1000 for g in gifs)
    report = (out / "report.md").read_text()
    assert "visual_dynamics (remote)" in report and "success.png" in report and (out / "success.png").exists()


@pytest.mark.slow
def test_demo_with_the_shipped_checkpoint_and_no_checkpoint_argument(tmp_path, capsys):
    """What a fresh install runs (with a tiny budget): the shipped model served through a local broker."""
    from imagine_ros.planning.demo import shipped_checkpoint

    ckpt = shipped_checkpoint()
    assert ckpt.exists() and ckpt.with_suffix(".safetensors").exists(), "the package must ship the demo checkpoint"
    assert (ckpt.parent / "TRAINING.md").exists()
    out = tmp_path / "report"
    args = ["demo", "--out", str(out), "--tasks", "1", "--budget", "3", "--samples", "4", "--iterations", "1"]
    assert cli_main([*args, "--elites", "2", "--no-random", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    results = json.loads((out / "results.json").read_text())
    method = json.loads(ckpt.read_text())["method"]
    assert [p["planner"] for p in results["planners"]] == [f"{method} (remote)"]
    assert results["method"] == method and results["predictor"].startswith("tcp://127.0.0.1:")


def test_demo_without_a_checkpoint_names_the_missing_shipped_one(monkeypatch, tmp_path, capsys):
    from imagine_ros.planning import demo

    monkeypatch.setattr(demo, "DEMO_CHECKPOINT", "data/demo/not-there.json")
    assert cli_main(["demo", "--out", str(tmp_path / "r")]) == 2
    assert "demo checkpoint that ships with imagine_ros is missing" in capsys.readouterr().err


def test_simulator_predictor_returns_the_executed_future_and_leaves_the_env_as_it_was():
    from imagine_ros.planning.oracle import SimPredictor
    from imagine_ros.sim.env import PushEnv
    from imagine_ros.sim.motion import eta_actions

    env = PushEnv(task=True)
    obs, info = env.reset(seed=7, options={"hand": "behind"})
    sim = SimPredictor(env, horizon=4)
    etas = np.array([[0.60, 0.02, 0.03], [0.45, -0.1, 0.12]], np.float32)
    pred = sim.predict(np.stack([obs["image"]] * 2), etas, num_samples=2)
    assert pred.flows.shape == (2, 2, 4, 64, 64, 2) and pred.flow_source == "ground_truth"
    assert np.abs(pred.flows).max() > 1.0
    # executing the first candidate for real gives exactly the predicted frames
    for t, a in enumerate(eta_actions(env.ee_target, etas[0], 4, env.config.max_step)):
        obs2, _, _, _, info2 = env.step(a)
        assert np.array_equal(obs2["image"], pred.frames[0, 0, t])
    env.close()


def test_flows_only_prediction_gives_the_full_predictions_flows():
    from imagine_ros.models import build
    from imagine_ros.predictor import Predictor

    pred = Predictor(build("imagineflow", "tiny", condition_dim=3), device="cpu")
    assert pred.supports_flows_only
    images = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    eta = np.random.default_rng(1).random((3, 3)).astype(np.float32)
    full = pred.predict(images, eta, num_samples=2, seed=4)
    fast = pred.predict(images, eta, num_samples=2, seed=4, flows_only=True)
    np.testing.assert_array_equal(full.flows, fast.flows)
    assert full.frames_synthesised and not fast.frames_synthesised
    assert np.array_equal(fast.frames[:, 0, 0], images)


def test_designated_tracker_reacquires_the_object_by_colour():
    from imagine_ros.planning.costs import DesignatedTracker

    image = np.full((64, 64, 3), 200, np.uint8)
    image[30:36, 20:26] = (220, 30, 30)  # a red object, centre (22.5, 32.5)
    tracker = DesignatedTracker(image, np.array([22.0, 33.0]))
    moved = np.full_like(image, 200)
    moved[31:37, 24:30] = (215, 35, 28)  # pushed 4 px right, 1 px down
    where, found = tracker.update(moved, np.array([24.0, 36.0]))  # the carried guess is 3 px off
    assert found and np.allclose(where, [26.5, 33.5], atol=0.01)
    where, found = tracker.update(moved, np.array([50.0, 10.0]))  # lost: the nearest region of its colour
    assert found and np.allclose(where, [26.5, 33.5], atol=0.01)
    where, found = tracker.update(np.full_like(image, 200), np.array([24.0, 36.0]))  # covered: keep the guess
    assert not found and np.allclose(where, [24.0, 36.0])
