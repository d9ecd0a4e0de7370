"""How long one replanning step takes: the CEM planner (200 samples x 3 iterations, Visual Foresight's) on a
checkpoint, with the flows-only fast path and without it, at 1 and 2 torch threads.

    python benchmarks/bench_planning.py --checkpoint imagine_ros/data/planner/model.json --repeats 3

Prints one line per setting: median seconds per replanning step, predict() calls, and how many cores other processes
kept busy meanwhile (``DISTURBED`` when that is more than a quarter of a core: rerun on an idle machine). The ratio
full / flows-only is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import OtherLoad, _fmt_load, _median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="an eta-conditioned checkpoint (model.json)")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="replanning steps per setting (median reported)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-full", action="store_true", help="skip the full (frames + flows) predictions")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    from imagine_ros.planning import CEMPlanner, PlannerConfig
    from imagine_ros.predictor import Predictor
    from imagine_ros.sim.env import PushEnv

    env = PushEnv(task=True)
    obs, info = env.reset(seed=12345, options={"hand": "behind"})
    image, designated, goal = obs["image"], info["object_pixel"][None], info["goal_pixel"]
    low, high = env.hand_low, env.hand_high
    env.close()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for fast in (True, False) if not args.no_full else (True,):
            pred = Predictor.from_checkpoint(args.checkpoint, device="cpu")
            if not fast:
                pred.supports_flows_only = False  # an instance attribute hides the property: the full path
            planner = CEMPlanner(pred, PlannerConfig(samples=args.samples, iterations=args.iterations), low, high)
            planner.plan(image, designated, goal, seed=0)  # warm-up
            times, calls = [], 0
            load = OtherLoad()
            for r in range(args.repeats):
                t0 = time.perf_counter()
                res = planner.plan(image, designated, goal, seed=r + 1)
                times.append(time.perf_counter() - t0)
                calls = res.predict_calls
            row = {
                "threads": threads,
                "flows_only": fast,
                "seconds_per_replan": _median(times),
                "predict_calls": calls,
                "others_cores": load.cores(),
            }
            rows.append(row)
            print(
                f"threads {threads}  {'flows-only' if fast else 'full      '}  {row['seconds_per_replan']:.2f} s per "
                f"replanning step ({args.samples} x {args.iterations} CEM, {calls} predict calls)  "
                f"{_fmt_load(row['others_cores'])}",
                flush=True,
            )
    for threads in args.threads:
        pair = {r["flows_only"]: r["seconds_per_replan"] for r in rows if r["threads"] == threads}
        if len(pair) == 2:
            print(f"threads {threads}: full / flows-only = {pair[False] / pair[True]:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": args.checkpoint, "rows": rows}, indent=1) + "\n")
    np.set_printoptions()


if __name__ == "__main__":
    main()
