"""export-lerobot / import-lerobot: a collected dataset -> LeRobot v3.0 -> a dataset folder again.

The export is checked by readers this project did not write: pyarrow (parquet) and PyAV (MP4) always, and LeRobot's
own ``LeRobotDataset`` when ``LEROBOT_PYTHON`` names a Python with the ``lerobot-dataset`` package
(tests/io/lerobot_reader.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="the lerobot extra (av, pyarrow) is not installed")
pytest.importorskip("pyarrow", reason="the lerobot extra (av, pyarrow) is not installed")

import av  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from imagine_ros.errors import DatasetError  # noqa: E402
from imagine_ros.lerobot_io import ExportConfig, ImportConfig, export_lerobot, import_lerobot  # noqa: E402
from imagine_ros.sim.storage import EpisodeStore  # noqa: E402

EPISODES, FRAMES, SIZE = 6, 12, 32
KEY = "observation.images.camera"
# measured on this collection (h264, crf 18, yuv444p): mean 1.3-1.7, max about 60 levels of 255 (object edges)
MEAN_TOL, MAX_TOL = 3.0, 100


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    from imagine_ros.sim.collect import collect_push, policy_settings

    root = tmp_path_factory.mktemp("collect") / "ds"
    env = {"image_size": SIZE, "ground_truth": False}
    collect_push(
        root,
        episodes=EPISODES,
        frames=FRAMES,
        shard_size=4,
        env_options=env,
        policy=policy_settings("planning", horizon=4),
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def exported(collected, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lerobot") / "lr"
    s = export_lerobot(collected, out, ExportConfig(episodes_per_file=4), progress=False)
    assert s["episodes"] == EPISODES and s["frames"] == EPISODES * FRAMES and s["files"] == 2
    return out


def _order(store: EpisodeStore) -> list[int]:
    return [i for s in ("train", "val", "test") for i in store.split(s)]


def test_export_layout_read_by_pyarrow_and_pyav(collected, exported):
    info = json.loads((exported / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == EPISODES
    assert info["total_frames"] == EPISODES * FRAMES and info["fps"] == 5
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["features"][KEY]["dtype"] == "video" and info["features"][KEY]["shape"] == [SIZE, SIZE, 3]
    stats = json.loads((exported / "meta" / "stats.json").read_text())
    assert np.asarray(stats[KEY]["mean"]).shape == (3, 1, 1) and stats["observation.state"]["count"] == [72]
    tasks = pq.read_table(exported / "meta" / "tasks.parquet").to_pylist()
    assert tasks == [{"task_index": 0, "task": "push the objects on the table with the end effector"}]
    eps = pq.read_table(exported / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in eps] == list(range(EPISODES))
    src = EpisodeStore(collected)
    assert [e["source_episode"] for e in eps] == _order(src)
    n_train, n_val = len(src.split("train")), len(src.split("val"))
    assert info["splits"] == {
        "train": f"0:{n_train}",
        "val": f"{n_train}:{n_train + n_val}",
        "test": f"{n_train + n_val}:6",
    }
    for e in eps:  # every episode's rows and video frames, located as LeRobot locates them
        data = pq.read_table(exported / info["data_path"].format(chunk_index=0, file_index=e["data/file_index"]))
        rows = data.filter(pc.equal(data["episode_index"], e["episode_index"]))
        assert rows.num_rows == FRAMES == e["length"]
        assert rows["index"].to_pylist() == list(range(e["dataset_from_index"], e["dataset_to_index"]))
        ep = src.episode(e["source_episode"])
        np.testing.assert_array_equal(np.asarray(rows["observation.state"].to_pylist(), np.float32), ep["ee_pos"])
        np.testing.assert_array_equal(np.asarray(rows["action"].to_pylist(), np.float32), ep["actions"])
        video = exported / info["video_path"].format(
            video_key=KEY, chunk_index=0, file_index=e[f"videos/{KEY}/file_index"]
        )
        with av.open(str(video)) as c:
            decoded = {round(float(f.pts * f.time_base), 6): f.to_ndarray(format="rgb24") for f in c.decode(video=0)}
        t0 = e[f"videos/{KEY}/from_timestamp"]
        frames = np.stack([decoded[round(t0 + t / 5, 6)] for t in range(FRAMES)])
        assert np.abs(frames.astype(int) - ep["frames"]).mean() < MEAN_TOL


def test_round_trip_frames_within_codec_tolerance_track_exact(collected, exported, tmp_path):
    out = tmp_path / "back"
    s = import_lerobot(exported, out, ImportConfig(image_size=SIZE), progress=False)
    assert s["splits_from"] == "info.json" and s["eta"] and s["dropped_frames"] == 0
    src, dst = EpisodeStore(collected), EpisodeStore(out)
    assert dst.meta["kind"] == "lerobot" and dst.meta["camera"] == src.meta["camera"]
    order = _order(src)
    err = []
    for j, i in enumerate(order):
        a, b = src.episode(i), dst.episode(j)
        np.testing.assert_array_equal(a["ee_pos"], b["ee_pos"])  # exactly the same track
        np.testing.assert_array_equal(a["actions"], b["actions"])
        np.testing.assert_array_equal(a["eta_start"], b["eta_start"])
        np.testing.assert_array_equal(a["eta_target"], b["eta_target"])  # NaN where no segment starts
        err.append(np.abs(a["frames"].astype(int) - b["frames"].astype(int)))
    err = np.concatenate([e.ravel() for e in err])
    print(f"round trip frames: mean abs error {err.mean():.3f}, max {err.max()} (of 255)")
    assert err.mean() < MEAN_TOL and err.max() <= MAX_TOL
    for name in ("train", "val", "test"):
        assert dst.split(name) == sorted(order.index(i) for i in src.split(name))
    # pieces of a shorter length, the end effector named, the actions from the track
    cut = tmp_path / "cut"
    cfg = ImportConfig(episode_frames=5, image_size=16, ee_columns=("ee_x", "ee_y", "ee_z"), action_key=None)
    s = import_lerobot(exported, cut, cfg, progress=False)
    assert s["episodes"] == 2 * EPISODES and s["dropped_frames"] == 2 * EPISODES
    b = EpisodeStore(cut).episode(1)
    np.testing.assert_array_equal(b["ee_pos"], src.episode(order[0])["ee_pos"][5:10])
    np.testing.assert_allclose(b["actions"][:-1], np.diff(b["ee_pos"], axis=0))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LEROBOT_PYTHON"), reason="LEROBOT_PYTHON (a Python with lerobot-dataset) unset")
def test_lerobot_own_reader_reads_the_export(collected, exported, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    npz = tmp_path / "read.npz"
    script = Path(__file__).with_name("lerobot_reader.py")
    r = subprocess.run(
        [os.environ["LEROBOT_PYTHON"], str(script), str(exported), KEY, str(npz)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["version"] == "v3.0" and summary["episodes"] == EPISODES and summary["frames"] == EPISODES * FRAMES
    got = np.load(npz)
    src = EpisodeStore(collected)
    want = np.concatenate([src.episode(i)["frames"] for i in _order(src)])
    want_ee = np.concatenate([src.episode(i)["ee_pos"] for i in _order(src)])
    np.testing.assert_array_equal(got["state"], want_ee)
    assert np.abs(got["frames"].astype(int) - want).mean() < MEAN_TOL


def _nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_bad_input_one_line_error_nothing_written(collected, exported, tmp_path):
    old = tmp_path / "old"
    (old / "meta").mkdir(parents=True)
    info = json.loads((exported / "meta" / "info.json").read_text())
    (old / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    cases = [
        (old, ImportConfig(), "LeRobot format v2.1; import-lerobot reads v3.x"),
        (tmp_path / "nothing", ImportConfig(), "no LeRobot dataset folder"),
        (collected, ImportConfig(), "has no meta/info.json"),
        (exported, ImportConfig(image_key="observation.images.wrist"), f"its image keys: {KEY} (video)"),
        (exported, ImportConfig(state_key="observation.joints"), "its float features: action, eta.target"),
        (exported, ImportConfig(ee_columns=("0", "1", "7")), "out of range: observation.state has 3 entries"),
        (exported, ImportConfig(ee_columns=("0", "1", "q")), "or names: ee_x, ee_y, ee_z"),
        (exported, ImportConfig(episode_frames=13), "no episode of"),
    ]
    for src, cfg, message in cases:
        out = tmp_path / "out"
        with pytest.raises(DatasetError) as e:
            import_lerobot(src, out, cfg, progress=False)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
        _nothing_left(out)
    with pytest.raises(DatasetError, match="exists already"):
        import_lerobot(exported, collected, progress=False)
    with pytest.raises(DatasetError, match="exists already"):
        export_lerobot(collected, exported, progress=False)
    # a video cut short: the metadata points past its end -> one line, nothing written
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    video = next((broken / "videos").rglob("file-001.mp4"))
    video.write_bytes(video.read_bytes()[:300])
    with pytest.raises(DatasetError) as e:
        import_lerobot(broken, tmp_path / "out", progress=False)
    assert "\n" not in str(e.value)
    _nothing_left(tmp_path / "out")


def test_cli(collected, tmp_path):
    from imagine_ros.cli import main

    lr, back = tmp_path / "lr", tmp_path / "back"
    assert main(["export-lerobot", "--data", str(collected), "--out", str(lr), "--no-progress", "--crf", "10"]) == 0
    assert (
        main(["import-lerobot", "--src", str(lr), "--out", str(back), "--image-size", str(SIZE), "--no-progress"]) == 0
    )
    assert len(EpisodeStore(back)) == EPISODES
    assert main(["import-lerobot", "--src", str(lr), "--out", str(tmp_path / "x"), "--image-key", "nope"]) != 0
    _nothing_left(tmp_path / "x")
