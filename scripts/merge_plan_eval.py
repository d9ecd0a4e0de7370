"""Merge the outputs of several ``imagine-ros plan-eval`` runs over the same tasks into one table, plot and folder.

Planners can be evaluated in parallel processes (one ``plan-eval`` per checkpoint, ``--no-random --no-oracle``, and
one with the baselines); with the same ``--tasks --seed --budget --execute-steps --hand`` they see the same tasks.

    python scripts/merge_plan_eval.py --out results/plan_eval runs/plan_eval_baselines runs/plan_eval_vd ...
    python scripts/merge_plan_eval.py --out results/plan_eval new_run old_run --rename "demo (native flows)=old model"

A planner that an earlier folder already holds (the same name after ``--rename``, e.g. ``random`` of two runs over
the same tasks) is taken from the first folder only.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from imagine_ros.planning.runner import TaskConfig, plot, table


class _Summary:
    def __init__(self, s: dict):
        self.s = s

    def summary(self) -> dict:
        return self.s


def _slug(name: str) -> str:
    """The file-name form of a planner's name (as plan-eval names its GIFs)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="plan-eval output folders")
    ap.add_argument("--out", required=True, type=Path, help="merged output folder")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", help="relabel a planner (repeatable)")
    args = ap.parse_args()
    renames = dict(r.split("=", 1) for r in args.rename)
    merged: dict = {"runs": [], "planners": [], "episodes": {}}
    task_config = None
    for run in args.runs:
        r = json.loads((run / "results.json").read_text())
        tc = {k: v for k, v in r["task_config"].items() if k not in ("env_id", "env_seeds")}
        tc.pop("horizon", None)  # the model's horizon; the same tasks either way
        if task_config is None:
            task_config = tc
        elif tc != task_config:
            raise SystemExit(f"{run} ran other tasks: {tc} != {task_config}")
        box = r.get("eta_box")  # older runs did not record it: the hand's whole reachable box
        if merged["runs"] and box != merged["runs"][0]["eta_box"]:
            first = merged["runs"][0]["eta_box"]
            raise SystemExit(f"{run} searched eta in another box: {box} != {first} (plan-eval --max-lift)")
        merged["runs"].append(
            {
                "folder": str(run),
                "checkpoints": r.get("checkpoints"),
                "planner_config": r.get("planner_config"),
                "eta_box": box,
            }
        )
        for planner in r["planners"]:
            old = planner["planner"]
            name = renames.get(old, old)
            if name in merged["episodes"]:
                print(f"note: {name!r} of {run} left out: an earlier folder holds it")
                continue
            merged["planners"].append({**planner, "planner": name})
            merged["episodes"][name] = r["episodes"][old]
        slugs = {_slug(old): _slug(new) for old, new in renames.items()}
        for gif in sorted((run / "episodes").glob("*.gif")):
            (args.out / "episodes").mkdir(parents=True, exist_ok=True)
            planner, task = gif.stem.rsplit("_task", 1)  # plan-eval's names: SLUG_taskNNN.gif
            shutil.copy(gif, args.out / "episodes" / f"{slugs.get(planner, planner)}_task{task}.gif")
    merged["task_config"] = task_config
    merged["eta_box"] = merged["runs"][0]["eta_box"]  # the same for every run: a merged folder can be merged again
    summaries = [_Summary(s) for s in merged["planners"]]
    text = table(summaries, TaskConfig(**{**task_config, "goal_distance": tuple(task_config["goal_distance"])}))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text, encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    plot(summaries, args.out / "success.png")
    print(text)


if __name__ == "__main__":
    main()
