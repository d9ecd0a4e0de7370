"""Benchmark of ImaGINator's generator: transposed (1+2)D blocks against full transposed 3D blocks, in the same run.

The paper credits its factorised (1+2)D transposed convolution with better quality *and* speed. This script measures
the speed side on this machine: for each preset in ``--presets`` it builds the two generators (``block="1+2d"`` and
``block="3d"``, same seed, same config otherwise) and times, alternating the two so background load hits both alike:

* generation: ``model.sample(x0, condition, num_samples)`` in eval mode (the generator only, as the Predictor calls
  it), reported as milliseconds per sampled video (``--batch`` inputs x ``--samples`` samples per call);
* training (unless ``--no-train``): the generator phase of a training step (forward through G and both
  discriminators, backward, Adam step of G) on ``--train-clips`` random clips, in milliseconds per clip.

The table gives median and best times, the ratio 3D / (1+2)D (> 1: (1+2)D is faster), the generator's parameters and
its FLOPs per video (``FlopCounterMode``: convolutions, a multiply-add = 2 FLOPs). With the default auto
``mid_channels`` the two generators have (nearly) the same parameter count (``small``); ``paper`` uses the paper's
(1+2)D widths, which make its (1+2)D generator about twice the 3D one. CPU always; CUDA too when available (timings
bracketed by ``torch.cuda.synchronize()``). Each section reports how many cores other processes kept busy.

Run::

    python benchmarks/bench_imaginator.py                 # small and paper on the CPU (+ CUDA); minutes
    python benchmarks/bench_imaginator.py --quick         # small only, a few calls: seconds
    python benchmarks/bench_imaginator.py --presets small --threads 2 --json bench_imaginator.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import OtherLoad, _fmt_load, _median  # benchmarks/_common.py (sys.path[0])
from torch.utils.flop_counter import FlopCounterMode

from imagine_ros.models import build
from imagine_ros.training.steps.imaginator import ImaGINatorStep
from imagine_ros.training.trainer import TrainConfig

BLOCKS = ("1+2d", "3d")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def bench_preset(preset: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Times of both variants of ``preset`` on ``device`` (see module docstring)."""
    meter = OtherLoad()
    models, steps, opts = {}, {}, {}
    for block in BLOCKS:
        torch.manual_seed(0)
        models[block] = build("imaginator", preset, block=block).to(device)
        steps[block] = ImaGINatorStep(models[block], TrainConfig(method="imaginator", data="-", out="-"))
        opts[block] = steps[block].optimizers()["G"]
    cfg = models[BLOCKS[0]].config
    s, t, c = cfg.image_size, cfg.horizon, cfg.condition_dim
    g = torch.Generator().manual_seed(1)
    x0 = (torch.rand(args.batch, 3, s, s, generator=g) * 2 - 1).to(device)
    cond = torch.randn(args.batch, c, generator=g).to(device)
    clips = args.train_clips
    batch = {
        "x0": (torch.rand(clips, 3, s, s, generator=g) * 2 - 1).to(device),
        "future": (torch.rand(clips, t, 3, s, s, generator=g) * 2 - 1).to(device),
        "condition": torch.randn(clips, c, generator=g).to(device),
    }
    per_call = args.batch * args.samples

    def generate(block: str) -> None:
        with torch.no_grad():
            models[block].eval().sample(x0, cond, args.samples, generator=torch.Generator().manual_seed(2))

    def train_g(block: str) -> None:
        model, opt = models[block].train(), opts[block]
        opt.zero_grad(set_to_none=True)
        loss, _ = steps[block].loss("G", batch, model, 0)
        loss.backward()
        opt.step()

    row: dict[str, Any] = {"preset": preset, "device": str(device), "image_size": s, "horizon": t, "blocks": {}}
    for block in BLOCKS:
        model = models[block]
        with FlopCounterMode(display=False) as fc, torch.no_grad():  # one video; also the first warm-up
            model.eval().sample(x0[:1], cond[:1], 1)
        row["blocks"][block] = {
            "generator_params": sum(p.numel() for p in model.generator.parameters()),
            "gflop_per_video": fc.get_total_flops() / 1e9,
            "generate_s": [],
            "train_s": [],
        }
    for _ in range(args.warmup):
        for block in BLOCKS:
            generate(block)
            if not args.no_train:
                train_g(block)
    for _ in range(args.repeats):  # alternate the variants
        for block in BLOCKS:
            row["blocks"][block]["generate_s"].append(_timed(lambda b=block: generate(b), device))
        if not args.no_train:
            for block in BLOCKS:
                row["blocks"][block]["train_s"].append(_timed(lambda b=block: train_g(b), device))
    for block in BLOCKS:
        r = row["blocks"][block]
        r["generate_ms_per_video"] = {
            "median": 1e3 * _median(r["generate_s"]) / per_call,
            "best": 1e3 * min(r["generate_s"]) / per_call,
        }
        if r["train_s"]:
            r["train_ms_per_clip"] = {
                "median": 1e3 * _median(r["train_s"]) / clips,
                "best": 1e3 * min(r["train_s"]) / clips,
            }
    a, b = row["blocks"]["1+2d"], row["blocks"]["3d"]
    row["ratio_generate"] = {
        k: b["generate_ms_per_video"][k] / a["generate_ms_per_video"][k] for k in ("median", "best")
    }
    if not args.no_train:
        row["ratio_train"] = {k: b["train_ms_per_clip"][k] / a["train_ms_per_clip"][k] for k in ("median", "best")}
    row["other_cores"] = meter.cores()
    row["videos_per_call"] = per_call
    row["train_clips"] = clips
    return row


def _print(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'=' * 112}")
    print(
        f"{'device':<7} {'preset':<6} {'block':<5} {'G params':>10} {'GFLOP/video':>12} {'gen ms/video med':>17} "
        f"{'best':>8} {'train G ms/clip med':>20} {'best':>8}"
    )
    for row in rows:
        for block, r in row["blocks"].items():
            tr = r.get("train_ms_per_clip")
            train = f"{tr['median']:20.1f} {tr['best']:8.1f}" if tr else f"{'-':>20} {'-':>8}"
            print(
                f"{row['device']:<7} {row['preset']:<6} {block:<5} {r['generator_params'] / 1e6:9.2f}M "
                f"{r['gflop_per_video']:12.2f} {r['generate_ms_per_video']['median']:17.2f} "
                f"{r['generate_ms_per_video']['best']:8.2f} {train}"
            )
        rg = row["ratio_generate"]
        rt = row.get("ratio_train")
        extra = f"; training 3D / (1+2)D = {rt['median']:.2f} (best {rt['best']:.2f})" if rt else ""
        print(
            f"{'':<7} {row['preset']:<6} generation 3D / (1+2)D = {rg['median']:.2f} (best {rg['best']:.2f}){extra}; "
            f"{row['videos_per_call']} videos of {row['horizon']} frames at {row['image_size']}^2 per call; "
            f"{_fmt_load(row['other_cores'])}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small only, few calls (seconds)")
    parser.add_argument("--presets", default="small,paper", help="comma-separated presets (default small,paper)")
    parser.add_argument("--batch", type=int, default=4, help="inputs per generation call (default 4)")
    parser.add_argument("--samples", type=int, default=8, help="samples per input (default 8)")
    parser.add_argument("--train-clips", type=int, default=16, help="clips per timed G training phase (default 16)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per variant (default 5; --quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per variant after the first (default 1)")
    parser.add_argument("--no-train", action="store_true", help="time generation only")
    parser.add_argument("--threads", type=int, metavar="N", help="torch.set_num_threads(N)")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even when it is available")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.batch, args.samples, args.train_clips, args.warmup = "small", 1, 2, 2, 0
        args.repeats = 2 if args.repeats is None else args.repeats
    args.repeats = 5 if args.repeats is None else args.repeats
    for name in ("batch", "samples", "train_clips", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for p in presets:
        if p not in ("tiny", "small", "paper"):
            parser.error(f"unknown preset {p!r}; expected some of tiny, small, paper")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    print(
        f"bench_imaginator{' --quick' if args.quick else ''}: torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
        + (f", GPU: {torch.cuda.get_device_name(0)}" if len(devices) > 1 else "")
    )
    t0 = time.perf_counter()
    rows = []
    for device in devices:
        for preset in presets:
            print(f"[{device}] {preset}: {args.repeats} timed calls per variant", flush=True)
            rows.append(bench_preset(preset, device, args))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    _print(rows)
    if args.quick:
        print("note: --quick times 2 videos per call and 2 training clips: not the default sizes")
    print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")
    if args.json:
        out = {"quick": args.quick, "python": platform.python_version(), "torch": torch.__version__, "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
