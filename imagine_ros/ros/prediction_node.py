"""``imagine_prediction``: camera image (+ η) in, sampled futures and flows out, as ``sensor_msgs/Image`` grids.

Topics and parameters: :data:`imagine_ros.node_params.NODE_TOPICS` / :data:`~imagine_ros.node_params.PREDICTION_PARAMS`
(and the README). The subscription callbacks only hand messages to :class:`imagine_ros.pipeline.PredictionPipeline`;
predictions run on its worker thread, which publishes the results.
"""

from __future__ import annotations

import contextlib
import sys
from functools import partial
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import Image

from imagine_ros import pipeline as pl
from imagine_ros import ros_msgs
from imagine_ros.node_params import PREDICTION_NODE, PREDICTION_PARAMS
from imagine_ros.ros.params import NODE_OPTIONS, declare_and_read, spin_node, topic_qos

THROTTLE_S = 5.0
STOP_WAIT_S = 3.0  # longest wait for a running prediction at shutdown (ros2 launch escalates to SIGTERM after 5 s)


class ImaginePredictionNode(Node):
    """The prediction node (see module docstring). Raises :class:`imagine_ros.errors.ConfigError` for bad parameters
    or a checkpoint that cannot be loaded."""

    def __init__(self, node_name: str = PREDICTION_NODE, **kwargs: Any):
        super().__init__(node_name, **{**kwargs, **NODE_OPTIONS})
        self.pipeline: pl.PredictionPipeline | None = None
        self.exit_code: int | None = None  # set when the model failed to load: main() ends with it
        try:
            self.params = declare_and_read(self, PREDICTION_PARAMS)
            p = self.params
            pl.check_predictor_params(p)  # quick: a missing checkpoint stops the node here (exit code 2)
            self.pipeline = pl.PredictionPipeline(
                None,  # loaded in the background below: the constructor (and the launch) never waits for the model
                pl.config_from_params(p),
                on_result=self._publish,
                on_error=self._on_error,
                planner=pl.planner_from_params(p),
            )
            self._failing = 0

            q = partial(topic_qos, PREDICTION_NODE)  # the QoS table, whatever name the node runs under
            self.pub_frames = self.create_publisher(Image, "~/future/frames", q("~/future/frames"))
            self.pub_flows = self.create_publisher(Image, "~/future/flows", q("~/future/flows"))
            self.pub_flow_vis = self.create_publisher(Image, "~/future/flow_vis", q("~/future/flow_vis"))
            self.pub_planned = self.create_publisher(PointStamped, "~/planned_eta", q("~/planned_eta"))
            self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", q("/diagnostics"))

            self.sub_image = self.create_subscription(Image, "image", self._on_image, q("image"))
            self.sub_eta = self.create_subscription(PointStamped, "eta", self._on_eta, q("eta"))
            self.sub_designated = self.create_subscription(
                PointStamped, "~/planner/designated", self._on_designated, q("~/planner/designated")
            )
            self.sub_goal = self.create_subscription(PointStamped, "~/planner/goal", self._on_goal, q("~/planner/goal"))
            if p["diagnostics_period"] > 0:
                self.diag_timer = self.create_timer(p["diagnostics_period"], self._diagnostics)

            self.pipeline.start()
            self._where = (
                p["checkpoint"] if p["backend"] == "local" else f"{p['remote.service']} at {p['remote.endpoint']}"
            )
            self.get_logger().info(f"loading the model ({p['backend']} backend, {self._where}); frames wait meanwhile")
            self.pipeline.load_async(partial(pl.predictor_from_params, p), self._on_loaded, self._on_load_failed)
        except BaseException:  # a half-built node: free what exists (rclpy may call destroy_node again later)
            with contextlib.suppress(Exception):
                self.destroy_node()
            raise

    # ---------------------------------------------------------------------------------------------------- model
    def _on_loaded(self, predictor: Any) -> None:
        """Called on the loading thread."""
        p = self.params
        rate = f"at most {p['rate']:g} Hz" if p["rate"] else "as fast as the model goes"
        self.get_logger().info(
            f"model ready after {self.pipeline.stats().model_load_s:.1f} s ({self._where}); {p['num_samples']} "
            f"samples per prediction, {rate}; planner {'on' if p['planner.enabled'] else 'off'}"
        )

    def _on_load_failed(self, error: BaseException) -> None:
        """Called on the loading thread: the node cannot work; main() ends with exit code 2."""
        self.get_logger().fatal(f"the model failed to load ({self._where}): {type(error).__name__}: {error}")
        self.exit_code = 2

    # ---------------------------------------------------------------------------------------------------- input
    def _on_image(self, msg: Image) -> None:
        try:
            self.pipeline.submit_msg(msg)
        except ValueError as e:  # UnsupportedEncoding, BadInput: counted in rejected_images
            self.get_logger().warning(f"image refused: {e}", throttle_duration_sec=THROTTLE_S)

    def _on_eta(self, msg: PointStamped) -> None:
        if not self.pipeline.set_eta_msg(msg):
            reason = self.pipeline.eta_rejection_reason(ros_msgs.point_frame(msg))
            self.get_logger().warning(reason, throttle_duration_sec=THROTTLE_S)

    def _on_designated(self, msg: PointStamped) -> None:
        if not self.pipeline.set_task_pixel_msg("designated", msg):
            self.get_logger().warning(self.pipeline.stats().last_rejection, throttle_duration_sec=THROTTLE_S)

    def _on_goal(self, msg: PointStamped) -> None:
        if not self.pipeline.set_task_pixel_msg("goal", msg):
            self.get_logger().warning(self.pipeline.stats().last_rejection, throttle_duration_sec=THROTTLE_S)

    # --------------------------------------------------------------------------------------------------- output
    def _publish(self, result: pl.PipelineResult) -> None:
        """Called on the pipeline's worker thread."""
        header = result.frame.header
        g = result.grids
        self.pub_frames.publish(ros_msgs.fill_image(Image(), g.frames, "rgb8", header))
        self.pub_flows.publish(ros_msgs.fill_image(Image(), g.flows, "32FC2", header))
        self.pub_flow_vis.publish(ros_msgs.fill_image(Image(), g.flow_vis, "rgb8", header))
        if result.planned_eta is not None:
            msg = ros_msgs.fill_point_stamped(PointStamped(), result.planned_eta)
            msg.header.stamp = header.stamp
            msg.header.frame_id = self.params["eta_frame"]
            self.pub_planned.publish(msg)
        if self._failing:
            self.get_logger().info(f"predictions work again after {self._failing} failure(s)")
            self._failing = 0

    def _on_error(self, error: BaseException, frame: pl.Frame) -> None:
        self._failing += 1
        self.get_logger().error(
            f"prediction failed ({self._failing} in a row): {type(error).__name__}: {error}",
            throttle_duration_sec=THROTTLE_S,
        )

    def _diagnostics(self) -> None:
        level, message, values = self.pipeline.diagnostics()
        line = f"{message}; {self.pipeline.summary()}"
        if level == pl.OK:  # all well: keep the console quiet (--log-level debug shows it)
            self.get_logger().debug(line)
        elif level == pl.WARN:
            self.get_logger().info(line)
        else:
            self.get_logger().warning(line)
        levels = [DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE]
        status = DiagnosticStatus(
            level=levels[level],
            name=f"{self.get_fully_qualified_name()}: prediction",
            message=message,
            hardware_id=self.params["backend"],
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(array)

    def destroy_node(self) -> None:
        """Stop the worker (waiting at most STOP_WAIT_S for a running prediction), close the predictor, destroy the
        node: well within the 5 s that ``ros2 launch`` gives a node after SIGINT. A model still loading is not waited
        for (its daemon thread ends with the process; a model that arrives later is closed). Safe on a half-built node
        and when called twice (newer rclpy destroys the nodes of a context again at shutdown)."""
        if getattr(self, "_imagine_destroyed", False):
            return
        self._imagine_destroyed = True
        try:
            pipeline = getattr(self, "pipeline", None)
            if pipeline is not None:
                pipeline.stop(STOP_WAIT_S)
                close = getattr(pipeline.predictor, "close", None)
                if close is not None and pipeline.running:
                    # a remote prediction can take remote.timeout x (remote.retries + 1) s; its socket is in use by
                    # the worker thread, so it must not be closed under it: the process exit ends both
                    self.get_logger().info(
                        f"a prediction is still running after {STOP_WAIT_S:g} s; leaving the predictor open"
                    )
                elif close is not None:
                    close()
        finally:
            super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``ros2 run imagine_ros imagine_prediction [--ros-args ...]``."""
    return spin_node(ImaginePredictionNode, PREDICTION_NODE, args)  # ends with node.exit_code once it is set


if __name__ == "__main__":
    sys.exit(main())
