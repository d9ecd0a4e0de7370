"""The simulator and the prediction node wired together: the whole loop in ROS without a robot.

    ros2 launch imagine_ros sim_prediction.launch.py checkpoint:=/models/visual_dynamics.json
    ros2 launch imagine_ros sim_prediction.launch.py checkpoint:=/models/visual_dynamics.json planner:=true

Wiring (topics):

    /imagine_sim/camera/image_raw ──▶ imagine_prediction (image)
    /imagine_sim/target ──────────▶ imagine_prediction (eta): the commanded target is the eta of the prediction
    /imagine_prediction/planned_eta is published on /imagine_sim/target: with planner:=true the plans drive the hand
    (under a namespace NS every name gets the NS prefix: the remappings are private and relative)
    /imagine_sim/task/object_pixel, /imagine_sim/task/goal_pixel ──▶ the planner's designated and goal pixels

Without the planner, command the hand yourself:
``ros2 topic pub --once /imagine_sim/target geometry_msgs/msg/PointStamped
"{header: {frame_id: panda_link0}, point: {x: 0.6, y: 0.1, z: 0.12}}"``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from imagine_ros.node_params import PREDICTION_PARAMS, SIM_NODE, SIM_PARAMS, defaults, file_parameter, parse_text

ARGUMENTS = {
    "checkpoint": ("", "model checkpoint NAME.json (required unless the parameter file names one)"),
    "device": ("", "torch device: auto, cpu, cuda, cuda:1 (overrides the parameter file when not empty)"),
    "planner": (
        "",
        "true: run the CEM planner and let its eta drive the simulated hand (also sets task mode); false: do not; "
        "unset: as the parameter files say (planner.enabled, task)",
    ),
    "image_size": ("", "simulator camera side in pixels (overrides the parameter file when not empty)"),
    "seed": ("", "seed of the simulated scene (overrides the parameter file when not empty)"),
    "prediction_params": ("", "parameter file of the prediction node (default: config/prediction.yaml)"),
    "sim_params": ("", "parameter file of the simulator node (default: config/sim.yaml)"),
}
#: launch argument -> node parameter it overrides (when not empty)
PREDICTION_OVERRIDES = {"checkpoint": "checkpoint", "device": "device", "planner": "planner.enabled"}
SIM_OVERRIDES = {"image_size": "image_size", "seed": "seed", "planner": "task"}


def _sim_base_frame(sim_params: str, sim: dict) -> str:
    """The simulator's ``base_frame``: its override, else its parameter file's value, else the default."""
    if "base_frame" in sim:
        return sim["base_frame"]
    import yaml  # PyYAML: a dependency of launch_ros (parameter files)

    with open(sim_params, encoding="utf-8") as f:
        value = file_parameter(yaml.safe_load(f), SIM_NODE, "base_frame")
    return defaults(SIM_PARAMS)["base_frame"] if value is None else value


def _nodes(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = get_package_share_directory("imagine_ros")
    prediction_params = value["prediction_params"] or os.path.join(share, "config", "prediction.yaml")
    sim_params = value["sim_params"] or os.path.join(share, "config", "sim.yaml")
    prediction = {
        param: parse_text(PREDICTION_PARAMS, param, value[arg])
        for arg, param in PREDICTION_OVERRIDES.items()
        if value[arg]
    }
    sim = {param: parse_text(SIM_PARAMS, param, value[arg]) for arg, param in SIM_OVERRIDES.items() if value[arg]}
    prediction["eta_frame"] = _sim_base_frame(sim_params, sim)  # eta = the commanded target, in the sim's base_frame
    return [
        Node(
            package="imagine_ros",
            executable="imagine_sim",
            name="imagine_sim",
            output="screen",
            parameters=[sim_params, sim] if sim else [sim_params],
        ),
        Node(
            package="imagine_ros",
            executable="imagine_prediction",
            name="imagine_prediction",
            output="screen",
            parameters=[prediction_params, prediction],
            # private sources (~/) and relative targets: the wiring holds under any namespace (a PushRosNamespace
            # around the include of this file puts both nodes in it)
            remappings=[
                ("image", "imagine_sim/camera/image_raw"),
                ("eta", "imagine_sim/target"),
                ("~/planned_eta", "imagine_sim/target"),
                ("~/planner/designated", "imagine_sim/task/object_pixel"),
                ("~/planner/goal", "imagine_sim/task/goal_pixel"),
            ],
        ),
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
