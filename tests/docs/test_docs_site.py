"""The documentation: the MkDocs site builds with strict warnings (broken links and anchors, pages left out of the
navigation), the generated command-line reference covers every subcommand and flag, and nothing in README.md or
docs/ links outside the repository."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"\n]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
AUTOLINK = re.compile(r"<([a-z][a-z0-9+.-]*:[^>\s]*)>", re.IGNORECASE)
HTML_ATTRIBUTE = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _outside_fences(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is not None:
            fence = None if m and m.group(1) == fence else fence
        elif m:
            fence = m.group(1)
        else:
            lines.append(line)
    return lines


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked."""
    return [CODE_SPAN.sub("``", line) for line in _outside_fences(text)]


def _targets(path: Path) -> list[str]:
    targets = []
    for line in _prose(path.read_text(encoding="utf-8")):
        for pattern in (INLINE_LINK, REFERENCE_DEFINITION, AUTOLINK, HTML_ATTRIBUTE):
            targets += pattern.findall(line)
    return targets


def _gfm_anchor(heading: str) -> str:
    """GitHub's anchor of a heading (the same rule as docs/hooks/repository_links.py gives the site)."""
    text = CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    lines = _outside_fences(path.read_text(encoding="utf-8"))
    return {_gfm_anchor(line.lstrip("#")) for line in lines if re.match(r"#{1,6} ", line)}


def test_the_pages_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/index.md", "docs/architecture.md", "docs/methods/imagineflow.md"} <= names
    placeholder = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    assert "generated" in placeholder, "docs/reference/cli.md is the placeholder of the generated reference"
    assert "## `imagine-ros" not in placeholder, "commit the placeholder, never the generated reference"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_stay_inside_the_repository(page):
    """Links and images are relative paths to files of this repository (anchors included); no web addresses in the
    prose (a URL inside a code block is a command, not a link)."""
    problems = []
    for line in _prose(page.read_text(encoding="utf-8")):
        if re.search(r"https?://", line, re.IGNORECASE):
            problems.append(f"web address in prose: {line.strip()[:100]}")
    for target in _targets(page):
        if SCHEME.match(target) or target.startswith(("/", "//")):
            problems.append(f"not a relative path: {target}")
            continue
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists() or (path != ROOT and ROOT not in path.parents):
            problems.append(f"no such file in the repository: {target}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            problems.append(f"no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_no_docstring_points_outside_the_repository():
    """Code and scripts refer to files of this repository only (not to a workspace beside it)."""
    outside = re.compile(r"(?:\.\./)+shared/|\bshared/specs/|/work/")
    found = []
    folders = (
        "imagine_ros",
        "models",
        "training",
        "evaluation",
        "sim",
        "scripts",
        "benchmarks",
        "launch",
        "docs",
        "tests",
    )
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".sh") and path.is_file() and path != Path(__file__).resolve():
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    if outside.search(line):
                        found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    found += [f"setup.py: {m.group(0)}" for m in outside.finditer(setup)]
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_site_builds_strictly_with_a_generated_cli_reference(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    cmd = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--config-file",
        str(ROOT / "mkdocs.yml"),
        "-d",
        str(site),
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)  # < pytest's 300 s
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "WARNING" not in run.stderr, run.stderr[-4000:]

    from imagine_ros.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    reference = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for name, parser in sub.choices.items():
        assert f'id="imagine-ros-{name}"' in reference, name
        section = reference.split(f'id="imagine-ros-{name}"', 1)[1].split("<h2", 1)[0]
        flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
        missing = [f for f in flags if f not in section]
        assert not missing, f"imagine-ros {name}: flags missing from the generated reference: {missing}"
    # files of the repository that pages show are copied into the site
    assert (site / "repository" / "results" / "ground_truth" / "plan5k_test_gt.gif").is_file()
    assert not list(site.rglob("hooks")), "the build hooks are not part of the site"
