"""The method contract, run for every registered method: shapes, ranges, seeds, checkpoints, the Predictor."""

import json

import numpy as np
import pytest
import torch

from imagine_ros.errors import ConfigError
from imagine_ros.flow import dis_flows
from imagine_ros.models import METHODS, build, get_method
from imagine_ros.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from imagine_ros.models.conditioning import ConditionNormalizer
from imagine_ros.predictor import Predictor, PredictorProtocol

NAMES = sorted(METHODS)


def tiny(name: str):
    torch.manual_seed(0)
    return build(name, "tiny").eval()


def images_for(model, b=2, seed=0):
    s = model.config.image_size
    return np.random.default_rng(seed).integers(0, 256, (b, s, s, 3), dtype=np.uint8)


def conditions_for(model, b=2):
    c = model.config.condition_dim
    return np.random.default_rng(1).normal(size=(b, c)).astype(np.float32) if c else None


@pytest.mark.parametrize("name", NAMES)
def test_sample_shapes_and_ranges(name):
    model = tiny(name)
    cfg = model.config
    x0 = torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1
    cond = torch.randn(2, cfg.condition_dim) if cfg.condition_dim else None
    out = model.sample(x0, cond, 3, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (2, 3, cfg.horizon, 3, cfg.image_size, cfg.image_size)
    assert out.frames.min() >= -1 and out.frames.max() <= 1 and torch.isfinite(out.frames).all()
    if model.native_flow:
        assert out.flows.shape == (2, 3, cfg.horizon, 2, cfg.image_size, cfg.image_size)
    else:
        assert out.flows is None


@pytest.mark.parametrize("name", NAMES)
def test_predictor_contract_and_seeds(name):
    model = tiny(name)
    pred = Predictor(model, device="cpu")
    assert isinstance(pred, PredictorProtocol)
    images, conds = images_for(model), conditions_for(model)
    a = pred.predict(images, conds, num_samples=3, seed=5)
    b = pred.predict(images, conds, num_samples=3, seed=5)
    s, t = model.config.image_size, model.config.horizon
    assert a.frames.shape == (2, 3, t, s, s, 3) and a.frames.dtype == np.uint8
    assert a.flows.shape == (2, 3, t, s, s, 2) and a.flows.dtype == np.float32
    assert a.flow_source == ("native" if model.native_flow else "dis") and a.method == name
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.flows, b.flows)
    if name != "copy_last":
        c = pred.predict(images, conds, num_samples=3, seed=6)
        assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("name", NAMES)
def test_predictor_names_the_expected_shape(name):
    pred = Predictor(tiny(name), device="cpu")
    s = pred.image_size
    with pytest.raises(ValueError, match=rf"images must be \(B, {s}, {s}, 3\) uint8, got shape \(2, {s + 1}, {s}, 3\)"):
        pred.predict(np.zeros((2, s + 1, s, 3), np.uint8))
    with pytest.raises(ValueError, match="got dtype float32"):
        pred.predict(np.zeros((2, s, s, 3), np.float32))
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        pred.predict(np.zeros((1, s, s, 3), np.uint8), num_samples=0)
    if pred.condition_dim:
        with pytest.raises(ValueError, match=rf"conditions must have shape \(1, {pred.condition_dim}\)"):
            pred.predict(np.zeros((1, s, s, 3), np.uint8), np.zeros((1, pred.condition_dim + 1)))


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_reproduces_samples_exactly(name, tmp_path):
    model = tiny(name)
    norm = ConditionNormalizer(mean=[0.5, 0.0, 0.1], std=[0.1, 0.1, 0.05])
    save_checkpoint(tmp_path / "m", model, step=7, normalizer=norm.to_dict(), command=["imagine-ros", "train"])
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["method"] == name and meta["step"] == 7 and meta["command"] == ["imagine-ros", "train"]
    loaded = load_checkpoint(tmp_path / "m.json")
    assert loaded.model.config == model.config and loaded.step == 7
    images, conds = images_for(model), conditions_for(model)
    a = Predictor(model, norm, device="cpu").predict(images, conds, 2, seed=3)
    b = Predictor.from_checkpoint(tmp_path / "m", device="cpu").predict(images, conds, 2, seed=3)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.flows, b.flows)


def test_bad_checkpoints_are_refused_clearly(tmp_path):
    model = tiny("visual_dynamics")
    weights, meta_path = save_checkpoint(tmp_path / "m", model)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "method": "sora"}))
    with pytest.raises(CheckpointError, match="unknown method 'sora'"):
        load_checkpoint(meta_path)
    meta_path.write_text(json.dumps({**meta, "config": {**meta["config"], "colour": 1}}))
    with pytest.raises(CheckpointError, match="has no field.*'colour'"):
        load_checkpoint(meta_path)
    other = get_method("visual_dynamics").Config.preset("small")  # other widths than the tiny weights
    meta_path.write_text(json.dumps({**meta, "config": other.to_dict()}))
    with pytest.raises(CheckpointError, match="do not match the visual_dynamics config"):
        load_checkpoint(meta_path)
    meta_path.write_text(json.dumps(meta))
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(CheckpointError, match="truncated or replaced"):
        load_checkpoint(meta_path)
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "weights_sha256"}))
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        load_checkpoint(meta_path)
    meta_path.write_text("{ not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(meta_path)
    meta_path.write_text(json.dumps({"format": "something.else"}))
    with pytest.raises(CheckpointError, match="not an imagine_ros checkpoint"):
        load_checkpoint(meta_path)


def test_registry_and_presets():
    with pytest.raises(ConfigError, match="unknown method 'nope'; known methods: ") as err:
        get_method("nope")
    assert all(name in str(err.value) for name in NAMES)
    for name in NAMES:
        cls = get_method(name)
        for preset in ("tiny", "small", "paper"):
            cfg = cls.Config.preset(preset)
            assert cls.Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        with pytest.raises(ConfigError, match="unknown config preset 'huge'"):
            cls.Config.preset("huge")


def test_copy_last_repeats_the_input_with_zero_flow():
    model = tiny("copy_last")
    images = images_for(model)
    p = Predictor(model, device="cpu").predict(images, None, 2)
    for t in range(model.config.horizon):
        np.testing.assert_array_equal(p.frames[:, 1, t], images)
    assert not p.flows.any() and p.flow_source == "native"


def test_dis_flows_recover_a_translation():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64)) > 0.5).astype(np.uint8) * 200
    img = np.stack([img] * 3, -1)
    import cv2

    img = cv2.GaussianBlur(img, (5, 5), 1.0)
    shifted = np.roll(img, (2, 3), axis=(0, 1))  # content moves 3 px right, 2 px down
    flow = dis_flows(img, shifted[None])[0]
    inner = flow[16:48, 16:48]
    assert np.allclose(np.median(inner.reshape(-1, 2), 0), [3, 2], atol=0.3)
