"""export-bag: a real (small) HDF5 dataset written as MCAP and sqlite3 bags, read back with rosbags, and the camera's
static transform and camera_info read back with readers this project did not write (the ``mcap`` reader with
``mcap-ros2-support``'s decoder, sqlite3, ruamel.yaml)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from imagine_ros import ros_msgs
from imagine_ros.cli import main
from imagine_ros.constants import ACTIONS, EE_POS, FRAMES, OBJECT_POS
from imagine_ros.errors import ConfigError, DatasetError
from imagine_ros.node_params import SIM_PARAMS, TOPIC_QOS, TRANSIENT_LOCAL, defaults
from imagine_ros.rosbag_export import EPOCH_NS, export_bag, parse_episodes, static_qos
from imagine_ros.sim.storage import EpisodeStore, episode_seed, new_meta, write_dataset

T, H, W, K = 4, 6, 5, 2
NUM_EPISODES = 5
PERIOD_NS = 200_000_000
IMAGE_TOPIC, EE_TOPIC = "/camera/image_raw", "/ee_pos"
OBJ_TOPICS = [f"/objects/{k}/position" for k in range(K)]


def fake_episode(config: dict, index: int, seed: int) -> dict:
    """Deterministic in (config, index, seed): random frames and positions drawn from the seed."""
    rng = np.random.default_rng(seed)
    t, h, w, k = config["T"], config["H"], config["W"], config["K"]
    return {
        FRAMES: rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8),
        EE_POS: rng.normal(size=(t, 3)).astype(np.float32),
        OBJECT_POS: rng.normal(size=(t, k, 3)).astype(np.float32),
        ACTIONS: rng.normal(size=(t, 2)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "ds"
    meta = new_meta(
        kind="fake",
        config={"T": T, "H": H, "W": W, "K": K},
        num_episodes=NUM_EPISODES,
        episodes_per_shard=2,  # 3 shards, the last one short
        seed=123,
        frames_per_episode=T,
        image_size=(H, W),
        val_fraction=0.2,
        test_fraction=0.2,
    )
    write_dataset(root, meta, fake_episode, workers=1, progress=False)
    return root


def read_bag(path: Path) -> tuple[dict[str, str], dict[str, list], list[int]]:
    """topic -> msgtype, topic -> [(bag timestamp, message)], all bag timestamps in file order."""
    ts = ros_msgs.get_typestore("humble")
    types: dict[str, str] = {}
    msgs: dict[str, list] = {}
    order: list[int] = []
    with Reader(path) as reader:
        for c in reader.connections:
            types[c.topic] = c.msgtype
        for conn, stamp, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append((stamp, ts.deserialize_cdr(raw, conn.msgtype)))
            order.append(stamp)
    return types, msgs, order


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_export_round_trip(dataset, tmp_path, storage):
    out = tmp_path / "bags" / f"run_{storage}"
    summary = export_bag(dataset, out, storage=storage, progress=False)
    assert out.is_dir() and (out / "metadata.yaml").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    assert summary["episodes"] == list(range(NUM_EPISODES))
    assert summary["frames"] == NUM_EPISODES * T
    n = NUM_EPISODES * T
    expected_counts = {"/episode": NUM_EPISODES, IMAGE_TOPIC: n, EE_TOPIC: n, **{t: n for t in OBJ_TOPICS}}
    assert summary["topics"] == expected_counts
    assert summary["messages"] == sum(expected_counts.values())

    types, msgs, order = read_bag(out)
    assert {t: len(v) for t, v in msgs.items()} == expected_counts
    assert types == {
        "/episode": "std_msgs/msg/String",
        IMAGE_TOPIC: "sensor_msgs/msg/Image",
        EE_TOPIC: "geometry_msgs/msg/PointStamped",
        **{t: "geometry_msgs/msg/PointStamped" for t in OBJ_TOPICS},
    }
    with Reader(out) as reader:
        assert reader.message_count == sum(expected_counts.values())
        assert reader.start_time == EPOCH_NS

    # time: strictly increasing per topic, non-decreasing in file order, header stamp = bag time
    assert order == sorted(order)
    for topic, items in msgs.items():
        stamps = [s for s, _ in items]
        assert all(b > a for a, b in zip(stamps, stamps[1:])), topic
        if topic != "/episode":
            assert all(ros_msgs.ns_from_stamp(m.header.stamp) == s for s, m in items), topic
    image_stamps = [s for s, _ in msgs[IMAGE_TOPIC]]
    expected = [EPOCH_NS + (e * (T + 1) + t) * PERIOD_NS for e in range(NUM_EPISODES) for t in range(T)]
    assert image_stamps == expected  # episodes end to end with one empty period between them
    assert [s for s, _ in msgs["/episode"]] == expected[::T]

    store = EpisodeStore(dataset)
    try:
        for e in range(NUM_EPISODES):
            ep = store.episode(e)
            info = json.loads(msgs["/episode"][e][1].data)
            assert info == {"index": e, "seed": episode_seed(123, e)}
            for t in range(T):
                img = msgs[IMAGE_TOPIC][e * T + t][1]
                assert (img.encoding, img.height, img.width, img.step) == ("rgb8", H, W, W * 3)
                assert img.header.frame_id == "camera_optical_frame" == defaults(SIM_PARAMS)["camera_frame"]
                np.testing.assert_array_equal(ros_msgs.msg_to_image(img), ep[FRAMES][t])
                ee = msgs[EE_TOPIC][e * T + t][1]
                assert ee.header.frame_id == "panda_link0"
                np.testing.assert_array_equal(ros_msgs.msg_to_point(ee), ep[EE_POS][t].astype(np.float64))
                for k, topic in enumerate(OBJ_TOPICS):
                    p = msgs[topic][e * T + t][1]
                    np.testing.assert_array_equal(ros_msgs.msg_to_point(p), ep[OBJECT_POS][t, k].astype(np.float64))
    finally:
        store.close()


def test_export_is_deterministic_and_selects_episodes(dataset, tmp_path):
    a = export_bag(dataset, tmp_path / "a", episodes=[3, 1], storage="mcap", progress=False, frame_period_s=0.5)
    export_bag(dataset, tmp_path / "b", episodes=[3, 1], storage="mcap", progress=False, frame_period_s=0.5)
    assert a["episodes"] == [3, 1] and a["frames"] == 2 * T

    def raw(path):
        with Reader(path) as reader:
            return [(c.topic, s, bytes(d)) for c, s, d in reader.messages()]

    ra, rb = raw(tmp_path / "a"), raw(tmp_path / "b")
    assert ra == rb
    _, msgs, _ = read_bag(tmp_path / "a")
    assert [json.loads(m.data)["index"] for _, m in msgs["/episode"]] == [3, 1]
    assert [s for s, _ in msgs["/episode"]] == [EPOCH_NS, EPOCH_NS + (T + 1) * 500_000_000]


def test_export_split(dataset, tmp_path):
    store = EpisodeStore(dataset)
    val = store.split("val")
    store.close()
    summary = export_bag(dataset, tmp_path / "val", split="val", storage="sqlite3", progress=False)
    assert summary["episodes"] == val
    _, msgs, _ = read_bag(tmp_path / "val")
    assert [json.loads(m.data)["index"] for _, m in msgs["/episode"]] == val
    outside = next(i for i in range(NUM_EPISODES) if i not in val)
    with pytest.raises(DatasetError, match=f"episode {outside} is not in the 'val' split"):
        export_bag(dataset, tmp_path / "val2", episodes=[outside], split="val", progress=False)
    assert not (tmp_path / "val2").exists()


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_existing_output_is_refused_and_untouched(dataset, tmp_path, kind):
    out = tmp_path / "existing"
    if kind == "dir":
        out.mkdir()
        (out / "keep.txt").write_text("precious")
    else:
        out.write_text("precious")
    with pytest.raises(DatasetError, match="exists already"):
        export_bag(dataset, out, storage="mcap", progress=False)
    if kind == "dir":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
        assert (out / "keep.txt").read_text() == "precious"
    else:
        assert out.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_bad_requests(dataset, tmp_path):
    with pytest.raises(DatasetError, match=r"episode 7 is out of range: .* has 5 episodes \(indices 0 to 4\)") as e:
        export_bag(dataset, tmp_path / "x", episodes=[0, 7], progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match="listed more than once"):
        export_bag(dataset, tmp_path / "x", episodes=[1, 1], progress=False)
    with pytest.raises(ConfigError, match="unknown bag storage 'rosbag'"):
        export_bag(dataset, tmp_path / "x", storage="rosbag", progress=False)
    with pytest.raises(ConfigError, match="positive number of seconds"):
        export_bag(dataset, tmp_path / "x", frame_period_s=0, progress=False)
    with pytest.raises(ConfigError, match="unknown ROS 2 distro"):
        export_bag(dataset, tmp_path / "x", distro="rolling-ish", progress=False)
    with pytest.raises(DatasetError, match="inside the dataset folder"):
        export_bag(dataset, dataset / "bag", progress=False)
    with pytest.raises(DatasetError, match="not a dataset folder"):
        export_bag(tmp_path / "nothing", tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists() and not (dataset / "bag").exists()


def test_parse_episodes():
    assert parse_episodes("0,1,5") == [0, 1, 5]
    assert parse_episodes("0:3") == [0, 1, 2]
    assert parse_episodes("4, 0:2") == [4, 0, 1]
    for bad in ("a", "3:1", "-1", "1:2:3", ","):
        with pytest.raises(ConfigError, match="--episodes"):
            parse_episodes(bad)


def test_cli(dataset, tmp_path, capsys):
    out = tmp_path / "cli_bag"
    argv = ["export-bag", "--data", str(dataset), "--out", str(out), "--episodes", "0:2,4", "--storage", "sqlite3",
            "--frame-period", "0.1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "3 episodes" in lines[0]
    _, msgs, _ = read_bag(out)
    assert len(msgs[IMAGE_TOPIC]) == 3 * T
    assert msgs[IMAGE_TOPIC][1][0] - msgs[IMAGE_TOPIC][0][0] == 100_000_000


def test_failure_mid_export_leaves_nothing(dataset, tmp_path, monkeypatch):
    real = ros_msgs.image_to_msg
    calls = {"n": 0}

    def flaky(array, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            return real(array.astype(np.float32), *args, **kwargs)  # a frame of the wrong dtype
        return real(array, *args, **kwargs)

    monkeypatch.setattr(ros_msgs, "image_to_msg", flaky)
    with pytest.raises(
        DatasetError, match=r"episode 1, frame 2 cannot be exported: .*expects dtype uint8, got float32"
    ):
        export_bag(dataset, tmp_path / "bag", storage="mcap", progress=False)
    assert list(tmp_path.iterdir()) == []


# the field types each distro's rosbag2 parser (rosbag2_storage's metadata YAML decoder) reads
COMMON_FIELDS = {
    "version": int,
    "storage_identifier": str,
    "relative_file_paths": list,
    "duration": dict,
    "starting_time": dict,
    "message_count": int,
    "topics_with_message_count": list,
    "compression_format": str,
    "compression_mode": str,
    "files": list,
    "ros_distro": str,
}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("distro, version", [("humble", 8), ("iron", 8), ("jazzy", 9)])
def test_bag_metadata_has_the_version_and_field_types_the_distro_reads(dataset, tmp_path, storage, distro, version):
    """Humble's rosbag2 reads metadata up to version 8 with each topic's offered QoS as one YAML string; Jazzy writes
    and reads version 9 with a YAML sequence. Parsed here with ruamel.yaml, not with what wrote it."""
    from ruamel.yaml import YAML

    out = tmp_path / f"{distro}_{storage}"
    export_bag(dataset, out, episodes=[0], storage=storage, distro=distro, progress=False)
    info = YAML(typ="safe").load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == version
    for key, kind in COMMON_FIELDS.items():
        assert isinstance(info[key], kind), (key, type(info[key]))
    assert isinstance(info["duration"]["nanoseconds"], int)
    assert isinstance(info["starting_time"]["nanoseconds_since_epoch"], int)
    assert info["storage_identifier"] == storage
    assert all(isinstance(f["path"], str) and isinstance(f["message_count"], int) for f in info["files"])
    assert isinstance(info["custom_data"], dict) and all(isinstance(v, str) for v in info["custom_data"].values())
    topics = info["topics_with_message_count"]
    assert {t["topic_metadata"]["name"] for t in topics} >= {"/episode", IMAGE_TOPIC, EE_TOPIC}
    for t in topics:
        meta = t["topic_metadata"]
        assert isinstance(t["message_count"], int) and isinstance(meta["serialization_format"], str)
        offered = meta["offered_qos_profiles"]
        if version == 8:  # a YAML document inside a string, enums as integers (rmw's values)
            assert isinstance(offered, str)
            (profile,) = YAML(typ="safe").load(offered)
            assert (profile["reliability"], profile["durability"], profile["history"]) == (1, 2, 1)
        else:  # a YAML sequence, enums by name
            assert isinstance(offered, list)
            (profile,) = offered
            assert (profile["reliability"], profile["durability"], profile["history"]) == (
                "reliable",
                "volatile",
                "keep_last",
            )
        assert profile["depth"] == 10
    _, msgs, _ = read_bag(out)  # and it still reads back
    assert len(msgs[IMAGE_TOPIC]) == T


def test_bags_for_distros_whose_rosbag2_reads_only_older_metadata_are_refused(dataset, tmp_path):
    with pytest.raises(ConfigError, match="cannot write a bag for ROS 2 'foxy'.*humble, iron, jazzy"):
        export_bag(dataset, tmp_path / "foxy", episodes=[0], distro="foxy", progress=False)
    assert not (tmp_path / "foxy").exists()


# ----------------------------------------------------------------------------------------------------------------------
# the camera: /tf_static (latched) and camera_info from meta.json

# a camera 0.8 m in front of the base and 0.6 m up, looking back at it and 60 degrees down; the columns of the rotation
# are the optical axes in the base frame: x right, y down, z forward
_PITCH = np.deg2rad(60.0)
_FORWARD = np.array([-np.cos(_PITCH), 0.0, -np.sin(_PITCH)])
_RIGHT = np.array([0.0, 1.0, 0.0])
POSE = np.eye(4)
POSE[:3, :3] = np.column_stack([_RIGHT, np.cross(_FORWARD, _RIGHT), _FORWARD])
POSE[:3, 3] = [0.8, 0.05, 0.6]
CAMERA_K = [[7.5, 0.0, W / 2 - 0.5], [0.0, 7.5, H / 2 - 0.5], [0.0, 0.0, 1.0]]


@pytest.fixture(scope="module")
def camera_dataset(tmp_path_factory) -> Path:
    """The fake dataset of 2 episodes with the camera that ``collect`` records in meta.json (K, T_cam_world)."""
    root = tmp_path_factory.mktemp("data") / "cam"
    camera = {"config": {"width": W, "height": H}, "K": CAMERA_K, "T_cam_world": np.linalg.inv(POSE).tolist()}
    meta = new_meta(
        kind="fake", config={"T": T, "H": H, "W": W, "K": K}, num_episodes=2, episodes_per_shard=2, seed=7,
        frames_per_episode=T, image_size=(H, W), val_fraction=0.0, test_fraction=0.0, extra={"camera": camera},
    )  # fmt: skip
    write_dataset(root, meta, fake_episode, workers=1, progress=False)
    return root


def rotation_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Written out here (not the exporter's helper): the rotation matrix of a unit quaternion."""
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def check_camera_pose(tf_message) -> None:
    (tf,) = tf_message.transforms
    assert (tf.header.frame_id, tf.child_frame_id) == ("panda_link0", "camera_optical_frame")
    assert (tf.header.stamp.sec, tf.header.stamp.nanosec) == (EPOCH_NS // 10**9, 0)
    t, q = tf.transform.translation, tf.transform.rotation
    np.testing.assert_allclose([t.x, t.y, t.z], POSE[:3, 3], atol=1e-12)
    np.testing.assert_allclose(rotation_from_quaternion(q.x, q.y, q.z, q.w), POSE[:3, :3], atol=1e-9)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("distro, version", [("humble", 8), ("jazzy", 9)])
def test_camera_pose_goes_to_tf_static_once_latched_and_camera_info_with_each_frame(
    camera_dataset, tmp_path, storage, distro, version
):
    from rosbags.interfaces import QosDurability, QosReliability
    from ruamel.yaml import YAML

    out = tmp_path / "bag"
    summary = export_bag(camera_dataset, out, storage=storage, distro=distro, progress=False)
    n = 2 * T
    assert summary["topics"]["/tf_static"] == 1 and summary["topics"]["/camera/camera_info"] == n

    # rosbags: the first message of the bag is the pose, offered reliable / keep last 1 / transient local
    ts = ros_msgs.get_typestore(distro)
    with Reader(out) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
        first = next(iter(reader.messages()))
        infos = [(s, ts.deserialize_cdr(raw, c.msgtype)) for c, s, raw in reader.messages() if c.topic.endswith("info")]
        images = [s for c, s, _ in reader.messages() if c.topic == IMAGE_TOPIC]
    (latched,) = qos["/tf_static"]
    assert latched.durability == QosDurability.TRANSIENT_LOCAL and latched.reliability == QosReliability.RELIABLE
    assert latched.depth == 1 and latched == static_qos()
    assert all(p.durability == QosDurability.VOLATILE for t, ps in qos.items() if t != "/tf_static" for p in ps)
    assert first[0].topic == "/tf_static" and first[1] == EPOCH_NS
    check_camera_pose(ts.deserialize_cdr(first[2], first[0].msgtype))
    assert [s for s, _ in infos] == images  # one camera_info per frame, stamped like it
    for stamp, info in infos:
        assert ros_msgs.ns_from_stamp(info.header.stamp) == stamp and info.header.frame_id == "camera_optical_frame"
        assert (info.width, info.height, info.distortion_model) == (W, H, "plumb_bob")
        np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), CAMERA_K)
        np.testing.assert_array_equal(np.reshape(info.p, (3, 4))[:, :3], CAMERA_K)

    # metadata.yaml as the distro's rosbag2 reads it: v8 a YAML string with rmw's enum values, v9 a sequence
    meta = YAML(typ="safe").load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    topic = next(
        t["topic_metadata"] for t in meta["topics_with_message_count"] if t["topic_metadata"]["name"] == "/tf_static"
    )
    offered = topic["offered_qos_profiles"]
    if version == 8:
        (profile,) = YAML(typ="safe").load(offered)
        assert (profile["reliability"], profile["durability"], profile["history"], profile["depth"]) == (1, 1, 1, 1)
    else:
        (profile,) = offered
        assert (profile["reliability"], profile["durability"], profile["history"], profile["depth"]) == (
            "reliable", "transient_local", "keep_last", 1
        )  # fmt: skip
    # the same as the simulator node offers on /tf_static (node_params' QoS table)
    assert TOPIC_QOS["imagine_sim"]["/tf_static"] == ("reliable", 1) and "/tf_static" in TRANSIENT_LOCAL

    # the storage file itself, read without rosbags
    (data_file,) = [f for f in out.iterdir() if f.name != "metadata.yaml"]
    if storage == "mcap":
        from mcap.reader import make_reader
        from mcap_ros2.decoder import DecoderFactory

        with data_file.open("rb") as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            decoded = list(reader.iter_decoded_messages(topics=["/tf_static"]))
            channel_qos = decoded[0][1].metadata["offered_qos_profiles"]
        assert len(decoded) == 1 and decoded[0][2].log_time == EPOCH_NS
        check_camera_pose(decoded[0][3])
    else:
        with sqlite3.connect(data_file) as db:
            (channel_qos,) = db.execute("SELECT offered_qos_profiles FROM topics WHERE name = '/tf_static'").fetchone()
            assert db.execute(
                "SELECT COUNT(*), MIN(m.timestamp) FROM messages m JOIN topics t ON m.topic_id = t.id "
                "WHERE t.name = '/tf_static'"
            ).fetchone() == (1, EPOCH_NS)
    (stored,) = YAML(typ="safe").load(channel_qos)
    assert stored["durability"] == (1 if version == 8 else "transient_local") and stored["depth"] == 1


def test_a_dataset_without_a_camera_gets_no_tf_and_a_wrong_camera_is_refused(dataset, camera_dataset, tmp_path):
    summary = export_bag(dataset, tmp_path / "plain", episodes=[0], progress=False)
    assert "/tf_static" not in summary["topics"] and "/camera/camera_info" not in summary["topics"]
    other = tmp_path / "other"
    summary = export_bag(
        camera_dataset, other, episodes=[0], image_topic="/cam/rgb/image", frame_id_camera="cam_optical_frame",
        frame_id_base="base_link", progress=False,
    )  # fmt: skip
    assert summary["topics"]["/cam/rgb/camera_info"] == T
    _, msgs, _ = read_bag(other)
    tf = msgs["/tf_static"][0][1].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("base_link", "cam_optical_frame")

    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(camera_dataset, broken)
    meta = json.loads((broken / "meta.json").read_text())
    meta["camera"]["config"] = {"width": W + 1, "height": H}
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=f"frames of {W}x{H} pixels, but meta.json's camera K is for {W + 1}x{H}"):
        export_bag(broken, tmp_path / "x", progress=False)
    meta["camera"]["T_cam_world"] = np.diag([2.0, 1.0, 1.0, 1.0]).tolist()  # not a rigid transform
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="meta.json's camera cannot be exported"):
        export_bag(broken, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
