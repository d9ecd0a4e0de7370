"""ROS 2 bags: ``export-bag``, ``import-bag`` (no ROS install needed)."""

from __future__ import annotations

import argparse

from imagine_ros.cli._common import add_common


def add_export_bag(p: argparse.ArgumentParser) -> None:
    from imagine_ros.rosbag_export import BAG_VERSIONS, STORAGES  # numpy only

    p.description = (
        "Write episodes of a dataset folder as a ROS 2 bag (--out BAG, must not exist) without a ROS install, in the "
        "rosbag2 metadata version that --distro reads (humble, iron: 8; jazzy and later: 9): "
        "sensor_msgs/Image rgb8 frames in camera_optical_frame, geometry_msgs/PointStamped end-effector and "
        "object positions in panda_link0, a std_msgs/String with the episode index and seed at each episode "
        "start and, from meta.json's camera, its sensor_msgs/CameraInfo and its pose on /tf_static "
        "(transient local). With --checkpoint, also what the prediction node would publish for each frame."
    )
    add_common(p, "data", "out", "split", required=["data", "out"], metavar={"out": "BAG"}, split="all")
    p.add_argument(
        "--episodes",
        default=None,
        metavar="LIST",
        help="dataset indices, e.g. 0,1,5 or 0:10 (half-open) or 0:3,7 (default: the whole split)",
    )
    p.add_argument("--storage", default="mcap", choices=STORAGES, help="bag storage plugin (default: mcap)")
    p.add_argument(
        "--distro",
        default="humble",
        help="ROS 2 distro that will read the bag: its message definitions and rosbag2 metadata version "
        f"({', '.join(BAG_VERSIONS)}; default: humble)",
    )
    p.add_argument(
        "--frame-period",
        type=float,
        default=None,
        metavar="S",
        help="seconds between frames in the bag (default: the dataset's frame period, else 0.2)",
    )
    pred = p.add_argument_group(
        "predictions", "also record what the prediction node would publish for each frame (future grids and eta)"
    )
    add_common(pred, "checkpoint", "seed", "device", device="cpu")
    pred.add_argument("--samples", type=int, default=2, help="sampled futures per frame (grid rows; default 2)")
    pred.add_argument(
        "--predict-every", type=int, default=1, metavar="K", help="predict every K-th frame of an episode (default 1)"
    )
    pred.add_argument(
        "--resize", default="crop", choices=["crop", "stretch", "exact"], help="frames -> model size (default crop)"
    )
    add_common(p, "no-progress")


def run_export_bag(args: argparse.Namespace) -> int:
    from imagine_ros.rosbag_export import export_bag, parse_episodes

    episodes = parse_episodes(args.episodes) if args.episodes is not None else None
    summary = export_bag(
        args.data,
        args.out,
        episodes=episodes,
        split=args.split,
        storage=args.storage,
        distro=args.distro,
        frame_period_s=args.frame_period,
        progress=not args.no_progress,
        checkpoint=args.checkpoint,
        num_samples=args.samples,
        seed=args.seed,
        device=args.device,
        predict_every=args.predict_every,
        resize=args.resize,
    )
    span = (summary["end_ns"] - summary["start_ns"]) / 1e9 if summary["frames"] else 0.0
    predicted = f"{summary['predictions']} predictions, " if summary["predictions"] else ""
    print(
        f"wrote {summary['out']} ({summary['storage']}, {summary['distro']}): {len(summary['episodes'])} episodes, "
        f"{summary['frames']} frames, {predicted}{summary['messages']} messages on {len(summary['topics'])} topics, "
        f"{span:.1f} s of bag time, in {summary['seconds']:.1f} s"
    )
    return 0


def add_import_bag(p: argparse.ArgumentParser) -> None:
    from imagine_ros.rosbag_import import STAMP_SOURCES, ImportConfig  # numpy only

    d = ImportConfig()
    p.description = (
        "Read a rosbag2 recording (a folder with metadata.yaml, or a bare .mcap or .db3 file) without a ROS "
        "install and write a dataset folder (--out DIR, must not exist or be empty) that train, evaluate, gif and "
        "info read like a collected one: the camera resampled to --fps (nearest earlier image and end-effector "
        "sample, at most --max-age old), cut into episodes of --episode-frames at gaps in time, brought to "
        "--image-size like the prediction node does; --seed draws the split."
    )
    p.add_argument("--bag", required=True, metavar="BAG", help="rosbag2 folder, or a .mcap or .db3 file")
    add_common(p, "out", "seed", "no-progress", required=["out"], seed=d.seed)
    p.add_argument(
        "--image-topic",
        default=d.image_topic,
        metavar="TOPIC",
        help=f"camera topic: sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) or CompressedImage (jpeg, png) "
        f"(default {d.image_topic})",
    )
    ee = p.add_mutually_exclusive_group()
    ee.add_argument(
        "--ee-topic",
        default=d.ee_topic,
        metavar="TOPIC",
        help=f"end-effector topic, geometry_msgs/PointStamped or PoseStamped (default {d.ee_topic})",
    )
    ee.add_argument(
        "--ee-tf",
        nargs=2,
        default=None,
        metavar=("PARENT", "CHILD"),
        help="the end effector as a TF frame pair from /tf and /tf_static: the origin of CHILD in PARENT",
    )
    p.add_argument(
        "--camera-info-topic",
        default=None,
        metavar="TOPIC",
        help="sensor_msgs/CameraInfo for the intrinsics (default: camera_info beside the image topic, if present)",
    )
    p.add_argument("--fps", type=float, default=None, help="frame rate to resample to (default: the camera's median)")
    p.add_argument(
        "--max-age",
        type=float,
        default=None,
        metavar="S",
        help="oldest camera image or end-effector sample (s) a resampled frame may take (default: one frame period "
        "of --fps or of the camera, whichever is longer)",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=None,
        metavar="S",
        help="a pause between camera images longer than S seconds starts a new episode (default: 1.5 frame periods "
        "of --fps or of the camera, whichever is longer)",
    )
    p.add_argument(
        "--episode-frames",
        type=int,
        default=d.episode_frames,
        metavar="N",
        help=f"frames per episode: every run of frames is cut into episodes of N, the rest dropped (default "
        f"{d.episode_frames})",
    )
    p.add_argument(
        "--image-size", type=int, default=d.image_size, metavar="PX", help=f"square frame side (default {d.image_size})"
    )
    p.add_argument(
        "--resize",
        default=d.resize,
        choices=["crop", "stretch", "exact"],
        help="camera image -> frame, as the prediction node: centred square crop, stretch, or exact size (default "
        "crop)",
    )
    p.add_argument(
        "--stamps",
        default=d.stamps,
        choices=STAMP_SOURCES,
        help="time of a message: its header stamp or the bag's receive time (default header)",
    )
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="episodes for validation (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction, help="episodes for testing (default 0.1)")
    p.add_argument("--shard-size", type=int, default=d.shard_size, help="episodes per HDF5 shard (default 16)")
    p.add_argument(
        "--distro",
        default=d.distro,
        help="message definitions for a bag that has none (sqlite3 bags before Jazzy; default humble)",
    )


def run_import_bag(args: argparse.Namespace) -> int:
    from imagine_ros.rosbag_import import ImportConfig, format_summary, import_bag

    cfg = ImportConfig(
        image_topic=args.image_topic,
        ee_topic=None if args.ee_tf else args.ee_topic,
        ee_tf=tuple(args.ee_tf) if args.ee_tf else None,
        camera_info_topic=args.camera_info_topic,
        fps=args.fps,
        max_age_s=args.max_age,
        gap_s=args.gap,
        episode_frames=args.episode_frames,
        image_size=args.image_size,
        resize=args.resize,
        stamps=args.stamps,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        shard_size=args.shard_size,
        distro=args.distro,
    )
    print(format_summary(import_bag(args.bag, args.out, cfg, progress=not args.no_progress)))
    return 0
