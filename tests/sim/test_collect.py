"""Dataset collection: resumable after kill -9, identical across worker counts, clear errors for bad folders."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from imagine_ros.cli import main as cli_main
from imagine_ros.constants import ACTIONS, EE_POS, FRAMES, OBJECT_POS
from imagine_ros.errors import ConfigError, DatasetError
from imagine_ros.sim.collect import collect_push, moved_fraction
from imagine_ros.sim.storage import EpisodeStore

SMALL = {"image_size": 32}
CLI_SMALL = ["--episodes", "6", "--frames", "6", "--shard-size", "1", "--image-size", "32", "--no-progress"]


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file in a dataset folder."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "data"
    collect_push(out, episodes=6, frames=6, shard_size=1, env_options=SMALL, progress=False)
    return out


def test_episode_contents(reference):
    store = EpisodeStore(reference)
    assert len(store) == 6 and store.frames_per_episode == 6
    ep = store.episode(0)
    assert ep[FRAMES].shape == (6, 32, 32, 3) and ep[FRAMES].dtype == np.uint8
    assert ep[EE_POS].shape == (6, 3) and ep[ACTIONS].shape == (6, 3) and ep[OBJECT_POS].shape == (6, 3, 3)
    # the hand moves by at most max_step per axis and frame, up to tracking error
    assert np.all(np.abs(np.diff(ep[EE_POS], axis=0)) < 0.07 + 0.03)
    meta = json.loads((reference / "meta.json").read_text())
    assert sorted(sum(meta["splits"].values(), [])) == list(range(6))  # every episode in exactly one split
    assert meta["camera"]["K"][0][0] > 0 and len(meta["camera"]["T_cam_world"]) == 4
    assert meta["config"]["env"]["image_size"] == [32, 32]


def test_two_workers_write_the_same_files(reference, tmp_path):
    collect_push(tmp_path / "d", episodes=6, frames=6, shard_size=1, env_options=SMALL, workers=2, progress=False)
    assert digest(tmp_path / "d") == digest(reference)


@pytest.mark.slow
def test_kill_9_then_rerun_gives_exactly_the_uninterrupted_dataset(reference, tmp_path):
    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "imagine_ros.cli", "collect", "--out", str(out), *CLI_SMALL, "--workers", "2"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("shard-*.h5")) and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the collector and its workers, mid-run
    proc.wait()
    written = sorted(p.name for p in out.glob("shard-*.h5"))
    assert 1 <= len(written) < 6, written  # it was killed part-way (else the test proves nothing)
    with pytest.raises(DatasetError, match="incomplete"):
        EpisodeStore(out)
    (out / ".shard-00005.h5.99999.tmp").write_bytes(b"half a shard")  # as a kill during a write leaves it
    assert cli_main(["collect", "--out", str(out), *CLI_SMALL, "--workers", "2"]) == 0
    assert digest(out) == digest(reference)


def test_other_settings_are_refused_and_nothing_is_lost(reference, tmp_path, capsys):
    out = tmp_path / "d"
    collect_push(out, episodes=6, frames=6, shard_size=1, env_options=SMALL, progress=False)
    before = digest(out)
    with pytest.raises(DatasetError, match="other settings .*config.frames: 6 != 7"):
        collect_push(out, episodes=6, frames=7, shard_size=1, env_options=SMALL, progress=False)
    assert cli_main(["collect", "--out", str(out), *CLI_SMALL, "--num-objects", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imagine-ros: error:") and "num_objects" in err and "\n" not in err
    assert digest(out) == before


def test_bad_options_are_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "d"
    with pytest.raises(ConfigError, match="unknown env option 'gravity'"):
        collect_push(out, episodes=2, env_options={"gravity": 3}, progress=False)
    assert cli_main(["collect", "--out", str(out), "--episodes", "2", "--image-size", "4"]) == 2
    assert "camera width must be an integer in [16, 2048]" in capsys.readouterr().err
    assert not out.exists()


def test_foreign_and_corrupt_files_are_named(reference, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(reference, data)
    (data / "notes.csv").write_text("x")
    with pytest.raises(DatasetError, match="foreign file .*'notes.csv'"):
        EpisodeStore(data)
    (data / "notes.csv").unlink()
    shard = data / "shard-00002.h5"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated
    with pytest.raises(DatasetError, match="corrupt shard .*shard-00002.h5"):
        EpisodeStore(data)
    # collect says so and collects it again (a shard is a pure function of the settings and its seeds)
    report = collect_push(data, episodes=6, frames=6, shard_size=1, env_options=SMALL, progress=False)
    assert report.shards_redone == [2] and digest(data) == digest(reference)
    with h5py.File(shard, "w") as f:  # a valid HDF5 file that is not a shard
        f["x"] = 1
    with pytest.raises(DatasetError, match="not marked complete"):
        EpisodeStore(data)
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.bin").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not empty and has no meta.json"):
        collect_push(other, episodes=2, frames=3, env_options=SMALL, progress=False)
    (other / "meta.json").write_text("{nope")
    with pytest.raises(DatasetError, match="not valid JSON"):
        EpisodeStore(other)


def test_scripted_policy_pushes_objects_in_most_episodes(tmp_path):
    out = tmp_path / "d"
    collect_push(out, episodes=12, frames=20, shard_size=4, env_options=SMALL, seed=1, progress=False)
    assert moved_fraction(EpisodeStore(out)) >= 0.75


def test_cli_gif_and_info(reference, tmp_path, capsys):
    gif = tmp_path / "eps.gif"
    assert cli_main(["gif", "--data", str(reference), "--out", str(gif), "--episodes", "3", "--scale", "2"]) == 0
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 6 and im.size == (2 * (3 * 33 - 1), 2 * 32)
    assert "3 episodes, 6 frames" in capsys.readouterr().out
    assert cli_main(["info", "--data", str(reference), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 6 and info["kind"] == "push" and 0.0 <= info["moved_fraction_2cm"] <= 1.0
