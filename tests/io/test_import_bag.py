"""import-bag: ``collect`` -> ``export-bag`` -> ``import-bag`` gives back the same frames and end-effector track; a bag
written by an independent writer (``mcap-ros2-support``, hand-written message definitions) with CompressedImage (png,
jpeg), CameraInfo and TF imports correctly; bad input is one clear error and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from imagine_ros import ros_msgs
from imagine_ros.cli import main
from imagine_ros.constants import ACTIONS, EE_POS, FRAMES
from imagine_ros.errors import ConfigError, DatasetError
from imagine_ros.pipeline import prepare_image
from imagine_ros.rosbag_export import EPOCH_NS, export_bag
from imagine_ros.rosbag_import import IMAGE_STAMP_NS, STAMP_NS, ImportConfig, import_bag, make_plan, nearest_earlier
from imagine_ros.sim.storage import EpisodeStore

EPISODES, FRAMES_PER_EPISODE, SIZE = 3, 6, 32


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    from imagine_ros.sim.collect import collect_push

    root = tmp_path_factory.mktemp("collect") / "ds"
    env = {"image_size": SIZE, "ground_truth": False}
    collect_push(root, episodes=EPISODES, frames=FRAMES_PER_EPISODE, shard_size=2, env_options=env, progress=False)
    return root


def _nothing_left(parent: Path, out: Path) -> None:
    assert not out.exists(), f"{out} was written"
    assert not [p.name for p in parent.iterdir() if p.name.startswith(f".{out.name}")], "temporary folder left behind"


@pytest.mark.parametrize("storage, distro", [("mcap", "humble"), ("sqlite3", "jazzy")])
def test_collect_export_import_round_trip(collected, tmp_path, storage, distro):
    bag = tmp_path / "bag"
    export_bag(collected, bag, storage=storage, distro=distro, progress=False)
    out = tmp_path / "imported"
    cfg = ImportConfig(episode_frames=FRAMES_PER_EPISODE, image_size=SIZE, shard_size=2, distro=distro)
    s = import_bag(bag, out, cfg, progress=False)

    src, dst = EpisodeStore(collected), EpisodeStore(out)
    assert len(dst) == EPISODES and dst.frames_per_episode == FRAMES_PER_EPISODE
    assert s["segments"] == EPISODES and s["images_used"] == s["images"] == EPISODES * FRAMES_PER_EPISODE
    assert not any(s["dropped"].values())
    period = round(src.meta["frame_period_s"] * 1e9)
    assert dst.meta["frame_period_s"] == pytest.approx(src.meta["frame_period_s"])
    for e in range(EPISODES):
        np.testing.assert_array_equal(dst.read(e, FRAMES), src.read(e, FRAMES))  # raw rgb8: exact
        np.testing.assert_array_equal(dst.read(e, EE_POS), src.read(e, EE_POS))  # float32 -> float64 -> float32
        expected = EPOCH_NS + (e * (FRAMES_PER_EPISODE + 1) + np.arange(FRAMES_PER_EPISODE)) * period
        np.testing.assert_array_equal(dst.read(e, STAMP_NS), expected)
        np.testing.assert_array_equal(dst.read(e, IMAGE_STAMP_NS), expected)
        ee = src.read(e, EE_POS)
        np.testing.assert_allclose(dst.read(e, ACTIONS)[:-1], np.diff(ee, axis=0), atol=1e-7)
        assert not dst.read(e, ACTIONS)[-1].any()
    # intrinsics from CameraInfo, camera pose from /tf_static: what collect recorded
    np.testing.assert_allclose(dst.meta["camera"]["K"], src.meta["camera"]["K"], atol=1e-9)
    np.testing.assert_allclose(dst.meta["camera"]["T_cam_world"], src.meta["camera"]["T_cam_world"], atol=1e-6)
    assert dst.meta["kind"] == "rosbag" and dst.meta["ground_truth"] is False

    # training clips read it like a collected dataset (η = the hand at the clip's last frame)
    from imagine_ros.training.clips import ClipDataset

    clip = ClipDataset(out, split="all", horizon=3)[0]
    assert tuple(clip["future"].shape) == (3, 3, SIZE, SIZE)
    np.testing.assert_allclose(clip["condition"].numpy(), src.read(0, EE_POS)[3])


def test_resampling_takes_the_nearest_earlier_image(collected, tmp_path):
    """At half the camera's rate every other image is taken; a 6-frame stretch gives grid times 0, 2, 4."""
    bag = tmp_path / "bag"
    export_bag(collected, bag, progress=False)
    period_s = EpisodeStore(collected).meta["frame_period_s"]
    cfg = ImportConfig(fps=0.5 / period_s, gap_s=1.5 * period_s, episode_frames=3, image_size=SIZE)
    s = import_bag(bag, tmp_path / "half", cfg, progress=False)
    src, dst = EpisodeStore(collected), EpisodeStore(tmp_path / "half")
    assert len(dst) == EPISODES
    for e in range(EPISODES):
        np.testing.assert_array_equal(dst.read(e, FRAMES), src.read(e, FRAMES)[::2])
        np.testing.assert_array_equal(dst.read(e, EE_POS), src.read(e, EE_POS)[::2])
    assert s["images_used"] == EPISODES * 3 and s["images"] == EPISODES * FRAMES_PER_EPISODE

    # episode length 4: each 6-frame stretch gives one episode and drops 2 frames at its end
    cfg = ImportConfig(episode_frames=4, image_size=SIZE)
    s = import_bag(bag, tmp_path / "four", cfg, progress=False)
    dst = EpisodeStore(tmp_path / "four")
    assert len(dst) == EPISODES and s["dropped"]["frames at the end of a run, fewer than --episode-frames 4"] == 6
    np.testing.assert_array_equal(dst.read(1, FRAMES), src.read(1, FRAMES)[:4])


def test_make_plan_gaps_ages_and_tails():
    p = 100
    # stretch 1: images at 0..900 with 500 missing; stretch 2 after a gap: 2000..2500
    stamps = np.array([0, 100, 200, 300, 400, 600, 700, 800, 900, 2000, 2100, 2200, 2300, 2400, 2500], np.int64)
    ee_t = np.arange(0, 2600, 50, dtype=np.int64)
    ee_t = ee_t[(ee_t < 2150) | (ee_t > 2300)]  # the hand is silent for 2200 and 2300
    ee_at = nearest_earlier(ee_t, np.c_[ee_t, ee_t, ee_t].astype(float), max_age_ns=60)
    plan = make_plan(stamps, p, max_age_ns=60, gap_ns=150, episode_frames=2, ee_at=ee_at)
    # gap > 150 between 400 and 600 and between 900 and 2000: stretches [0..400], [600..900], [2000..2500]
    assert plan.segments == 3 and plan.grid_total == 5 + 4 + 6
    assert plan.dropped_camera == 0 and plan.dropped_ee == 2  # 2200 and 2300: the newest sample (2100) is too old
    starts = [int(g[0]) for g in plan.grid_ns]
    assert starts == [0, 200, 600, 800, 2000, 2400]
    assert plan.dropped_tail == 1 + 0 + 0  # 400 is left over in stretch 1
    np.testing.assert_array_equal(plan.ee_pos[0][:, 0], [0, 100])

    # a camera slower than the grid: with max age 1.5 periods the repeated image is taken, with 0.5 it is not
    slow = np.arange(0, 1000, 200, dtype=np.int64)
    always = nearest_earlier(np.arange(0, 1000, 10), np.zeros((100, 3)), 10)
    taken = make_plan(slow, p, 150, 250, 9, always)
    np.testing.assert_array_equal(taken.image_idx[0], [0, 0, 1, 1, 2, 2, 3, 3, 4])
    strict = make_plan(slow, p, 50, 250, 1, always)
    assert strict.dropped_camera == 4 and len(strict.grid_ns) == 5


# ----------------------------------------------------------------------------------------------------------------------
# an independent writer: mcap-ros2-support with hand-written message definitions

SEP = "=" * 80 + "\n"
HEADER_DEFS = "MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n" + SEP
HEADER_DEFS += "MSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n"
COMPRESSED_DEF = "std_msgs/Header header\nstring format\nuint8[] data\n" + SEP + HEADER_DEFS
CAMERA_INFO_DEF = (
    "std_msgs/Header header\nuint32 height\nuint32 width\nstring distortion_model\nfloat64[] d\nfloat64[9] k\n"
    "float64[9] r\nfloat64[12] p\nuint32 binning_x\nuint32 binning_y\nsensor_msgs/RegionOfInterest roi\n"
    + SEP
    + HEADER_DEFS
    + SEP
    + "MSG: sensor_msgs/RegionOfInterest\nuint32 x_offset\nuint32 y_offset\nuint32 height\nuint32 width\n"
    "bool do_rectify\n"
)
TF_DEF = (
    "geometry_msgs/TransformStamped[] transforms\n"
    + SEP
    + "MSG: geometry_msgs/TransformStamped\nstd_msgs/Header header\nstring child_frame_id\n"
    "geometry_msgs/Transform transform\n"
    + SEP
    + HEADER_DEFS
    + SEP
    + "MSG: geometry_msgs/Transform\ngeometry_msgs/Vector3 translation\ngeometry_msgs/Quaternion rotation\n"
    + SEP
    + "MSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\nfloat64 z\n"
    + SEP
    + "MSG: geometry_msgs/Quaternion\nfloat64 x\nfloat64 y\nfloat64 z\nfloat64 w\n"
)
H0, W0 = 48, 64
CAM_K = np.array([[50.0, 0.0, 31.5], [0.0, 52.0, 23.5], [0.0, 0.0, 1.0]])
T0 = 1_000 * 10**9
CAM_PERIOD, TF_PERIOD = 100_000_000, 20_000_000  # camera 10 Hz, TF 50 Hz
CAM_TIMES = [T0 + i * CAM_PERIOD for i in range(12)] + [T0 + 3 * 10**9 + i * CAM_PERIOD for i in range(8)]


def _header(ns: int, frame: str) -> dict:
    return {"stamp": {"sec": ns // 10**9, "nanosec": ns % 10**9}, "frame_id": frame}


def _tool(ns: int) -> np.ndarray:
    """The tool's origin in 'link' at time ns (a circle)."""
    a = (ns - T0) / 1e9
    return np.array([0.3 * np.cos(a), 0.3 * np.sin(a), 0.1 * a])


def _tf(parent: str, child: str, ns: int, xyz, quat=(0.0, 0.0, 0.0, 1.0)) -> dict:
    x, y, z, w = quat
    return {
        "header": _header(ns, parent),
        "child_frame_id": child,
        "transform": {"translation": dict(zip("xyz", map(float, xyz))), "rotation": {"x": x, "y": y, "z": z, "w": w}},
    }


def _picture(i: int) -> np.ndarray:
    """A smooth RGB picture, different per frame (jpeg-friendly)."""
    yy, xx = np.mgrid[0:H0, 0:W0]
    blue = 128 + 60 * np.sin(xx / 9.0 + i) * np.cos(yy / 7.0)
    return np.stack([xx * 3 + i * 2, yy * 4 + i, blue], -1).round().astype(np.uint8)


# base -> link: a quarter turn about z and a shift (static); link -> tool: the circle (dynamic)
QUARTER = (0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4))
R_QUARTER = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
LINK_SHIFT = np.array([0.5, 0.0, 0.2])


def write_independent_bag(path: Path, fmt: str) -> None:
    from mcap_ros2.writer import Writer

    with open(path, "wb") as f:
        w = Writer(f)
        img = w.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_DEF)
        info = w.register_msgdef("sensor_msgs/msg/CameraInfo", CAMERA_INFO_DEF)
        tfs = w.register_msgdef("tf2_msgs/msg/TFMessage", TF_DEF)
        static = [_tf("base", "link", T0, LINK_SHIFT, QUARTER), _tf("base", "cam_optical", T0, [0.0, 0.0, 1.0])]
        w.write_message("/tf_static", tfs, {"transforms": static}, log_time=T0, publish_time=T0)
        for ns in range(T0 - 10**8, CAM_TIMES[-1] + 10**8, TF_PERIOD):
            w.write_message("/tf", tfs, {"transforms": [_tf("link", "tool", ns, _tool(ns))]}, ns, ns)
        for i, ns in enumerate(CAM_TIMES):
            bgr = np.ascontiguousarray(_picture(i)[..., ::-1])
            ok, data = cv2.imencode(".png" if fmt == "png" else ".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            msg = {
                "header": _header(ns, "cam_optical"),
                "format": f"rgb8; {fmt} compressed bgr8",
                "data": data.tobytes(),
            }
            w.write_message("/cam/image_raw/compressed", img, msg, ns + 5_000_000, ns + 5_000_000)
            cam_info = {
                "header": _header(ns, "cam_optical"), "height": H0, "width": W0, "distortion_model": "plumb_bob",
                "d": [0.0] * 5, "k": CAM_K.reshape(-1).tolist(), "r": np.eye(3).reshape(-1).tolist(),
                "p": np.c_[CAM_K, np.zeros(3)].reshape(-1).tolist(), "binning_x": 0, "binning_y": 0,
                "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False},
            }  # fmt: skip
            w.write_message("/cam/camera_info", info, cam_info, ns, ns)
        w.finish()


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_independent_mcap_with_compressed_images_camera_info_and_tf(tmp_path, fmt):
    bag = tmp_path / f"rec_{fmt}.mcap"
    write_independent_bag(bag, fmt)
    out = tmp_path / "ds"
    cfg = ImportConfig(
        image_topic="/cam/image_raw/compressed", ee_tf=("base", "tool"), ee_topic=None,
        episode_frames=4, image_size=SIZE, val_fraction=0.0, test_fraction=0.0,
    )  # fmt: skip
    s = import_bag(bag, out, cfg, progress=False)
    store = EpisodeStore(out)
    # stretches of 12 and 8 images (3 s apart) -> 3 + 2 episodes of 4 frames
    assert s["segments"] == 2 and len(store) == 5 and s["fps"] == pytest.approx(10.0)
    cam_index = [0, 4, 8, 12, 16]
    errors = []
    for e in range(5):
        frames = store.read(e, FRAMES)
        stamps = store.read(e, STAMP_NS)
        for t in range(4):
            i = cam_index[e] + t
            assert stamps[t] == CAM_TIMES[i]
            expected, _ = prepare_image(_picture(i), SIZE, "crop")
            errors.append(np.abs(frames[t].astype(int) - expected.astype(int)))
            # the end effector: the newest TF sample at or before the frame, through the static quarter turn
            tf_ns = T0 - 10**8 + ((stamps[t] - (T0 - 10**8)) // TF_PERIOD) * TF_PERIOD
            want = R_QUARTER @ _tool(tf_ns) + LINK_SHIFT
            np.testing.assert_allclose(store.read(e, EE_POS)[t], want, atol=1e-6)
    err = np.stack(errors)
    if fmt == "png":
        assert err.max() == 0  # lossless
    else:  # jpeg quality 90, then area-resized to 32x32: measured mean |error| 0.87 levels, max 7 (of 255)
        assert 0 < err.mean() < 1.5 and err.max() <= 10
    # K: the centred 48x48 crop (x offset 8) scaled by 32/48
    k = np.asarray(store.meta["camera"]["K"])
    sc = SIZE / H0
    np.testing.assert_allclose(
        k, [[50 * sc, 0, (31.5 - 8 + 0.5) * sc - 0.5], [0, 52 * sc, (23.5 + 0.5) * sc - 0.5], [0, 0, 1]]
    )
    pose = np.linalg.inv(store.meta["camera"]["T_cam_world"])
    np.testing.assert_allclose(pose[:3, 3], [0.0, 0.0, 1.0], atol=1e-12)
    assert store.meta["ee_frame"].startswith("base")


def test_cli_summary_and_info(tmp_path, capsys):
    bag = tmp_path / "rec.mcap"
    write_independent_bag(bag, "png")
    out = tmp_path / "ds"
    rc = main(
        ["import-bag", "--bag", str(bag), "--out", str(out), "--image-topic", "/cam/image_raw/compressed",
         "--ee-tf", "base", "tool", "--episode-frames", "5", "--image-size", "16", "--resize", "stretch",
         "--fps", "5", "--max-age", "0.15", "--gap", "0.5", "--val-fraction", "0", "--test-fraction", "0",
         "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    # 5 fps on a 10 Hz camera: stretches of 12 and 8 images give 6 and 4 grid frames; 5-frame episodes -> 1 + 0
    assert "1 episodes x 5 frames at 5 fps" in text and "16x16" in text
    assert "5 frames at the end of a run, fewer than --episode-frames 5" in text  # 1 + 4
    assert "15 images not taken" in text and "taken: 5 of 20 images (CompressedImage)" in text
    assert main(["info", "--data", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "rosbag" and info["image_size"] == [16, 16] and info["episodes"] == 1


# ----------------------------------------------------------------------------------------------------------------------
# bad input


def _write_rosbags_bag(path: Path, encoding: str = "rgb8", ee_offset_ns: int = 0) -> None:
    """A small sqlite3 bag written with rosbags: 6 images (encoding) and a PointStamped per image."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = ros_msgs.get_typestore("humble")
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as w:
        ci = w.add_connection("/camera/image_raw", ros_msgs.IMAGE, typestore=ts)
        ce = w.add_connection("/ee_pos", ros_msgs.POINT_STAMPED, typestore=ts)
        cd = w.add_connection("/depth/image_raw", ros_msgs.IMAGE, typestore=ts)
        for i in range(6):
            ns = T0 + i * CAM_PERIOD
            info = ros_msgs.ENCODINGS[encoding]
            arr = np.zeros((4, 4, info.channels) if info.channels > 1 else (4, 4), info.dtype)
            w.write(ci, ns, ts.serialize_cdr(ros_msgs.image_to_msg(arr, encoding, ns, "cam", ts), ros_msgs.IMAGE))
            depth = ros_msgs.image_to_msg(np.zeros((4, 4), np.float32), "32FC1", ns, "cam", ts)
            w.write(cd, ns, ts.serialize_cdr(depth, ros_msgs.IMAGE))
            e_ns = ns + ee_offset_ns
            pt = ros_msgs.point_stamped_msg([i, 0, 0], e_ns, "base", ts)
            w.write(ce, e_ns, ts.serialize_cdr(pt, ros_msgs.POINT_STAMPED))


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing_topic", "camera topic /nope is not in"),
        ("encoding", "encoding '32FC1' is not accepted"),
        ("ee_out_of_range", "has no samples in the camera's time range"),
        ("ee_missing", "end-effector topic /nope is not in"),
        ("corrupt", "cannot read the bag"),
        ("nothing_fits", "no episode of 50 frames"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, needle):
    bag = tmp_path / "bag"
    _write_rosbags_bag(bag, ee_offset_ns=3600 * 10**9 if case == "ee_out_of_range" else 0)
    args = ["import-bag", "--bag", str(bag), "--out", str(tmp_path / "out"), "--episode-frames", "3", "--no-progress"]
    if case == "missing_topic":
        args += ["--image-topic", "/nope"]
    elif case == "encoding":
        args += ["--image-topic", "/depth/image_raw"]
    elif case == "ee_missing":
        args += ["--ee-topic", "/nope"]
    elif case == "nothing_fits":
        args[args.index("3")] = "50"
    elif case == "corrupt":
        (db,) = bag.glob("*.db3")
        db.write_bytes(db.read_bytes()[:100] + b"\0garbage" * 64)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    if case == "missing_topic":
        assert "/camera/image_raw (Image)" in err and "/depth/image_raw (Image)" in err
    if case == "ee_missing":
        assert "/ee_pos (PointStamped)" in err
    _nothing_left(tmp_path, tmp_path / "out")


def test_truncated_mcap_and_bad_options(tmp_path, capsys):
    bag = tmp_path / "rec.mcap"
    write_independent_bag(bag, "png")
    bag.write_bytes(bag.read_bytes()[: bag.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cannot read the bag"):
        import_bag(bag, tmp_path / "out", ImportConfig(image_topic="/cam/image_raw/compressed", ee_tf=("base", "tool")))
    _nothing_left(tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="--episode-frames"):
        import_bag(bag, tmp_path / "out", ImportConfig(episode_frames=1))
    with pytest.raises(ConfigError, match="--fps"):
        import_bag(bag, tmp_path / "out", ImportConfig(fps=-1.0))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="exists already"):
        import_bag(bag, existing, ImportConfig())
    assert (existing / "keep.txt").read_text() == "x"


def test_failure_mid_import_leaves_nothing(collected, tmp_path, monkeypatch):
    bag = tmp_path / "bag"
    export_bag(collected, bag, progress=False)
    import imagine_ros.sim.storage as storage

    calls = []

    def failing(path, episodes, compression=4):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(path, episodes, compression)

    real = storage.write_shard
    monkeypatch.setattr(storage, "write_shard", failing)
    with pytest.raises(DatasetError, match="cannot write .*disk full"):
        import_bag(bag, tmp_path / "out", ImportConfig(episode_frames=3, image_size=SIZE, shard_size=1), progress=False)
    assert len(calls) == 2
    _nothing_left(tmp_path, tmp_path / "out")


def test_resampling_above_the_camera_rate_repeats_images(tmp_path):
    """--fps 20 on a 10 Hz camera: by default (max age and gap follow the slower camera) each image fills two frames."""
    bag = tmp_path / "rec.mcap"
    write_independent_bag(bag, "png")
    cfg = ImportConfig(
        image_topic="/cam/image_raw/compressed", ee_tf=("base", "tool"), ee_topic=None, fps=20.0,
        episode_frames=8, image_size=SIZE, val_fraction=0.0, test_fraction=0.0,
    )  # fmt: skip
    s = import_bag(bag, tmp_path / "ds", cfg, progress=False)
    store = EpisodeStore(tmp_path / "ds")
    # stretches of 1.1 s and 0.7 s -> 23 and 15 grid frames -> 2 + 1 episodes of 8, 7 + 7 dropped at the ends
    assert len(store) == 3 and s["resampled_frames"] == 38 and s["max_age_s"] == pytest.approx(0.1)
    assert s["dropped"]["frames at the end of a run, fewer than --episode-frames 8"] == 14
    expected = np.stack([prepare_image(_picture(i // 2), SIZE, "crop")[0] for i in range(8)])
    np.testing.assert_array_equal(store.read(0, FRAMES), expected)
    np.testing.assert_array_equal(store.read(0, IMAGE_STAMP_NS), np.repeat(CAM_TIMES[:4], 2))
