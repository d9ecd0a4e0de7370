"""Every ``imagine-ros`` subcommand and every one of its flags is documented (README.md or a page under docs/), with
the command shown as it is typed. (The generated command-line reference is not committed, so it does not count.)"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import pytest

from imagine_ros.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.fixture(scope="module")
def docs() -> str:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in pages)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_and_flag_is_documented(name, docs):
    assert f"imagine-ros {name}" in docs, f"`imagine-ros {name}` appears nowhere in README.md or docs/"
    flags = [o for a in _subcommands()[name]._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    missing = [f for f in flags if f not in docs]
    assert not missing, f"imagine-ros {name}: flags not documented in README.md or docs/: {missing}"
