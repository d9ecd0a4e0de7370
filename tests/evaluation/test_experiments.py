"""Evaluation table, the Shapes KL experiment and the predict command, on small real datasets."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from imagine_ros.cli import main as cli_main
from imagine_ros.evaluation import shapes_kl
from imagine_ros.evaluation.evaluate import copy_last_like, evaluate
from imagine_ros.models import build
from imagine_ros.predictor import Predictor
from imagine_ros.sim.collect import collect_push
from imagine_ros.training.clips import ClipDataset, fixed_clips
from imagine_ros.training.metrics import best_of_n


@pytest.fixture(scope="module")
def push(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("push") / "d"
    collect_push(out, episodes=5, frames=8, shard_size=5, env_options={"image_size": 16}, progress=False)
    return out


@pytest.fixture(scope="module")
def shapes(shapes_data) -> Path:
    return shapes_data  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint("visual_dynamics")  # tests/conftest.py


def test_evaluate_copy_last_matches_a_direct_computation(push):
    model = build("visual_dynamics", "tiny")
    floor = copy_last_like(Predictor(model, device="cpu"))
    res = evaluate(floor, push, "all", clips=4, samples=2, progress=False)
    ds = ClipDataset(push, "all", horizon=floor.horizon, stride=floor.horizon, image_size=floor.image_size)
    clips = fixed_clips(ds, 4, seed=0)
    x0 = torch.stack([c["x0"] for c in clips])
    future = torch.stack([c["future"] for c in clips])
    direct = best_of_n(x0[:, None, None].expand(-1, 1, future.shape[1], -1, -1, -1), future)
    assert res.psnr == pytest.approx(float(direct["psnr"].mean()), abs=1e-3)
    assert res.ssim == pytest.approx(float(direct["ssim"].mean()), abs=1e-4)
    assert res.diversity == 0.0 and res.clips == 4


def test_evaluate_cli_prints_and_writes_the_table(push, tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        cli_main(
            [
                "evaluate",
                "--data",
                str(push),
                "--checkpoint",
                str(tiny_ckpt),
                "--split",
                "all",
                "--clips",
                "3",
                "--samples",
                "2",
                "--out",
                str(out),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "| visual_dynamics | visual_dynamics |" in text and "| copy_last | copy_last |" in text and "PSNR@2" in text
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["visual_dynamics", "copy_last"]
    assert all(np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 for r in rows)


def test_flow_measurement_and_histogram_columns():
    flows = np.zeros((3, 8, 8, 2), np.float32)
    flows[..., 0], flows[..., 1] = 2.0, -1.0
    m1 = np.zeros((8, 8), bool)
    m1[1:3, 1:3] = True
    disp = shapes_kl.measure_flows(flows, [m1, None, m1])
    assert np.allclose(disp[:, 0], [2, -1]) and np.isnan(disp[:, 1]).all()
    bins = {c: [] for c in shapes_kl.COLUMNS}
    shapes_kl.collect(disp, np.array([0, -1, 2]), bins)  # a circle and a triangle, both measured
    assert np.allclose(np.concatenate(bins["circle"]), [[2, -1]] * 3)
    assert np.allclose(np.concatenate(bins["circle_triangle"]), [[-1, 2]] * 3)  # (circle dy, triangle dx)
    assert bins["square"] == []


def _matcher(ep, supersample=8):
    from imagine_ros.sim.shapes import OBJECT_COLOR, OBJECT_SIZE, OBJECT_TYPE

    masks = shapes_kl.shape_masks(ep["frames"][0], ep[OBJECT_COLOR], ep[OBJECT_TYPE])
    visible = np.array([m is not None for m in masks])
    args = (ep[OBJECT_TYPE], ep["object_pos"][0], ep[OBJECT_SIZE], ep[OBJECT_COLOR], visible)
    return shapes_kl.TemplateMatcher(ep["frames"].shape[1], *args, supersample=supersample), visible


def test_template_matching_recovers_true_subpixel_displacements(shapes):
    from imagine_ros.sim.storage import EpisodeStore

    store = EpisodeStore(shapes)
    errors = []
    for i in range(12):
        ep = store.episode(i)
        matcher, visible = _matcher(ep)
        measured = matcher.measure(ep["frames"][1])
        true = np.diff(ep["object_pos"][:2, :, :2].astype(np.float64), axis=0)[0]
        assert np.isnan(measured[~visible]).all()
        errors.append(np.abs(measured[visible] - true[visible]).max(1))
    errors = np.concatenate(errors)
    # sub-pixel: a histogram bin is 10 / 41 = 0.24 px wide
    assert len(errors) >= 20 and np.median(errors) < 0.05 and np.mean(errors < 0.2) >= 0.9, errors


def test_template_matching_follows_a_drawn_shift_and_misses_an_erased_shape():
    from imagine_ros.sim.shapes import render_frame

    types, sizes = np.array([1, 2]), np.array([5.0, 6.0])
    colors = np.array([[200, 80, 80], [80, 200, 120]], np.uint8)
    pos = np.array([[9.0, 10.0], [23.3, 22.6]])  # apart, so that blurring does not mix their colours
    matcher = shapes_kl.TemplateMatcher(32, types, pos, sizes, colors, [True, True], supersample=8)
    shift = np.array([[1.37, -0.62], [-2.25, 2.1]])
    frame = render_frame(32, types, pos + shift, sizes, colors, supersample=8)
    assert np.allclose(matcher.measure(frame), shift, atol=0.08)  # the drawing resolves 1/8 px
    erased = render_frame(32, types[:1], (pos + shift)[:1], sizes[:1], colors[:1], supersample=8)
    got = matcher.measure(erased)
    assert np.allclose(got[0], shift[0], atol=0.08) and np.isnan(got[1]).all()  # not found: left out
    blurred = __import__("cv2").GaussianBlur(frame, (5, 5), 1.0)  # a blurry prediction is still located
    assert np.allclose(matcher.measure(blurred), shift, atol=0.35)


def test_shapes_kl_floor_is_near_zero_and_below_copy_last(shapes, tmp_path):
    floor_pred = Predictor(build("copy_last", "small", image_size=32, horizon=1), device="cpu")
    res = shapes_kl.run({"copy_last": floor_pred}, shapes, "test", episodes=20, samples=2, progress=False)
    assert res.measure == "frames" and res.found["measurement floor"][0] == res.found["measurement floor"][1] > 0
    floor = res.kl["measurement floor"]
    assert np.mean(list(floor.values())) < 1  # 20 images: one shape a bin off costs ~1 in its column
    for c in shapes_kl.COLUMNS:
        assert res.kl["copy_last"][c] > max(5.0, 4 * floor[c]) and 2 > floor[c] >= 0
        assert res.histograms["copy_last"][c][20, 20] > 0.9  # the input itself: (almost) all mass at zero motion
        assert res.histograms["truth"][c].sum() == pytest.approx(1.0)
    out = shapes_kl.write(res, tmp_path / "kl")
    text = (out / "table.md").read_text()
    assert "paper: Xue et al. | 1.70 | 2.48 | 1.14 | 2.46" in text and "template matching" in text
    assert json.loads((out / "kl.json").read_text())["measure"] == "frames"
    import cv2

    img = cv2.imread(str(out / "histograms.png"))
    assert img is not None and img.shape[0] > 100
    flows = shapes_kl.run({}, shapes, "test", episodes=20, samples=1, progress=False, measure="flow")
    assert flows.measure == "flow" and "mean predicted flow" in shapes_kl.table(flows)
    with pytest.raises(ValueError, match="measure must be one of frames, flow"):
        shapes_kl.run({}, shapes, "test", episodes=2, measure="pixels")


@pytest.mark.slow
def test_shapes_kl_cli_end_to_end_with_training(tmp_path, capsys):
    out = tmp_path / "exp"
    assert (
        cli_main(
            [
                "shapes-kl",
                "--out",
                str(out),
                "--config",
                "tiny",
                "--image-size",
                "16",
                "--dataset-episodes",
                "60",
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--episodes",
                "5",
                "--samples",
                "2",
                "--workers",
                "1",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (out / "run" / "model.json").exists() and (out / "histograms.png").exists()
    assert "visual_dynamics (ours)" in capsys.readouterr().out


def test_predict_cli_writes_frames_and_flow_maps(push, tiny_ckpt, tmp_path):
    gif = tmp_path / "p.gif"
    assert (
        cli_main(
            [
                "predict",
                "--checkpoint",
                str(tiny_ckpt),
                "--data",
                str(push),
                "--episode",
                "1",
                "--frame",
                "2",
                "--samples",
                "3",
                "--out",
                str(gif),
                "--scale",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    from PIL import Image

    with Image.open(gif) as im:
        horizon = build("visual_dynamics", "tiny").config.horizon
        assert im.n_frames == horizon + 1 and im.size == (2 * 16 + 1, 3 * 17 - 1)
    assert (
        cli_main(
            ["predict", "--checkpoint", str(tiny_ckpt), "--image", str(tmp_path / "missing.png"), "--out", str(gif)]
        )
        == 2
    )
