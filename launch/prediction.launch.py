"""The prediction node alone, on a camera of your robot.

    ros2 launch imagine_ros prediction.launch.py checkpoint:=/models/visual_dynamics.json \
        image_topic:=/camera/color/image_raw eta_topic:=/ee_target

Parameters come from ``params_file`` (default: the installed ``config/prediction.yaml``); the launch arguments in
:data:`PREDICTION_OVERRIDES` replace single parameters when they are given (not empty).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from imagine_ros.node_params import PREDICTION_PARAMS, parse_text

ARGUMENTS = {
    "params_file": ("", "parameter file of the node (default: share/imagine_ros/config/prediction.yaml)"),
    "checkpoint": ("", "model checkpoint NAME.json (overrides the parameter file when not empty)"),
    "device": ("", "torch device: auto, cpu, cuda, cuda:1 (overrides the parameter file when not empty)"),
    "num_samples": ("", "sampled futures per prediction (overrides the parameter file when not empty)"),
    "rate": ("", "most predictions per second (overrides the parameter file when not empty)"),
    "image_topic": ("/camera/image_raw", "camera topic (sensor_msgs/Image)"),
    "eta_topic": ("/eta", "eta topic (geometry_msgs/PointStamped, target end-effector position)"),
}
#: launch argument -> node parameter it overrides
PREDICTION_OVERRIDES = {"checkpoint": "checkpoint", "device": "device", "num_samples": "num_samples", "rate": "rate"}


def _nodes(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = get_package_share_directory("imagine_ros")
    params_file = value["params_file"] or os.path.join(share, "config", "prediction.yaml")
    overrides = {
        param: parse_text(PREDICTION_PARAMS, param, value[arg])
        for arg, param in PREDICTION_OVERRIDES.items()
        if value[arg]
    }
    return [
        Node(
            package="imagine_ros",
            executable="imagine_prediction",
            name="imagine_prediction",
            output="screen",
            parameters=[params_file, overrides] if overrides else [params_file],
            remappings=[("image", value["image_topic"]), ("eta", value["eta_topic"])],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in ARGUMENTS.items()
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
