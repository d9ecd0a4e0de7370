"""The experiment scripts (scripts/*.sh) run end to end with tiny configs on a tiny dataset: every command and flag
they use exists and their outputs appear where they say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")]

SCRIPT_TIMEOUT = 400  # seconds a script may take; the test runs four of them


def run_script(name: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)  # imagine-ros sits beside this interpreter
    full = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1", **env}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / name)],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.timeout(4 * SCRIPT_TIMEOUT + 200)  # above pytest's 300 s: four scripts in one test
def test_imaginator_cinn_and_compare_scripts_end_to_end(push_small, tmp_path):
    if shutil.which("imagine-ros", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the imagine-ros console script is not installed beside this interpreter")
    data = tmp_path / "push"
    shutil.copytree(push_small, data)  # a copy: the scripts get a dataset of their own
    runs, out = tmp_path / "runs", tmp_path / "results"
    common = {"DATA": str(data), "RUNS": str(runs), "CONFIG": "tiny", "DEVICE": "cpu"}
    run_script(
        "imaginator_experiment.sh",
        {**common, "OUT": str(out / "imaginator"), "STEPS": "2", "EPISODE": "0", "THREADS": "1"},
        ROOT,
    )
    for run in ("imaginator_push", "imaginator3d_push"):
        assert json.loads((runs / run / "model.json").read_text())["step"] == 2
        assert (out / "imaginator" / f"{run}_eta_sweep.gif").stat().st_size > 0
    assert json.loads((runs / "imaginator3d_push" / "model.json").read_text())["config"]["block"] == "3d"
    assert (out / "imaginator" / "speed.json").stat().st_size > 0
    first = run_script(
        "cinn_experiment.sh",
        {
            **common,
            "OUT": str(out / "cinn"),
            "STEPS1": "2",
            "BATCH1": "2",
            "STEPS2": "2",
            "BATCH2": "4",
            "EPISODE": "0",
            "QUERY": "1",
            "TARGET": "2",
        },
        ROOT,
    )
    assert json.loads((runs / "cinn" / "model.json").read_text())["step"] == 2
    assert "trained cinn" in first.stdout
    for gif in ("cinn_eta_sweep.gif", "cinn_motion_transfer.gif"):
        assert (out / "cinn" / gif).stat().st_size > 0
    # a second run finds the trained runs and only redoes the pictures
    proc = run_script(
        "cinn_experiment.sh",
        {**common, "OUT": str(out / "cinn"), "STEPS1": "2", "STEPS2": "2", "EPISODE": "0", "QUERY": "1", "TARGET": "2"},
        ROOT,
    )
    assert "trained cinn" not in proc.stdout
    run_script(
        "compare_methods.sh",
        {
            **common,
            "OUT": str(out / "cmp"),
            "N": "2",
            "CN": "2",
            "CLIPS": "3",
            "DETECTOR": str(runs / "det"),
            "DETECTOR_STEPS": "5",
        },
        ROOT,
    )
    quality = (out / "cmp" / "quality" / "table.md").read_text()
    control = (out / "cmp" / "controllability" / "table.md").read_text()
    for name in ("imaginator_push", "imaginator3d_push", "cinn", "copy_last"):
        assert f"| {name} |" in quality and f"| {name} |" in control
