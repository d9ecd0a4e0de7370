"""The shared training loop: outputs, exact resume after kill -9, DDP with two CPU processes, refusals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imagine_ros.cli import main as cli_main
from imagine_ros.errors import ConfigError
from imagine_ros.models.checkpoint import load_checkpoint
from imagine_ros.training.trainer import TrainConfig, train

TINY = [
    "--method",
    "visual_dynamics",
    "--config",
    "tiny",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--no-progress",
    "--device",
    "cpu",
    "--val-clips",
    "4",
    "--val-samples",
    "2",
]


@pytest.fixture(scope="module")
def data(push_small) -> Path:
    return push_small  # tests/conftest.py


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


@pytest.mark.slow
def test_training_writes_checkpoints_metrics_samples_and_tensorboard(data, tmp_path):
    run = tmp_path / "run"
    assert (
        cli_main(
            [
                "train",
                *TINY,
                "--data",
                str(data),
                "--out",
                str(run),
                "--steps",
                "6",
                "--ckpt-every",
                "3",
                "--val-every",
                "3",
            ]
        )
        == 0
    )
    ckpt = load_checkpoint(run / "model")
    assert ckpt.step == 6 and ckpt.meta["normalizer"]["type"] == "condition_normalizer"
    assert ckpt.meta["command"][:2] == ["imagine-ros", "train"] and ckpt.meta["data"]["horizon"] >= 1
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000006"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6]
    assert all(x["val/psnr@2"] > 5 and 0 < x["val/ssim@2"] <= 1 and x["val/diversity"] >= 0 for x in lines)
    assert (run / "samples" / "step_000006.gif").stat().st_size > 0
    assert any((run / "tb").iterdir())


@pytest.mark.slow
def test_resume_after_kill_9_matches_an_uninterrupted_run(data, tmp_path):
    # with a cosine learning rate: the schedule is a function of the step, so the resumed run matches too
    steps = ["--steps", "150", "--ckpt-every", "10", "--val-every", "1000", "--lr-schedule", "cosine"]
    ref = tmp_path / "ref"
    assert cli_main(["train", *TINY, "--data", str(data), "--out", str(ref), *steps]) == 0

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "imagine_ros.cli", "train", *TINY, "--data", str(data), "--out", str(run), *steps]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not latest.exists():
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().strip().split("_")[1])
    assert 0 < killed_at < 150, "the run was not interrupted part-way"
    assert cli_main(["train", *TINY, "--data", str(data), "--out", str(run), *steps]) == 2  # needs --resume
    assert cli_main(["train", *TINY, "--data", str(data), "--out", str(run), *steps, "--resume"]) == 0
    a, b = weights(ref), weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_folder_rules(data, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", *TINY, "--data", str(data), "--out", str(run), "--steps", "2", "--val-every", "100"]
    assert cli_main(base) == 0
    assert cli_main(base) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert cli_main([*base, "--resume", "--lr", "0.5"]) == 2
    assert "setting 'lr' differs" in capsys.readouterr().err
    assert cli_main([*base[:-4], "--steps", "4", "--val-every", "100", "--resume"]) == 0  # more steps: allowed
    assert load_checkpoint(run / "model").step == 4
    with pytest.raises(ConfigError, match="method 'copy_last' has no training step"):
        TrainConfig(method="copy_last", data=str(data), out=str(tmp_path / "x"))


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_ddp_with_two_cpu_processes(data, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "imagine_ros.cli",
        "train",
        *TINY,
        "--data",
        str(data),
        "--out",
        str(run),
        "--steps",
        "4",
        "--ckpt-every",
        "2",
        "--val-every",
        "4",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(run / "model")
    assert ckpt.step == 4
    s = ckpt.model.config.image_size
    out = ckpt.model.sample(torch.zeros(1, 3, s, s), torch.zeros(1, 3), 2)
    assert out.frames.shape[:3] == (1, 2, ckpt.model.config.horizon)
    single = tmp_path / "single"
    train(
        TrainConfig(
            method="visual_dynamics",
            data=str(data),
            out=str(single),
            preset="tiny",
            steps=4,
            batch_size=4,
            num_workers=0,
            device="cpu",
            val_every=100,
            progress=False,
        )
    )
    # two processes see two different batches per step, so the weights differ from one process's
    assert any(not torch.equal(weights(run)[k], weights(single)[k]) for k in weights(run))


def test_cosine_schedule_runs_from_the_learning_rate_down_to_its_floor(data, tmp_path):
    cfg = TrainConfig(method="visual_dynamics", data=str(data), out=str(tmp_path / "x"), steps=100,
                      lr_schedule="cosine", lr_min_ratio=0.1)  # fmt: skip
    assert cfg.lr_factor(0) == 1.0 and cfg.lr_factor(50) == pytest.approx(0.55) and cfg.lr_factor(100) == 0.1
    assert all(cfg.lr_factor(i) >= cfg.lr_factor(i + 1) for i in range(100))
    assert TrainConfig(method="visual_dynamics", data=str(data), out="x").lr_factor(77) == 1.0
    with pytest.raises(ConfigError, match="lr_schedule must be one of constant, cosine"):
        TrainConfig(method="visual_dynamics", data=str(data), out="x", lr_schedule="step")
    with pytest.raises(ConfigError, match="lr_min_ratio must be in"):
        TrainConfig(method="visual_dynamics", data=str(data), out="x", lr_schedule="cosine", lr_min_ratio=2.0)
    run = tmp_path / "run"
    args = ["train", *TINY, "--data", str(data), "--out", str(run), "--steps", "4", "--val-every", "100"]
    assert cli_main([*args, "--lr", "0.01", "--lr-schedule", "cosine", "--lr-min-ratio", "0.2"]) == 0
    from imagine_ros.training.train_state import _join

    path = run / "checkpoints" / "step_000004" / "train"
    tree = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    states = [_join(opt, tensors, torch.device("cpu")) for opt in tree["optimizers"].values()]
    groups = [g for state in states for g in state["param_groups"]]
    # the last step (step 3 of 4) ran at 0.01 * lr_factor(3)
    last = TrainConfig(method="visual_dynamics", data=str(data), out="x", steps=4, lr_schedule="cosine",
                       lr_min_ratio=0.2).lr_factor(3)  # fmt: skip
    assert groups and all(g["initial_lr"] == 0.01 and g["lr"] == pytest.approx(0.01 * last) for g in groups)
