"""Evaluation and sampling: ``evaluate``, ``flow-eval``, ``predict``, ``shapes-kl``, ``controllability``,
``transfer``, ``eta-sweep``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imagine_ros.cli._common import add_common, checkpoint_name
from imagine_ros.errors import ConfigError, DatasetError


def _predictors(checkpoints: list[str], device: str, flow_net: str | None = None) -> list[tuple[str, object]]:
    from imagine_ros.predictor import Predictor

    return [(checkpoint_name(c), Predictor.from_checkpoint(c, device=device, flow_net=flow_net)) for c in checkpoints]


def _copy_last(predictors: list[tuple[str, object]]) -> list[tuple[str, object]]:
    from imagine_ros.evaluation.evaluate import copy_last_like

    return [("copy_last", copy_last_like(predictors[0][1]))]


# --------------------------------------------------------------------------------------------------------- evaluate
def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Evaluate each checkpoint on the same fixed clips of a split and print a table; copy_last at the first "
        "checkpoint's size and horizon is added as the floor. --seed draws the clips and the samples; with "
        "--out DIR, also writes results.json and table.md into DIR."
    )
    add_common(
        p, "data", "checkpoints", "split", "seed", "device", "out", "no-progress", required=["data", "checkpoints"]
    )
    p.add_argument("--clips", type=int, default=64, help="clips to evaluate (default 64)")
    p.add_argument("--samples", type=int, default=8, help="N of PSNR@N / SSIM@N (default 8)")
    p.add_argument("--no-copy-last", action="store_true", help="leave out the copy_last floor")


def run_evaluate(args: argparse.Namespace) -> int:
    from imagine_ros.evaluation.evaluate import evaluate, table, write_results

    predictors = _predictors(args.checkpoint, args.device)
    if not args.no_copy_last:
        predictors += _copy_last(predictors)
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


# -------------------------------------------------------------------------------------------------------- flow-eval
def add_flow_eval(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Project each object's recorded position (object_pos, meta.json camera) into the input and the future "
        "frames, read each checkpoint's forward flows at the object's centre and report the EPE in pixels (best of "
        "N samples and mean over samples; all objects and the moving ones), beside the zero-flow floor. --data is a "
        "pushing dataset (with object_pos); --seed draws the clips and the samples; with --out DIR, also writes "
        "flow_epe.json and flow_epe.md into DIR."
    )
    add_common(
        p, "data", "checkpoints", "split", "seed", "device", "out", "no-progress", required=["data", "checkpoints"]
    )
    p.add_argument("--clips", type=int, default=64, help="clips to evaluate (default 64)")
    p.add_argument("--samples", type=int, default=8, help="N samples per clip (default 8)")
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
        "--dense-shuffled-eta",
        action="store_true",
        help="dense: also score each conditioned checkpoint with another clip's eta (same seeds): how much its flows "
        "follow eta",
    )
    add_common(p, "flow-net")
    p.add_argument(
        "--gif", metavar="DIR", default=None, help="also write DIR/NAME_flows.gif: samples, flow colours, masks"
    )


def run_flow_eval(args: argparse.Namespace) -> int:
    from imagine_ros.evaluation.flow_eval import (
        dense_eval,
        dense_table,
        flow_epe,
        table,
        write_dense_results,
        write_results,
    )
    from imagine_ros.sim.storage import EpisodeStore
    from imagine_ros.training.clips import ground_truth_of

    dense = args.dense == "on"
    if args.dense == "auto":
        try:
            ground_truth_of(EpisodeStore(args.data))
            dense = True
        except DatasetError:
            dense = False
    predictors = _predictors(args.checkpoint, args.device, args.flow_net)
    results = [
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
        for name, pred in predictors
    ]
    print(table(results, args.split, args.data))
    dense_results = []
    if dense:
        runs = [
            (name, pred, False) for name, pred in predictors + ([] if args.no_copy_last else _copy_last(predictors))
        ]
        if args.dense_shuffled_eta:  # each conditioned checkpoint again, with another clip's eta
            runs += [(name, pred, True) for name, pred in predictors if pred.condition_dim]
        for name, pred, shuffle in runs:
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
                    shuffle_eta=shuffle,
                )
            )
        print()
        print(dense_table(dense_results, args.split, args.data))
    if args.out:
        print(f"written to {write_results(results, args.out, args.split, args.data)}")
        if dense_results:
            write_dense_results(dense_results, args.out, args.split, args.data)
    return 0


# ---------------------------------------------------------------------------------------------------------- predict
def add_predict(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Sample futures of an image (a PNG/JPEG file, or a frame of a dataset) and write a GIF (--out GIF): one row "
        "per sample, the predicted frames on the left and their flow colour maps on the right."
    )
    add_common(p, "checkpoint", "seed", "device", "out", required=["checkpoint", "out"], metavar={"out": "GIF"})
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", metavar="FILE", help="image file; resized to the model's input size")
    add_common(src, "data")
    p.add_argument("--episode", type=int, default=0, help="episode of --data (default 0)")
    p.add_argument("--frame", type=int, default=0, help="frame of that episode (default 0)")
    p.add_argument(
        "--condition",
        default=None,
        metavar="X,Y,Z",
        help="eta, the end-effector target in metres (default: none; with --data: the episode's true one)",
    )
    p.add_argument("--samples", type=int, default=4, help="samples (default 4)")
    p.add_argument("--scale", type=int, default=3, help="upscaling factor (default 3)")


def run_predict(args: argparse.Namespace) -> int:
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
        condition = _xyz(args.condition, "--condition")[None]
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


def _xyz(text: str, flag: str):
    """``X,Y,Z`` -> (3,) float32 array; anything else is a ConfigError naming ``flag``."""
    import numpy as np

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} must be numbers separated by commas, e.g. 0.5,0.1,0.2, got {text!r}") from None
    if len(values) != 3:
        raise ConfigError(f"each {flag} must have 3 numbers (x,y,z in metres, robot base frame), got {text!r}")
    return np.array(values, np.float32)


# ------------------------------------------------------------------------------------------------------- shapes-kl
def add_shapes_kl(p: argparse.ArgumentParser) -> None:
    p.description = (
        "End to end: generate the Shapes dataset (unless --data is given; default OUT/data), train visual_dynamics "
        "on it (unless --checkpoint is given; default: train into OUT/run, an interrupted training resumes), sample "
        "next frames for test images, and write the KL table beside the paper's numbers and a plot of the "
        "histograms into --out DIR (data/, run/, table.md, histograms.png)."
    )
    add_common(p, "out", "data", "checkpoint", "seed", "device", "no-progress", required=["out"])
    p.add_argument("--image-size", type=int, default=32, help="Shapes image side when generating (default 32)")
    p.add_argument("--dataset-episodes", type=int, default=6000, help="Shapes episodes to generate (default 6000)")
    p.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch (default 32)")
    p.add_argument("--config", default="small", choices=["tiny", "small", "paper"], help="model preset (default small)")
    p.add_argument("--episodes", type=int, default=200, help="test images to evaluate (default 200)")
    p.add_argument("--samples", type=int, default=20, help="samples per test image (default 20)")
    p.add_argument("--workers", type=int, default=2, help="processes for data generation (default 2)")
    p.add_argument(
        "--measure",
        default="frames",
        choices=["frames", "flow"],
        help="how displacements are measured: frames = template matching of each shape in the predicted frame "
        "(default), flow = the mean predicted flow over the shape's input pixels (the earlier measurement)",
    )


def run_shapes_kl(args: argparse.Namespace) -> int:
    from imagine_ros.evaluation import shapes_kl
    from imagine_ros.evaluation.evaluate import copy_last_like
    from imagine_ros.evaluation.shapes_kl import SHAPES_SUPERSAMPLE
    from imagine_ros.predictor import Predictor
    from imagine_ros.sim.shapes import ShapesConfig, collect_shapes
    from imagine_ros.training.trainer import TrainConfig, train

    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not args.data:
        collect_shapes(
            data,
            args.dataset_episodes,
            workers=args.workers,
            seed=args.seed,
            config=ShapesConfig(image_size=args.image_size, supersample=SHAPES_SUPERSAMPLE),
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
        predictors, data, "test", args.episodes, args.samples, args.seed, not args.no_progress, args.measure
    )
    shapes_kl.write(result, out)
    print(shapes_kl.table(result))
    print(f"written to {out}/table.md, {out}/kl.json and {out}/histograms.png")
    return 0


# ------------------------------------------------------------------------------------------------- controllability
def add_controllability(p: argparse.ArgumentParser) -> None:
    p.description = (
        "For fixed clips of a split of a pushing dataset, sample futures of each checkpoint conditioned on the true "
        "final end-effector position, on random reachable positions and on η shuffled across clips; detect the end "
        "effector in the last predicted frame and print its distance in pixels to η's projection. --seed draws the "
        "clips, random η, the shuffling and the samples; with --out DIR, also writes results.json and table.md into "
        "DIR."
    )
    add_common(
        p,
        "data",
        "checkpoints",
        "split",
        "seed",
        "device",
        "out",
        "no-progress",
        required=["data", "checkpoints"],
        split="test",
    )
    p.add_argument("--detector", required=True, metavar="D", help="detector (folder or NAME.json of train-detector)")
    p.add_argument("--clips", type=int, default=64, help="clips (default 64)")
    p.add_argument("--samples", type=int, default=4, help="futures sampled per clip and condition (default 4)")
    p.add_argument("--batch", type=int, default=8, help="clips per predict() call (default 8)")
    p.add_argument("--no-copy-last", action="store_true", help="leave out the copy_last floor")


def run_controllability(args: argparse.Namespace) -> int:
    from imagine_ros.evaluation.controllability import controllability, table, write_results
    from imagine_ros.evaluation.ee_detector import load_detector
    from imagine_ros.predictor import resolve_device

    if args.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {args.batch}")
    detector, det_meta = load_detector(args.detector, device=resolve_device(args.device))
    predictors = _predictors(args.checkpoint, args.device)
    if not args.no_copy_last:
        predictors += _copy_last(predictors)
    results = [
        controllability(
            pred,
            args.data,
            detector,
            args.split,
            args.clips,
            args.samples,
            args.seed,
            args.batch,
            name=name,
            progress=not args.no_progress,
        )[0]
        for name, pred in predictors
    ]
    print(table(results, args.split, args.data, det_meta))
    if args.out:
        where = write_results(results, args.out, args.split, args.data, det_meta, ["imagine-ros", *args.argv])
        print(f"written to {where}")
    return 0


# --------------------------------------------------------------------------------------------- transfer, eta-sweep
def add_transfer(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Encode the query clip's motion (nu = T(z; query x0, eta)) of a cinn checkpoint and decode it from the "
        "target clip's start frame. The GIF's rows (--out GIF): the query clip, the target clip's true future, the "
        "transferred video."
    )
    add_common(
        p,
        "checkpoint",
        "data",
        "device",
        "out",
        required=["checkpoint", "data", "out"],
        metavar={"out": "GIF"},
        device="cpu",
    )
    p.add_argument("--query-episode", type=int, required=True, help="episode whose motion is transferred")
    p.add_argument("--target-episode", type=int, required=True, help="episode whose start frame is animated")
    p.add_argument("--query-start", type=int, default=0, help="first frame of the query clip (default 0)")
    p.add_argument("--target-start", type=int, default=0, help="first frame of the target clip (default 0)")
    p.add_argument(
        "--target-eta",
        default="query",
        choices=["query", "target"],
        help="eta of the new video: where the query's arm ended (default) or the target clip's own",
    )
    p.add_argument("--length", type=int, default=None, help="generated frames (default: the model's horizon)")
    p.add_argument("--scale", type=int, default=3, help="upscaling factor (default 3)")


def run_transfer(args: argparse.Namespace) -> int:
    from imagine_ros.evaluation.cinn_transfer import transfer_episodes
    from imagine_ros.viz import video_grid, write_gif

    r = transfer_episodes(
        args.checkpoint,
        args.data,
        args.query_episode,
        args.target_episode,
        args.query_start,
        args.target_start,
        args.target_eta,
        args.length,
        args.device,
    )
    write_gif(args.out, video_grid(r.rows()[:, None]), fps=4, scale=args.scale)
    print(
        f"{args.out}: motion of episode {args.query_episode} applied to episode {args.target_episode} "
        f"({len(r.transferred) - 1} frames; rows: query, target truth, transferred)"
    )
    return 0


def add_eta_sweep(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Sample a conditioned method (cinn, imaginator, ...) from one dataset frame once per --eta (the same "
        "--seed for every row), and write the futures as a GIF (--out GIF), one row per eta, with a magenta cross "
        "where eta projects into the image. A push-direction model gets the direction from the start frame's end "
        "effector to eta."
    )
    add_common(p, "checkpoint", "data", "seed", "device", "out", required=["checkpoint", "data", "out"])
    p.add_argument("--episode", type=int, default=0, help="episode (default 0)")
    p.add_argument("--frame", type=int, default=0, help="start frame (default 0)")
    p.add_argument(
        "--eta",
        action="append",
        default=None,
        metavar="X,Y,Z",
        help="end-effector target in metres (repeatable; default: the episode's true one and 4 random ones)",
    )
    p.add_argument("--scale", type=int, default=3, help="upscaling factor (default 3)")


def run_eta_sweep(args: argparse.Namespace) -> int:
    import numpy as np

    from imagine_ros.evaluation.cinn_transfer import eta_sweep
    from imagine_ros.viz import video_grid, write_gif

    etas = np.stack([_xyz(e, "--eta") for e in args.eta]) if args.eta else None
    rows, etas = eta_sweep(args.checkpoint, args.data, args.episode, args.frame, etas, args.seed, args.device)
    write_gif(args.out, video_grid(rows[:, None]), fps=4, scale=args.scale)
    shown = "; ".join(",".join(f"{v:.3f}" for v in e) for e in etas)
    print(f"{args.out}: {len(etas)} rows (magenta cross = eta's projection), eta = {shown}")
    return 0
