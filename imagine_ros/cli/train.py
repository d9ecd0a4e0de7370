"""Training: ``train`` (every method; flags made from :class:`~imagine_ros.training.config.TrainConfig`),
``flownet``, ``train-detector``."""

from __future__ import annotations

import argparse

from imagine_ros.cli._common import add_common
from imagine_ros.cli._dataclass_flags import add_dataclass_flags, dataclass_from_args
from imagine_ros.constants import FLOWNET_PRESETS
from imagine_ros.training.config import TrainConfig

#: TrainConfig fields the command line does not offer (betas ... keep_checkpoints) or takes from the common flags
TRAIN_SKIP = ("data", "out", "seed", "device", "progress", "betas", "weight_decay", "stride", "gif_clips")
TRAIN_SKIP += ("keep_checkpoints",)


# ------------------------------------------------------------------------------------------------------------ train
def add_train(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train --method on the training split of --data DIR into the run folder --out RUN (created; must be new "
        "unless --resume): checkpoints, TensorBoard, sample GIFs, metrics. --seed sets the weights and the data "
        "order. --resume continues a killed run from its newest checkpoint with the same step count and data order."
    )
    add_common(
        p,
        "data",
        "out",
        "seed",
        "device",
        "no-progress",
        required=["data", "out"],
        metavar={"out": "RUN"},
        seed=_default(TrainConfig, "seed"),
        device=_default(TrainConfig, "device"),
    )
    add_dataclass_flags(p, TrainConfig, skip=TRAIN_SKIP)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN from its newest checkpoint")


def _default(cls: type, name: str):
    return cls.__dataclass_fields__[name].default


def run_train(args: argparse.Namespace) -> int:
    from imagine_ros.training.trainer import train

    cfg = dataclass_from_args(TrainConfig, args)
    metrics = train(cfg, resume=args.resume, command=["imagine-ros", *args.argv])
    shown = ", ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in metrics.items())
    print(
        f"{cfg.out}: trained {cfg.method} ({cfg.preset}) to step {cfg.steps}; model at {cfg.out}/model.json"
        + (f"; validation: {shown}" if shown else "")
    )
    return 0


# ---------------------------------------------------------------------------------------------------------- flownet
def add_flownet(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train a flow network on (frame s, frame s + t, true flow) pairs of the training split of --data DIR "
        "(recorded with ground truth) into --out OUT (created; must be new unless --resume: checkpoints, TensorBoard, "
        "OUT/flownet.json), then compare it with OpenCV DIS and zero flow on the validation split. --seed sets the "
        "weights and the pairs drawn. --resume continues a killed or finished run from its newest checkpoint "
        "(--steps may grow). Use the network with plan-eval/flow-eval --flow-net."
    )
    add_common(p, "data", "out", "seed", "device", "no-progress", required=["data", "out"], metavar={"out": "OUT"})
    p.add_argument("--steps", type=int, default=5000, help="optimizer steps in all (default 5000)")
    p.add_argument("--batch-size", type=int, default=32, help="frame pairs per step (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    p.add_argument("--config", default="small", choices=FLOWNET_PRESETS, help="network preset (default small)")
    p.add_argument("--horizon", type=int, default=10, help="pairs are up to this many frames apart (default 10)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (default 1)")
    p.add_argument(
        "--val-pairs", type=int, default=256, help="validation pairs of the val split, 0 = none (default 256)"
    )
    p.add_argument("--log-every", type=int, default=25, help="steps between TensorBoard scalars (default 25)")
    p.add_argument("--ckpt-every", type=int, default=250, help="steps between checkpoints (default 250)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its newest checkpoint")


def run_flownet(args: argparse.Namespace) -> int:
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


# --------------------------------------------------------------------------------------------------- train-detector
#: defaults of DetectorTrainConfig (evaluation/ee_detector.py imports torch); tests/cli/test_cli_package.py keeps
#: them equal
DETECTOR_DEFAULTS = {"steps": 800, "batch_size": 32, "lr": 3e-3, "seed": 0, "device": "auto", "eval_split": "test"}


def add_train_detector(p: argparse.ArgumentParser) -> None:
    d = DETECTOR_DEFAULTS
    p.description = (
        "Train a small CNN on the train split of a pushing dataset (--data DIR) to find the end effector "
        "(labels: ee_pos projected through the dataset's camera) and report its pixel error on --eval-split; "
        "--out is NAME.json, or a folder (writes FOLDER/ee_detector.json); --seed sets the weights, the order and "
        "the augmentation."
    )
    add_common(
        p,
        "data",
        "out",
        "seed",
        "device",
        "no-progress",
        required=["data", "out"],
        metavar={"out": "FILE_OR_DIR"},
        seed=d["seed"],
        device=d["device"],
    )
    p.add_argument("--steps", type=int, default=d["steps"], help="optimizer steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="frames per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate, cosine decay (default %(default)s)")
    p.add_argument(
        "--eval-split",
        default=d["eval_split"],
        choices=["val", "test"],
        help="split to report the error on (default %(default)s)",
    )
    p.add_argument("--no-augment", action="store_true", help="no blur/noise/colour augmentation")


def run_train_detector(args: argparse.Namespace) -> int:
    from imagine_ros.evaluation.ee_detector import DetectorTrainConfig, train_detector

    cfg = DetectorTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        eval_split=args.eval_split,
        augment=not args.no_augment,
    )
    _, report = train_detector(
        args.data, args.out, cfg, progress=not args.no_progress, command=["imagine-ros", *args.argv]
    )
    e, b = report.eval_error, report.baseline_error
    print(
        f"{report.path}: {report.steps} steps in {report.seconds:.0f} s; pixel error on {e['n']} {report.eval_split} "
        f"frames: median {e['median']:.2f}, p90 {e['p90']:.2f}, mean {e['mean']:.2f} px "
        f"(constant guess: median {b['median']:.2f} px; train frames median {report.train_error['median']:.2f} px)"
    )
    return 0
