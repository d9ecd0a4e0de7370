"""Planning: ``plan-eval`` (planners compared on the same seeded pushing tasks) and ``demo`` (the whole loop)."""

from __future__ import annotations

import argparse
import time

from imagine_ros.cli._common import add_common, checkpoint_name
from imagine_ros.constants import DEMO_MAX_LIFT, DESIGNATED_MODES, SIMULATOR_FLOWS
from imagine_ros.errors import ConfigError


def _planner_flags(p: argparse.ArgumentParser, samples: int, iterations: int, elites: int) -> None:
    """The CEM of the model planners."""
    p.add_argument("--samples", type=int, default=samples, help=f"CEM candidates per iteration (default {samples})")
    p.add_argument("--iterations", type=int, default=iterations, help=f"CEM iterations (default {iterations})")
    p.add_argument("--elites", type=int, default=elites, help=f"CEM elites (default {elites})")
    p.add_argument("--futures", type=int, default=1, help="futures sampled per candidate (default 1)")


def _lift_flag(p: argparse.ArgumentParser, default: float | None = None) -> None:
    shown = "the hand's whole reachable height, 0.15" if default is None else default
    p.add_argument(
        "--max-lift",
        type=float,
        default=default,
        metavar="M",
        help="search eta no higher than M metres above the pushing height, for every planner (e.g. 0: pushes in "
        f"the table plane, where the planning-matched data pushes; default: {shown})",
    )


def simulator_flows(text: str) -> tuple[str, ...]:
    """``--simulator``'s value -> the flows of the simulator planners: "off" none, "both" exact and dis, else a comma
    list of :data:`~imagine_ros.constants.SIMULATOR_FLOWS` (each once, in the order given)."""
    if text == "off":
        return ()
    if text == "both":
        return ("exact", "dis")
    names = [v.strip() for v in text.split(",")]
    if not all(v in SIMULATOR_FLOWS for v in names):
        raise argparse.ArgumentTypeError(
            f"expected off, both or a comma list of {', '.join(SIMULATOR_FLOWS)}, got {text!r}"
        )
    return tuple(dict.fromkeys(names))


# -------------------------------------------------------------------------------------------------------- plan-eval
def add_plan_eval(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run N seeded pushing tasks (ImagineRos/PushTask-v0; task i uses env seed --seed + i) with each planner and "
        "write table.md, results.json, success.png and episode GIFs (prediction beside execution) into --out DIR. "
        "--checkpoint: eta-conditioned models, one CEM planner each."
    )
    add_common(p, "checkpoints", "out", "seed", "device", "no-progress", required=["out"], checkpoint=[])
    p.add_argument("--flows", default="both", choices=["native", "dis", "both"], help="flow sources (default both)")
    p.add_argument("--tasks", type=int, default=20, help="number of tasks (default 20)")
    p.add_argument("--budget", type=int, default=30, help="frames per episode (default 30)")
    p.add_argument("--execute-steps", type=int, default=3, help="frames executed per plan (default 3)")
    p.add_argument(
        "--designated",
        default="track",
        choices=DESIGNATED_MODES,
        help="designated pixel between plans: track (carried, re-acquired by colour; default), carry, true",
    )
    p.add_argument(
        "--hand",
        default="behind",
        choices=["behind", "default"],
        help="hand start: behind the object, away from the goal (default), or the env's random raised start",
    )
    _planner_flags(p, 200, 3, 10)
    _lift_flag(p)
    p.add_argument("--max-batch", type=int, default=200, help="images per predict call (default 200)")
    p.add_argument("--last-step-weight", type=float, default=10.0, help="weight of the last step's cost (default 10)")
    p.add_argument("--oracle-samples", type=int, default=60, help="oracle CEM candidates (default 60)")
    p.add_argument("--oracle-iterations", type=int, default=3, help="oracle CEM iterations (default 3)")
    p.add_argument("--oracle-elites", type=int, default=6, help="oracle CEM elites (default 6)")
    p.add_argument(
        "--simulator",
        type=simulator_flows,
        default="off",
        metavar="off|both|exact,dis,flownet",
        help="also plan with the simulator-backed predictor (true futures, same CEM cost) on its ground-truth flows "
        "(exact), on DIS flows of its true frames (dis), on flow network flows of its true frames (flownet, needs "
        "--flow-net); a comma list of these, or both = exact,dis (default off)",
    )
    add_common(p, "flow-net")  # also the flows of --simulator flownet
    p.add_argument("--sim-samples", type=int, default=60, help="simulator planner CEM candidates (default 60)")
    p.add_argument("--sim-iterations", type=int, default=3, help="simulator planner CEM iterations (default 3)")
    p.add_argument("--sim-elites", type=int, default=6, help="simulator planner CEM elites (default 6)")
    p.add_argument("--no-random", action="store_true", help="leave out the random planner")
    p.add_argument("--no-oracle", action="store_true", help="leave out the oracle")
    p.add_argument("--gifs", type=int, default=2, help="tasks per planner recorded as GIFs (default 2)")


def _small_cem(args: argparse.Namespace, prefix: str):
    """The CEM of a simulator-backed planner from its ``--PREFIX-samples/-iterations/-elites`` flags."""
    from imagine_ros.planning.cem import PlannerConfig

    samples = getattr(args, f"{prefix}_samples")
    return PlannerConfig(
        samples=samples,
        iterations=getattr(args, f"{prefix}_iterations"),
        elites=min(getattr(args, f"{prefix}_elites"), samples),
        last_step_weight=args.last_step_weight,
        execute_steps=args.execute_steps,
    )


def run_plan_eval(args: argparse.Namespace) -> int:
    from imagine_ros.flownet import load_flownet
    from imagine_ros.planning.cem import PlannerConfig
    from imagine_ros.planning.runner import (
        OracleAgent,
        RandomAgent,
        SimulatorAgent,
        TaskConfig,
        evaluate,
        model_agents,
        table,
        workspace,
        write_report,
    )
    from imagine_ros.predictor import Predictor, resolve_device

    if "flownet" in args.simulator and not args.flow_net:
        raise ConfigError(
            "--simulator flownet plans on flow network flows: give the network with --flow-net PATH "
            "(OUT/flownet.json of imagine-ros flownet)"
        )
    flow_net = load_flownet(args.flow_net, device=resolve_device(args.device)) if args.flow_net else None
    predictors = [
        (checkpoint_name(c), Predictor.from_checkpoint(c, device=args.device, flow_net=flow_net))
        for c in args.checkpoint
    ]
    horizon = predictors[0][1].horizon if predictors else 10
    size = predictors[0][1].image_size if predictors else 64
    tc = TaskConfig(
        tasks=args.tasks,
        seed=args.seed,
        budget=args.budget,
        execute_steps=args.execute_steps,
        horizon=horizon,
        image_size=size,
        designated=args.designated,
        hand=args.hand,
    )
    cfg = PlannerConfig(
        samples=args.samples,
        iterations=args.iterations,
        elites=args.elites,
        num_futures=args.futures,
        max_batch=args.max_batch,
        last_step_weight=args.last_step_weight,
        execute_steps=args.execute_steps,
    )
    low, high = workspace(tc, args.max_lift)
    agents: list = [] if args.no_random else [RandomAgent(low, high, horizon)]
    for name, pred in predictors:
        agents += model_agents(name, pred, cfg, low, high, args.flows, args.designated)
    for flows in args.simulator:
        agents.append(
            SimulatorAgent(_small_cem(args, "sim"), low, high, horizon, size, args.designated, flows, flow_net)
        )
    if not args.no_oracle:
        agents.append(OracleAgent(_small_cem(args, "oracle"), horizon, eta_low=low, eta_high=high))
    if not agents:
        raise ConfigError("nothing to evaluate: give --checkpoint or leave the random planner / oracle in")
    t0 = time.perf_counter()
    results, recs = evaluate(agents, tc, gifs=args.gifs, progress=not args.no_progress)
    extra = {
        "planner_config": cfg.to_dict(),
        "checkpoints": args.checkpoint,
        "flow_net": args.flow_net,
        "eta_box": [low.tolist(), high.tolist()],
        "seconds": time.perf_counter() - t0,
    }
    paths = write_report(results, tc, args.out, recs, extra)
    print(table(results, tc))
    print(f"written to {paths['table']}, {paths['results']}, {paths['plot']} and {args.out}/episodes/")
    return 0


# ------------------------------------------------------------------------------------------------------------- demo
def add_demo(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Load the shipped checkpoint (or --checkpoint, an eta-conditioned model), start a local broker + worker, "
        "plan a few pushes in the simulator through the remote predictor (task i uses env seed --seed + i), and "
        "write a report (GIFs, success figures, report.md) into --out DIR (default ./imagine-ros-demo-DATE-TIME)."
    )
    add_common(p, "checkpoint", "out", "seed", "device", "no-progress", device="cpu")
    p.add_argument("--tasks", type=int, default=5, help="pushing tasks (default 5)")
    p.add_argument("--budget", type=int, default=30, help="frames per task (default 30, as plan-eval)")
    p.add_argument("--execute-steps", type=int, default=3, help="frames executed per plan (default 3)")
    _planner_flags(p, 200, 3, 10)
    p.add_argument("--local", action="store_true", help="predict in process instead of through a local broker")
    p.add_argument("--oracle", action="store_true", help="also run the simulator oracle on the same tasks (slower)")
    p.add_argument("--no-random", action="store_true", help="leave out the random-action baseline")
    _lift_flag(p, DEMO_MAX_LIFT)


def run_demo(args: argparse.Namespace) -> int:
    from imagine_ros.planning.cem import PlannerConfig
    from imagine_ros.planning.demo import run_demo as demo

    cfg = PlannerConfig(
        samples=args.samples,
        iterations=args.iterations,
        elites=min(args.elites, args.samples),
        num_futures=args.futures,
        max_batch=args.samples,
        execute_steps=args.execute_steps,
    )
    out = demo(
        args.checkpoint,
        args.out,
        tasks=args.tasks,
        planner=cfg,
        budget=args.budget,
        seed=args.seed,
        local=args.local,
        device=args.device,
        random_baseline=not args.no_random,
        oracle=args.oracle,
        progress=not args.no_progress,
        max_lift=args.max_lift,
    )
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"demo report: {out / 'report.md'}")
    print(out)
    return 0
