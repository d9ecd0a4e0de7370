"""Declare a node's parameters from :mod:`imagine_ros.node_params` (with descriptors) and read them validated.

Every parameter is declared with ``dynamic_typing``: rclpy would otherwise refuse a value whose ROS type differs
from the default's (``-p rate:=2`` gives an integer for a double) with an exception that names no fix. The values are
then checked and converted by :func:`imagine_ros.node_params.validate`, which accepts an integer for a double (and
integers in a double array) and refuses anything else with a :class:`~imagine_ros.errors.ConfigError` that names the
parameter and the expected type.
"""

from __future__ import annotations

import array
import difflib
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from imagine_ros.errors import ConfigError, ImagineRosError
from imagine_ros.node_params import TOPIC_QOS, Param, validate

#: parameters rclpy itself reads (or declares) on every node: never reported as unknown
ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")
ROS_PARAMETER_PREFIXES = ("qos_overrides.",)


def descriptor(p: Param) -> ParameterDescriptor:
    """Read-only (the node reads its parameters once, at start), with the description and constraints; the type is
    checked by :func:`~imagine_ros.node_params.validate`, so the descriptor allows any (``dynamic_typing``)."""
    return ParameterDescriptor(
        name=p.name,
        description=p.description,
        additional_constraints="; ".join(t for t in (p.type, p.range_text) if t),
        read_only=True,
        dynamic_typing=True,
    )


def unknown_parameters(node: Node, specs: tuple[Param, ...]) -> list[str]:
    """Names the node was given (parameter files, ``-p``, ``parameter_overrides``) that ``specs`` does not declare,
    ROS's own parameters left out."""
    declared = {p.name for p in specs}
    given = getattr(node, "_parameter_overrides", None) or {}
    return sorted(
        name
        for name in given
        if name not in declared and name not in ROS_PARAMETERS and not name.startswith(ROS_PARAMETER_PREFIXES)
    )


def topic_qos(node_name: str, topic: str) -> QoSProfile:
    """The QoS profile of a node's topic, from :data:`imagine_ros.node_params.TOPIC_QOS` (keep last, volatile)."""
    reliability, depth = TOPIC_QOS[node_name][topic]
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy, durability=DurabilityPolicy.VOLATILE
    )


def declare_and_read(node: Node, specs: tuple[Param, ...]) -> dict[str, Any]:
    """Declare every parameter of ``specs`` on ``node`` and return the validated values (raises ConfigError).
    Parameters the node was given but does not know are reported with a warning (a typo would otherwise go unseen)."""
    for p in specs:
        default = list(p.default) if isinstance(p.default, list | tuple) else p.default
        try:
            node.declare_parameter(p.name, default, descriptor(p))
        except (InvalidParameterTypeException, InvalidParameterValueException) as e:  # not expected: dynamic typing
            raise ConfigError(f"parameter {p.name!r}: expected {p.type} ({p.range_text or 'any value'}): {e}") from None
    unknown = unknown_parameters(node, specs)
    if unknown:
        names = [p.name for p in specs]
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, names, n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        node.get_logger().warning(f"unknown parameter(s) ignored: {', '.join(hints)}")
    values = {}
    for p in specs:
        value = node.get_parameter(p.name).value
        values[p.name] = list(value) if isinstance(value, array.array) else value  # rclpy's arrays: array.array
    return validate(specs, values)


def spin_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """The ``main`` of both nodes: init, build, spin until Ctrl-C or shutdown, clean up. Returns the exit code: 0, or
    2 after an :class:`ImagineRosError` (bad parameters, a missing checkpoint), logged as one fatal line."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    except ImagineRosError as e:
        get_logger(name).fatal(str(e))
        code = 2
    except Exception as e:  # rclpy.executors.ExternalShutdownException (not in every distro)
        if type(e).__name__ != "ExternalShutdownException":
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
