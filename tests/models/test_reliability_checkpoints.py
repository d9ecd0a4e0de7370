"""Checkpoints cannot lie (issue 18): every config field has a type and a range, the weights file is a plain name
beside the JSON, the normaliser fits, NaN/inf weights are refused at load, a non-finite prediction is an error (an
exception in process, ``internal`` on the wire) and η far outside the normaliser's range is refused. Real
checkpoint files (tiny models), real safetensors, a real broker and worker on 127.0.0.1."""

from __future__ import annotations

import json
import math
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from imagine_ros.errors import ConfigError
from imagine_ros.flownet import load_flownet
from imagine_ros.models import METHODS, build
from imagine_ros.models.base import MAX_HORIZON
from imagine_ros.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sha256_file
from imagine_ros.models.conditioning import ConditionNormalizer
from imagine_ros.predictor import MAX_ETA_STD, PredictionError, Predictor

DATA = Path(__file__).resolve().parents[2] / "imagine_ros" / "data"
NORM = ConditionNormalizer([0.55, 0.0, 0.04], [0.09, 0.09, 0.03], min_std=0.001)


@pytest.fixture(scope="module")
def vd_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(d / "vd", build("visual_dynamics", "tiny"), normalizer=NORM.to_dict(), step=3)
    return d / "vd.json"


def _copy(src: Path, dst_dir: Path) -> Path:
    """A copy of the checkpoint ``src`` (.json + .safetensors) in ``dst_dir``; returns the new JSON path."""
    (dst_dir / "m.safetensors").write_bytes(src.with_suffix(".safetensors").read_bytes())
    meta = json.loads(src.read_text())
    (dst_dir / "m.json").write_text(json.dumps({**meta, "weights": "m.safetensors"}))
    return dst_dir / "m.json"


def _edit_meta(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if k == "config":
            meta["config"].update(v)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------------------------- config
ABSURD = {  # by field type: huge, negative, non-finite, of another type
    "int": [10**12, -(10**12), 1e12, math.nan, "x", None, True, [1]],
    "float": [1e12, -1e12, math.nan, math.inf, -math.inf, "x", None, True, [1.0]],
    "bool": [3, 1.0, "x", None, [True]],
    "str": [5, None, "x" * 5000, ["a"], {"a": 1}],
    "tuple[int, ...]": [[10**12], [-(10**12)], [1.5], [True], [[1]], [1] * 1000, "x", None, 3],
    "tuple[str, ...]": [[1], ["x" * 5000], ["a"] * 1000, "x", None, 3],
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_config_field_has_a_type_and_a_range(method):
    """Each field of each method's config refuses absurd values (huge, negative, NaN, wrong type) with a
    ConfigError naming the field: no field is left unchecked."""
    cls = METHODS[method].Config
    base = cls.preset("tiny").to_dict()
    for f in fields(cls):
        for bad in ABSURD[f.type]:
            with pytest.raises(ConfigError) as e:
                cls.from_dict({**base, f.name: bad})
            assert f.name in str(e.value), (f.name, bad, str(e.value))
    for preset in ("tiny", "small", "paper"):  # the presets stay inside the ranges
        cls.preset(preset)


def test_the_issues_examples_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"bank_size must be an integer in \[0, 65536\], got 1000000000000"):
        METHODS["visual_dynamics"].Config.from_dict({"bank_size": 10**12})
    with pytest.raises(ConfigError, match="bank_size must be an integer"):
        METHODS["visual_dynamics"].Config.from_dict({"bank_size": 1e12})  # JSON's 1e12 is a float
    with pytest.raises(ConfigError, match=rf"horizon must be an integer in \[1, {MAX_HORIZON}\]"):
        METHODS["imagineflow"].Config.from_dict({"horizon": 10**9})


def test_a_checkpoint_with_an_absurd_config_is_refused_before_anything_is_built(vd_checkpoint, tmp_path):
    path = _copy(vd_checkpoint, tmp_path)
    _edit_meta(path, config={"bank_size": 10**12})
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="bank_size must be an integer"):
        load_checkpoint(path)
    assert time.perf_counter() - t0 < 2.0
    # within the ranges but larger than its weights file: refused on the meta device, nothing allocated
    path = _copy(vd_checkpoint, tmp_path)
    _edit_meta(path, config={"bank_size": 65536, "num_kernels": 8000})
    with pytest.raises(CheckpointError, match="do not match the visual_dynamics config"):
        load_checkpoint(path)
    for meta_change, message in [
        ({"config": [1, 2]}, "no config object"),
        ({"method": 5}, "names no method"),
        ({"step": "three"}, "'step' must be an integer"),
        ({"step": -1}, "'step' must be an integer"),
    ]:
        path = _copy(vd_checkpoint, tmp_path)
        meta = json.loads(path.read_text())
        meta.update(meta_change)
        path.write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)


# ------------------------------------------------------------------------------------------------------ weights
@pytest.mark.parametrize(
    "name", ["../m.safetensors", "/etc/passwd", "sub/m.safetensors", "", ".", "..", "a\\b", "a\0b", 7, None, ["x"]]
)
def test_the_weights_field_must_be_a_plain_file_name_beside_the_json(vd_checkpoint, tmp_path, name):
    (tmp_path / "sub").mkdir()
    path = _copy(vd_checkpoint, tmp_path / "sub")
    (tmp_path / "m.safetensors").write_bytes(path.with_suffix(".safetensors").read_bytes())  # a tempting target
    _edit_meta(path, weights=name)
    with pytest.raises(CheckpointError, match="'weights' must be the plain name of a file beside it"):
        load_checkpoint(path)


def test_a_weights_name_of_a_folder_or_a_missing_file_is_a_checkpoint_error(vd_checkpoint, tmp_path):
    path = _copy(vd_checkpoint, tmp_path)
    (tmp_path / "folder.safetensors").mkdir()
    for name in ("folder.safetensors", "absent.safetensors"):
        _edit_meta(path, weights=name)
        with pytest.raises(CheckpointError, match="lacks its weights file"):
            load_checkpoint(path)
    _edit_meta(path, weights="m.safetensors", weights_sha256=12)
    with pytest.raises(CheckpointError, match="weights_sha256"):
        load_checkpoint(path)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_weights_holding_nan_or_inf_are_refused_at_load(vd_checkpoint, tmp_path, value):
    path = _copy(vd_checkpoint, tmp_path)
    weights = path.with_suffix(".safetensors")
    state = load_file(str(weights))
    name = next(k for k, t in state.items() if t.is_floating_point() and t.numel() > 1 and "bank" not in k)
    state[name].view(-1)[1] = value
    save_file(state, str(weights), metadata={"format": "imagine_ros.checkpoint"})
    _edit_meta(path, weights_sha256=sha256_file(weights))  # a consistent file: only the numbers are wrong
    with pytest.raises(CheckpointError, match=rf"holds NaN or infinite values in 1 tensor\(s\) \({name}\)"):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------------- normaliser
@pytest.mark.parametrize(
    "normalizer, message",
    [
        ({"mean": [0.5, 0.0], "std": [0.1, 0.1]}, "normaliser has 2 dimensions but the model's condition_dim is 3"),
        ({"mean": [0.5, 0, 0], "std": [0.1, 0.0, 0.1]}, "std must be > 0"),
        ({"mean": [0.5, 0, 0], "std": [0.1, -1.0, 0.1]}, "std must be > 0"),
        ({"mean": [0.5, 0, 0], "std": [0.1, 1e-9, 0.1]}, "is below 1e-06"),
        ({"mean": [0.5, math.nan, 0], "std": [0.1, 0.1, 0.1]}, "must be finite"),
        ({"mean": [1e300, 0, 0], "std": [0.1, 0.1, 0.1]}, "normaliser values beyond"),
        ({"mean": "x", "std": [0.1]}, "bad normaliser"),
        ([1, 2, 3], "bad normaliser"),
    ],
)
def test_the_normaliser_must_fit_the_model(vd_checkpoint, tmp_path, normalizer, message):
    path = _copy(vd_checkpoint, tmp_path)
    _edit_meta(path, normalizer=normalizer)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_predictor_refuses_a_normaliser_of_another_length():
    with pytest.raises(ConfigError, match="normaliser has 2 dimensions"):
        Predictor(build("visual_dynamics", "tiny"), ConditionNormalizer([0, 0], [1, 1]), device="cpu")


# ------------------------------------------------------------------------------------------------- predictions
def test_a_non_finite_prediction_is_an_error_in_process_and_internal_on_the_wire():
    """Raw η (no normaliser) of 3e38 drives a real model's output to NaN/inf: an exception, never black frames;
    over the wire the worker answers ``internal`` and keeps serving."""
    from imagine_ros.serving.broker import Broker
    from imagine_ros.serving.client import RemoteError, RemotePredictor
    from imagine_ros.serving.worker import Worker

    torch.manual_seed(0)
    predictor = Predictor(build("visual_dynamics", "tiny").eval(), device="cpu")
    img = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    huge = np.full((1, 3), 3e38, np.float32)
    with pytest.raises(PredictionError, match="frames hold NaN or infinite values"):
        predictor.predict(img, huge, 1, seed=0)
    assert predictor.predict(img, np.zeros((1, 3), np.float32), 1, seed=0).frames.shape == (1, 1, 3, 16, 16, 3)

    broker = Broker("tcp://127.0.0.1:*", heartbeat_interval=0.1).start()
    worker = Worker(predictor, broker.endpoint, heartbeat_interval=0.1).start()
    try:
        with RemotePredictor(broker.endpoint, "visual_dynamics", timeout=10) as remote:
            with pytest.raises(RemoteError, match="NaN or infinite") as e:
                remote.predict(img, huge, 1, seed=0)
            assert e.value.code == "internal"
            ok = remote.predict(img, np.zeros((1, 3), np.float32), 1, seed=0)
            np.testing.assert_array_equal(ok.frames, predictor.predict(img, np.zeros((1, 3), np.float32), 1, 0).frames)
    finally:
        worker.stop()
        broker.stop()


def test_eta_far_outside_the_normalisers_range_is_refused_with_the_rule(vd_checkpoint):
    predictor = Predictor.from_checkpoint(vd_checkpoint, device="cpu")
    img = np.zeros((1, 16, 16, 3), np.uint8)
    inside = NORM.mean + (MAX_ETA_STD - 0.5) * NORM.std * np.array([1, -1, 1])
    predictor.predict(img, inside[None].astype(np.float32), 1, seed=0)
    for eta in ([0.55, 0.0, 1e30], [50.0, 0.0, 0.04], [0.55, -2.0, 0.04]):
        with pytest.raises(ValueError, match=rf"std from the training mean of η; at most {MAX_ETA_STD:g} std") as e:
            predictor.predict(img, np.array([eta], np.float32), 1, seed=0)
        assert "[-1.25, 2.35]" in str(e.value)  # the accepted range of each dimension, in metres


# --------------------------------------------------------------------------------------------- shipped files
@pytest.mark.parametrize("name", sorted(p.parent.name for p in DATA.glob("*/model.json")))
def test_the_shipped_checkpoints_still_load_and_predict(name):
    predictor = Predictor.from_checkpoint(DATA / name / "model.json", device="cpu")
    s = predictor.image_size
    # the Shapes model (visual_dynamics_shapes) takes no condition
    eta = predictor.normalizer.mean[None].astype(np.float32) if predictor.condition_dim else None
    pred = predictor.predict(np.full((1, s, s, 3), 128, np.uint8), eta, 1, seed=0)
    assert np.isfinite(pred.flows).all() and pred.frames.shape[2] == predictor.horizon


def test_the_shipped_flow_network_still_loads():
    assert load_flownet(DATA / "flownet" / "flownet.json").config.image_size == 64
