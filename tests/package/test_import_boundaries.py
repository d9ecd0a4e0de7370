"""Dependencies point one way: models <- training, evaluation <- imagine_ros (CLI, serving, planning, ROS).

Inference (loading a Predictor in the serving worker or the ROS prediction node) must not import the dataset code
(h5py), the simulator (gymnasium, pybullet) or the training code: each check runs in a fresh interpreter, does what the
inference path does, and lists the modules of that kind in ``sys.modules``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imagine_ros.flownet import FlowNet, FlowNetConfig, save_flownet
from imagine_ros.models import build
from imagine_ros.models.checkpoint import save_checkpoint
from imagine_ros.models.conditioning import ConditionNormalizer

pytestmark = pytest.mark.slow  # fresh interpreters, end to end

#: Top-level packages inference must not import.
HEAVY = ("h5py", "gymnasium", "pybullet", "pybullet_envs", "pybullet_data")
#: imagine_ros packages inference must not import.
FORBIDDEN = ("imagine_ros.training", "imagine_ros.evaluation", "imagine_ros.sim")

# appended to every snippet: prints the forbidden modules the snippet imported, as JSON, on the last line
REPORT = f"""
import json as _json, sys as _sys
_bad = sorted(
    _m for _m in _sys.modules
    if _m.split(".")[0] in {HEAVY!r} or any(_m == _p or _m.startswith(_p + ".") for _p in {FORBIDDEN!r})
)
print(_json.dumps(_bad))
"""


def imported(code: str, *args: str) -> list[str]:
    """The forbidden modules in ``sys.modules`` after ``code`` ran in a fresh interpreter (``sys.argv[1:] == args``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code + REPORT, *args], capture_output=True, text=True, timeout=240, env=env
    )
    assert proc.returncode == 0, f"the snippet failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny η-conditioned checkpoint with a normaliser, and a tiny flow network of its image size."""
    d = tmp_path_factory.mktemp("boundaries")
    torch.manual_seed(0)
    model = build("visual_dynamics", "tiny")
    norm = ConditionNormalizer([0.5, 0.0, 0.1], [0.1, 0.1, 0.05], min_std=1e-3)
    save_checkpoint(d / "vd", model, normalizer=norm.to_dict())
    save_flownet(FlowNet(FlowNetConfig.preset("tiny")), d / "flownet")
    assert model.config.image_size == FlowNetConfig.preset("tiny").image_size
    return d / "vd.json", d / "flownet.json"


def test_loading_a_predictor_and_predicting_imports_no_training_code(checkpoint):
    code = """
import sys
import numpy as np
from imagine_ros.predictor import Predictor

for flow_net in (None, sys.argv[2]):
    p = Predictor.from_checkpoint(sys.argv[1], device="cpu", flow_net=flow_net)
    assert p.normalizer is not None
    images = np.random.default_rng(0).integers(0, 256, (1, p.image_size, p.image_size, 3), dtype=np.uint8)
    out = p.predict(images, np.array([[0.5, 0.0, 0.1]], np.float32), num_samples=2, seed=0)
    assert out.frames.shape[:3] == (1, 2, p.horizon), out.frames.shape
"""
    assert imported(code, *map(str, checkpoint)) == []


def test_the_serving_worker_imports_no_training_code(checkpoint):
    # what ``imagine-ros serve`` does before it runs the worker (imagine_ros.cli.serve.run_serve)
    code = """
import sys
from imagine_ros.cli import serve
from imagine_ros.predictor import Predictor
from imagine_ros.serving import RemotePredictor, Worker, cluster

predictor = Predictor.from_checkpoint(sys.argv[1], device="cpu")
worker = Worker(predictor, "tcp://127.0.0.1:9")
assert worker.service == "visual_dynamics"
worker.context.term()
"""
    assert imported(code, str(checkpoint[0])) == []


def test_the_ros_pipeline_imports_no_training_code(checkpoint):
    # the prediction node's core (imagine_ros.pipeline): parameters -> Predictor -> a prediction and a plan
    code = """
import sys
import numpy as np
from imagine_ros import node_params
from imagine_ros import pipeline as pl

params = node_params.validate(node_params.PREDICTION_PARAMS, {"checkpoint": sys.argv[1], "device": "cpu", "rate": 0.0})
predictor = pl.predictor_from_params(params)
image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
r = pl.PredictionPipeline(predictor, pl.config_from_params(params)).process(pl.Frame(image))
assert r is not None and r.grids is not None
settings = pl.PlannerSettings(samples=4, iterations=1, elites=2, designated=((8.0, 8.0),), goal=(10.0, 10.0))
hook = pl.PlannerHook(settings, num_futures=2)
r = pl.PredictionPipeline(predictor, pl.PipelineConfig(num_samples=2, seed=0), planner=hook).process(pl.Frame(image))
assert r is not None and r.plan is not None
"""
    assert imported(code, str(checkpoint[0])) == []


def test_the_ros_prediction_node_imports_no_training_code():
    if not os.environ.get("IMAGINE_ROS_REQUIRE_RCLPY") and importlib.util.find_spec("rclpy") is None:
        pytest.skip("rclpy is not available (source a ROS 2 installation)")
    assert imported("import imagine_ros.ros.prediction_node") == []


def test_models_import_no_training_code():
    code = """
import importlib, pkgutil
import imagine_ros.models as models

for info in pkgutil.iter_modules(models.__path__):
    importlib.import_module(f"imagine_ros.models.{info.name}")
"""
    assert imported(code) == []


def test_training_imports_no_evaluation_code():
    """evaluation imports training's clips and metrics, never the other way round (no cycle)."""
    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(p.relative_to(root))
        for p in sorted((root / "training").rglob("*.py"))
        if "imagine_ros.evaluation" in p.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders
