"""Benchmark of the pushing simulator against panda-gym, and of dataset collection throughput.

What is measured
----------------
1. Rendered environment steps per second at 64x64 (random actions from the action space):

   * ours: ``gymnasium.make("ImagineRos/Push-v0")``; every observation carries the rendered 64x64 image;
   * panda-gym ``PandaPush-v3`` with ``render_mode="rgb_array", render_width=64, render_height=64`` and
     ``env.render()`` after every ``env.step()`` (panda-gym renders with TinyRenderer and shadows when headless);
   * panda-gym ``PandaPush-v3`` without rendering, for context.

   The three environments are built once and run in interleaved rounds (ours, panda-gym rendered, panda-gym plain),
   ``--steps`` steps each per round, so background load hits all of them alike. Only ``step`` (+ ``render``) is timed;
   the resets (at the start of a round and at episode ends) are timed apart and reported separately.

2. Collection throughput in frames/s of :func:`imagine_ros.sim.collect.collect_push` into a temporary folder (removed
   afterwards) with 1 and with 2 workers, with enough shards for both workers to stay busy. Two figures each:

   * end to end: ``frames_written / seconds`` of the report, which for 2 workers includes spawning the processes
     (imports, pybullet start-up, building the scene) and for both includes writing the HDF5 shards;
   * steady state: from the shards' modification times, the frames of every shard after the first ``W`` finished
     (one per worker) divided by the time from the ``W``-th to the last shard's completion. This leaves out process
     start-up and each worker's first shard.

Machine-dependent: run it on an otherwise idle machine; each figure is the median (and best) of several repeats.

Run::

    python benchmarks/bench_sim.py            # default, ~2-3 minutes on 2 cores
    python benchmarks/bench_sim.py --quick    # under a minute, noisier
    python benchmarks/bench_sim.py --json bench_sim.json

The exit code is 0 whether or not the targets are met (this is a benchmark, not a test).
"""

from __future__ import annotations

# Heavy imports (gymnasium, pybullet, panda-gym) happen inside the functions: the 2-worker collection spawns
# processes that re-import this module, and their start-up should cost what it costs for the real collector.
import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

OURS_ID = "ImagineRos/Push-v0"
PANDA_ID = "PandaPush-v3"
IMAGE_SIZE = 64

TARGET_STEP_RATIO = 8.0  # ours / panda-gym rendered
TARGET_FRAMES_PER_WORKER = 100.0  # frames/s
TARGET_SPEEDUP_2W = 1.7  # 2 workers vs 1


@dataclass
class StepStats:
    """Timings of one environment over several rounds."""

    name: str
    step_seconds: list[float] = field(default_factory=list)  # per round, steps (+ render) only
    reset_seconds: list[float] = field(default_factory=list)  # per round, all resets of the round
    resets: list[int] = field(default_factory=list)  # per round
    steps: int = 0  # per round

    def rates(self) -> list[float]:
        return [self.steps / s for s in self.step_seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.rates())

    @property
    def best(self) -> float:
        return max(self.rates())

    @property
    def ms_per_reset(self) -> float:
        total = sum(self.resets)
        return 1000.0 * sum(self.reset_seconds) / total if total else float("nan")


@contextlib.contextmanager
def _quiet_native_stdout():
    """Send the C-level stdout to /dev/null: pybullet prints ``argv[0]=...`` and its build time on every connection.

    Processes spawned inside inherit the redirection, so the collection workers stay quiet too; stderr is untouched.
    """
    try:
        import ctypes

        fflush = ctypes.CDLL(None).fflush
    except (OSError, AttributeError):  # no C library to flush: just redirect
        fflush = None
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        if fflush is not None:
            fflush(None)  # what pybullet buffered goes to /dev/null, not to the table
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


# ----------------------------------------------------------------------------------------------------------------------
# 1. environment steps


def _make_envs() -> dict:
    import gymnasium as gym
    import panda_gym  # noqa: F401  (registers PandaPush-v3)

    import imagine_ros.sim  # noqa: F401  (registers ImagineRos/Push-v0)

    return {
        "ours (image in obs)": (gym.make(OURS_ID), False),
        "panda-gym + render()": (
            gym.make(PANDA_ID, render_mode="rgb_array", render_width=IMAGE_SIZE, render_height=IMAGE_SIZE),
            True,
        ),
        "panda-gym, no render": (gym.make(PANDA_ID), False),
    }


def _run_round(env, render: bool, steps: int, seed: int) -> tuple[float, float, int]:
    """``steps`` random steps; returns (seconds in step/render, seconds in reset, number of resets)."""
    clock = time.perf_counter
    t = clock()
    env.reset(seed=seed)
    reset_s, resets, step_s = clock() - t, 1, 0.0
    for _ in range(steps):
        action = env.action_space.sample()
        t = clock()
        _, _, terminated, truncated, _ = env.step(action)
        if render:
            env.render()
        step_s += clock() - t
        if terminated or truncated:
            t = clock()
            env.reset()
            reset_s += clock() - t
            resets += 1
    return step_s, reset_s, resets


def _check_images(envs: dict) -> None:
    """Make sure both sides really produce 64x64 RGB images (a silent size mismatch would skew the comparison)."""
    ours, _ = envs["ours (image in obs)"]
    obs, _ = ours.reset(seed=0)
    assert obs["image"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3), obs["image"].shape
    panda, _ = envs["panda-gym + render()"]
    panda.reset(seed=0)
    img = panda.render()
    assert img is not None and img.shape == (IMAGE_SIZE, IMAGE_SIZE, 3), None if img is None else img.shape


def bench_steps(steps: int, repeats: int) -> dict[str, StepStats]:
    with _quiet_native_stdout():
        envs = _make_envs()
    try:
        _check_images(envs)
        stats = {name: StepStats(name, steps=steps) for name in envs}
        for env, _ in envs.values():
            env.action_space.seed(0)
        for r in range(repeats):
            for name, (env, render) in envs.items():  # interleaved rounds
                step_s, reset_s, resets = _run_round(env, render, steps, seed=1000 + r)
                stats[name].step_seconds.append(step_s)
                stats[name].reset_seconds.append(reset_s)
                stats[name].resets.append(resets)
            line = ", ".join(f"{name} {s.rates()[-1]:.1f}" for name, s in stats.items())
            print(f"  round {r + 1}/{repeats} steps/s: {line}", flush=True)
        return stats
    finally:
        with _quiet_native_stdout():
            for env, _ in envs.values():
                env.close()


# ----------------------------------------------------------------------------------------------------------------------
# 2. collection


@dataclass
class CollectRun:
    workers: int
    frames: int
    seconds: float
    shards: int
    steady_fps: float | None  # from shard completion times, start-up and first shard per worker excluded

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def _steady_rate(root: Path, workers: int, frames_per_shard: list[int]) -> float | None:
    """Frames/s between the ``workers``-th and the last shard completion (see module docstring)."""
    from imagine_ros.sim.storage import shard_name

    done = sorted((os.stat(root / shard_name(s)).st_mtime_ns, n) for s, n in enumerate(frames_per_shard))
    if len(done) <= workers:
        return None
    span = (done[-1][0] - done[workers - 1][0]) / 1e9
    return sum(n for _, n in done[workers:]) / span if span > 0 else None


def bench_collect(workers: int, episodes: int, shard_size: int, frames: int, repeats: int) -> list[CollectRun]:
    from imagine_ros.sim.collect import collect_push

    runs = []
    for r in range(repeats):
        tmp = Path(tempfile.mkdtemp(prefix=f"bench_collect_w{workers}_"))
        try:
            out = tmp / "data"
            with _quiet_native_stdout():
                report = collect_push(
                    out=out, episodes=episodes, workers=workers, shard_size=shard_size, frames=frames, progress=False
                )
            per_shard = [frames * min(shard_size, episodes - s * shard_size) for s in range(report.shards_total)]
            run = CollectRun(
                workers=workers,
                frames=report.frames_written,
                seconds=report.seconds,
                shards=report.shards_total,
                steady_fps=_steady_rate(out, workers, per_shard),
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        runs.append(run)
        steady = f"{run.steady_fps:7.1f}" if run.steady_fps else "    n/a"
        print(
            f"  {workers} worker(s), run {r + 1}/{repeats}: {run.frames} frames in {run.seconds:6.2f} s = "
            f"{run.fps:7.1f} frames/s end to end, {steady} steady state",
            flush=True,
        )
    return runs


# ----------------------------------------------------------------------------------------------------------------------
# report


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, episodes and repeats (well under a minute)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    if args.quick:
        steps, step_repeats = 60, 2
        episodes, shard_size, collect_repeats = 8, 2, 1  # 4 shards
    else:
        steps, step_repeats = 200, 3
        episodes, shard_size, collect_repeats = 40, 4, 3  # 10 shards, 5 per worker
    frames = 30

    with _quiet_native_stdout():
        import panda_gym
        import pybullet

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"bench_sim: python {platform.python_version()}, pybullet API {pybullet.getAPIVersion()}, "
        f"panda-gym {panda_gym.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} at start"
    )
    t_start = time.perf_counter()

    print(f"\n[1] environment steps at {IMAGE_SIZE}x{IMAGE_SIZE}: {step_repeats} rounds x {steps} random steps each")
    st = bench_steps(steps, step_repeats)
    ours, pr, pn = st["ours (image in obs)"], st["panda-gym + render()"], st["panda-gym, no render"]

    n_shards = -(-episodes // shard_size)
    print(
        f"\n[2] collection: {episodes} episodes x {frames} frames, {shard_size} episodes per shard ({n_shards} shards),"
        f" {collect_repeats} run(s) per worker count"
    )
    c1 = bench_collect(1, episodes, shard_size, frames, collect_repeats)
    c2 = bench_collect(2, episodes, shard_size, frames, collect_repeats)

    # ------------------------------------------------------------------------------------------------------ tables
    w = 24
    print(f"\n{'=' * 78}\nEnvironment steps/s at {IMAGE_SIZE}x{IMAGE_SIZE} (step [+ render] only; resets apart)")
    print(f"{'environment':<{w}} {'median':>9} {'best':>9} {'all rounds':>26} {'ms/reset':>9}")
    for s in (ours, pr, pn):
        rounds = " ".join(f"{v:.1f}" for v in s.rates())
        print(f"{s.name:<{w}} {s.median:9.1f} {s.best:9.1f} {rounds:>26} {s.ms_per_reset:9.1f}")
    step_ratio = ours.median / pr.median
    print(f"{'ratio ours / panda-gym + render()':<40} median {step_ratio:6.2f}x   best {ours.best / pr.best:6.2f}x")
    print(f"{'ratio ours / panda-gym, no render':<40} median {ours.median / pn.median:6.2f}x")

    print(f"\nCollection frames/s ({episodes} episodes x {frames} frames, {n_shards} shards; HDF5 writing included)")
    print(f"{'workers':<{w}} {'median':>9} {'best':>9} {'per worker':>11} {'steady':>9} {'steady/worker':>14}")
    rows = {}
    for runs in (c1, c2):
        k = runs[0].workers
        fps = [r.fps for r in runs]
        steady = [r.steady_fps for r in runs if r.steady_fps]
        rows[k] = {"median": _med(fps), "best": max(fps), "steady": _med(steady), "seconds": [r.seconds for r in runs]}
        print(
            f"{f'{k} worker(s)':<{w}} {rows[k]['median']:9.1f} {rows[k]['best']:9.1f} {rows[k]['median'] / k:11.1f} "
            f"{rows[k]['steady']:9.1f} {rows[k]['steady'] / k:14.1f}"
        )
    speedup = rows[2]["median"] / rows[1]["median"]
    speedup_steady = rows[2]["steady"] / rows[1]["steady"]
    print(f"{'speed-up 2 vs 1 workers':<40} end to end {speedup:5.2f}x   steady state {speedup_steady:5.2f}x")

    targets = [
        (f"ours >= {TARGET_STEP_RATIO:g}x panda-gym rendered steps/s (median)", step_ratio, TARGET_STEP_RATIO, "x"),
        (
            f"1 worker >= {TARGET_FRAMES_PER_WORKER:g} frames/s (end to end)",
            rows[1]["median"],
            TARGET_FRAMES_PER_WORKER,
            " f/s",
        ),
        (
            f"2 workers >= {TARGET_FRAMES_PER_WORKER:g} frames/s per worker (end to end)",
            rows[2]["median"] / 2,
            TARGET_FRAMES_PER_WORKER,
            " f/s",
        ),
        (f"2 workers >= {TARGET_SPEEDUP_2W:g}x one (end to end)", speedup, TARGET_SPEEDUP_2W, "x"),
        (f"2 workers >= {TARGET_SPEEDUP_2W:g}x one (steady state)", speedup_steady, TARGET_SPEEDUP_2W, "x"),
    ]
    print(f"\nTargets\n{'target':<58} {'measured':>12}  result")
    for name, value, target, unit in targets:
        print(f"{name:<58} {f'{value:.2f}{unit}':>12}  {_verdict(value, target)}")
    elapsed = time.perf_counter() - t_start
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n(benchmark took {elapsed:.0f} s; load average {load_end:.2f} at the end)")

    if args.json:
        result = {
            "quick": args.quick,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_start": load[0]},
            "steps": {
                "image_size": IMAGE_SIZE,
                "steps_per_round": steps,
                "rounds": step_repeats,
                "envs": {
                    s.name: {
                        "steps_per_s_median": s.median,
                        "steps_per_s_best": s.best,
                        "steps_per_s_rounds": s.rates(),
                        "ms_per_reset": s.ms_per_reset,
                    }
                    for s in (ours, pr, pn)
                },
                "ratio_ours_vs_panda_render_median": step_ratio,
                "ratio_ours_vs_panda_render_best": ours.best / pr.best,
                "ratio_ours_vs_panda_norender_median": ours.median / pn.median,
            },
            "collect": {
                "episodes": episodes,
                "frames_per_episode": frames,
                "shard_size": shard_size,
                "shards": n_shards,
                "runs": [r.__dict__ | {"fps": r.fps} for r in c1 + c2],
                "fps_median": {str(k): v["median"] for k, v in rows.items()},
                "fps_steady_median": {str(k): v["steady"] for k, v in rows.items()},
                "speedup_2v1": speedup,
                "speedup_2v1_steady": speedup_steady,
            },
            "targets": [
                {"target": name, "measured": value, "threshold": target, "pass": value >= target}
                for name, value, target, _ in targets
            ],
            "seconds": elapsed,
        }
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
