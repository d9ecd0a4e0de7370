"""The prediction node with a local broker and model worker(s): the remote backend on one machine.

    ros2 launch imagine_ros prediction_remote.launch.py checkpoint:=/models/visual_dynamics.json workers:=2 \
        device:=cuda:0 image_topic:=/camera/color/image_raw

Starts ``serving.launch.py`` (``imagine-ros broker`` bound to 127.0.0.1:``port`` + ``workers`` x ``imagine-ros
serve``) and the prediction node with ``backend: remote`` pointed at it. The service name is the checkpoint's method
unless ``service`` is given. To use a GPU server elsewhere, run ``serving.launch.py`` (or ``imagine-ros cluster``)
there and ``prediction.launch.py`` here with ``backend: remote`` in the parameter file.
"""

import json
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from imagine_ros.node_params import PREDICTION_PARAMS, parse_text

ARGUMENTS = {
    "checkpoint": ("", "model checkpoint NAME.json the workers serve (required)"),
    "workers": ("1", "number of worker processes"),
    "device": ("auto", "torch device of the workers: auto, cpu, cuda, cuda:1"),
    "port": ("5555", "TCP port of the broker on 127.0.0.1"),
    "service": ("", "service name (default: the checkpoint's method name)"),
    "params_file": ("", "parameter file of the node (default: share/imagine_ros/config/prediction.yaml)"),
    "num_samples": ("", "sampled futures per prediction (overrides the parameter file when not empty)"),
    "rate": ("", "most predictions per second (overrides the parameter file when not empty)"),
    "timeout": ("", "seconds per remote attempt (overrides the parameter file when not empty)"),
    "image_topic": ("/camera/image_raw", "camera topic (sensor_msgs/Image)"),
    "eta_topic": ("/eta", "eta topic (geometry_msgs/PointStamped)"),
}
#: launch argument -> node parameter it overrides (when not empty)
PREDICTION_OVERRIDES = {"num_samples": "num_samples", "rate": "rate", "timeout": "remote.timeout"}
SERVING_LAUNCH = "serving.launch.py"


def _service(checkpoint: str, service: str) -> str:
    if service:
        return service
    with open(checkpoint, encoding="utf-8") as f:  # the checkpoint's JSON names its method
        return json.load(f)["method"]


def _actions(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    if not value["checkpoint"]:
        raise RuntimeError("prediction_remote.launch.py needs checkpoint:=PATH/TO/MODEL.json")
    share = get_package_share_directory("imagine_ros")
    port = int(value["port"])
    service = _service(value["checkpoint"], value["service"])
    serving = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", SERVING_LAUNCH)),
        launch_arguments={
            "checkpoint": value["checkpoint"],
            "workers": value["workers"],
            "device": value["device"],
            "bind": f"tcp://127.0.0.1:{port}",
            "service": service,
        }.items(),
    )
    params_file = value["params_file"] or os.path.join(share, "config", "prediction.yaml")
    overrides = {
        param: parse_text(PREDICTION_PARAMS, param, value[arg])
        for arg, param in PREDICTION_OVERRIDES.items()
        if value[arg]
    }
    overrides.update({"backend": "remote", "remote.endpoint": f"tcp://127.0.0.1:{port}", "remote.service": service})
    node = Node(
        package="imagine_ros",
        executable="imagine_prediction",
        name="imagine_prediction",
        output="screen",
        parameters=[params_file, overrides],
        remappings=[("image", value["image_topic"]), ("eta", value["eta_topic"])],
    )
    return [serving, node]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in ARGUMENTS.items()
            ),
            OpaqueFunction(function=_actions),
        ]
    )
