"""The rclpy nodes, end to end over real ROS 2 topics (needs a sourced ROS 2: skipped here when rclpy is absent).

Everything below the nodes (pipeline, conversions, simulator bridge, parameter tables) is tested without ROS in
test_pipeline.py, test_ros_msgs.py, test_sim_bridge.py and test_launch_files.py.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

if os.environ.get("IMAGINE_ROS_REQUIRE_RCLPY"):  # the ROS 2 container (docker/ros2.Dockerfile): never skip
    import rclpy
else:
    rclpy = pytest.importorskip(
        "rclpy",
        reason="rclpy is not installed: source a ROS 2 workspace (e.g. /opt/ros/humble/setup.bash) to run these",
    )

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from imagine_ros import pipeline as pl  # noqa: E402
from imagine_ros import ros_msgs  # noqa: E402
from imagine_ros.errors import ConfigError  # noqa: E402
from imagine_ros.node_params import PREDICTION_PARAMS, SIM_PARAMS, descriptor_fields  # noqa: E402
from imagine_ros.predictor import Predictor  # noqa: E402
from imagine_ros.ros.params import unknown_parameters  # noqa: E402
from imagine_ros.ros.prediction_node import ImaginePredictionNode  # noqa: E402
from imagine_ros.ros.prediction_node import main as prediction_main  # noqa: E402
from imagine_ros.ros.sim_node import ImagineSimNode  # noqa: E402

pytestmark = pytest.mark.slow  # end to end

STAMP = (1_700_000_000, 123_456_789)


@pytest.fixture
def ros():
    rclpy.init()
    executor = SingleThreadedExecutor()
    yield executor
    executor.shutdown()
    rclpy.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("visual_dynamics")  # tests/conftest.py


def overrides(**values) -> list[Parameter]:
    return [Parameter(k.replace("__", "."), value=v) for k, v in values.items()]


def spin_until(executor, predicate, timeout: float = 30.0, every=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        if every is not None:
            every()
        executor.spin_once(timeout_sec=0.05)


def camera_msg(rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    msg = ros_msgs.fill_image(Image(), rgb, encoding)
    msg.header.stamp.sec, msg.header.stamp.nanosec = STAMP
    msg.header.frame_id = "camera"
    return msg


def eta_msg(xyz, frame_id: str = "panda_link0") -> PointStamped:
    msg = ros_msgs.fill_point_stamped(PointStamped(), xyz)
    msg.header.frame_id = frame_id
    return msg


def healthy(array: DiagnosticArray) -> bool:
    """An OK prediction status that counts at least one prediction."""
    status = array.status[0]
    values = {kv.key: kv.value for kv in status.values}
    return status.level == DiagnosticStatus.OK and int(values.get("predictions", "0")) > 0


def test_prediction_node_declares_the_documented_parameters(ros, checkpoint):
    node = ImaginePredictionNode(parameter_overrides=overrides(checkpoint=str(checkpoint), device="cpu", rate=3))
    try:
        for p in PREDICTION_PARAMS:
            assert node.has_parameter(p.name), p.name
            d = node.describe_parameters([p.name])[0]
            f = descriptor_fields(p)
            assert d.description == p.description and d.read_only and d.type == f["type"]
            assert [(r.from_value, r.to_value, r.step) for r in d.integer_range] == [
                tuple(r.values()) for r in f["integer_range"]
            ]
            assert [(r.from_value, r.to_value, r.step) for r in d.floating_point_range] == [
                tuple(r.values()) for r in f["floating_point_range"]
            ]
        # rate:=3 (an integer) is declared as the double 3.0, the parameter's own type
        assert node.get_parameter("rate").type_ == Parameter.Type.DOUBLE
        assert node.get_parameter("rate").value == 3.0 and node.params["rate"] == 3.0
        assert list(node.get_parameter("planner.eta_low").value) == [0.35, -0.2, 0.0]
        assert not node.set_parameters([Parameter("rate", value=5.0)])[0].successful  # read-only
        assert node.pipeline.config.rate_hz == 3.0 and node.pipeline.running
    finally:
        node.destroy_node()
    assert not node.pipeline.running


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"backend": "gpu"}, "'backend': expected one of local, remote"),
        ({"rate": -2.0}, r"'rate': expected a value in \[0, 1000\], got -2.0"),
        ({"num_samples": 65}, r"'num_samples': expected a value in \[1, 64\], got 65"),
        ({}, "'checkpoint' is required"),
        ({"backend": "remote"}, "'remote.service' is required"),
        ({"rate": "fast"}, "'rate': expected a number"),
        ({"num_samples": 2.5}, "'num_samples': expected an integer"),
        ({"planner.designated": [1.0, 2.0, 3.0]}, "'planner.designated': expected 2 numbers"),
    ],
)
def test_bad_parameters_are_refused(ros, values, match):
    with pytest.raises(ConfigError, match=match):
        ImaginePredictionNode(parameter_overrides=overrides(**{k.replace(".", "__"): v for k, v in values.items()}))


def test_integers_are_accepted_for_doubles_and_unknown_names_reported(ros, checkpoint):
    node = ImaginePredictionNode(
        parameter_overrides=overrides(
            checkpoint=str(checkpoint), device="cpu", rate=2, planner__designated=[120, 80], rtae=3.0
        )
    )
    try:
        assert node.params["rate"] == 2.0 and type(node.params["rate"]) is float
        assert node.params["planner.designated"] == [120.0, 80.0]
        assert node.pipeline.config.rate_hz == 2.0
        # logged as a warning, not an error, and undeclared again (automatic declaration had declared it)
        assert not node.has_parameter("rtae") and unknown_parameters(node, PREDICTION_PARAMS) == []
    finally:
        node.destroy_node()
        node.destroy_node()  # twice is harmless (rclpy's context shutdown may do it again)


def test_a_node_that_fails_in_its_constructor_is_destroyed_cleanly(ros, checkpoint):
    with pytest.raises(ConfigError):
        ImaginePredictionNode(parameter_overrides=overrides(checkpoint=str(checkpoint), device="cpu", seed=-5))
    with pytest.raises(ConfigError):
        ImagineSimNode(parameter_overrides=overrides(image_size=8))
    # the fixture's rclpy.shutdown() must not meet a half-built node either


def test_prediction_node_publishes_grids_stamped_with_the_input_header(ros, checkpoint):
    node = ImaginePredictionNode(
        parameter_overrides=overrides(
            checkpoint=str(checkpoint), device="cpu", rate=0.0, num_samples=2, seed=3, diagnostics_period=0.2
        )
    )
    probe = rclpy.create_node("probe")
    ros.add_node(node)
    ros.add_node(probe)
    got: dict[str, list] = {"frames": [], "flows": [], "flow_vis": [], "diag": []}
    for name in ("frames", "flows", "flow_vis"):
        probe.create_subscription(Image, f"/imagine_prediction/future/{name}", got[name].append, 10)
    probe.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10)
    pub_image = probe.create_publisher(Image, "/image", qos_profile_sensor_data)
    pub_eta = probe.create_publisher(PointStamped, "/eta", 10)
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    eta = np.array([0.5, 0.05, 0.1])
    try:
        spin_until(ros, lambda: node.pipeline.current_eta() is not None, every=lambda: pub_eta.publish(eta_msg(eta)))
        spin_until(ros, lambda: all(got[k] for k in ("frames", "flows", "flow_vis")),
                   every=lambda: pub_image.publish(camera_msg(rgb[..., ::-1].copy(), "bgr8")))  # fmt: skip
        # the model loads in the background: the first statuses may be WARN "loading the model"
        spin_until(ros, lambda: any(healthy(array) for array in got["diag"]))
    finally:
        node.destroy_node()
        probe.destroy_node()
    frames, flows, vis = got["frames"][0], got["flows"][0], got["flow_vis"][0]
    for msg in (frames, flows, vis):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == STAMP and msg.header.frame_id == "camera"
        assert (msg.height, msg.width) == (2 * 16, 3 * 16)
    assert (frames.encoding, flows.encoding, vis.encoding) == ("rgb8", "32FC2", "rgb8")
    direct = Predictor.from_checkpoint(checkpoint, device="cpu").predict(
        pl.prepare_image(rgb, 16)[0][None], eta[None], num_samples=2, seed=3
    )
    np.testing.assert_array_equal(ros_msgs.msg_to_image(frames), pl.grid(direct.frames[0]))
    np.testing.assert_allclose(ros_msgs.msg_to_image(flows), pl.grid(direct.flows[0]), atol=1e-6)
    status = next(array for array in got["diag"] if healthy(array)).status[0]
    assert status.name.endswith("prediction")
    assert {kv.key for kv in status.values} >= {"predictions", "dropped", "failures", "latency_mean"}


def test_refused_encoding_and_eta_frame(ros, checkpoint):
    node = ImaginePredictionNode(parameter_overrides=overrides(checkpoint=str(checkpoint), device="cpu", rate=0.0))
    probe = rclpy.create_node("probe")
    ros.add_node(node)
    ros.add_node(probe)
    outputs = []
    probe.create_subscription(Image, "/imagine_prediction/future/frames", outputs.append, 10)
    pub_image = probe.create_publisher(Image, "/image", qos_profile_sensor_data)
    pub_eta = probe.create_publisher(PointStamped, "/eta", 10)
    depth = Image(height=4, width=4, encoding="16UC1", step=8)
    depth.data = bytes(32)
    try:
        spin_until(ros, lambda: node.pipeline.stats().rejected_images >= 3, every=lambda: pub_image.publish(depth))
        spin_until(ros, lambda: node.pipeline.stats().eta_rejected >= 1,
                   every=lambda: pub_eta.publish(eta_msg([0.5, 0.0, 0.1], "camera")))  # fmt: skip
        assert node.pipeline.current_eta() is None
        end = time.monotonic() + 0.5
        spin_until(ros, lambda: time.monotonic() > end)
        assert not outputs and node.pipeline.stats().received == 0
    finally:
        node.destroy_node()
        probe.destroy_node()


def test_sim_node_publishes_camera_and_follows_targets(ros):
    node = ImagineSimNode(parameter_overrides=overrides(image_size=32, frame_dt=0.05, real_time_factor=5.0))
    probe = rclpy.create_node("probe")
    ros.add_node(node)
    ros.add_node(probe)
    images, infos, ee, tf_static = [], [], [], []
    probe.create_subscription(Image, "/imagine_sim/camera/image_raw", images.append, qos_profile_sensor_data)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    probe.create_subscription(TFMessage, "/tf_static", tf_static.append, latched)
    probe.create_subscription(CameraInfo, "/imagine_sim/camera/camera_info", infos.append, 10)
    probe.create_subscription(PointStamped, "/imagine_sim/ee_position", ee.append, 10)
    pub_target = probe.create_publisher(PointStamped, "/imagine_sim/target", 10)
    for p in SIM_PARAMS:
        assert node.has_parameter(p.name)
    try:
        spin_until(ros, lambda: images and infos and ee and tf_static)
        img = images[-1]
        assert (img.encoding, img.height, img.width, img.header.frame_id) == ("rgb8", 32, 32, "camera_optical_frame")
        assert infos[-1].k[2] == pytest.approx(15.5) and infos[-1].header.frame_id == "camera_optical_frame"
        assert infos[-1].header.stamp == img.header.stamp  # one stamp per rendered frame
        tf = tf_static[0].transforms[0]
        assert (tf.header.frame_id, tf.child_frame_id) == ("panda_link0", "camera_optical_frame")
        t = tf.transform.translation
        np.testing.assert_allclose([t.x, t.y, t.z], node.bridge.camera_pose()[:3, 3])
        assert ee[-1].header.frame_id == "panda_link0"
        low, high = node.bridge.workspace
        target = (low + high) / 2 + np.array([0.05, 0.05, 0.0])

        def close() -> bool:
            return bool(ee) and np.linalg.norm(ros_msgs.msg_to_point(ee[-1]) - target) < 0.02

        spin_until(ros, close, every=lambda: pub_target.publish(eta_msg(target)), timeout=30)
    finally:
        node.destroy_node()
        probe.destroy_node()


def test_main_reports_bad_parameters_and_exits():
    assert prediction_main(["--ros-args", "-p", "backend:=gpu"]) == 2
    assert prediction_main(["--ros-args", "-p", "rate:=fast"]) == 2


def test_main_accepts_an_integer_for_a_double(capfd):
    # rate:=2 is an integer: accepted as 2.0 (README: "an integer is accepted for a double"), so the node gets as far
    # as the missing checkpoint, a clean exit 2 with a one-line fatal message, no traceback
    assert prediction_main(["--ros-args", "-p", "rate:=2"]) == 2
    err = capfd.readouterr().err
    assert "'rate'" not in err and "Traceback" not in err


def test_the_model_loads_after_the_constructor(ros, checkpoint):
    node = ImaginePredictionNode(parameter_overrides=overrides(checkpoint=str(checkpoint), device="cpu"))
    try:
        assert node.pipeline.running and node.exit_code is None
        spin_until(ros, lambda: node.pipeline.stats().model_state == "ready")
        assert node.pipeline.predictor is not None
    finally:
        t0 = time.monotonic()
        node.destroy_node()
        assert time.monotonic() - t0 < 5.0


def test_a_failed_load_ends_main(checkpoint, tmp_path):
    # no `ros` fixture: main() initialises and shuts down rclpy's default context itself
    broken = tmp_path / "broken.json"
    broken.write_text(checkpoint.read_text())  # a config without its weights file: fails while loading
    assert prediction_main(["--ros-args", "-p", f"checkpoint:={broken}", "-p", "device:=cpu"]) == 2
