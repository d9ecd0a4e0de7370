"""``imagine-ros``: the command line of imagine_ros (one subcommand per job; ``imagine-ros SUBCOMMAND --help``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imagine_ros import __version__
from imagine_ros.errors import ConfigError, ImagineRosError


def _env_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it is JSON (numbers, lists, true/false), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


# ---------------------------------------------------------------------------------------------------------- collect
def _add_collect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="collect BAIR-style pushing episodes from the simulator into HDF5 shards",
        description="Collect pushing episodes (scripted random policy) into DIR. Resumes a killed run: run the same "
        "command again. Refuses a folder that holds other settings.",
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="dataset folder (created; resumed if it exists)"
    )
    p.add_argument("--episodes", required=True, type=int, help="number of episodes")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--seed", type=int, default=0, help="base seed; episode i uses a seed derived from (seed, i) (default 0)"
    )
    p.add_argument("--frames", type=int, default=30, help="frames per episode (default 30, as BAIR)")
    p.add_argument("--shard-size", type=int, default=16, help="episodes per shard file (default 16)")
    p.add_argument("--image-size", type=int, default=None, help="square image side in pixels (default 64)")
    p.add_argument("--num-objects", type=int, default=None, help="objects in the bin (default 3)")
    p.add_argument(
        "--env-opt",
        type=_env_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other environment option (repeatable; see README 'Environment options'), e.g. --env-opt frame_dt=0.1",
    )
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of episodes in the validation split")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of episodes in the test split")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli_collect)


def _cli_collect(args: argparse.Namespace) -> int:
    from imagine_ros.sim.collect import collect_push, moved_fraction
    from imagine_ros.sim.storage import EpisodeStore

    options = dict(args.env_opt)
    if args.image_size is not None:
        options["image_size"] = args.image_size
    if args.num_objects is not None:
        options["num_objects"] = args.num_objects
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    report = collect_push(
        args.out,
        args.episodes,
        workers=args.workers,
        seed=args.seed,
        frames=args.frames,
        shard_size=args.shard_size,
        env_options=options,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        progress=not args.no_progress,
    )
    store = EpisodeStore(args.out)
    rate = report.frames_written / report.seconds if report.seconds > 0 and report.frames_written else 0.0
    print(
        f"{args.out}: {len(store)} episodes x {store.frames_per_episode} frames "
        f"({len(report.shards_written)} shards written, {len(report.shards_skipped)} already complete; "
        f"{rate:.0f} frames/s); objects moved > 2 cm in {moved_fraction(store):.0%} of episodes"
    )
    return 0


# -------------------------------------------------------------------------------------------------------------- gif
def _add_gif(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gif", help="write an animated GIF of dataset episodes (a grid, one tile per episode)")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset folder")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="GIF file to write")
    p.add_argument("--episodes", type=int, default=8, help="how many episodes (the first of the split; default 8)")
    p.add_argument("--split", default="all", choices=["all", "train", "val", "test"], help="split (default all)")
    p.add_argument("--columns", type=int, default=4, help="tiles per row (default 4)")
    p.add_argument("--scale", type=int, default=3, help="upscaling factor, nearest neighbour (default 3)")
    p.add_argument("--fps", type=float, default=None, help="frames per second (default: the dataset's frame rate)")
    p.set_defaults(func=_cli_gif)


def _cli_gif(args: argparse.Namespace) -> int:
    import numpy as np

    from imagine_ros.constants import FRAMES
    from imagine_ros.sim.storage import EpisodeStore
    from imagine_ros.viz import video_grid, write_gif

    store = EpisodeStore(args.data)
    indices = store.split(args.split)[: max(1, args.episodes)]
    if not indices:
        raise ConfigError(f"split {args.split!r} of {args.data} has no episodes")
    videos = np.stack([store.read(i, FRAMES) for i in indices])
    cols = max(1, min(args.columns, len(videos)))
    rows = -(-len(videos) // cols)
    blank = np.full((rows * cols - len(videos), *videos.shape[1:]), 255, np.uint8)
    grid = video_grid(np.concatenate([videos, blank]).reshape(rows, cols, *videos.shape[1:]))
    fps = args.fps or 1.0 / float(store.meta.get("frame_period_s", 0.2))
    write_gif(args.out, grid, fps=fps, scale=args.scale)
    print(
        f"{args.out}: {len(indices)} episodes, {grid.shape[0]} frames, {grid.shape[2] * args.scale}x"
        f"{grid.shape[1] * args.scale} px"
    )
    return 0


# ------------------------------------------------------------------------------------------------------------- info
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarise a dataset folder (episodes, splits, camera, pushed fraction)")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cli_info)


def _cli_info(args: argparse.Namespace) -> int:
    from imagine_ros.sim.storage import EpisodeStore

    store = EpisodeStore(args.data)
    m = store.meta
    summary = {
        "path": str(args.data),
        "kind": m["kind"],
        "episodes": len(store),
        "frames_per_episode": store.frames_per_episode,
        "image_size": m["image_size"],
        "splits": {k: len(v) for k, v in m["splits"].items()},
        "keys": store.keys(),
    }
    if m["kind"] == "push":
        from imagine_ros.sim.collect import moved_fraction

        summary["moved_fraction_2cm"] = round(moved_fraction(store), 4)
        summary["camera_K"] = m["camera"]["K"]
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for k, v in summary.items():
            print(f"{k:>20}: {v}")
    return 0


# ------------------------------------------------------------------------------------------------------------ train
def _add_train(sub: argparse._SubParsersAction) -> None:
    from imagine_ros.models import METHODS, PRESETS
    from imagine_ros.training.trainer import TrainConfig

    d = TrainConfig(method="visual_dynamics", data="", out="")
    p = sub.add_parser(
        "train",
        help="train a method on a dataset folder (one loop for all methods; torchrun for several GPUs/nodes)",
        description="Train METHOD on DIR's training split into RUN (checkpoints, TensorBoard, sample GIFs, metrics). "
        "--resume continues a killed run from its newest checkpoint with the same step count and data order.",
    )
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="method to train")
    p.add_argument("--config", default="small", choices=PRESETS, help="model config preset (default small)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder (imagine-ros collect / shapes)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder (created; must be new unless --resume)")
    p.add_argument("--set", type=_env_option, action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --set horizon=5 (repeatable)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps in all (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"clips per step and process "
                   f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help=f"max gradient norm, 0 = off "
                   f"(default {d.grad_clip})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of weights and data order (default {d.seed})")
    p.add_argument("--device", default=d.device, help="auto (CUDA if available), cpu, cuda, cuda:1 (default auto)")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 mixed precision on CUDA")
    p.add_argument("--workers", type=int, default=d.num_workers, help=f"DataLoader workers (default {d.num_workers})")
    p.add_argument("--log-every", type=int, default=d.log_every, help=f"steps between logs (default {d.log_every})")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help=f"steps between checkpoints "
                   f"(default {d.ckpt_every})")
    p.add_argument("--val-every", type=int, default=d.val_every, help=f"steps between validations "
                   f"(default {d.val_every})")
    p.add_argument("--val-clips", type=int, default=d.val_clips, help=f"validation clips (default {d.val_clips})")
    p.add_argument("--val-samples", type=int, default=d.val_samples, help=f"N of PSNR@N/SSIM@N "
                   f"(default {d.val_samples})")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli_train)


def _cli_train(args: argparse.Namespace) -> int:
    from imagine_ros.training.trainer import TrainConfig, train

    cfg = TrainConfig(
        method=args.method, data=args.data, out=args.out, preset=args.config, overrides=dict(args.set),
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, grad_clip=args.grad_clip, seed=args.seed,
        device=args.device, amp=not args.no_amp, num_workers=args.workers, log_every=args.log_every,
        ckpt_every=args.ckpt_every, val_every=args.val_every, val_clips=args.val_clips, val_samples=args.val_samples,
        progress=not args.no_progress,
    )
    metrics = train(cfg, resume=args.resume, command=["imagine-ros", *args.argv])
    shown = ", ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in metrics.items())
    print(f"{args.out}: trained {args.method} ({args.config}) to step {cfg.steps}; model at {args.out}/model.json"
          + (f"; validation: {shown}" if shown else ""))
    return 0


# ------------------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    from imagine_ros.rosbag_export import register_cli as register_export_bag
    from imagine_ros.sim.shapes import register_cli as register_shapes

    parser = argparse.ArgumentParser(
        prog="imagine-ros", description="Predict a robot camera's future: simulate, collect, train, serve, plan."
    )
    parser.add_argument("--version", action="version", version=f"imagine-ros {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_collect(sub)
    register_shapes(sub)
    _add_gif(sub)
    _add_info(sub)
    register_export_bag(sub)
    _add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded in checkpoints: the command that produced them
    try:
        return int(args.func(args) or 0)
    except ImagineRosError as e:
        print(f"imagine-ros: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imagine-ros: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
