"""Declare a node's parameters from :mod:`imagine_ros.node_params` (with descriptors) and read them validated.

A node is built with ``automatically_declare_parameters_from_overrides=True`` (:data:`NODE_OPTIONS`), so every value
it was given (parameter files, ``-p``, ``parameter_overrides``) is visible through the public API
(``get_parameters_by_prefix``), typos included. :func:`declare_and_read` checks them with
:func:`imagine_ros.node_params.read_given` (an integer is accepted for a double; a wrong type or a value out of range
is a :class:`~imagine_ros.errors.ConfigError` naming the parameter and what it expects), then declares each parameter
anew with its checked value, its own type and a descriptor built from the table (:func:`descriptor`: read-only,
``integer_range`` / ``floating_point_range``). No private rclpy attribute is used.
"""

from __future__ import annotations

import array
import difflib
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from imagine_ros.errors import ImagineRosError
from imagine_ros.node_params import TOPIC_QOS, TRANSIENT_LOCAL, Param, descriptor_fields, read_given, unknown_names

#: keyword arguments every imagine_ros node passes to ``rclpy.node.Node.__init__``
NODE_OPTIONS = {"automatically_declare_parameters_from_overrides": True}


def descriptor(p: Param) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of :func:`imagine_ros.node_params.descriptor_fields` (read-only, ranges)."""
    fields = descriptor_fields(p)
    fields["integer_range"] = [IntegerRange(**r) for r in fields["integer_range"]]
    fields["floating_point_range"] = [FloatingPointRange(**r) for r in fields["floating_point_range"]]
    return ParameterDescriptor(**fields)


def given_parameters(node: Node) -> dict[str, Any]:
    """The parameters declared on ``node`` so far: with :data:`NODE_OPTIONS`, every value it was given."""
    out = {}
    for name, param in node.get_parameters_by_prefix("").items():
        value = param.value
        out[name] = list(value) if isinstance(value, array.array) else value  # rclpy's arrays: array.array
    return out


def unknown_parameters(node: Node, specs: tuple[Param, ...]) -> list[str]:
    """Names the node was given that ``specs`` does not declare, ROS's own parameters left out."""
    return unknown_names(specs, given_parameters(node))


def topic_qos(node_name: str, topic: str) -> QoSProfile:
    """The QoS profile of a node's topic, from :data:`imagine_ros.node_params.TOPIC_QOS` (keep last; volatile, or
    transient local for :data:`~imagine_ros.node_params.TRANSIENT_LOCAL`)."""
    reliability, depth = TOPIC_QOS[node_name][topic]
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    durable = DurabilityPolicy.TRANSIENT_LOCAL if topic in TRANSIENT_LOCAL else DurabilityPolicy.VOLATILE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy, durability=durable)


def declare_and_read(node: Node, specs: tuple[Param, ...]) -> dict[str, Any]:
    """Check the values ``node`` was given against ``specs`` (raises ConfigError), declare every parameter with its
    checked value and :func:`descriptor`, and return the values. Parameters the node was given but does not know are
    reported with a warning (a typo would otherwise go unseen) and undeclared again (automatic declaration from the
    overrides declared them). The node must be built with :data:`NODE_OPTIONS`."""
    given = given_parameters(node)
    values, unknown = read_given(specs, given)  # ConfigError before anything is declared
    for p in specs:
        if node.has_parameter(p.name):  # declared from an override, without descriptor: declare it again, checked
            node.undeclare_parameter(p.name)
        node.declare_parameter(p.name, values[p.name], descriptor(p), ignore_override=True)
    if unknown:
        names = [p.name for p in specs]
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, names, n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        node.get_logger().warning(f"unknown parameter(s) ignored: {', '.join(hints)}")
        for name in unknown:  # declared from the overrides: undeclared, so `ros2 param list` shows no typo
            if node.has_parameter(name):
                node.undeclare_parameter(name)
    return values


def spin_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """The ``main`` of both nodes: init, build, spin until Ctrl-C, shutdown or the node setting ``exit_code`` (the
    prediction node when its model fails to load), clean up. Returns the exit code: 0, the node's ``exit_code``, or 2
    after an :class:`ImagineRosError` (bad parameters, a missing checkpoint), logged as one fatal line."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        while rclpy.ok() and getattr(node, "exit_code", None) is None:  # a node sets exit_code when it cannot go on
            rclpy.spin_once(node, timeout_sec=0.2)
        code = getattr(node, "exit_code", None) or 0
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
