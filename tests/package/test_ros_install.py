"""Installing into a ROS 2 Python keeps a numpy 1.x: the declared requirements and ``ros-constraints.txt`` can be met
together by the numpy that Jazzy ships (1.26.4) and by an opencv-python-headless release that accepts numpy 1.x,
checked offline with ``packaging`` (the library pip's resolver uses) on setup.py's own ``install_requires``."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
JAZZY_NUMPY = Version("1.26.4")  # python3-numpy of Ubuntu 24.04 (ROS 2 Jazzy)
OPENCV_NUMPY1 = Version("4.11.0.86")  # the last opencv-python-headless release that accepts numpy 1.x


def _install_requires() -> dict[str, Requirement]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    reqs = next(k.value for k in call.keywords if k.arg == "install_requires")
    return {r.name: r for r in (Requirement(ast.literal_eval(e)) for e in reqs.elts)}


def _constraints() -> dict[str, Requirement]:
    lines = (ROOT / "ros-constraints.txt").read_text().splitlines()
    return {r.name: r for r in (Requirement(ln) for ln in lines if ln.strip() and not ln.startswith("#"))}


def test_constraints_keep_numpy_1_and_the_requirements_stay_satisfiable():
    reqs, cons = _install_requires(), _constraints()
    assert set(cons) <= set(reqs), "constrain only what imagine_ros requires"
    assert not cons["numpy"].specifier.contains("2.0.0") and not cons["numpy"].specifier.contains("2.2.6")
    for name, version in (("numpy", JAZZY_NUMPY), ("opencv-python-headless", OPENCV_NUMPY1)):
        assert reqs[name].specifier.contains(version), f"setup.py's {reqs[name]} refuses {version}"
        assert cons[name].specifier.contains(version), f"ros-constraints.txt's {cons[name]} refuses {version}"
    assert not cons["opencv-python-headless"].specifier.contains("4.12.0.88"), "4.12 requires numpy>=2"


def test_installed_opencv_shows_why_the_constraint_is_needed():
    """This venv (no ROS) has the newest opencv: if it lies outside the constraint, its own metadata must refuse
    numpy 1.x, which is the reason for the constraint."""
    try:
        version = Version(importlib.metadata.version("opencv-python-headless"))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("opencv-python-headless is not installed here")
    if _constraints()["opencv-python-headless"].specifier.contains(version):
        pytest.skip(f"opencv-python-headless {version} is within the constraint")
    env = default_environment()
    numpy_reqs = [
        r for r in map(Requirement, importlib.metadata.requires("opencv-python-headless") or [])
        if r.name == "numpy" and (r.marker is None or r.marker.evaluate(env))
    ]  # fmt: skip
    assert numpy_reqs and not all(r.specifier.contains(JAZZY_NUMPY) for r in numpy_reqs)
