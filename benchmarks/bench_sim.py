"""Benchmark of the pushing simulator against panda-gym, and of dataset collection throughput.

What is measured
----------------
1. Rendered environment steps per second at 64x64 (random actions from the action space):

   * ours: ``gymnasium.make("ImagineRos/Push-v0")``; every observation carries the rendered 64x64 image;
   * panda-gym ``PandaPush-v3`` with ``render_mode="rgb_array", render_width=64, render_height=64`` and
     ``env.render()`` after every ``env.step()`` (headless, panda-gym renders with TinyRenderer and shadows);
   * panda-gym ``PandaPush-v3`` without rendering, for context.

   The three environments are built once and run in interleaved rounds (ours, panda-gym rendered, panda-gym plain),
   the same number of steps each per round (200 steps x 4 rounds; ``--quick``: 60 x 2), so background load hits all
   of them alike. Only ``step`` (+ ``render``) is timed; the resets (at the start of a round and at episode ends) are
   timed apart and reported separately (ms per reset).

2. Collection throughput in frames/s of :func:`imagine_ros.sim.collect.collect_push` into a temporary folder (removed
   afterwards) with 1 and with 2 workers, in interleaved runs: 48 episodes x 30 frames in 12 shards of 4 episodes,
   4 runs each (``--quick``: 16 episodes in 8 shards, 1 run), so both workers stay busy. Two figures per run:

   * end to end: ``frames_written / seconds`` of the report. For 2 workers this includes spawning the processes
     (imports, pybullet start-up, building the scene); for both it includes writing the HDF5 shards.
   * steady state: from the shards' modification times, the frames of every shard after the first ``W`` finished
     (one per worker) divided by the time from the ``W``-th to the last completion. This leaves out process start-up
     and each worker's first shard. "overhead" is a run's time minus frames / steady rate.

Every figure is given as the median and the best of its repeats; the ratios' "median" is the median of the ratios
within each interleaved round or (1 worker, 2 workers) pair, which cancels slow drifts of the machine's speed.
The machine may be shared: the script measures how many cores other processes kept busy meanwhile (``/proc/stat``
minus this process and its workers) and flags runs that were disturbed; the best repeat is then the better estimate
of what the code can do. Contention from outside a virtual machine (other guests on the host) is not visible this way.

Run::

    python benchmarks/bench_sim.py            # default, about 2 minutes on 2 idle cores
    python benchmarks/bench_sim.py --quick    # about 20 s, noisier
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
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import DISTURBED, OtherLoad, _fmt_load, _median  # benchmarks/_common.py (sys.path[0])

OURS_ID = "ImagineRos/Push-v0"
PANDA_ID = "PandaPush-v3"
IMAGE_SIZE = 64
FRAMES_PER_EPISODE = 30

TARGET_STEP_RATIO = 8.0  # ours / panda-gym rendered
TARGET_FRAMES_PER_WORKER = 100.0  # frames/s
TARGET_SPEEDUP_2W = 1.7  # 2 workers vs 1


# ----------------------------------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _quiet_native_stdout():
    """Send the C-level stdout to /dev/null: pybullet prints ``argv[0]=...`` there on every connection.

    Processes spawned inside inherit the redirection, so the collection workers stay quiet too; stderr is untouched
    (pybullet's "build time" line goes there).
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
            fflush(None)  # what pybullet buffered goes to /dev/null, not into the table
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


# ----------------------------------------------------------------------------------------------------------------------
# 1. environment steps


@dataclass
class StepStats:
    """Timings of one environment, one entry per round."""

    name: str
    steps: int  # per round
    step_seconds: list[float] = field(default_factory=list)  # steps (+ render) only
    reset_seconds: list[float] = field(default_factory=list)  # all resets of the round
    resets: list[int] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [self.steps / s for s in self.step_seconds]

    @property
    def median(self) -> float:
        return _median(self.rates())

    @property
    def best(self) -> float:
        return max(self.rates())

    @property
    def ms_per_reset(self) -> float:
        total = sum(self.resets)
        return 1000.0 * sum(self.reset_seconds) / total if total else float("nan")


OURS, PANDA_RENDER, PANDA_PLAIN = "ours (image in obs)", "panda-gym + render()", "panda-gym, no render"


def _make_envs() -> dict:
    """name -> (env, whether to call render() after each step)."""
    import gymnasium as gym
    import panda_gym  # noqa: F401  (registers PandaPush-v3)

    import imagine_ros.sim  # noqa: F401  (registers ImagineRos/Push-v0)

    render_kwargs = {"render_mode": "rgb_array", "render_width": IMAGE_SIZE, "render_height": IMAGE_SIZE}
    return {
        OURS: (gym.make(OURS_ID), False),
        PANDA_RENDER: (gym.make(PANDA_ID, **render_kwargs), True),
        PANDA_PLAIN: (gym.make(PANDA_ID), False),
    }


def _check_images(envs: dict) -> None:
    """Both sides must really produce 64x64 RGB images (a silent size mismatch would skew the comparison)."""
    obs, _ = envs[OURS][0].reset(seed=0)
    assert obs["image"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3), obs["image"].shape
    panda = envs[PANDA_RENDER][0]
    panda.reset(seed=0)
    img = panda.render()
    assert img is not None and img.shape == (IMAGE_SIZE, IMAGE_SIZE, 3), None if img is None else img.shape


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


def bench_steps(steps: int, rounds: int) -> dict[str, StepStats]:
    with _quiet_native_stdout():
        envs = _make_envs()
    try:
        _check_images(envs)
        stats = {name: StepStats(name, steps) for name in envs}
        for env, _ in envs.values():
            env.action_space.seed(0)
        for r in range(rounds):
            meter = OtherLoad()
            for name, (env, render) in envs.items():  # interleaved
                step_s, reset_s, resets = _run_round(env, render, steps, seed=1000 + r)
                stats[name].step_seconds.append(step_s)
                stats[name].reset_seconds.append(reset_s)
                stats[name].resets.append(resets)
            line = ", ".join(f"{name} {s.rates()[-1]:.1f}" for name, s in stats.items())
            print(f"  round {r + 1}/{rounds} steps/s: {line}  ({_fmt_load(meter.cores())})", flush=True)
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
    steady_fps: float | None  # from shard completion times; start-up and each worker's first shard left out
    other_cores: float | None  # cores other processes kept busy during the run

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def overhead(self) -> float | None:
        """Seconds not explained by the steady rate: process start-up, scene building, the dataset's metadata."""
        return max(0.0, self.seconds - self.frames / self.steady_fps) if self.steady_fps else None


def _steady_rate(root: Path, workers: int, frames_per_shard: list[int]) -> float | None:
    """Frames/s between the ``workers``-th and the last shard completion (see the module docstring)."""
    from imagine_ros.sim.storage import shard_name

    done = sorted((os.stat(root / shard_name(s)).st_mtime_ns, n) for s, n in enumerate(frames_per_shard))
    if len(done) <= workers:
        return None
    span = (done[-1][0] - done[workers - 1][0]) / 1e9
    return sum(n for _, n in done[workers:]) / span if span > 0 else None


def _collect_once(workers: int, episodes: int, shard_size: int) -> CollectRun:
    from imagine_ros.sim.collect import collect_push

    tmp = Path(tempfile.mkdtemp(prefix=f"bench_collect_w{workers}_"))
    try:
        out = tmp / "data"
        meter = OtherLoad()
        with _quiet_native_stdout():
            report = collect_push(
                out=out,
                episodes=episodes,
                workers=workers,
                shard_size=shard_size,
                frames=FRAMES_PER_EPISODE,
                progress=False,
            )
        other = meter.cores()
        per_shard = [
            FRAMES_PER_EPISODE * min(shard_size, episodes - s * shard_size) for s in range(report.shards_total)
        ]
        return CollectRun(
            workers=workers,
            frames=report.frames_written,
            seconds=report.seconds,
            shards=report.shards_total,
            steady_fps=_steady_rate(out, workers, per_shard),
            other_cores=other,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_collect(episodes: int, shard_size: int, repeats: int) -> dict[int, list[CollectRun]]:
    """Interleaved runs (1 worker, 2 workers, 1 worker, ...) so that background load hits both alike."""
    runs: dict[int, list[CollectRun]] = {1: [], 2: []}
    for r in range(repeats):
        for workers, done in runs.items():
            run = _collect_once(workers, episodes, shard_size)
            done.append(run)
            steady = f"{run.steady_fps:6.1f}" if run.steady_fps else "   n/a"
            print(
                f"  run {r + 1}/{repeats}, {workers} worker(s): {run.frames} frames in {run.seconds:5.2f} s = "
                f"{run.fps:6.1f} frames/s end to end, {steady} steady  ({_fmt_load(run.other_cores)})",
                flush=True,
            )
    return runs


# ----------------------------------------------------------------------------------------------------------------------
# report


def _collect_row(runs: list[CollectRun]) -> dict:
    fps = [r.fps for r in runs]
    steady = [r.steady_fps for r in runs if r.steady_fps]
    return {
        "median": _median(fps),
        "best": max(fps),
        "steady_median": _median(steady),
        "steady_best": max(steady, default=float("nan")),
        "overhead_s_median": _median([r.overhead for r in runs if r.overhead is not None]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, episodes and repeats (about 20 s)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    if args.quick:
        steps, rounds = 60, 2
        episodes, shard_size, collect_repeats = 16, 2, 1  # 8 shards, 4 per worker
    else:
        steps, rounds = 200, 4
        episodes, shard_size, collect_repeats = 48, 4, 4  # 12 shards, 6 per worker
    n_shards = -(-episodes // shard_size)

    with _quiet_native_stdout():
        import panda_gym
        import pybullet

    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bench_sim{' --quick' if args.quick else ''}: python {platform.python_version()}, "
        f"pybullet API {pybullet.getAPIVersion()}, panda-gym {panda_gym.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load_avg:.2f} at start"
    )
    t_start = time.perf_counter()

    print(f"\n[1] environment steps at {IMAGE_SIZE}x{IMAGE_SIZE}: {rounds} rounds x {steps} random steps per env")
    meter = OtherLoad()
    st = bench_steps(steps, rounds)
    load_steps = meter.cores()
    ours, pr, pn = st[OURS], st[PANDA_RENDER], st[PANDA_PLAIN]

    print(
        f"\n[2] collection: {episodes} episodes x {FRAMES_PER_EPISODE} frames, {shard_size} episodes per shard "
        f"({n_shards} shards), {collect_repeats} run(s) per worker count"
    )
    meter = OtherLoad()
    collect_runs = bench_collect(episodes, shard_size, collect_repeats)
    load_collect = meter.cores()
    c1, c2 = _collect_row(collect_runs[1]), _collect_row(collect_runs[2])

    # ------------------------------------------------------------------------------------------------------- tables
    w = 22
    print(f"\n{'=' * 96}\nEnvironment steps/s at {IMAGE_SIZE}x{IMAGE_SIZE} (step [+ render] only; resets timed apart)")
    print(f"{'environment':<{w}} {'median':>8} {'best':>8}   {'rounds':<24} {'ms/reset':>8}")
    for s in (ours, pr, pn):
        rounds_txt = " ".join(f"{v:.1f}" for v in s.rates())
        print(f"{s.name:<{w}} {s.median:8.1f} {s.best:8.1f}   {rounds_txt:<24} {s.ms_per_reset:8.1f}")
    per_round = [a / b for a, b in zip(ours.rates(), pr.rates())]
    ratio = {"median": _median(per_round), "best": ours.best / pr.best}
    print(
        f"ratio ours / panda-gym + render(): per round {' '.join(f'{v:.2f}' for v in per_round)} -> "
        f"median {ratio['median']:.2f}x; best / best {ratio['best']:.2f}x"
    )
    print(
        f"ratio ours / panda-gym, no render: median {_median([a / b for a, b in zip(ours.rates(), pn.rates())]):.2f}x"
    )
    print(f"({_fmt_load(load_steps)} on average during [1])")

    print(
        f"\nCollection frames/s ({episodes} episodes x {FRAMES_PER_EPISODE} frames, {n_shards} shards, "
        f"HDF5 writing included)"
    )
    print(
        f"{'workers':<{w}} {'median':>8} {'best':>8} {'per worker':>11} {'steady med':>11} {'steady best':>12} "
        f"{'steady/worker':>14} {'overhead s':>11}"
    )
    for k, row in ((1, c1), (2, c2)):
        print(
            f"{f'{k} worker(s)':<{w}} {row['median']:8.1f} {row['best']:8.1f} {row['median'] / k:11.1f} "
            f"{row['steady_median']:11.1f} {row['steady_best']:12.1f} {row['steady_median'] / k:14.1f} "
            f"{row['overhead_s_median']:11.2f}"
        )
    # speed-ups: median over the interleaved (1 worker, 2 workers) pairs, and best / best
    pairs = list(zip(collect_runs[1], collect_runs[2]))
    pair_ratio = [b.fps / a.fps for a, b in pairs]
    pair_ratio_steady = [b.steady_fps / a.steady_fps for a, b in pairs if a.steady_fps and b.steady_fps]
    speedup = {"median": _median(pair_ratio), "best": c2["best"] / c1["best"]}
    speedup_steady = {"median": _median(pair_ratio_steady), "best": c2["steady_best"] / c1["steady_best"]}
    for label, per_pair, value in (
        ("end to end", pair_ratio, speedup),
        ("steady    ", pair_ratio_steady, speedup_steady),
    ):
        print(
            f"speed-up 2 vs 1 workers, {label}: per run pair {' '.join(f'{v:.2f}' for v in per_pair)} -> "
            f"median {value['median']:.2f}x; best / best {value['best']:.2f}x"
        )
    print("(steady: from shard completion times, leaving out start-up and each worker's first shard;")
    print(" overhead: run time minus frames / steady rate = process start-up, scene building, metadata)")
    print(f"({_fmt_load(load_collect)} on average during [2])")

    # ------------------------------------------------------------------------------------------------------ targets
    targets = [
        (f"ours >= {TARGET_STEP_RATIO:g}x panda-gym rendered steps/s", ratio, TARGET_STEP_RATIO, "x"),
        (
            f"1 worker >= {TARGET_FRAMES_PER_WORKER:g} frames/s (end to end)",
            {"median": c1["median"], "best": c1["best"]},
            TARGET_FRAMES_PER_WORKER,
            "",
        ),
        (
            f"2 workers >= {TARGET_FRAMES_PER_WORKER:g} frames/s per worker (end to end)",
            {"median": c2["median"] / 2, "best": c2["best"] / 2},
            TARGET_FRAMES_PER_WORKER,
            "",
        ),
        (f"2 workers >= {TARGET_SPEEDUP_2W:g}x 1 worker (end to end)", speedup, TARGET_SPEEDUP_2W, "x"),
        (f"2 workers >= {TARGET_SPEEDUP_2W:g}x 1 worker (steady state)", speedup_steady, TARGET_SPEEDUP_2W, "x"),
    ]
    print(f"\nTargets{'':<56} {'median':>9} {'':4}  {'best':>9}")
    for name, value, threshold, unit in targets:
        cells = "  ".join(
            f"{f'{value[k]:.2f}{unit}':>9} {'PASS' if value[k] >= threshold else 'MISS'}" for k in ("median", "best")
        )
        print(f"{name:<63} {cells}")
    disturbed = [n for n, c in (("[1]", load_steps), ("[2]", load_collect)) if c is not None and c > DISTURBED]
    if disturbed:
        print(f"note: other processes were busy during {' and '.join(disturbed)}; trust the best column more")
    elapsed = time.perf_counter() - t_start
    print(f"(benchmark took {elapsed:.0f} s)")

    if args.json:
        result = {
            "quick": args.quick,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "pybullet_api": pybullet.getAPIVersion(),
                "panda_gym": panda_gym.__version__,
                "load_average_start": load_avg,
                "other_cores_busy_steps": load_steps,
                "other_cores_busy_collect": load_collect,
            },
            "steps": {
                "image_size": IMAGE_SIZE,
                "steps_per_round": steps,
                "rounds": rounds,
                "envs": {
                    s.name: {
                        "steps_per_s_median": s.median,
                        "steps_per_s_best": s.best,
                        "steps_per_s_rounds": s.rates(),
                        "ms_per_reset": s.ms_per_reset,
                    }
                    for s in (ours, pr, pn)
                },
                "ratio_ours_vs_panda_render": ratio,
                "ratio_ours_vs_panda_render_per_round": per_round,
                "ratio_ours_vs_panda_norender_median": _median([a / b for a, b in zip(ours.rates(), pn.rates())]),
            },
            "collect": {
                "episodes": episodes,
                "frames_per_episode": FRAMES_PER_EPISODE,
                "shard_size": shard_size,
                "shards": n_shards,
                "runs": [asdict(r) | {"fps": r.fps} for runs in collect_runs.values() for r in runs],
                "workers_1": c1,
                "workers_2": c2,
                "speedup_2v1": speedup,
                "speedup_2v1_steady": speedup_steady,
                "speedup_2v1_per_pair": pair_ratio,
                "speedup_2v1_steady_per_pair": pair_ratio_steady,
            },
            "targets": [
                {
                    "target": name,
                    "threshold": threshold,
                    "measured": value,
                    "pass": {k: v >= threshold for k, v in value.items()},
                }
                for name, value, threshold, _ in targets
            ],
            "seconds": elapsed,
        }
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
