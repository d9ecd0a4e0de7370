"""``imagine-ros``: the command line of imagine_ros (one subcommand per job; ``imagine-ros SUBCOMMAND --help``).

One module per group of commands (:mod:`.data`, :mod:`.ros`, :mod:`.train`, :mod:`.evaluate`, :mod:`.serve`,
:mod:`.plan`); in it, ``add_NAME(parser)`` adds a command's flags and ``run_NAME(args)`` runs it. The group modules
import only the standard library and light modules (no torch, no pybullet): the handlers import the domain code when
they run, and :func:`main` builds the flags of the one command it runs, so ``imagine-ros --help`` and
``imagine-ros broker --help`` start at once. :data:`COMMANDS` is the table of every command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Collection

from imagine_ros import __version__
from imagine_ros.errors import ImagineRosError

#: command -> ("module:run_NAME" that runs it, one-line help); the same module's add_NAME(parser) adds its flags
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": (
        "imagine_ros.cli.data:run_collect",
        "collect BAIR-style pushing episodes from the simulator into HDF5 shards",
    ),
    "shapes": ("imagine_ros.cli.data:run_shapes", "generate the synthetic Shapes dataset (Visual Dynamics)"),
    "gif": ("imagine_ros.cli.data:run_gif", "write an animated GIF of dataset episodes (a grid, one tile per episode)"),
    "info": ("imagine_ros.cli.data:run_info", "summarise a dataset folder (episodes, splits, camera, pushed fraction)"),
    "export-bag": (
        "imagine_ros.cli.ros:run_export_bag",
        "write a dataset as a ROS 2 bag (MCAP or sqlite3): camera images, end-effector and object positions",
    ),
    "import-bag": (
        "imagine_ros.cli.ros:run_import_bag",
        "turn a ROS 2 bag (MCAP or sqlite3) into a dataset folder: camera frames and end-effector track",
    ),
    "export-lerobot": (
        "imagine_ros.cli.data:run_export_lerobot",
        "write a dataset folder as a LeRobot v3.0 dataset (parquet + MP4, meta/info.json, stats, episodes)",
    ),
    "import-lerobot": (
        "imagine_ros.cli.data:run_import_lerobot",
        "turn a local LeRobot v3.x dataset into a dataset folder: one camera and the end-effector track",
    ),
    "train": (
        "imagine_ros.cli.train:run_train",
        "train a method on a dataset folder (one loop for all methods; torchrun for several GPUs/nodes)",
    ),
    "flownet": (
        "imagine_ros.cli.train:run_flownet",
        "train a small optical-flow network on a dataset's ground-truth flows (a learned stand-in for DIS)",
    ),
    "evaluate": (
        "imagine_ros.cli.evaluate:run_evaluate",
        "PSNR@N / SSIM@N / diversity of checkpoints (and the copy_last floor) on a dataset split",
    ),
    "flow-eval": (
        "imagine_ros.cli.evaluate:run_flow_eval",
        "end-point error of predicted forward flows against the simulator's true object motion",
    ),
    "predict": (
        "imagine_ros.cli.evaluate:run_predict",
        "sample futures of one image with a checkpoint and write them as a GIF with flow colour maps",
    ),
    "shapes-kl": (
        "imagine_ros.cli.evaluate:run_shapes_kl",
        "reproduce Visual Dynamics' Shapes experiment: KL of predicted vs true displacement histograms",
    ),
    "broker": (
        "imagine_ros.cli.serve:run_broker",
        "run an MDP/0.2 (ZeroMQ Majordomo) broker between prediction clients and model workers",
    ),
    "serve": (
        "imagine_ros.cli.serve:run_serve",
        "serve a checkpoint as an MDP/0.2 worker of a broker (batching, heartbeats, reconnects)",
    ),
    "keygen": (
        "imagine_ros.cli.serve:run_keygen",
        "write a CURVE key pair (NAME.key public, NAME.key_secret secret) for the broker, workers or clients",
    ),
    "cluster": (
        "imagine_ros.cli.serve:run_cluster",
        "run a broker and N workers of one checkpoint on this machine (subprocesses) until Ctrl-C",
    ),
    "transfer": (
        "imagine_ros.cli.evaluate:run_transfer",
        "cinn motion transfer: the motion of a query clip applied to another clip's start frame (GIF)",
    ),
    "eta-sweep": (
        "imagine_ros.cli.evaluate:run_eta_sweep",
        "animate one start frame towards several end-effector targets eta (one GIF row per eta)",
    ),
    "train-detector": (
        "imagine_ros.cli.train:run_train_detector",
        "train the end-effector detector (frame -> end-effector pixel) used by 'controllability'",
    ),
    "controllability": (
        "imagine_ros.cli.evaluate:run_controllability",
        "how close the end effector in predicted frames gets to η (true, random and shuffled η)",
    ),
    "plan-eval": (
        "imagine_ros.cli.plan:run_plan_eval",
        "pushing experiments: random, CEM planners on checkpoints (native/DIS flows) and an oracle, same tasks",
    ),
    "demo": (
        "imagine_ros.cli.plan:run_demo",
        "end to end: shipped model served on 127.0.0.1, planned pushes in the simulator, a report folder",
    ),
}


def resolve(command: str, prefix: str = "run_") -> Callable:
    """The handler (``prefix="run_"``) or the flag builder (``prefix="add_"``) of ``command``."""
    module, function = COMMANDS[command][0].split(":")
    return getattr(importlib.import_module(module), prefix + function.removeprefix("run_"))


def _parser(full: Collection[str] | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagine-ros", description="Predict a robot camera's future: simulate, collect, train, serve, plan."
    )
    parser.add_argument("--version", action="version", version=f"imagine-ros {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if full is None or name in full:
            resolve(name, "add_")(p)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole ``imagine-ros`` parser, every command with its flags (imports no torch and no pybullet)."""
    return _parser(None)


def main(argv: list[str] | None = None) -> int:
    """Run ``imagine-ros ARGV``: 0 on success, 2 on a usage or configuration error, 130 on Ctrl-C."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level has no flag that takes a value
    args = _parser({command} if command in COMMANDS else ()).parse_args(argv)
    args.argv = argv  # recorded in checkpoints: the command that produced them
    try:
        return int(resolve(args.command)(args) or 0)
    except ImagineRosError as e:
        print(f"imagine-ros: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imagine-ros: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "build_parser", "main", "resolve"]
