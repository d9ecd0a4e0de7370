"""``imagine-ros demo``: the whole loop in one command, on a fresh install, in a few minutes on a CPU.

1. loads the checkpoint that ships with the package (``imagine_ros/data/demo/model.json``, trained by this project's
   own ``imagine-ros train`` on its own simulated data; ``TRAINING.md`` beside it records how), or ``--checkpoint``;
2. starts a local broker and a worker on 127.0.0.1 (:class:`imagine_ros.serving.LocalCluster`) and plans through a
   :class:`~imagine_ros.serving.RemotePredictor` (``--local``: an in-process Predictor instead);
3. runs a few seeded pushing tasks with the CEM planner (and random actions on the same tasks, for comparison);
4. writes a report folder — ``report.md``, ``table.md``, ``results.json``, ``success.png`` and one GIF per episode
   with the predicted future beside what happened — and prints its path.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

from imagine_ros.errors import ConfigError
from imagine_ros.planning.cem import PlannerConfig
from imagine_ros.planning.runner import (
    ModelAgent,
    OracleAgent,
    RandomAgent,
    TaskConfig,
    evaluate,
    table,
    workspace,
    write_report,
)

DEMO_CHECKPOINT = "data/demo/model.json"


def shipped_checkpoint() -> Path:
    """Path of the checkpoint shipped in the package (may not exist in a source tree without trained weights)."""
    return Path(str(resources.files("imagine_ros").joinpath(DEMO_CHECKPOINT)))


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    if checkpoint is not None:
        path = Path(checkpoint)
        json_path = path if path.suffix == ".json" else path.with_suffix(".json")
        if not json_path.exists():
            raise ConfigError(f"no checkpoint at {checkpoint} ({json_path} does not exist)")
        return json_path
    path = shipped_checkpoint()
    if not path.exists() or not path.with_suffix(".safetensors").exists():
        raise ConfigError(
            f"the demo checkpoint that ships with imagine_ros is missing ({path} and its .safetensors); reinstall the "
            "package, or pass a trained eta-conditioned checkpoint with --checkpoint RUN/model.json"
        )
    return path


def run_demo(
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    tasks: int = 5,
    planner: PlannerConfig | None = None,
    budget: int = 30,
    seed: int = 0,
    local: bool = False,
    device: str = "cpu",
    random_baseline: bool = True,
    oracle: bool = False,
    progress: bool = True,
) -> Path:
    """Run the demo (module docstring) and return the report folder."""
    from imagine_ros.models.checkpoint import read_checkpoint_meta

    t0 = time.perf_counter()
    ckpt = resolve_checkpoint(checkpoint)
    meta = read_checkpoint_meta(ckpt)
    cfg = planner or PlannerConfig()  # Visual Foresight's CEM: 200 samples x 3 iterations, 10 elites
    out = Path(out) if out is not None else Path.cwd() / f"imagine-ros-demo-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    if int(meta["config"].get("condition_dim", 0)) < 1:
        raise ConfigError(f"{ckpt} ({meta['method']}) takes no eta: the demo plans over eta and needs a model with it")

    def go(predictor, mode: str) -> tuple:
        tc = TaskConfig(
            tasks=tasks,
            seed=seed,
            budget=budget,
            execute_steps=cfg.execute_steps,
            horizon=int(predictor.horizon),
            image_size=int(predictor.image_size),
        )
        low, high = workspace(tc)
        agents: list = [ModelAgent(f"{predictor.method} ({mode})", predictor, cfg, low, high)]
        if random_baseline:
            agents.insert(0, RandomAgent(low, high, tc.horizon))
        if oracle:
            agents.append(OracleAgent(PlannerConfig(samples=32, iterations=2, elites=4), tc.horizon))
        results, recs = evaluate(agents, tc, gifs=tasks, progress=progress)
        return tc, results, recs

    if local:
        from imagine_ros.predictor import Predictor

        endpoint = "in process"
        tc, results, recs = go(Predictor.from_checkpoint(ckpt, device=device), "in process")
    else:
        from imagine_ros.serving import LocalCluster

        if progress:
            print("starting a broker and a worker on 127.0.0.1 ...", flush=True)
        with LocalCluster(ckpt, workers=1, device=device, max_batch=cfg.max_batch, log_dir=out / "logs") as cluster:
            endpoint = f"{cluster.endpoint} (service {cluster.service})"
            with cluster.predictor(timeout=600.0, retries=1) as remote:
                tc, results, recs = go(remote, "remote")
    seconds = time.perf_counter() - t0
    extra = {
        "checkpoint": str(ckpt),
        "method": meta["method"],
        "predictor": endpoint,
        "planner_config": cfg.to_dict(),
        "wall_seconds": seconds,
    }
    paths = write_report(results, tc, out, recs, extra)
    _write_markdown(out, ckpt, meta, endpoint, cfg, tc, results, paths, seconds)
    (out / "demo.json").write_text(json.dumps(extra, indent=1) + "\n", encoding="utf-8")
    return out


def _write_markdown(out, ckpt, meta, endpoint, cfg, tc, results, paths, seconds) -> Path:
    gifs = sorted(v for k, v in paths.items() if k.startswith("gif:"))
    training = ckpt.parent / "TRAINING.md"
    lines = [
        "# imagine-ros demo",
        "",
        f"- model: `{meta['method']}` from `{ckpt}` (training step {meta.get('step', '?')})"
        + (f"; how it was trained: `{training}`" if training.exists() else ""),
        f"- predictions served by: {endpoint}",
        f"- planner: CEM over eta, {cfg.samples} samples x {cfg.iterations} iterations, {cfg.elites} elites, "
        f"{cfg.num_futures} future(s) per candidate, designated-pixel cost (last step x{cfg.last_step_weight:g})",
        f"- wall time: {seconds:.0f} s",
        "",
        "## Results",
        "",
        table(results, tc),
        "![success rates](success.png)",
        "",
        "## Episodes (left: predicted future of the chosen eta with the designated pixel's probability in red; "
        "right: what happened; green circle: goal)",
        "",
        *[f"![{g.stem}](episodes/{g.name})" for g in gifs],
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end to end: shipped model served on 127.0.0.1, planned pushes in the simulator, a report folder",
        description="Load the shipped checkpoint (or --checkpoint), start a local broker + worker, plan a few pushes "
        "in the simulator through the remote predictor, and write a report (GIFs, success figures, report.md).",
    )
    p.add_argument("--checkpoint", default=None, metavar="CKPT", help="eta-conditioned model (default: shipped one)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default ./imagine-ros-demo-DATE-TIME)")
    p.add_argument("--tasks", type=int, default=5, help="pushing tasks (default 5)")
    p.add_argument("--budget", type=int, default=30, help="frames per task (default 30, as plan-eval)")
    p.add_argument("--execute-steps", type=int, default=3, help="frames executed per plan (default 3)")
    p.add_argument("--samples", type=int, default=200, help="CEM candidates per iteration (default 200, the paper's)")
    p.add_argument("--iterations", type=int, default=3, help="CEM iterations (default 3)")
    p.add_argument("--elites", type=int, default=10, help="CEM elites (default 10)")
    p.add_argument("--futures", type=int, default=1, help="futures per candidate (default 1)")
    p.add_argument("--seed", type=int, default=0, help="task i uses env seed SEED+i (default 0)")
    p.add_argument("--local", action="store_true", help="predict in process instead of through a local broker")
    p.add_argument("--oracle", action="store_true", help="also run the simulator oracle on the same tasks (slower)")
    p.add_argument("--no-random", action="store_true", help="leave out the random-action baseline")
    p.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cli_demo)


def cli_demo(args: argparse.Namespace) -> int:
    cfg = PlannerConfig(
        samples=args.samples,
        iterations=args.iterations,
        elites=min(args.elites, args.samples),
        num_futures=args.futures,
        max_batch=args.samples,
        execute_steps=args.execute_steps,
    )
    out = run_demo(
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
    )
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"demo report: {out / 'report.md'}")
    print(out)
    return 0
