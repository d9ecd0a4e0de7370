"""export-bag --checkpoint: a short simulated session with its predictions (camera, eta, future grids) as MCAP,
read back with rosbags and compared with the same predictions made directly; the camera's /tf_static pose and
camera_info, read with the ``mcap`` reader and ``mcap-ros2-support``'s decoder, project like the simulator's camera."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from imagine_ros import pipeline as pl
from imagine_ros import ros_msgs
from imagine_ros.cli import main as cli_main
from imagine_ros.constants import EE_POS, FRAMES
from imagine_ros.errors import ConfigError
from imagine_ros.models import build
from imagine_ros.models.checkpoint import save_checkpoint
from imagine_ros.predictor import Predictor
from imagine_ros.rosbag_export import EPOCH_NS, export_bag
from imagine_ros.sim.collect import collect_push
from imagine_ros.sim.storage import EpisodeStore

FRAMES_PER_EPISODE = 6
SAMPLES = 2
PRED = "/imagine_prediction/future"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One real PyBullet pushing episode (32 px camera) and an untrained tiny visual_dynamics checkpoint (16 px)."""
    root = tmp_path_factory.mktemp("session")
    collect_push(root / "data", 1, frames=FRAMES_PER_EPISODE, env_options={"image_size": 32}, progress=False)
    save_checkpoint(root / "model", build("visual_dynamics", "tiny"))
    return root / "data", root / "model.json"


def read(path):
    ts = ros_msgs.get_typestore("humble")
    out: dict[str, list] = {}
    (mcap,) = path.glob("*.mcap")
    assert mcap.read_bytes()[:8] == b"\x89MCAP0\r\n"  # the MCAP magic that Foxglove and ros2 bag look for
    assert "storage_identifier: mcap" in (path / "metadata.yaml").read_text()
    with Reader(path) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, ts.deserialize_cdr(raw, conn.msgtype)))
    return out


def test_session_with_predictions_round_trips_through_mcap(session, tmp_path):
    data, ckpt = session
    summary = export_bag(data, tmp_path / "bag", checkpoint=ckpt, num_samples=SAMPLES, seed=5, progress=False)
    n = FRAMES_PER_EPISODE
    assert summary["predictions"] == n
    msgs = read(tmp_path / "bag")
    for topic in ("/camera/image_raw", "/ee_pos", "/eta", f"{PRED}/frames", f"{PRED}/flows", f"{PRED}/flow_vis"):
        assert len(msgs[topic]) == n, topic
    store = EpisodeStore(data)
    try:
        ep = store.episode(0)
    finally:
        store.close()
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    horizon = predictor.horizon
    for t in range(n):
        stamp, image = msgs["/camera/image_raw"][t]
        np.testing.assert_array_equal(ros_msgs.msg_to_rgb(image), ep[FRAMES][t])
        eta_stamp, eta = msgs["/eta"][t]
        assert eta_stamp == stamp and eta.header.frame_id == "panda_link0"
        expected_eta = ep[EE_POS][min(t + horizon, n - 1)].astype(np.float64)
        np.testing.assert_array_equal(ros_msgs.msg_to_point(eta), expected_eta)
        # the grids are the node's pipeline output: equal to a direct prediction with the same seed and eta
        model_image = pl.prepare_image(ep[FRAMES][t], predictor.image_size, "crop")[0]
        direct = predictor.predict(model_image[None], expected_eta[None], num_samples=SAMPLES, seed=5)
        grids = pl.future_grids(direct)
        for name, encoding, want in (("frames", "rgb8", grids.frames), ("flows", "32FC2", grids.flows)):
            s, msg = msgs[f"{PRED}/{name}"][t]
            assert s == stamp and ros_msgs.header_stamp_ns(msg) == stamp
            assert msg.header.frame_id == "camera_optical_frame"
            assert msg.encoding == encoding
            assert (msg.height, msg.width) == (SAMPLES * 16, horizon * 16)
            np.testing.assert_array_equal(ros_msgs.msg_to_image(msg), want)
        vis = msgs[f"{PRED}/flow_vis"][t][1]
        assert vis.encoding == "rgb8" and (vis.height, vis.width) == (SAMPLES * 16, horizon * 16)
    assert msgs["/camera/image_raw"][0][0] == EPOCH_NS


def test_tf_static_and_camera_info_project_like_the_simulator_camera(session, tmp_path):
    """Base-frame points (the hand's positions) taken into the camera's optical frame through the bag's /tf_static
    pose and projected with its camera_info K land where the simulator's own camera (pybullet's matrices) draws them.
    Read with the mcap reader and mcap-ros2-support's CDR decoder, not with what wrote the bag."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from imagine_ros.sim.camera import Camera, CameraConfig

    data, _ = session
    export_bag(data, tmp_path / "bag", distro="jazzy", progress=False)
    (path,) = (tmp_path / "bag").glob("*.mcap")
    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        channels = {c.topic: c for c in reader.get_summary().channels.values()}
        got: dict[str, list] = {}
        for _, channel, message, msg in reader.iter_decoded_messages():
            got.setdefault(channel.topic, []).append((message.log_time, msg))
    assert "durability: transient_local" in channels["/tf_static"].metadata["offered_qos_profiles"]
    assert "durability: volatile" in channels["/camera/image_raw"].metadata["offered_qos_profiles"]
    ((stamp, tf_message),) = got["/tf_static"]
    (tf,) = tf_message.transforms
    assert stamp == EPOCH_NS and (tf.header.frame_id, tf.child_frame_id) == ("panda_link0", "camera_optical_frame")
    t, q = tf.transform.translation, tf.transform.rotation
    x, y, z, w = q.x, q.y, q.z, q.w
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    infos = got["/camera/camera_info"]
    assert [s for s, _ in infos] == [s for s, _ in got["/camera/image_raw"]]
    info = infos[0][1]
    assert info.header.frame_id == "camera_optical_frame" and (info.width, info.height) == (32, 32)
    k = np.reshape(info.k, (3, 3))

    store = EpisodeStore(data)
    try:
        points = np.asarray(store.episode(0)[EE_POS], np.float64)
        config = dict(store.meta["camera"]["config"])
        camera = Camera(CameraConfig(**{**config, "target": tuple(config["target"])}))
    finally:
        store.close()
    in_camera = (points - [t.x, t.y, t.z]) @ rotation  # base -> optical frame: R^T (p - t)
    assert np.all(in_camera[:, 2] > 0), "the hand is in front of the camera"
    uv = (in_camera / in_camera[:, 2:]) @ k.T
    np.testing.assert_allclose(uv[:, :2], camera.project(points), atol=1e-6)


def test_cli_predict_every_and_bad_options(session, tmp_path, capsys):
    data, ckpt = session
    out = tmp_path / "cli_bag"
    code = cli_main(
        ["export-bag", "--data", str(data), "--out", str(out), "--checkpoint", str(ckpt), "--samples", "1",
         "--predict-every", "4", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    line = capsys.readouterr().out
    assert "2 predictions" in line  # frames 0 and 4 of 6
    msgs = read(out)
    assert len(msgs[f"{PRED}/frames"]) == 2 and msgs[f"{PRED}/frames"][0][1].height == 16
    image_stamps = [s for s, _ in msgs["/camera/image_raw"]]
    assert [s for s, _ in msgs[f"{PRED}/frames"]] == [image_stamps[0], image_stamps[4]]
    with pytest.raises(ConfigError, match="--predict-every must be a positive integer"):
        export_bag(data, tmp_path / "x", checkpoint=ckpt, predict_every=0, progress=False)
    with pytest.raises(ConfigError, match="no such checkpoint"):
        export_bag(data, tmp_path / "x", checkpoint=tmp_path / "none.json", progress=False)
    assert not (tmp_path / "x").exists()


def test_model_without_condition_writes_no_eta(session, tmp_path):
    data, _ = session
    save_checkpoint(tmp_path / "copy", build("copy_last", "tiny"))
    summary = export_bag(data, tmp_path / "bag", checkpoint=tmp_path / "copy.json", num_samples=1, progress=False)
    assert "/eta" not in summary["topics"] and summary["topics"][f"{PRED}/frames"] == FRAMES_PER_EPISODE
    msgs = read(tmp_path / "bag")
    first = ros_msgs.msg_to_image(msgs[f"{PRED}/frames"][0][1])
    camera = ros_msgs.msg_to_rgb(msgs["/camera/image_raw"][0][1])
    np.testing.assert_array_equal(first[:, :16], pl.prepare_image(camera, 16)[0])  # copy_last repeats the input
