"""``imagine-ros``: the command line of imagine_ros (one subcommand per job; ``imagine-ros SUBCOMMAND --help``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imagine_ros import __version__
from imagine_ros.errors import ConfigError, DatasetError, ImagineRosError


def _env_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it is JSON (numbers, lists, true/false), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _count(text: str) -> int:
    """An integer count, also written as ``1e3`` (an integral number); its range is checked by the command, in one
    line (``--episodes 1e12`` is refused by the collector, not by a usage message)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


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
    p.add_argument("--episodes", required=True, type=_count, help="number of episodes (at most 1,000,000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--seed", type=int, default=0, help="base seed; episode i uses a seed derived from (seed, i) (default 0)"
    )
    p.add_argument("--frames", type=_count, default=30, help="frames per episode (default 30, as BAIR)")
    p.add_argument("--shard-size", type=_count, default=16, help="episodes per shard file (default 16)")
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
    p.add_argument(
        "--policy",
        default="bair",
        metavar="NAME",
        help="collection policy: bair (random walk + pushes, default), planning (segments that execute a target eta "
        "as the planner does) or mixed (planning episodes and a share of bair ones)",
    )
    p.add_argument(
        "--horizon", type=int, default=10, help="planning/mixed: frames per segment, the models' horizon (default 10)"
    )
    p.add_argument(
        "--policy-opt",
        type=_env_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a planning-policy setting (repeatable; README 'Planning-matched data'), e.g. push_probability=0.7",
    )
    p.add_argument(
        "--no-ground-truth",
        action="store_true",
        help="do not record depth, instance segmentation and part poses (no ground-truth flows)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli_collect)


def _cli_collect(args: argparse.Namespace) -> int:
    from imagine_ros.sim.collect import clip_moved_fraction, collect_push, moved_fraction, policy_settings
    from imagine_ros.sim.storage import EpisodeStore

    if args.policy == "bair" and args.policy_opt:
        raise ConfigError("--policy-opt sets planning-policy settings; it needs --policy planning or mixed")
    try:
        policy = policy_settings(args.policy, args.horizon, **dict(args.policy_opt))
    except TypeError as e:
        raise ConfigError(f"unknown --policy-opt ({e})") from None
    options = dict(args.env_opt)
    if args.no_ground_truth:
        options["ground_truth"] = False
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
        policy=policy,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        progress=not args.no_progress,
    )
    store = EpisodeStore(args.out)
    rate = report.frames_written / report.seconds if report.seconds > 0 and report.frames_written else 0.0
    clips = ""
    if args.policy != "bair":
        frac, n = clip_moved_fraction(store)
        clips = f"; in {frac:.0%} of its {n} planned clips"
    print(
        f"{args.out}: {len(store)} episodes x {store.frames_per_episode} frames "
        f"({len(report.shards_written)} shards written, {len(report.shards_skipped)} already complete"
        f"{f', {len(report.shards_redone)} found corrupt and collected again' if report.shards_redone else ''}; "
        f"{rate:.0f} frames/s, {report.seconds:.0f} s); objects moved > 2 cm in {moved_fraction(store):.0%} of "
        f"episodes{clips}"
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
    p.add_argument(
        "--ground-truth",
        action="store_true",
        help="one row per episode: frames, ground-truth forward flow colours and visibility (white = visible) from "
        "the start of each window of --window frames",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="--ground-truth: frames per window (default: the policy's horizon, or 10)",
    )
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
    if args.ground_truth:
        return _gif_ground_truth(args, store, indices, videos)
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


def _gif_ground_truth(args: argparse.Namespace, store, indices: list[int], videos) -> int:
    import numpy as np

    from imagine_ros.sim.ground_truth import DEPTH, INSTANCE, PART_IDS, PART_POSE, forward_flow
    from imagine_ros.training.clips import ground_truth_of
    from imagine_ros.viz import flow_to_rgb, video_grid, write_gif

    K, T = ground_truth_of(store)
    window = args.window or int(store.meta["config"].get("policy", {}).get("horizon", 10))
    if window < 1:
        raise ConfigError(f"--window must be at least 1, got {window}")
    n, t_all, h, w, _ = videos.shape
    flows = np.zeros((n, t_all, h, w, 2), np.float32)
    vis = np.ones((n, t_all, h, w), bool)
    for e, i in enumerate(indices):
        ep = store.episode(i, keys=[DEPTH, INSTANCE, PART_IDS, PART_POSE])
        depth = ep[DEPTH].astype(np.float32)
        for s in range(0, t_all, window):
            stop = min(s + window, t_all)
            f, v = forward_flow(
                depth[s], ep[INSTANCE][s], ep[PART_POSE][s], ep[PART_POSE][s:stop], depth[s:stop], ep[PART_IDS], K, T
            )
            flows[e, s:stop], vis[e, s:stop] = f, v
    colours = flow_to_rgb(flows, max_magnitude=max(float(np.abs(flows).max()), 1e-6))
    masks = np.repeat((vis * 255).astype(np.uint8)[..., None], 3, -1)
    grid = video_grid(np.stack([videos, colours, masks], 1))
    fps = args.fps or 1.0 / float(store.meta.get("frame_period_s", 0.2))
    write_gif(args.out, grid, fps=fps, scale=args.scale)
    print(
        f"{args.out}: {len(indices)} episodes (rows: frames, ground-truth flow from each {window}-frame window's "
        f"start, visibility), {grid.shape[0]} frames"
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
    p.add_argument(
        "--set",
        type=_env_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field, e.g. --set horizon=5 (repeatable)",
    )
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps in all (default {d.steps})")
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"clips per step and process (default {d.batch_size})"
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    p.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        default=d.lr_schedule,
        help="constant, or cosine: from the learning rate down to --lr-min-ratio of it at the last step "
        f"(default {d.lr_schedule})",
    )
    p.add_argument(
        "--lr-min-ratio",
        type=float,
        default=d.lr_min_ratio,
        help=f"cosine: the learning rate at the last step as a fraction of the first (default {d.lr_min_ratio})",
    )
    p.add_argument(
        "--grad-clip", type=float, default=None, help="max gradient norm per optimizer, 0 = off (default: the method's)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of weights and data order (default {d.seed})")
    p.add_argument("--device", default=d.device, help="auto (CUDA if available), cpu, cuda, cuda:1 (default auto)")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 mixed precision on CUDA")
    p.add_argument("--workers", type=int, default=d.num_workers, help=f"DataLoader workers (default {d.num_workers})")
    p.add_argument("--log-every", type=int, default=d.log_every, help=f"steps between logs (default {d.log_every})")
    p.add_argument(
        "--ckpt-every", type=int, default=d.ckpt_every, help=f"steps between checkpoints (default {d.ckpt_every})"
    )
    p.add_argument(
        "--val-every", type=int, default=d.val_every, help=f"steps between validations (default {d.val_every})"
    )
    p.add_argument("--val-clips", type=int, default=d.val_clips, help=f"validation clips (default {d.val_clips})")
    p.add_argument(
        "--val-samples", type=int, default=d.val_samples, help=f"N of PSNR@N/SSIM@N (default {d.val_samples})"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in RUN from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--stage", type=int, default=None, help="training stage of a multi-stage method (cinn: 1 VAE-GAN, 2 INN)"
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="RUN_OR_CKPT",
        help="start from the weights of a run folder or checkpoint (cinn --stage 2: the stage-1 run)",
    )
    p.set_defaults(func=_cli_train)


def _cli_train(args: argparse.Namespace) -> int:
    from imagine_ros.training.trainer import TrainConfig, train

    cfg = TrainConfig(
        method=args.method,
        data=args.data,
        out=args.out,
        preset=args.config,
        overrides=dict(args.set),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        lr_min_ratio=args.lr_min_ratio,
        grad_clip=args.grad_clip,
        seed=args.seed,
        device=args.device,
        amp=not args.no_amp,
        num_workers=args.workers,
        log_every=args.log_every,
        ckpt_every=args.ckpt_every,
        val_every=args.val_every,
        val_clips=args.val_clips,
        val_samples=args.val_samples,
        progress=not args.no_progress,
        stage=args.stage,
        init=args.init,
    )
    metrics = train(cfg, resume=args.resume, command=["imagine-ros", *args.argv])
    shown = ", ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in metrics.items())
    print(
        f"{args.out}: trained {args.method} ({args.config}) to step {cfg.steps}; model at {args.out}/model.json"
        + (f"; validation: {shown}" if shown else "")
    )
    return 0


# ---------------------------------------------------------------------------------------------------------- flownet
def _add_flownet(sub: argparse._SubParsersAction) -> None:
    from imagine_ros.flownet import FlowNetConfig

    p = sub.add_parser(
        "flownet",
        help="train a small optical-flow network on a dataset's ground-truth flows (a learned stand-in for DIS)",
        description="Train a flow network on (frame s, frame s + t, true flow) pairs of DIR's training split into OUT "
        "(checkpoints, TensorBoard, OUT/flownet.json), then compare it with OpenCV DIS and zero flow on the "
        "validation split. Needs a dataset collected with ground truth. --resume continues a killed or finished run "
        "from its newest checkpoint (--steps may grow). Use the network with plan-eval/flow-eval --flow-net.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder recorded with ground truth")
    p.add_argument("--out", required=True, metavar="OUT", help="run folder (created; must be new unless --resume)")
    p.add_argument("--steps", type=int, default=5000, help="optimizer steps in all (default 5000)")
    p.add_argument("--batch-size", type=int, default=32, help="frame pairs per step (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of the pairs drawn (default 0)")
    p.add_argument(
        "--config", default="small", choices=list(FlowNetConfig.presets), help="network preset (default small)"
    )
    p.add_argument("--horizon", type=int, default=10, help="pairs are up to this many frames apart (default 10)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (default 1)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 (default auto)")
    p.add_argument(
        "--val-pairs", type=int, default=256, help="validation pairs of the val split, 0 = none (default 256)"
    )
    p.add_argument("--log-every", type=int, default=25, help="steps between TensorBoard scalars (default 25)")
    p.add_argument("--ckpt-every", type=int, default=250, help="steps between checkpoints (default 250)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli_flownet)


def _cli_flownet(args: argparse.Namespace) -> int:
    from imagine_ros.flownet import train_flownet, validation_table

    result = train_flownet(
        args.data,
        args.out,
        args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        config=args.config,
        horizon=args.horizon,
        val_pairs=args.val_pairs,
        num_workers=args.workers,
        log_every=args.log_every,
        ckpt_every=args.ckpt_every,
        device=args.device,
        progress=not args.no_progress,
        resume=args.resume,
        command=["imagine-ros", *args.argv],
    )
    if result["validation"] is not None:
        print(validation_table(result["validation"]))
    print(f"{result['flownet']}: flow network ({args.config}) trained to step {result['step']} on {args.data}")
    return 0


# --------------------------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="PSNR@N / SSIM@N / diversity of checkpoints (and the copy_last floor) on a dataset split",
        description="Evaluate each checkpoint on the same fixed clips of a split and print a table; copy_last at the "
        "first checkpoint's size and horizon is added as the floor.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="CKPT",
        help="model checkpoint (RUN/model.json or any NAME.json); repeatable",
    )
    p.add_argument("--split", default="val", choices=["train", "val", "test", "all"], help="split (default val)")
    p.add_argument("--clips", type=int, default=64, help="clips to evaluate (default 64)")
    p.add_argument("--samples", type=int, default=8, help="N of PSNR@N / SSIM@N (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clip choice and of sampling (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default auto)")
    p.add_argument("--no-copy-last", action="store_true", help="leave out the copy_last floor")
    p.add_argument("--out", metavar="DIR", default=None, help="also write results.json and table.md here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli_evaluate)


def _cli_evaluate(args: argparse.Namespace) -> int:
    from imagine_ros.predictor import Predictor
    from imagine_ros.training.evaluate import copy_last_like, evaluate, table, write_results

    predictors = [
        (
            Path(c).parent.name if Path(c).stem == "model" else Path(c).stem,
            Predictor.from_checkpoint(c, device=args.device),
        )
        for c in args.checkpoint
    ]
    if not args.no_copy_last:
        predictors.append(("copy_last", copy_last_like(predictors[0][1])))
    results = [
        evaluate(
            pred, args.data, args.split, args.clips, args.samples, args.seed, name=name, progress=not args.no_progress
        )
        for name, pred in predictors
    ]
    print(table(results, args.split, args.data))
    if args.out:
        print(f"written to {write_results(results, args.out, args.split, args.data)}")
    return 0


# ---------------------------------------------------------------------------------------------------------- predict
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="sample futures of one image with a checkpoint and write them as a GIF with flow colour maps",
        description="Sample futures of an image (a PNG/JPEG file, or a frame of a dataset) and write a GIF: one row "
        "per sample, the predicted frames on the left and their flow colour maps on the right.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="model checkpoint (NAME.json)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", metavar="FILE", help="image file; resized to the model's input size")
    src.add_argument("--data", metavar="DIR", help="dataset folder (with --episode and --frame)")
    p.add_argument("--episode", type=int, default=0, help="episode of --data (default 0)")
    p.add_argument("--frame", type=int, default=0, help="frame of that episode (default 0)")
    p.add_argument(
        "--condition",
        default=None,
        metavar="X,Y,Z",
        help="eta, the end-effector target in metres (default: none; with --data: the episode's true one)",
    )
    p.add_argument("--samples", type=int, default=4, help="samples (default 4)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--out", required=True, metavar="GIF", help="GIF to write")
    p.add_argument("--scale", type=int, default=3, help="upscaling factor (default 3)")
    p.set_defaults(func=_cli_predict)


def _cli_predict(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from imagine_ros.predictor import Predictor
    from imagine_ros.viz import flow_to_rgb, video_grid, write_gif

    pred = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    s = pred.image_size
    condition = None
    if args.image:
        img = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if img is None:
            raise ConfigError(f"cannot read an image from {args.image}")
        image = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (s, s), interpolation=cv2.INTER_AREA)
    else:
        from imagine_ros.constants import EE_POS, FRAMES
        from imagine_ros.sim.storage import EpisodeStore

        store = EpisodeStore(args.data)
        last = args.frame + pred.horizon
        if not 0 <= args.frame or last >= store.frames_per_episode:
            raise ConfigError(
                f"--frame must be in [0, {store.frames_per_episode - 1 - pred.horizon}] for horizon {pred.horizon}"
            )
        image = cv2.resize(
            store.read(args.episode, FRAMES, args.frame, args.frame + 1)[0], (s, s), interpolation=cv2.INTER_AREA
        )
        if pred.condition_dim:
            condition = store.read(args.episode, EE_POS, last, last + 1)
    if args.condition is not None:
        try:
            condition = np.array([[float(v) for v in args.condition.split(",")]], np.float32)
        except ValueError:
            raise ConfigError(f"--condition must be numbers separated by commas, got {args.condition!r}") from None
    if condition is not None and not pred.condition_dim:
        condition = None
    out = pred.predict(image[None], condition, num_samples=args.samples, seed=args.seed)
    frames = np.concatenate([np.broadcast_to(image, (args.samples, 1, s, s, 3)), out.frames[0]], 1)
    flows = flow_to_rgb(np.concatenate([np.zeros((args.samples, 1, s, s, 2), np.float32), out.flows[0]], 1))
    grid = video_grid(np.stack([frames, flows], 1))
    write_gif(args.out, grid, fps=4, scale=args.scale)
    print(
        f"{args.out}: {args.samples} samples x {pred.horizon} frames of {pred.method} ({out.flow_source} flows), "
        f"{out.timing['total'] * 1000:.0f} ms"
    )
    return 0


# ------------------------------------------------------------------------------------------------------- shapes-kl
def _add_shapes_kl(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shapes-kl",
        help="reproduce Visual Dynamics' Shapes experiment: KL of predicted vs true displacement histograms",
        description="End to end: generate the Shapes dataset (unless --data is given), train visual_dynamics on it "
        "(unless --checkpoint is given; an interrupted training resumes), sample next frames for test images, and "
        "write the KL table beside the paper's numbers and a plot of the histograms into OUT.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (data/, run/, table.md, histograms.png)")
    p.add_argument("--data", metavar="DIR", default=None, help="existing Shapes dataset (default: OUT/data)")
    p.add_argument("--checkpoint", metavar="CKPT", default=None, help="trained model (default: train into OUT/run)")
    p.add_argument("--image-size", type=int, default=32, help="Shapes image side when generating (default 32)")
    p.add_argument("--dataset-episodes", type=int, default=6000, help="Shapes episodes to generate (default 6000)")
    p.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch (default 32)")
    p.add_argument("--config", default="small", choices=["tiny", "small", "paper"], help="model preset (default small)")
    p.add_argument("--episodes", type=int, default=200, help="test images to evaluate (default 200)")
    p.add_argument("--samples", type=int, default=20, help="samples per test image (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="processes for data generation (default 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cli_shapes_kl)


def _cli_shapes_kl(args: argparse.Namespace) -> int:
    from imagine_ros.predictor import Predictor
    from imagine_ros.sim.shapes import ShapesConfig, collect_shapes
    from imagine_ros.training import shapes_kl
    from imagine_ros.training.evaluate import copy_last_like
    from imagine_ros.training.trainer import TrainConfig, train

    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not args.data:
        collect_shapes(
            data,
            args.dataset_episodes,
            workers=args.workers,
            seed=args.seed,
            config=ShapesConfig(image_size=args.image_size),
            progress=not args.no_progress,
        )
    checkpoint = args.checkpoint
    if checkpoint is None:
        from imagine_ros.sim.storage import EpisodeStore

        size = EpisodeStore(data).image_shape[0]
        run = out / "run"
        cfg = TrainConfig(
            method="visual_dynamics",
            data=str(data),
            out=str(run),
            preset=args.config,
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
            overrides={"image_size": size, "pyramid_top": size, "horizon": 1, "condition_dim": 0},
            val_every=max(1, args.steps // 5),
            ckpt_every=100,
        )
        if not (run / "model.json").exists() or json.loads((run / "model.json").read_text())["step"] < args.steps:
            train(cfg, resume=(run / "config.json").exists(), command=["imagine-ros", *args.argv])
        checkpoint = run / "model.json"
    ours = Predictor.from_checkpoint(checkpoint, device=args.device)
    predictors = {"visual_dynamics (ours)": ours, "copy_last": copy_last_like(ours)}
    result = shapes_kl.run(
        predictors, data, "test", args.episodes, args.samples, args.seed, progress=not args.no_progress
    )
    shapes_kl.write(result, out)
    print(shapes_kl.table(result))
    print(f"written to {out}/table.md, {out}/kl.json and {out}/histograms.png")
    return 0


# ---------------------------------------------------------------------------------------------------------- serving
def _serving_common(p: argparse.ArgumentParser, worker: bool) -> None:
    """Heartbeat and logging flags shared by ``broker``, ``serve`` and ``cluster``."""
    p.add_argument("--heartbeat", type=float, default=2.5, metavar="S", help="heartbeat interval in seconds (2.5)")
    p.add_argument("--liveness", type=int, default=3, help="missed heartbeats before a peer counts as dead (default 3)")
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="logging level (info)"
    )
    if worker:
        p.add_argument("--max-batch", type=int, default=8, help="images per forward pass, batched (default 8)")
        p.add_argument(
            "--max-wait-ms", type=float, default=2.0, help="longest wait for more requests to batch (default 2)"
        )
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _serving_logging(args: argparse.Namespace) -> None:
    import logging

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def _sigterm_is_interrupt() -> None:
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _add_broker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="run an MDP/0.2 (ZeroMQ Majordomo) broker between prediction clients and model workers",
        description="Route requests from clients to the workers of each service (model name), with heartbeats, "
        "worker expiry, request expiry and optional CURVE encryption/authentication. Runs until Ctrl-C/SIGTERM.",
    )
    p.add_argument("--bind", default="tcp://*:5555", help="ZeroMQ endpoint to bind (default tcp://*:5555)")
    p.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a request may wait for a worker before an 'expired' error reply (default 30)",
    )
    p.add_argument("--worker-credit", type=int, default=16, help="requests one worker may hold at once (default 16)")
    p.add_argument(
        "--max-message-size",
        type=int,
        default=1 << 30,
        metavar="BYTES",
        help="largest inbound frame; larger ones drop the sender (default 1 GiB; -1 no limit)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=64 << 20,
        metavar="BYTES",
        help="largest request body (all its frames); larger ones get a 'too_large' error; keep it at most the "
        "workers' --max-message-size (default 64 MiB, the workers' default)",
    )
    p.add_argument(
        "--max-queued-bytes",
        type=int,
        default=1 << 30,
        metavar="BYTES",
        help="request bodies the broker may hold, queued or at workers; beyond, 'overloaded' errors (default 1 GiB)",
    )
    p.add_argument(
        "--worker-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="longest a worker may hold a request (one inference, queueing in the worker included); then it is "
        "queued again once for another worker, or answered with an 'expired' error (default 120)",
    )
    p.add_argument(
        "--curve-secret", metavar="FILE", help="enable CURVE: the broker's NAME.key_secret (imagine-ros keygen)"
    )
    p.add_argument(
        "--curve-allow",
        metavar="DIR",
        help="with --curve-secret: folder of allowed client/worker public keys (*.key); default: any key",
    )
    p.add_argument(
        "--curve-workers",
        metavar="DIR",
        help="with --curve-secret: folder of the public keys (*.key) that may register as workers (they are "
        "admitted as clients too); default: any admitted key may",
    )
    _serving_common(p, worker=False)
    p.set_defaults(func=_cli_broker)


def _cli_broker(args: argparse.Namespace) -> int:
    import zmq

    from imagine_ros.serving.broker import Broker
    from imagine_ros.serving.curve import CurveServerKeys

    _serving_logging(args)
    if (args.curve_allow or args.curve_workers) and not args.curve_secret:
        raise ConfigError("--curve-allow and --curve-workers need --curve-secret")
    curve = (
        CurveServerKeys.from_files(args.curve_secret, args.curve_allow, args.curve_workers)
        if args.curve_secret
        else None
    )
    try:
        broker = Broker(
            args.bind,
            heartbeat_interval=args.heartbeat,
            liveness=args.liveness,
            request_timeout=args.request_timeout,
            worker_credit=args.worker_credit,
            max_message_size=args.max_message_size,
            max_request_bytes=args.max_request_bytes,
            max_queued_bytes=args.max_queued_bytes,
            worker_timeout=args.worker_timeout,
            curve=curve,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _sigterm_is_interrupt()
    print(f"imagine-ros broker on {args.bind}{' (CURVE)' if curve else ''}", flush=True)
    try:
        broker.run()
    except zmq.ZMQError as e:
        raise ConfigError(f"cannot bind {args.bind}: {e}") from None
    except KeyboardInterrupt:
        pass
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a checkpoint as an MDP/0.2 worker of a broker (batching, heartbeats, reconnects)",
        description="Load a checkpoint and answer prediction requests routed by the broker; the service name is "
        "the method name unless --service is given. Runs until Ctrl-C/SIGTERM.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="model checkpoint (NAME.json)")
    _flow_net_arg(p)
    p.add_argument("--broker", default="tcp://127.0.0.1:5555", help="broker endpoint (default tcp://127.0.0.1:5555)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 (default auto)")
    p.add_argument("--service", default=None, help="service name (default: the checkpoint's method name)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=1 << 24,
        help="budget of output pixels B*N*T*H*W per request and per batched forward pass (default 16777216)",
    )
    p.add_argument(
        "--max-message-size",
        type=int,
        default=64 << 20,
        metavar="BYTES",
        help="largest inbound request frame; at least --max-request-bytes (default 64 MiB; -1 no limit)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=64 << 20,
        metavar="BYTES",
        help="largest request body (all its frames); larger ones get a 'too_large' error (default 64 MiB)",
    )
    p.add_argument("--curve-secret", metavar="FILE", help="enable CURVE: this worker's NAME.key_secret")
    p.add_argument("--curve-server-key", metavar="FILE", help="with --curve-secret: the broker's public NAME.key")
    _serving_common(p, worker=True)
    p.set_defaults(func=_cli_serve)


def _curve_client(args: argparse.Namespace):
    from imagine_ros.serving.curve import CurveClientKeys

    if bool(args.curve_secret) != bool(args.curve_server_key):
        raise ConfigError("CURVE needs both --curve-secret and --curve-server-key")
    return CurveClientKeys.from_files(args.curve_secret, args.curve_server_key) if args.curve_secret else None


def _cli_serve(args: argparse.Namespace) -> int:
    import torch

    from imagine_ros.predictor import Predictor
    from imagine_ros.serving.worker import Worker

    _serving_logging(args)
    curve = _curve_client(args)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, flow_net=args.flow_net)
    try:
        worker = Worker(
            predictor,
            args.broker,
            service=args.service,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_pixels=args.max_pixels,
            heartbeat_interval=args.heartbeat,
            liveness=args.liveness,
            max_message_size=args.max_message_size,
            max_request_bytes=args.max_request_bytes,
            curve=curve,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _sigterm_is_interrupt()
    print(
        f"imagine-ros serve: {predictor.method} as {worker.service!r} on {predictor.device} via {args.broker}",
        flush=True,
    )
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    return 0


def _add_keygen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keygen",
        help="write a CURVE key pair (NAME.key public, NAME.key_secret secret) for the broker, workers or clients",
    )
    p.add_argument("--name", required=True, help="key name, e.g. broker, gpu1, robot")
    p.add_argument("--dir", default="keys", metavar="DIR", help="folder to write the key files into (default keys)")
    p.set_defaults(func=_cli_keygen)


def _cli_keygen(args: argparse.Namespace) -> int:
    from imagine_ros.serving.curve import generate_keys

    public, secret = generate_keys(args.dir, args.name)
    print(f"public key {public} (copy it to peers), secret key {secret} (keep it private)")
    return 0


def _flow_net_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--flow-net",
        default=None,
        metavar="NET",
        help="flow network (NAME.json, imagine-ros flownet) that gives a frame-only model's flows in place of DIS "
        "(default: DIS; ignored by models with native flows)",
    )


def _add_cluster(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="run a broker and N workers of one checkpoint on this machine (subprocesses) until Ctrl-C",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="model checkpoint (NAME.json)")
    _flow_net_arg(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--device", default="auto", help="device of every worker: auto, cpu, cuda, cuda:1 (default auto)")
    p.add_argument("--host", default="*", help="interface the broker binds: * = all, 127.0.0.1 = local (default *)")
    p.add_argument("--port", type=int, default=5555, help="broker port (default 5555)")
    p.add_argument("--service", default=None, help="service name (default: the checkpoint's method name)")
    p.add_argument("--request-timeout", type=float, default=30.0, metavar="S", help="see 'broker' (default 30)")
    p.add_argument("--log-dir", default=None, metavar="DIR", help="process logs (default: a temporary folder)")
    _serving_common(p, worker=True)
    p.set_defaults(func=_cli_cluster)


def _cli_cluster(args: argparse.Namespace) -> int:
    import time

    from imagine_ros.serving.cluster import LocalCluster

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    _sigterm_is_interrupt()
    cluster = LocalCluster(
        args.checkpoint,
        workers=args.workers,
        device=args.device,
        host=args.host,
        port=args.port,
        service=args.service,
        max_batch=args.max_batch,
        heartbeat_interval=args.heartbeat,
        liveness=args.liveness,
        request_timeout=args.request_timeout,
        max_wait_ms=args.max_wait_ms,
        threads=args.threads,
        log_dir=args.log_dir,
        flow_net=args.flow_net,
    )
    try:
        with cluster:
            print(
                f"imagine-ros cluster: broker on {cluster.bind}, {args.workers} worker(s) of {cluster.service!r}; "
                f"clients use {cluster.endpoint} (logs in {cluster.log_dir}); Ctrl-C stops",
                flush=True,
            )
            while True:
                time.sleep(1.0)
                cluster._check_alive()
    except KeyboardInterrupt:
        pass
    return 0


# -------------------------------------------------------------------------------------------------------- flow-eval
def _add_flow_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flow-eval",
        help="end-point error of predicted forward flows against the simulator's true object motion",
        description="Project each object's recorded position (object_pos, meta.json camera) into the input and the "
        "future frames, read each checkpoint's forward flows at the object's centre and report the EPE in pixels "
        "(best of N samples and mean over samples; all objects and the moving ones), beside the zero-flow floor.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="pushing dataset folder (with object_pos)")
    p.add_argument(
        "--checkpoint", action="append", required=True, metavar="CKPT", help="model checkpoint (NAME.json); repeatable"
    )
    p.add_argument("--split", default="val", choices=["train", "val", "test", "all"], help="split (default val)")
    p.add_argument("--clips", type=int, default=64, help="clips to evaluate (default 64)")
    p.add_argument("--samples", type=int, default=8, help="N samples per clip (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clip choice and of sampling (default 0)")
    p.add_argument("--moving-px", type=float, default=1.0, help="'moving' = true motion reaches this many px (1)")
    p.add_argument(
        "--dense",
        choices=["auto", "on", "off"],
        default="auto",
        help="dense EPE and push-outcome tables against ground truth (auto: when the dataset has ground truth)",
    )
    p.add_argument("--dense-moving-px", type=float, default=0.5, help="dense: a pixel moves from this many px (0.5)")
    p.add_argument("--no-copy-last", action="store_true", help="dense: leave out the copy_last row")
    p.add_argument(
        "--flow-net",
        default=None,
        metavar="PATH",
        help="flow network (imagine-ros flownet's OUT/flownet.json) for checkpoints without native flows, "
        "instead of DIS",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default auto)")
    p.add_argument("--out", metavar="DIR", default=None, help="also write flow_epe.json and flow_epe.md here")
    p.add_argument(
        "--gif", metavar="DIR", default=None, help="also write DIR/NAME_flows.gif: samples, flow colours, masks"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli_flow_eval)


def _cli_flow_eval(args: argparse.Namespace) -> int:
    from imagine_ros.predictor import Predictor
    from imagine_ros.sim.storage import EpisodeStore
    from imagine_ros.training.clips import ground_truth_of
    from imagine_ros.training.evaluate import copy_last_like
    from imagine_ros.training.flow_eval import (
        dense_eval,
        dense_table,
        flow_epe,
        table,
        write_dense_results,
        write_results,
    )

    dense = args.dense == "on"
    if args.dense == "auto":
        try:
            ground_truth_of(EpisodeStore(args.data))
            dense = True
        except DatasetError:
            dense = False
    results, dense_results = [], []
    predictors = []
    for c in args.checkpoint:
        name = Path(c).parent.name if Path(c).stem == "model" else Path(c).stem
        predictors.append((name, Predictor.from_checkpoint(c, device=args.device, flow_net=args.flow_net)))
    for name, pred in predictors:
        results.append(
            flow_epe(
                pred,
                args.data,
                args.split,
                args.clips,
                args.samples,
                args.seed,
                name=name,
                moving_px=args.moving_px,
                progress=not args.no_progress,
                gif=Path(args.gif) / f"{name}_flows.gif" if args.gif else None,
            )
        )
    print(table(results, args.split, args.data))
    if dense:
        rows = predictors + ([] if args.no_copy_last else [("copy_last", copy_last_like(predictors[0][1]))])
        for name, pred in rows:
            dense_results.append(
                dense_eval(
                    pred,
                    args.data,
                    args.split,
                    args.clips,
                    args.samples,
                    args.seed,
                    name=name,
                    moving_px=args.dense_moving_px,
                    progress=not args.no_progress,
                )
            )
        print()
        print(dense_table(dense_results, args.split, args.data))
    if args.out:
        print(f"written to {write_results(results, args.out, args.split, args.data)}")
        if dense_results:
            write_dense_results(dense_results, args.out, args.split, args.data)
    return 0


# ------------------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    from imagine_ros.lerobot_io import register_cli as register_lerobot
    from imagine_ros.planning.demo import register_cli as register_demo
    from imagine_ros.planning.runner import register_cli as register_plan_eval
    from imagine_ros.rosbag_export import register_cli as register_export_bag
    from imagine_ros.rosbag_import import register_cli as register_import_bag
    from imagine_ros.sim.shapes import register_cli as register_shapes
    from imagine_ros.training.cinn_transfer import register_cli as register_cinn_transfer
    from imagine_ros.training.controllability import register_cli as register_controllability

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
    register_import_bag(sub)
    register_lerobot(sub)
    _add_train(sub)
    _add_flownet(sub)
    _add_evaluate(sub)
    _add_flow_eval(sub)
    _add_predict(sub)
    _add_shapes_kl(sub)
    _add_broker(sub)
    _add_serve(sub)
    _add_keygen(sub)
    _add_cluster(sub)
    register_cinn_transfer(sub)
    register_controllability(sub)
    register_plan_eval(sub)
    register_demo(sub)
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
