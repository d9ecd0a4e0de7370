"""Does a model rank the planner's candidates as the simulator does? For task states of ``imagine-ros plan-eval``
(env seeds ``--seed`` .. ``--seed + --tasks - 1``, the hand behind the object; each task's first state and the
state after 3 frames of a random eta), ``--candidates`` eta drawn as CEM's first iteration draws them are scored:

- truly: each candidate executed in the environment from the state (``restore_state``): the designated-pixel cost
  on the ground-truth flows (what the ``simulator (ground-truth flows)`` planner sees) and the object's final distance
  to its goal in cm (what success is judged on);
- by each checkpoint: the designated-pixel cost on its flows (``flows_only``, z as ``plan-eval`` draws it).

Prints per model: the Spearman rank correlation of its cost with the true pixel cost (median over states), and the
regret of its best candidate (true final distance of the model's argmin minus the best candidate's; mean over states)
beside that of the ground-truth pixel cost and of a random pick. The simulator's answers are cached in ``--cache``
(an .npz), so models can be compared later on the same candidates.

    python scripts/candidate_ranking.py --tasks 16 --seed 500 --candidates 64 \\
        --checkpoint imagine_ros/data/demo/model.json --cache results/planning/ranking/sim_500.npz

``--max-lift M`` keeps only the candidates whose eta lies at most M metres above the pushing height (the lowest
reachable one), as ``plan-eval --max-lift`` searches: the same states and simulated answers, fewer candidates.

Use tuning seeds (500 and up), never the evaluation tasks (100-129).
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from imagine_ros.planning.cem import PlannerConfig
from imagine_ros.planning.costs import designated_pixel_cost
from imagine_ros.planning.oracle import OraclePlanner, SimPredictor
from imagine_ros.planning.runner import TaskConfig, _resize_pixels, make_task_env, workspace
from imagine_ros.predictor import Predictor
from imagine_ros.sim.motion import eta_actions


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def simulate_states(args, cfg: PlannerConfig) -> dict[str, np.ndarray]:
    """Task states, candidates and the simulator's costs of every candidate."""
    tc = TaskConfig(tasks=args.tasks, seed=args.seed, hand="behind")
    env = make_task_env(tc)
    sim = SimPredictor(env, args.horizon)
    oracle = OraclePlanner(env, horizon=args.horizon)
    last_only = np.zeros(args.horizon)
    last_only[-1] = 1.0
    low, high = np.asarray(env.hand_low, np.float64), np.asarray(env.hand_high, np.float64)
    out = {k: [] for k in ("image", "designated", "goal", "eta", "pixel_cost", "final_cm", "seed")}
    from tqdm import tqdm

    for seed in tqdm(tc.seeds(), desc="simulated states"):
        rng = np.random.default_rng([seed, 11])
        obs, info = env.reset(seed=seed, options={"hand": tc.hand})
        for state in range(2):
            if state == 1:  # 3 frames towards a random eta: a second, later state of the same task
                for a in eta_actions(env.ee_target, rng.uniform(low, high), args.horizon, env.config.max_step)[:3]:
                    obs, _, _, _, info = env.step(a)
            src = obs["image"].shape[0]
            designated = _resize_pixels(info["object_pixel"][None], src, args.image_size)
            goal = _resize_pixels(info["goal_pixel"], src, args.image_size)
            eta = rng.uniform(low, high, (args.candidates, 3))
            pred = sim.predict(np.broadcast_to(obs["image"], (len(eta), *obs["image"].shape)), eta.astype(np.float32))
            pixel = designated_pixel_cost(pred.flows, designated, goal, cfg.last_step_weight)
            snap = env.save_state()  # the oracle's simulation, weighted on the last step only: final distance
            final = np.array([100 * oracle._simulate(snap, e, last_only) for e in eta])
            env.restore_state(snap)
            env.discard_state(snap)
            for key, v in zip(out, (obs["image"], designated, goal, eta, pixel, final, seed)):
                out[key].append(v)
    return {k: np.asarray(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", default=[], help="a model checkpoint (repeatable)")
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, help="an .npz of the simulated states: read if it exists, else written")
    ap.add_argument("--max-lift", type=float, help="only the candidates at most M metres above the pushing height")
    args = ap.parse_args()
    if args.seed < 130 and args.seed + args.tasks > 100:
        raise SystemExit("env seeds 100-129 are the evaluation tasks: rank on tuning seeds (500 and up)")
    torch.set_num_threads(args.threads)
    cfg = PlannerConfig()
    if args.cache and args.cache.exists():
        states = dict(np.load(args.cache))
    else:
        states = simulate_states(args, cfg)
        if args.cache:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.cache, **states)
    keep = np.ones(states["eta"].shape[:2], bool)
    if args.max_lift is not None:  # the box plan-eval --max-lift searches
        top = workspace(TaskConfig(tasks=1, seed=args.seed), args.max_lift)[1][2]
        keep = states["eta"][..., 2] <= top
        print(f"--max-lift {args.max_lift}: {keep.sum(1).mean():.3g} candidates per state")
        if keep.sum(1).min() < 2:
            raise SystemExit(f"some states keep fewer than 2 candidates at --max-lift {args.max_lift}: raise it")
    final, pixel = states["final_cm"], states["pixel_cost"]
    kept = [np.flatnonzero(k) for k in keep]  # per state: the candidates ranked
    best = np.array([final[i, k].min() for i, k in enumerate(kept)])
    rng = np.random.default_rng(0)

    def picked(costs: np.ndarray) -> np.ndarray:
        """True final distance of each state's lowest-cost kept candidate."""
        return np.array([final[i, k[np.argmin(costs[i, k])]] for i, k in enumerate(kept)])

    print(
        f"{len(final)} states x {keep.sum(1).mean():.3g} candidates; "
        f"best candidate's final distance {best.mean():.2f} cm"
    )
    spread = np.mean([final[i, k].std() for i, k in enumerate(kept)])
    print(f"  spread of the candidates' final distance (std, mean over states): {spread:.2f} cm")
    rho_gt = [spearman(pixel[i, k], final[i, k]) for i, k in enumerate(kept)]
    print(
        f"  ground-truth pixel cost: rank correlation with the final distance {np.nanmedian(rho_gt):.2f}, "
        f"regret {np.mean(picked(pixel) - best):.2f} cm"
    )
    rand = np.array([final[i, rng.choice(k)] for i, k in enumerate(kept)])
    print(f"  random pick: regret {np.mean(rand - best):.2f} cm")
    for path in args.checkpoint:
        pred = Predictor.from_checkpoint(path, device="cpu")
        costs = []
        for i in range(len(final)):
            batch = np.repeat(states["image"][i][None], final.shape[1], 0)
            eta = states["eta"][i].astype(np.float32)
            p = pred.predict(batch, eta, 1, seed=int(states["seed"][i]), flows_only=True)
            designated, goal = states["designated"][i], states["goal"][i]
            costs.append(designated_pixel_cost(p.flows, designated, goal, cfg.last_step_weight))
        costs = np.asarray(costs)
        regret = picked(costs) - best
        top = [
            len(set(k[np.argsort(costs[i, k])[:10]]) & set(k[np.argsort(final[i, k])[:10]])) for i, k in enumerate(kept)
        ]
        rho_pix = [spearman(costs[i, k], pixel[i, k]) for i, k in enumerate(kept)]
        rho_fin = [spearman(costs[i, k], final[i, k]) for i, k in enumerate(kept)]
        print(
            f"{path}: rank correlation with the true pixel cost {np.nanmedian(rho_pix):.2f}, with the final distance "
            f"{np.nanmedian(rho_fin):.2f}; regret {np.mean(regret):.2f} cm (median {np.median(regret):.2f}); "
            f"top-10 overlap {np.mean(top):.1f}/{np.mean([min(10, len(k)) for k in kept]):.3g}"
        )


if __name__ == "__main__":
    main()
