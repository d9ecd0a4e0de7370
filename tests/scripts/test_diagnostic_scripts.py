"""The planning diagnostics in scripts/ run on real simulator states and a real (untrained) checkpoint: the ranking
script's figures hold what they claim (the ground-truth pixel cost ranks as the simulator does; its cache gives the
same answer again) and it refuses the evaluation tasks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ranking(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "candidate_ranking.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def eta_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny ImagineFlow at the task camera's 64 x 64 with the planner's horizon of 10."""
    import torch

    from imagine_ros.models import build
    from imagine_ros.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ranking")
    save_checkpoint(folder / "m", build("imagineflow", "tiny", image_size=64, horizon=10), command=["test"])
    return folder / "m.json"


def test_candidate_ranking_scores_candidates_against_the_simulator(eta_checkpoint, tmp_path):
    cache = tmp_path / "sim.npz"
    args = ["--tasks", "1", "--seed", "900", "--candidates", "6", "--checkpoint", str(eta_checkpoint)]
    first = _ranking(*args, "--cache", str(cache))
    assert first.returncode == 0, first.stderr[-2000:]
    states = np.load(cache)
    assert states["eta"].shape == (2, 6, 3) and states["final_cm"].shape == (2, 6)
    assert states["image"].shape == (2, 64, 64, 3) and (states["final_cm"] > 0).all()
    # two states of one task: the later one after 3 frames towards a random eta, so the images differ
    assert not np.array_equal(states["image"][0], states["image"][1])
    out = first.stdout
    assert "2 states x 6 candidates" in out
    regret = float(re.search(r"ground-truth pixel cost: .* regret ([\d.]+) cm", out).group(1))
    rand = float(re.search(r"random pick: regret ([\d.]+) cm", out).group(1))
    assert regret <= rand + 1e-9 or regret < 0.5  # the true futures' cost picks well
    model = re.search(r"m\.json: rank correlation with the true pixel cost (-?[\d.]+|nan)", out)
    assert model is not None
    again = _ranking(*args, "--cache", str(cache))  # from the cache: no simulation, the same figures
    assert again.returncode == 0 and "simulated states" not in again.stderr

    def figures(text: str) -> list[str]:  # pybullet prints "argv[0]=" when it starts
        return [line for line in text.splitlines() if not line.startswith("argv")]

    assert figures(again.stdout) == figures(out)

    # --max-lift ranks only the candidates near the pushing height: here at least the lowest two of each state
    from imagine_ros.planning.runner import TaskConfig, workspace

    floor = float(workspace(TaskConfig(tasks=1))[0][2])
    lift = float(np.sort(states["eta"][..., 2], 1)[:, 1].max()) - floor + 1e-6
    keep = states["eta"][..., 2] <= floor + lift
    low = _ranking(*args, "--cache", str(cache), "--max-lift", str(lift))
    assert low.returncode == 0, low.stderr[-2000:]
    assert f"2 states x {keep.sum(1).mean():.3g} candidates" in low.stdout
    best = float(re.search(r"best candidate's final distance ([\d.]+) cm", low.stdout).group(1))
    expected = np.mean([f[k].min() for f, k in zip(states["final_cm"], keep)])
    assert best == pytest.approx(expected, abs=0.006)
    none = _ranking(*args, "--cache", str(cache), "--max-lift", "0")  # no uniform draw lies exactly on the floor
    assert none.returncode != 0 and "fewer than 2 candidates" in none.stderr
    negative = _ranking(*args, "--cache", str(cache), "--max-lift", "-1")
    assert negative.returncode != 0 and "max_lift must be >= 0 metres" in negative.stderr


def test_candidate_ranking_refuses_the_evaluation_tasks():
    proc = _ranking("--tasks", "4", "--seed", "98", "--candidates", "2")
    assert proc.returncode != 0 and "evaluation tasks" in proc.stderr
