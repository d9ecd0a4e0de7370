"""End-effector detector and controllability (imagine_ros.evaluation.ee_detector / controllability) on real sim data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imagine_ros.cli import main as cli_main
from imagine_ros.constants import EE_POS, FRAMES, FUTURE, X0
from imagine_ros.evaluation.controllability import CONDITIONS, controllability, derangement, random_reachable
from imagine_ros.evaluation.ee_detector import (
    DetectorConfig,
    DetectorError,
    DetectorTrainConfig,
    camera_from_meta,
    detector_paths,
    load_detector,
    load_labelled_frames,
    rescale_pixels,
    train_detector,
)
from imagine_ros.models import build
from imagine_ros.models.checkpoint import save_checkpoint
from imagine_ros.models.conditioning import ConditionNormalizer
from imagine_ros.models.frames import tensor_to_frames
from imagine_ros.prediction import Prediction
from imagine_ros.sim.collect import collect_push
from imagine_ros.sim.env import PushEnv
from imagine_ros.sim.storage import EpisodeStore
from imagine_ros.training.clips import ClipDataset

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "push"
    collect_push(
        root,
        episodes=10,
        frames=8,
        shard_size=5,
        env_options={"image_size": SIZE},
        val_fraction=0.1,
        test_fraction=0.2,
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """(detector, report, folder): a detector trained briefly on the tiny dataset's train split."""
    out = tmp_path_factory.mktemp("det")
    cfg = DetectorTrainConfig(steps=200, batch_size=16, lr=3e-3, warmup=20, device="cpu")
    model, report = train_detector(data, out, cfg, progress=False, command=["test"])
    return model, report, out


# --- labels and pixel conventions -------------------------------------------------------------------------------------


def test_labels_are_the_end_effector_in_the_camera_convention(data):
    store = EpisodeStore(data)
    camera = camera_from_meta(store.meta)
    # the camera looks at its target: that point projects onto the image centre ((W - 1) / 2, (H - 1) / 2)
    np.testing.assert_allclose(camera.project(np.array(store.meta["camera"]["config"]["target"])), [15.5, 15.5])
    frames, uv = load_labelled_frames(store, "train")
    episodes = store.split("train")
    assert frames.shape == (len(episodes) * 8, SIZE, SIZE, 3) and uv.shape == (len(frames), 2)
    np.testing.assert_array_equal(frames[8:16], store.read(episodes[1], FRAMES))
    np.testing.assert_allclose(uv[8:16], camera.project(store.read(episodes[1], EE_POS)), atol=1e-4)
    # and that pixel shows the robot: the label convention is the renderer's (segmentation mask of a live env)
    env = PushEnv(image_size=SIZE)
    try:
        for seed in range(4):
            env.reset(seed=seed)
            _, seg = env.scene.render(segmentation=True)
            u, v = np.round(env.camera.project(env.scene.ee_position())).astype(int)
            assert (seg[v - 1 : v + 2, u - 1 : u + 2] == env.scene.robot).any(), seed
            assert not (seg[v - 1 : v + 2, u + 6 : u + 9] == env.scene.robot).all()  # not just "robot everywhere"
    finally:
        env.close()


def test_rescale_pixels_keeps_pixel_centres():
    # pixels 0 and 1 of a 32 grid are averaged into pixel 0 of a 16 grid, whose centre is at 0.5 in the 32 grid
    np.testing.assert_allclose(rescale_pixels([[0.5, 0.5]], (32, 32), (16, 16)), [[0.0, 0.0]])
    np.testing.assert_allclose(rescale_pixels([[7.5, 15.5]], (32, 16), (64, 64)), [[31.5, 31.5]])  # (u, v); (H, W)
    pts = np.random.default_rng(0).uniform(0, 31, (5, 2))
    np.testing.assert_allclose(rescale_pixels(rescale_pixels(pts, (32, 32), (24, 48)), (24, 48), (32, 32)), pts)


# --- detector ---------------------------------------------------------------------------------------------------------


def test_detector_learns_far_below_a_constant_guess(data, trained):
    model, report, _ = trained
    store = EpisodeStore(data)
    frames, uv = load_labelled_frames(store, "train")
    constant = np.median(np.linalg.norm(uv - uv.mean(0), axis=-1))
    detected = model.detect(frames)
    assert detected.shape == uv.shape
    train_median = np.median(np.linalg.norm(detected - uv, axis=-1))
    assert train_median < 0.3 * constant, (train_median, constant)
    # held-out episodes: better than the constant guess (few training frames, so no tighter promise)
    assert report.eval_error["median"] < report.baseline_error["median"], report
    assert report.eval_error["n"] == len(store.split("test")) * 8
    # frames of another size are resized to the detector's and the positions mapped back to their own pixel grid:
    # 2x nearest upsampling is undone exactly by the detector's area resize, so the positions must scale exactly
    big = frames.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_allclose(model.detect(big), rescale_pixels(detected, (32, 32), (64, 64)), atol=1e-3)


def test_detector_files_round_trip_and_damage_is_refused(data, trained, tmp_path):
    model, _, folder = trained
    weights, meta_path = detector_paths(folder)
    assert weights.exists() and meta_path.exists() and meta_path.name == "ee_detector.json"
    meta = json.loads(meta_path.read_text())
    assert meta["eval_split"] == "test" and meta["eval_error"]["median"] > 0 and meta["data"]["image_size"] == [32, 32]
    loaded, _ = load_detector(meta_path)
    frames, _ = load_labelled_frames(EpisodeStore(data), "test")
    np.testing.assert_allclose(loaded.detect(frames), model.detect(frames), atol=1e-5)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ee_detector.json").write_text(meta_path.read_text())
    (broken / "ee_detector.safetensors").write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(DetectorError, match="hash"):
        load_detector(broken)
    with pytest.raises(DetectorError, match="no end-effector detector"):
        load_detector(tmp_path / "nothing")


def test_detector_config_is_validated():
    with pytest.raises(ValueError, match="multiples of 16"):
        DetectorConfig(image_size=(40, 40))
    with pytest.raises(ValueError, match="heatmap_stride"):
        DetectorConfig(heatmap_stride=3)


# --- controllability --------------------------------------------------------------------------------------------------


def test_derangement_has_no_fixed_points():
    rng = np.random.default_rng(0)
    for n in range(2, 30):
        for _ in range(5):
            perm = derangement(n, rng)
            assert sorted(perm.tolist()) == list(range(n)) and not np.any(perm == np.arange(n))
    assert derangement(1, rng).tolist() == [0]


def test_random_reachable_positions_lie_in_the_workspace(data):
    store = EpisodeStore(data)
    eta = random_reachable(200, store, np.random.default_rng(1))
    lo, hi = np.array(store.meta["scene"]["hand_low"]), np.array(store.meta["scene"]["hand_high"])
    assert eta.shape == (200, 3) and np.all(eta[:, :2] >= lo[:2]) and np.all(eta[:, :2] <= hi[:2])
    heights = np.concatenate([store.read(i, EE_POS)[:, 2] for i in store.split("train")])
    assert np.isin(eta[:, 2], heights.astype(np.float32)).all()
    assert eta[:, 0].std() > 0.05 and eta[:, 1].std() > 0.05  # spread over the workspace, not one point


class ReplayPredictor:
    """Returns the dataset's true future of each start frame, whatever η says: perfect frames, zero control."""

    method = "replay"
    condition_dim = 3

    def __init__(self, data, horizon: int):
        self.image_size, self.horizon = SIZE, horizon
        ds = ClipDataset(data, "train", horizon=horizon, stride=horizon)
        self.futures = {}
        for i in range(len(ds)):
            clip = ds[i]
            self.futures[tensor_to_frames(clip[X0]).tobytes()] = tensor_to_frames(clip[FUTURE])

    def predict(self, images, conditions=None, num_samples=1, seed=None) -> Prediction:
        assert conditions is not None and conditions.shape == (len(images), 3)
        frames = np.stack([self.futures[im.tobytes()] for im in images])[:, None].repeat(num_samples, 1)
        flows = np.zeros((*frames.shape[:-1], 2), np.float32)
        return Prediction(frames=frames, flows=flows, flow_source="native", method=self.method)


def test_measure_tells_a_model_that_ignores_eta(data, trained):
    model, _, _ = trained
    result, raw = controllability(ReplayPredictor(data, 3), data, model, "train", clips=8, samples=2, progress=False)
    assert result.clips == 8 and result.samples == 2
    # the replayed last frame is the real one, so under the true η the distance is exactly the detector's error ...
    np.testing.assert_allclose(raw["dist_true"][:, 0], raw["detector_error"], atol=1e-4)  # batching only
    assert result.true_mean == pytest.approx(result.detector_mean, abs=1e-4)
    # ... while another clip's η lies far from where the arm is: the control catches a model that ignores η
    assert result.shuffled_mean > max(2.0, 3 * result.true_mean), result
    assert result.random_mean > max(2.0, 3 * result.true_mean), result
    # the control: futures sampled with another clip's η are exactly as close to the clip's own η as before
    assert result.shuffled_to_true_mean == pytest.approx(result.true_mean, abs=1e-4)
    perm = raw["permutation"]
    assert not np.any(perm == np.arange(8))
    np.testing.assert_array_equal(raw["eta_shuffled"], raw["eta_true"][perm])
    np.testing.assert_allclose(raw["target_shuffled"], raw["target_true"][perm])


class ObeyingPredictor:
    """Puts the arm exactly where η says: every future frame is the dataset frame whose end effector is nearest to η
    (perfect control, no dynamics)."""

    method = "obey"
    condition_dim = 3
    image_size = SIZE
    horizon = 3

    def __init__(self, data):
        store = EpisodeStore(data)
        self.frames = np.concatenate([store.read(i, FRAMES) for i in range(len(store))])
        self.ee = np.concatenate([store.read(i, EE_POS) for i in range(len(store))])

    def predict(self, images, conditions=None, num_samples=1, seed=None) -> Prediction:
        nearest = np.linalg.norm(self.ee[None] - conditions[:, None], axis=-1).argmin(1)
        frames = self.frames[nearest][:, None, None].repeat(num_samples, 1).repeat(self.horizon, 2)
        flows = np.zeros((*frames.shape[:-1], 2), np.float32)
        return Prediction(frames=frames, flows=flows, flow_source="native", method=self.method)


def test_measure_credits_a_model_that_obeys_eta(data, trained):
    model, _, _ = trained
    result, raw = controllability(ObeyingPredictor(data), data, model, "train", clips=8, samples=1, progress=False)
    # true and shuffled η are real end-effector positions, so the arm lands on them up to the detector's error ...
    assert result.true_mean < 2 * result.detector_mean + 0.5 and result.shuffled_mean < 2 * result.detector_mean + 0.5
    # ... and therefore away from the clip's own η when given another clip's
    assert result.shuffled_to_true_mean > max(2.0, 3 * result.shuffled_mean), result
    targets = raw["target_true"]
    far = np.linalg.norm(targets[raw["permutation"]] - targets, axis=-1)
    np.testing.assert_allclose(raw["dist_shuffled_to_true"][:, 0], far, atol=2 * result.detector_mean + 1.0)


@pytest.mark.slow
def test_controllability_cli_end_to_end(data, trained, tmp_path, capsys):
    _, _, det = trained
    store = EpisodeStore(data)
    vd = build("visual_dynamics", "tiny")  # 16 x 16, horizon 3: frames are resized, positions mapped back
    norm = ConditionNormalizer.fit(store)
    ckpt = tmp_path / "vd" / "model.json"
    save_checkpoint(ckpt, vd, normalizer=norm.to_dict())
    out = tmp_path / "ctl"
    args = ["controllability", "--data", str(data), "--detector", str(det), "--checkpoint", str(ckpt)]
    args += ["--clips", "5", "--samples", "2", "--split", "train", "--device", "cpu", "--out", str(out)]
    assert cli_main([*args, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| vd | visual_dynamics |" in text and "| copy_last | copy_last |" in text
    doc = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in doc["results"]] == ["vd", "copy_last"]
    for r in doc["results"]:
        assert r["clips"] == 5 and r["samples"] == 2
        for c in (*CONDITIONS, "shuffled_to_true", "detector"):
            assert np.isfinite(r[f"{c}_mean"]) and 0 <= r[f"{c}_median"] < 2 * SIZE
    # copy_last's last frame is x0: under the true η it scores how far the arm moves, not the detector's error
    cl = doc["results"][1]
    assert cl["true_mean"] == pytest.approx(cl["start_mean"], abs=3 * doc["results"][1]["detector_mean"] + 0.5)
    assert (out / "table.md").read_text().startswith(f"Dataset {data}, split train, 5 clips")
    assert doc["detector"]["eval_split"] == "test"


@pytest.mark.slow
def test_train_detector_cli(data, tmp_path, capsys):
    out = tmp_path / "det.json"
    args = ["train-detector", "--data", str(data), "--out", str(out), "--steps", "3", "--batch-size", "4"]
    assert cli_main([*args, "--device", "cpu", "--no-progress"]) == 0
    assert "pixel error on 16 test frames" in capsys.readouterr().out
    assert out.exists() and out.with_suffix(".safetensors").exists()
    assert json.loads(out.read_text())["command"][:2] == ["imagine-ros", "train-detector"]
    assert cli_main(["train-detector", "--data", str(data), "--out", str(out), "--steps", "0"]) == 2


def test_cinn_stage1_control_script_scores_reconstructions_against_eta(data, trained, tiny_checkpoint, capsys):
    import importlib.util
    import re
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "cinn_stage1_control.py"
    spec = importlib.util.spec_from_file_location("cinn_stage1_control", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ckpt = tiny_checkpoint("cinn")
    args = ["--checkpoint", str(ckpt), "--data", str(data), "--detector", str(trained[2]), "--clips", "4"]
    assert script.main([*args, "--split", "all"]) == 0
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([0-9.]+) \| [0-9.]+ \|$", out, re.M))
    assert set(rows) == {"real last frame (detector)", "stage-1 reconstruction", "prior sample z ~ N(0, I)",
                         "x0 (no motion)"}  # fmt: skip
    assert all(float(v) >= 0 for v in rows.values())
