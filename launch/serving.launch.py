"""Launch a Majordomo broker and N model workers of one checkpoint on this (GPU) machine.

    ros2 launch imagine_ros serving.launch.py checkpoint:=/models/visual_dynamics.json workers:=2 device:=cuda:0

Arguments: ``checkpoint`` (required), ``workers`` (default 1), ``device`` (default auto), ``bind`` (default
tcp://*:5555; the workers connect to it on 127.0.0.1), ``service`` (default: the checkpoint's method name),
``max_batch`` (default 8). The processes are the ``imagine-ros broker`` and ``imagine-ros serve`` commands (the same
as running them by hand, or ``imagine-ros cluster``), the ``imagine-ros`` that colcon installed in
``lib/imagine_ros`` (not whichever is first on the ``PATH``); clients on other machines use ``tcp://THIS_HOST:5555``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.substitutions import ExecutableInPackage

ARGUMENTS = {
    "checkpoint": ("", "model checkpoint (NAME.json) every worker serves"),
    "workers": ("1", "number of worker processes"),
    "device": ("auto", "torch device of the workers: auto, cpu, cuda, cuda:1"),
    "bind": ("tcp://*:5555", "ZeroMQ endpoint the broker binds"),
    "service": ("", "service name (empty: the checkpoint's method name)"),
    "max_batch": ("8", "images per forward pass of a worker"),
}


def _connect_endpoint(bind: str) -> str:
    """The address workers on this machine connect to: ``tcp://*:5555`` -> ``tcp://127.0.0.1:5555``."""
    for wildcard in ("*", "0.0.0.0"):
        bind = bind.replace(f"://{wildcard}:", "://127.0.0.1:")
    return bind


def _processes(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    if not value["checkpoint"]:
        raise RuntimeError("serving.launch.py needs checkpoint:=PATH/TO/MODEL.json")
    workers = int(value["workers"])
    if workers < 1:
        raise RuntimeError(f"workers must be at least 1, got {workers}")
    max_batch = int(value["max_batch"])
    actions = [
        ExecuteProcess(
            cmd=[
                ExecutableInPackage(executable="imagine-ros", package="imagine_ros"),
                "broker",
                "--bind",
                value["bind"],
                "--worker-credit",
                str(2 * max_batch),
            ],
            name="imagine_broker",
            output="screen",
        )
    ]
    serve = [
        ExecutableInPackage(executable="imagine-ros", package="imagine_ros"),
        "serve",
        "--checkpoint",
        value["checkpoint"],
        "--broker",
        _connect_endpoint(value["bind"]),
    ]
    serve += ["--device", value["device"], "--max-batch", str(max_batch)]
    if value["service"]:
        serve += ["--service", value["service"]]
    for i in range(workers):
        actions.append(ExecuteProcess(cmd=serve, name=f"imagine_worker_{i}", output="screen"))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in ARGUMENTS.items()
            ),
            OpaqueFunction(function=_processes),
        ]
    )
