"""``imagine_sim``: the PyBullet pushing scene as a ROS camera and an end-effector target interface.

Publishes the camera image (``~/camera/image_raw``, rgb8, reliable) with its ``~/camera/camera_info`` in the camera's
optical frame, whose pose relative to ``base_frame`` goes out once on ``/tf_static``, the end-effector position
(``~/ee_position``) and, in task mode, the pixels of the designated object and its goal (frame ``pixel_frame``, a
frame without transform: pixels, not metres); all messages of a frame carry the stamp taken when its image was
rendered (the node's ROS clock: wall time, as this node publishes no ``/clock``); moves
the hand towards the last ``~/target`` (PointStamped in ``base_frame``) by at most ``max_step`` per frame. One timer
tick = one simulator step of ``frame_dt`` simulated seconds, every ``frame_dt / real_time_factor`` wall seconds.
The logic is :class:`imagine_ros.sim_bridge.SimBridge`; parameters: :data:`imagine_ros.node_params.SIM_PARAMS`.
"""

from __future__ import annotations

import contextlib
import sys
from functools import partial
from typing import Any

from geometry_msgs.msg import PointStamped, TransformStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from imagine_ros import ros_msgs
from imagine_ros.node_params import SIM_NODE, SIM_PARAMS
from imagine_ros.ros.params import NODE_OPTIONS, declare_and_read, spin_node, topic_qos
from imagine_ros.sim_bridge import SimBridge, SimBridgeConfig, SimState

THROTTLE_S = 5.0


class ImagineSimNode(Node):
    """The simulator node (see module docstring)."""

    def __init__(self, node_name: str = SIM_NODE, **kwargs: Any):
        super().__init__(node_name, **{**kwargs, **NODE_OPTIONS})
        self.bridge: SimBridge | None = None
        try:
            self.params = p = declare_and_read(self, SIM_PARAMS)
            self.bridge = SimBridge(
                SimBridgeConfig(
                    image_size=p["image_size"],
                    num_objects=p["num_objects"],
                    frame_dt=p["frame_dt"],
                    max_step=p["max_step"],
                    seed=p["seed"],
                    task=p["task"],
                    episode_steps=p["episode_steps"],
                    renderer=p["renderer"],
                ),
                clock=lambda: self.get_clock().now().nanoseconds,
            )
            q = partial(topic_qos, SIM_NODE)  # the QoS table, whatever name the node runs under
            self.pub_image = self.create_publisher(Image, "~/camera/image_raw", q("~/camera/image_raw"))
            self.pub_info = self.create_publisher(CameraInfo, "~/camera/camera_info", q("~/camera/camera_info"))
            self.pub_ee = self.create_publisher(PointStamped, "~/ee_position", q("~/ee_position"))
            self.pub_object_pixel = self.create_publisher(PointStamped, "~/task/object_pixel", q("~/task/object_pixel"))
            self.pub_goal_pixel = self.create_publisher(PointStamped, "~/task/goal_pixel", q("~/task/goal_pixel"))
            self.sub_target = self.create_subscription(PointStamped, "~/target", self._on_target, q("~/target"))
            self.pub_tf_static = self.create_publisher(TFMessage, "/tf_static", q("/tf_static"))
            camera = ros_msgs.fill_transform_stamped(
                TransformStamped(), self.bridge.camera_pose(), p["base_frame"], p["camera_frame"],
                self.bridge.state.stamp_ns,
            )  # fmt: skip
            self.pub_tf_static.publish(TFMessage(transforms=[camera]))  # transient local: late joiners get it too
            self.timer = self.create_timer(p["frame_dt"] / p["real_time_factor"], self._tick)
            self._publish(self.bridge.state)
            low, high = self.bridge.workspace
            self.get_logger().info(
                f"pushing scene, {p['image_size']} px camera, a step every {p['frame_dt']:g} s simulated; hand "
                f"workspace {low.round(3).tolist()} .. {high.round(3).tolist()} m in {p['base_frame']!r}"
            )
        except BaseException:  # a half-built node: free what exists (rclpy may call destroy_node again later)
            with contextlib.suppress(Exception):
                self.destroy_node()
            raise

    def _on_target(self, msg: PointStamped) -> None:
        frame = ros_msgs.point_frame(msg)
        if frame != self.params["base_frame"]:
            self.get_logger().warning(
                f"target in frame {frame!r} refused: targets must be in {self.params['base_frame']!r}",
                throttle_duration_sec=THROTTLE_S,
            )
            return
        try:
            self.bridge.set_target(ros_msgs.msg_to_point(msg))
        except ValueError as e:
            self.get_logger().warning(f"target refused: {e}", throttle_duration_sec=THROTTLE_S)

    def _tick(self) -> None:
        self._publish(self.bridge.step())

    def _publish(self, state: SimState) -> None:
        stamp = state.stamp_ns  # taken when the image was rendered
        cam, base, pixels = self.params["camera_frame"], self.params["base_frame"], self.params["pixel_frame"]
        image = ros_msgs.set_header(ros_msgs.fill_image(Image(), state.image, "rgb8"), stamp, cam)
        self.pub_image.publish(image)
        info = CameraInfo()
        for key, value in self.bridge.camera_info().items():
            setattr(info, key, value)
        self.pub_info.publish(ros_msgs.set_header(info, stamp, cam))
        self.pub_ee.publish(self._point(state.ee_pos, stamp, base))
        if state.object_pixel is not None:
            self.pub_object_pixel.publish(self._point([*state.object_pixel, 0.0], stamp, pixels))
            self.pub_goal_pixel.publish(self._point([*state.goal_pixel, 0.0], stamp, pixels))

    @staticmethod
    def _point(xyz: Any, stamp_ns: int, frame_id: str) -> PointStamped:
        return ros_msgs.set_header(ros_msgs.fill_point_stamped(PointStamped(), xyz), stamp_ns, frame_id)

    def destroy_node(self) -> None:
        """Close the simulator and destroy the node. Safe on a half-built node and when called twice (newer rclpy
        destroys the nodes of a context again at shutdown)."""
        if getattr(self, "_imagine_destroyed", False):
            return
        self._imagine_destroyed = True
        try:
            bridge = getattr(self, "bridge", None)
            if bridge is not None:
                bridge.close()
        finally:
            super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``ros2 run imagine_ros imagine_sim [--ros-args ...]``."""
    return spin_node(ImagineSimNode, SIM_NODE, args)


if __name__ == "__main__":
    sys.exit(main())
