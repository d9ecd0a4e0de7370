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

import json
import time
from importlib import resources
from pathlib import Path

import numpy as np

from imagine_ros.constants import DEMO_MAX_LIFT
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
    max_lift: float | None = DEMO_MAX_LIFT,
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
        low, high = workspace(tc, max_lift)
        agents: list = [ModelAgent(f"{predictor.method} ({mode})", predictor, cfg, low, high)]
        if random_baseline:
            agents.insert(0, RandomAgent(low, high, tc.horizon))
        if oracle:
            agents.append(
                OracleAgent(PlannerConfig(samples=32, iterations=2, elites=4), tc.horizon, eta_low=low, eta_high=high)
            )
        results, recs = evaluate(agents, tc, gifs=tasks, progress=progress)
        return tc, results, recs, (low, high)

    if local:
        from imagine_ros.predictor import Predictor

        endpoint = "in process"
        tc, results, recs, box = go(Predictor.from_checkpoint(ckpt, device=device), "in process")
    else:
        from imagine_ros.serving import LocalCluster

        if progress:
            print("starting a broker and a worker on 127.0.0.1 ...", flush=True)
        with LocalCluster(ckpt, workers=1, device=device, max_batch=cfg.max_batch, log_dir=out / "logs") as cluster:
            endpoint = f"{cluster.endpoint} (service {cluster.service})"
            with cluster.predictor(timeout=600.0, retries=1) as remote:
                tc, results, recs, box = go(remote, "remote")
    seconds = time.perf_counter() - t0
    extra = {
        "checkpoint": str(ckpt),
        "method": meta["method"],
        "predictor": endpoint,
        "planner_config": cfg.to_dict(),
        "eta_box": [box[0].tolist(), box[1].tolist()],
        "wall_seconds": seconds,
    }
    paths = write_report(results, tc, out, recs, extra)
    _write_markdown(out, ckpt, meta, endpoint, cfg, tc, results, paths, seconds, box)
    (out / "demo.json").write_text(json.dumps(extra, indent=1) + "\n", encoding="utf-8")
    return out


def _write_markdown(out, ckpt, meta, endpoint, cfg, tc, results, paths, seconds, box) -> Path:
    gifs = sorted(v for k, v in paths.items() if k.startswith("gif:"))
    training = ckpt.parent / "TRAINING.md"
    lines = [
        "# imagine-ros demo",
        "",
        f"- model: `{meta['method']}` from `{ckpt}` (training step {meta.get('step', '?')})"
        + (f"; how it was trained: `{training}`" if training.exists() else ""),
        f"- predictions served by: {endpoint}",
        f"- planner: CEM over eta, {cfg.samples} samples x {cfg.iterations} iterations, {cfg.elites} elites, "
        f"{cfg.num_futures} future(s) per candidate, designated-pixel cost (last step x{cfg.last_step_weight:g}); "
        f"eta in {np.round(box[0], 3).tolist()} .. {np.round(box[1], 3).tolist()} m",
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
