"""The flags many commands share, each with one meaning and one help text, and the argument types of the command line.

``add_common(parser, "data", "out", ..., required=("data",), seed=1)`` adds the named flags to a command; keyword
arguments give that command's defaults. (Not ``argparse`` parent parsers: those share their actions between the
commands, so one command's default would change every other command's.)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any

SPLITS = ("train", "val", "test", "all")

#: name -> (flag, add_argument keywords); ``%(default)s`` and ``%(metavar)s`` are filled in by argparse
COMMON: dict[str, tuple[str, dict[str, Any]]] = {
    "checkpoint": ("--checkpoint", {"metavar": "CKPT", "help": "model checkpoint (NAME.json, e.g. RUN/model.json)"}),
    "checkpoints": (
        "--checkpoint",
        {
            "nargs": "+",
            "action": "extend",
            "metavar": "CKPT",
            "help": "model checkpoints (NAME.json, e.g. RUN/model.json): several after one flag, or repeat the flag",
        },
    ),
    "data": (
        "--data",
        {"metavar": "DIR", "help": "dataset folder (imagine-ros collect, shapes, import-bag or import-lerobot)"},
    ),
    "split": ("--split", {"default": "val", "choices": SPLITS, "help": "dataset split (default %(default)s)"}),
    "device": (
        "--device",
        {"default": "auto", "help": "torch device: auto (CUDA if available), cpu, cuda, cuda:1 (default %(default)s)"},
    ),
    "seed": (
        "--seed",
        {"type": int, "default": 0, "help": "seed of everything random the command does (default %(default)s)"},
    ),
    "out": (
        "--out",
        {"metavar": "DIR", "help": "where the command writes its output, %(metavar)s (see its description)"},
    ),
    "no-progress": ("--no-progress", {"action": "store_true", "help": "no progress bars"}),
    "flow-net": (
        "--flow-net",
        {
            "metavar": "NET",
            "help": "flow network (OUT/flownet.json of imagine-ros flownet) that gives the flows of models without "
            "native flows in place of DIS (default: DIS)",
        },
    ),
}


def add_common(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *names: str,
    required: Iterable[str] = (),
    metavar: dict[str, str] | None = None,
    **defaults: Any,
) -> None:
    """Add the common flags ``names`` (keys of :data:`COMMON`) to ``parser`` (or an argument group of it); those in
    ``required`` must be given; ``metavar`` names what ``--out`` etc. take here; ``defaults`` (by dest: ``seed=1``,
    ``device="cpu"``) are this command's defaults."""
    dests = {COMMON[n][0][2:].replace("-", "_") for n in names if n in COMMON}
    unknown = (set(names) - set(COMMON)) | (set(required) - set(names)) | (set(metavar or {}) - set(names))
    if unknown or not set(defaults) <= dests:
        raise ValueError(f"add_common: unknown names {sorted(unknown | (set(defaults) - dests))}")
    for name in names:
        flag, kwargs = COMMON[name]
        kwargs = dict(kwargs, required=name in required)
        if metavar and name in metavar:
            kwargs["metavar"] = metavar[name]
        dest = flag[2:].replace("-", "_")
        if dest in defaults:
            kwargs["default"] = defaults[dest]
        parser.add_argument(flag, **kwargs)


def env_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it is JSON (numbers, lists, true/false), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def count(text: str) -> int:
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


def checkpoint_name(path: str) -> str:
    """A checkpoint's name in tables: RUN for RUN/model.json, else the file's stem."""
    from pathlib import Path

    p = Path(path)
    return p.parent.name if p.stem == "model" else p.stem


def sigterm_is_interrupt() -> None:
    """SIGTERM raises KeyboardInterrupt, so that servers stop as on Ctrl-C."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
