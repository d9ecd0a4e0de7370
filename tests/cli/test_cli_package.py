"""The ``imagine_ros.cli`` package: a light parser (no torch, no pybullet for ``--help``), a table of commands whose
handlers all resolve, flags generated from config dataclasses, common flags with one meaning, no argparse in the
domain modules."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from imagine_ros.cli import COMMANDS, build_parser, main, resolve
from imagine_ros.cli._common import COMMON
from imagine_ros.cli._dataclass_flags import dataclass_from_args
from imagine_ros.cli.train import DETECTOR_DEFAULTS, TRAIN_SKIP
from imagine_ros.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pybullet")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize(
    "code",
    [
        "from imagine_ros.cli import build_parser; build_parser()",
        "from imagine_ros.cli import main; main(['--help'])",
        "from imagine_ros.cli import main; main(['broker', '--help'])",
        "from imagine_ros.cli import main; main(['train', '--help'])",
    ],
    ids=["build_parser", "help", "broker-help", "train-help"],
)
def test_the_parser_and_help_load_neither_torch_nor_pybullet(code):
    r = _run(
        "import sys\ntry:\n    " + code + "\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\nassert not loaded, loaded\nprint('ok')"
    )
    assert r.returncode == 0 and r.stdout.rstrip().endswith("ok"), r.stderr + r.stdout
    assert "pybullet build time" not in r.stdout + r.stderr


@pytest.mark.slow
def test_help_as_typed_prints_no_banner_and_lists_every_command():
    r = subprocess.run(
        [sys.executable, "-m", "imagine_ros.cli", "--help"], capture_output=True, text=True, timeout=120, check=True
    )
    assert "pybullet build time" not in r.stdout + r.stderr
    for name in COMMANDS:
        assert name in r.stdout


def test_main_builds_only_the_command_it_runs_and_parses_as_build_parser_does():
    """main() adds the flags of the one command it runs; that parser gives the same arguments as the full one."""
    argv = ["broker", "--bind", "tcp://*:6000", "--liveness", "4"]
    full = vars(build_parser().parse_args(argv))
    from imagine_ros import cli

    one = vars(cli._parser({"broker"}).parse_args(argv))
    assert one == full and full["bind"] == "tcp://*:6000" and full["liveness"] == 4


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_resolves_to_a_handler_and_a_flag_builder(name):
    target = COMMANDS[name][0]
    module, function = target.split(":")
    assert module.startswith("imagine_ros.cli.") and function.startswith("run_")
    assert callable(resolve(name)) and resolve(name).__name__ == function
    assert callable(resolve(name, "add_"))


def test_train_flags_are_the_train_config_fields():
    """Every TrainConfig field the command line offers has a flag with the field's default; parsing and
    dataclass_from_args give the TrainConfig back (the older spellings --config, --set, --workers keep working)."""
    train = _subcommands()["train"]
    dests = {a.dest: a for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        if f.name in TRAIN_SKIP and f.name not in ("data", "out", "seed", "device", "progress"):
            continue
        dest = f"no_{f.name}" if f.type in ("bool", bool) else f.name
        assert dest in dests, f"TrainConfig.{f.name} has no flag"
        if f.default is not dataclasses.MISSING and f.type not in ("bool", bool):
            assert dests[dest].default == f.default, f.name
    argv = ["train", "--method", "visual_dynamics", "--data", "d", "--out", "o", "--config", "tiny"]
    argv += ["--set", "horizon=3", "--workers", "0", "--no-amp", "--no-progress", "--lr", "0.01", "--stage", "1"]
    cfg = dataclass_from_args(TrainConfig, build_parser().parse_args([*argv, "--seed", "7"]))
    want = {"preset": "tiny", "overrides": {"horizon": 3}, "num_workers": 0, "amp": False, "progress": False}
    assert {k: getattr(cfg, k) for k in want} == want
    got = (cfg.method, cfg.data, cfg.out, cfg.lr, cfg.stage, cfg.seed, cfg.steps)
    assert got == ("visual_dynamics", "d", "o", 0.01, 1, 7, 2000)
    defaults = dataclass_from_args(TrainConfig, build_parser().parse_args(argv[:7]))
    assert defaults == TrainConfig(method="visual_dynamics", data="d", out="o")


def test_common_flags_have_one_help_text_everywhere():
    helps: dict[str, set[str]] = {}
    for flag, kwargs in COMMON.values():
        helps.setdefault(flag, set()).add(kwargs["help"])
    for name, parser in _subcommands().items():
        for action in parser._actions:
            for flag in set(action.option_strings) & set(helps):
                assert action.help in helps[flag], f"imagine-ros {name} {flag}: {action.help!r}"


def test_light_choices_and_defaults_match_the_registries():
    """The command line reads these from light modules; here they are compared with the heavy originals."""
    from imagine_ros.constants import FLOWNET_PRESETS, METHOD_NAMES, MODEL_PRESETS
    from imagine_ros.evaluation.ee_detector import DetectorTrainConfig
    from imagine_ros.flownet import FlowNetConfig
    from imagine_ros.models import METHODS, PRESETS

    assert METHOD_NAMES == tuple(sorted(METHODS))
    assert MODEL_PRESETS == tuple(PRESETS)
    assert FLOWNET_PRESETS == tuple(FlowNetConfig.presets)
    d = DetectorTrainConfig()
    assert DETECTOR_DEFAULTS == {k: getattr(d, k) for k in DETECTOR_DEFAULTS}
    args = build_parser().parse_args(["train-detector", "--data", "d", "--out", "o"])
    assert {k: getattr(args, k) for k in DETECTOR_DEFAULTS} == DETECTOR_DEFAULTS


def test_serving_flags_default_to_the_serving_defaults():
    from imagine_ros.serving import defaults as d

    p = build_parser()
    b = p.parse_args(["broker"])
    assert (b.bind, b.request_timeout, b.worker_credit, b.heartbeat, b.liveness) == (
        d.BIND,
        d.REQUEST_TIMEOUT,
        d.WORKER_CREDIT,
        d.HEARTBEAT_INTERVAL,
        d.HEARTBEAT_LIVENESS,
    )
    assert (b.max_message_size, b.max_request_bytes, b.max_queued_bytes, b.worker_timeout) == (
        d.BROKER_MAX_MESSAGE_SIZE,
        d.MAX_REQUEST_BYTES,
        d.MAX_QUEUED_BYTES,
        d.WORKER_TIMEOUT,
    )
    s = p.parse_args(["serve", "--checkpoint", "x.json"])
    assert (s.broker, s.max_batch, s.max_wait_ms, s.max_pixels, s.max_message_size, s.max_request_bytes) == (
        d.BROKER,
        d.MAX_BATCH,
        d.MAX_WAIT_MS,
        d.MAX_PIXELS,
        d.WORKER_MAX_MESSAGE_SIZE,
        d.WORKER_MAX_REQUEST_BYTES,
    )
    c = p.parse_args(["cluster", "--checkpoint", "x.json"])
    assert (c.port, c.request_timeout, c.max_batch) == (d.PORT, d.REQUEST_TIMEOUT, d.MAX_BATCH)


def test_a_configuration_error_is_one_line_and_exit_code_2(capsys):
    assert main(["cluster", "--checkpoint", "x.json", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imagine-ros: error: --workers must be at least 1") and err.count("\n") == 1


def test_domain_modules_hold_no_argparse():
    """The command line lives in imagine_ros/cli/ only: the domain modules keep functions and config dataclasses."""
    sources = [p for d in ("imagine_ros", "sim", "training", "evaluation", "models") for p in (ROOT / d).rglob("*.py")]
    offenders = [
        str(p.relative_to(ROOT))
        for p in sources
        if "cli" not in p.relative_to(ROOT).parts and not p.is_symlink() and "argparse" in p.read_text("utf-8")
    ]
    assert not offenders, offenders
