"""Datasets: ``collect``, ``shapes``, ``gif``, ``info``, ``export-lerobot``, ``import-lerobot``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imagine_ros.cli._common import add_common, count, env_option
from imagine_ros.cli._dataclass_flags import add_dataclass_flags, dataclass_from_args
from imagine_ros.errors import ConfigError


# ---------------------------------------------------------------------------------------------------------- collect
def add_collect(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Collect pushing episodes (scripted random policy) into --out DIR (created; resumed if it exists): episode i "
        "uses a seed derived from (--seed, i). Resumes a killed run: run the same command again. Refuses a folder "
        "that holds other settings."
    )
    add_common(p, "out", "seed", "no-progress", required=["out"])
    p.add_argument("--episodes", required=True, type=count, help="number of episodes (at most 1,000,000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--frames", type=count, default=30, help="frames per episode (default 30, as BAIR)")
    p.add_argument("--shard-size", type=count, default=16, help="episodes per shard file (default 16)")
    p.add_argument("--image-size", type=int, default=None, help="square image side in pixels (default 64)")
    p.add_argument("--num-objects", type=int, default=None, help="objects in the bin (default 3)")
    p.add_argument(
        "--env-opt",
        type=env_option,
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
        type=env_option,
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


def run_collect(args: argparse.Namespace) -> int:
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
    out = Path(args.out)
    report = collect_push(
        out,
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
    store = EpisodeStore(out)
    rate = report.frames_written / report.seconds if report.seconds > 0 and report.frames_written else 0.0
    clips = ""
    if args.policy != "bair":
        frac, n = clip_moved_fraction(store)
        clips = f"; in {frac:.0%} of its {n} planned clips"
    print(
        f"{out}: {len(store)} episodes x {store.frames_per_episode} frames "
        f"({len(report.shards_written)} shards written, {len(report.shards_skipped)} already complete"
        f"{f', {len(report.shards_redone)} found corrupt and collected again' if report.shards_redone else ''}; "
        f"{rate:.0f} frames/s, {report.seconds:.0f} s); objects moved > 2 cm in {moved_fraction(store):.0%} of "
        f"episodes{clips}"
    )
    return 0


# ----------------------------------------------------------------------------------------------------------- shapes
def add_shapes(p: argparse.ArgumentParser) -> None:
    from imagine_ros.sim.shapes import ShapesConfig  # no torch, no pybullet: its defaults are the flags' defaults

    d = ShapesConfig()
    p.description = (
        "Generate the synthetic Shapes dataset of Visual Dynamics (circles move vertically, squares horizontally, "
        "triangles diagonally with the circles) as HDF5 shards into --out DIR (created; resumed if it exists); "
        "rerun the same command to resume."
    )
    add_common(p, "out", "seed", "no-progress", required=["out"])
    p.add_argument("--episodes", required=True, type=int, help="number of episodes")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--shard-size", type=int, default=64, help="episodes per shard file (default 64)")
    p.add_argument("--image-size", type=int, default=d.image_size, help=f"image side in px (default {d.image_size})")
    p.add_argument("--frames", type=int, default=d.frames, help=f"frames per episode (default {d.frames})")
    p.add_argument(
        "--max-shapes", type=int, default=d.max_shapes, help=f"shapes per image at most (default {d.max_shapes})"
    )
    p.add_argument(
        "--min-shapes",
        type=int,
        default=None,
        help=f"shapes per image at least (default min({d.min_shapes}, --max-shapes))",
    )
    p.add_argument(
        "--max-speed", type=float, default=d.max_speed, help=f"speed limit in px/frame (default {d.max_speed:g})"
    )
    p.add_argument(
        "--supersample",
        type=int,
        default=d.supersample,
        help="draw this many times larger and average down, so that edges show sub-pixel positions "
        f"(default {d.supersample} = off; shapes-kl uses 8)",
    )


def run_shapes(args: argparse.Namespace) -> int:
    from imagine_ros.sim.shapes import ShapesConfig, collect_shapes

    default = ShapesConfig()
    min_shapes = min(default.min_shapes, args.max_shapes) if args.min_shapes is None else args.min_shapes
    cfg = ShapesConfig(
        image_size=args.image_size,
        frames=args.frames,
        min_shapes=min_shapes,
        max_shapes=args.max_shapes,
        max_speed=args.max_speed,
        supersample=args.supersample,
    )
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    report = collect_shapes(
        Path(args.out),
        args.episodes,
        workers=args.workers,
        seed=args.seed,
        shard_size=args.shard_size,
        config=cfg,
        progress=not args.no_progress,
    )
    print(
        f"shapes: {report.root}: {args.episodes} episodes x {cfg.frames} frames of {cfg.image_size}x{cfg.image_size} "
        f"in {report.shards_total} shards ({len(report.shards_written)} written, {len(report.shards_skipped)} "
        f"already there, {report.frames_written} frames) in {report.seconds:.1f} s"
    )
    return 0


# -------------------------------------------------------------------------------------------------------------- gif
def add_gif(p: argparse.ArgumentParser) -> None:
    p.description = "Write an animated GIF (--out FILE) of the first episodes of a dataset split: one tile per episode."
    add_common(p, "data", "out", "split", required=["data", "out"], metavar={"out": "FILE"}, split="all")
    p.add_argument("--episodes", type=int, default=8, help="how many episodes (the first of the split; default 8)")
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


def run_gif(args: argparse.Namespace) -> int:
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
    write_gif(Path(args.out), grid, fps=fps, scale=args.scale)
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
    write_gif(Path(args.out), grid, fps=fps, scale=args.scale)
    print(
        f"{args.out}: {len(indices)} episodes (rows: frames, ground-truth flow from each {window}-frame window's "
        f"start, visibility), {grid.shape[0]} frames"
    )
    return 0


# ------------------------------------------------------------------------------------------------------------- info
def add_info(p: argparse.ArgumentParser) -> None:
    add_common(p, "data", required=["data"])
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_info(args: argparse.Namespace) -> int:
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


# ---------------------------------------------------------------------------------------------------------- lerobot
def add_export_lerobot(p: argparse.ArgumentParser) -> None:
    from imagine_ros.lerobot_io import ExportConfig  # numpy only

    p.description = (
        "Write the episodes of --data DIR as a LeRobot v3.0 folder --out DIR (must not exist or be empty): frames as "
        "MP4 video, the end effector as observation.state, actions, object positions and η where the dataset has "
        "them; splits as episode ranges."
    )
    add_common(p, "data", "out", "no-progress", required=["data", "out"])
    add_dataclass_flags(p, ExportConfig)


def run_export_lerobot(args: argparse.Namespace) -> int:
    from imagine_ros.lerobot_io import CODEBASE_VERSION, ExportConfig, export_lerobot

    s = export_lerobot(args.data, args.out, dataclass_from_args(ExportConfig, args), progress=not args.no_progress)
    print(
        f"wrote {s['out']}: LeRobot {CODEBASE_VERSION}, {s['episodes']} episodes, {s['frames']} frames at "
        f"{s['fps']:.4g} fps in {s['files']} file(s); features {', '.join(s['features'])}; splits "
        f"{s['splits']}; task {s['task']!r}\n{s['frames_per_s']:.0f} frames/s, {s['seconds']:.1f} s"
    )
    return 0


def add_import_lerobot(p: argparse.ArgumentParser) -> None:
    from imagine_ros.lerobot_io import ACTION, STATE, ImportConfig  # numpy only

    d = ImportConfig()
    p.description = (
        "Read a LeRobot v3.x folder (parquet + MP4 or images) and write a dataset folder --out DIR (must not exist "
        "or be empty) that train, evaluate, gif and info read: the frames of --image-key brought to --image-size like "
        "the prediction node does, the end effector from --ee-columns of --state-key, episodes cut into "
        "--episode-frames; --seed draws the split."
    )
    p.add_argument("--src", required=True, metavar="DIR", help="LeRobot dataset folder (with meta/info.json)")
    add_common(p, "out", "seed", "no-progress", required=["out"], seed=d.seed)
    p.add_argument("--image-key", default=None, help="image or video feature (default: the only one there is)")
    p.add_argument("--state-key", default=d.state_key, help=f"feature holding the end effector (default {STATE})")
    p.add_argument(
        "--ee-columns",
        nargs=3,
        default=list(d.ee_columns),
        metavar=("X", "Y", "Z"),
        help="entries of --state-key that are the end effector's x y z: indices or names (default 0 1 2)",
    )
    p.add_argument(
        "--action-key",
        default=d.action_key,
        help=f"feature of the actions (default {ACTION}; missing, or 'none': the end effector's displacement)",
    )
    p.add_argument(
        "--episode-frames",
        type=int,
        default=None,
        metavar="N",
        help="frames per episode: each LeRobot episode is cut into pieces of N, the rest dropped (default: the "
        "shortest episode's length)",
    )
    p.add_argument("--image-size", type=int, default=d.image_size, metavar="PX", help="square frame side (default 64)")
    p.add_argument(
        "--resize",
        default=d.resize,
        choices=["crop", "stretch", "exact"],
        help="image -> frame, as the prediction node: centred square crop, stretch, or exact size (default crop)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="episodes for validation when info.json's splits have no val/test ranges (default 0.1)",
    )
    p.add_argument("--test-fraction", type=float, default=d.test_fraction, help="episodes for testing (default 0.1)")
    p.add_argument("--shard-size", type=int, default=d.shard_size, help="episodes per HDF5 shard (default 16)")


def run_import_lerobot(args: argparse.Namespace) -> int:
    from imagine_ros.lerobot_io import ImportConfig, import_lerobot

    cfg = ImportConfig(
        image_key=args.image_key,
        state_key=args.state_key,
        ee_columns=tuple(args.ee_columns),
        action_key=None if str(args.action_key).lower() == "none" else args.action_key,
        episode_frames=args.episode_frames,
        image_size=args.image_size,
        resize=args.resize,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        shard_size=args.shard_size,
    )
    s = import_lerobot(args.src, args.out, cfg, progress=not args.no_progress)
    src = s["source_image_size"]
    print(
        f"wrote {s['out']}: {s['episodes']} episodes x {s['frames_per_episode']} frames at {s['fps']:.4g} fps from "
        f"{s['source_episodes']} LeRobot episodes ({s['splits']['train']}/{s['splits']['val']}/{s['splits']['test']} "
        f"train/val/test, splits from {s['splits_from']}); {s['image_key']} {src[1]}x{src[0]} -> "
        f"{s['image_size'][1]}x{s['image_size'][0]}; end effector {s['ee']}; actions: {s['actions']}; "
        f"η columns: {'yes' if s['eta'] else 'no'}\n"
        f"dropped: {s['dropped_frames']} frames at episode ends (fewer than --episode-frames)\n"
        f"{s['frames_per_s']:.0f} frames/s, {s['seconds']:.1f} s"
    )
    return 0
