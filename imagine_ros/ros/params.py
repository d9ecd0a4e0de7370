"""Declare a node's parameters from :mod:`imagine_ros.node_params` (with descriptors) and read them validated."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node

from imagine_ros.node_params import Param, validate

ROS_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "integer": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
    "double_array": ParameterType.PARAMETER_DOUBLE_ARRAY,
}


def descriptor(p: Param) -> ParameterDescriptor:
    """Read-only (the node reads its parameters once, at start), typed, with the description and constraints."""
    return ParameterDescriptor(
        name=p.name,
        type=ROS_TYPES[p.type],
        description=p.description,
        additional_constraints=p.range_text,
        read_only=True,
    )


def declare_and_read(node: Node, specs: tuple[Param, ...]) -> dict[str, Any]:
    """Declare every parameter of ``specs`` on ``node`` and return the validated values (raises ConfigError)."""
    for p in specs:
        default = list(p.default) if isinstance(p.default, list | tuple) else p.default
        node.declare_parameter(p.name, default, descriptor(p))
    values = {}
    for p in specs:
        value = node.get_parameter(p.name).value
        values[p.name] = list(value) if p.type == "double_array" and value is not None else value
    return validate(specs, values)
