"""The node parameter tables (one source of truth) and what the rclpy layer builds from them, checked without ROS:
every number has a closed range that holds its default; values out of range are refused with a message naming the
parameter and the range; the descriptor fields make a real ``rcl_interfaces/msg/ParameterDescriptor`` (rosbags'
message definitions of Humble and Jazzy, through CDR); the given values are read without rclpy private attributes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from imagine_ros import ros_msgs
from imagine_ros.errors import ConfigError
from imagine_ros.node_params import (
    NODE_PARAMS,
    PREDICTION_PARAMS,
    ROS_PARAMETER_TYPES,
    Param,
    check_value,
    descriptor_fields,
    read_given,
)

ROOT = Path(__file__).resolve().parents[2]
ALL = [(node, p) for node, specs in NODE_PARAMS.items() for p in specs]
NUMBERS = [(node, p) for node, p in ALL if p.type in ("integer", "double", "double_array")]


def _id(item) -> str:
    return f"{item[0]}:{item[1].name}"


@pytest.mark.parametrize("item", NUMBERS, ids=_id)
def test_every_number_has_a_closed_range_holding_its_default(item):
    _, p = item
    assert p.low is not None and p.high is not None and p.low < p.high, p.name
    values = p.default if p.type == "double_array" else [p.default]
    assert all(p.low <= v <= p.high for v in values), f"{p.name}: default {p.default} outside [{p.low}, {p.high}]"
    assert check_value(p, p.default) == p.default
    if p.type != "double_array":  # the bounds themselves are allowed (ROS ranges are inclusive)
        assert check_value(p, p.low) == p.low and check_value(p, p.high) == p.high


@pytest.mark.parametrize("item", NUMBERS, ids=_id)
def test_values_out_of_range_are_refused_naming_the_parameter_and_range(item):
    _, p = item
    text = p.range_text.split("; ")[0]  # e.g. "in [0, 1000]"
    for bad in (p.low - 1, p.high + 1):
        value = bad if p.type == "integer" else float(bad)
        if p.type == "double_array":
            value = [float(bad)] + [float(v) for v in p.default[1:]]
        with pytest.raises(ConfigError) as e:
            check_value(p, value)
        message = str(e.value)
        assert message.startswith(f"parameter {p.name!r}: expected "), message
        assert text in message and repr(value) in message, message


def test_a_number_without_a_closed_range_is_a_table_error():
    with pytest.raises(ValueError, match="closed range"):
        Param("x", "double", 1.0, "no upper bound", low=0.0)
    with pytest.raises(ValueError, match="integer bounds"):
        Param("n", "integer", 1, "fractional bound", low=0.5, high=3)
    with pytest.raises(ConfigError, match=r"parameter 'n': expected a value in \[0, 3\], got 7"):
        Param("n", "integer", 7, "default outside its range", low=0, high=3)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_descriptor_fields_make_real_parameter_descriptors(distro):
    ts = ros_msgs.get_typestore(distro)
    types = ts.types
    ptype = types["rcl_interfaces/msg/ParameterType"]
    assert ROS_PARAMETER_TYPES == {
        "bool": ptype.PARAMETER_BOOL,
        "integer": ptype.PARAMETER_INTEGER,
        "double": ptype.PARAMETER_DOUBLE,
        "string": ptype.PARAMETER_STRING,
        "double_array": ptype.PARAMETER_DOUBLE_ARRAY,
    }
    for _, p in ALL:
        f = descriptor_fields(p)
        msg = types["rcl_interfaces/msg/ParameterDescriptor"](
            **{**f, "integer_range": [types["rcl_interfaces/msg/IntegerRange"](**r) for r in f["integer_range"]],
               "floating_point_range": [types["rcl_interfaces/msg/FloatingPointRange"](**r)
                                        for r in f["floating_point_range"]]}
        )  # fmt: skip
        back = ros_msgs.cdr_to_msg(ros_msgs.msg_to_cdr(msg, ts), "rcl_interfaces/msg/ParameterDescriptor", ts)
        assert back.name == p.name and back.description == p.description and back.read_only
        assert back.type == ROS_PARAMETER_TYPES[p.type] and not back.dynamic_typing
        ints = [(r.from_value, r.to_value, r.step) for r in back.integer_range]
        floats = [(r.from_value, r.to_value, r.step) for r in back.floating_point_range]
        if p.type == "integer":
            assert ints == [(p.low, p.high, 1)] and floats == []
        elif p.type == "double":
            assert floats == [(p.low, p.high, 0.0)] and ints == []  # step 0: any value in between
        else:
            assert ints == floats == []  # ROS checks ranges on scalars only; arrays are checked by check_value
        assert p.type in back.additional_constraints and p.range_text in back.additional_constraints


def test_read_given_checks_values_and_reports_unknown_names():
    given = {"rate": 2, "planner.designated": [120, 80], "rtae": 3.0, "use_sim_time": False,
             "qos_overrides./image.subscription.depth": 3}  # fmt: skip
    values, unknown = read_given(PREDICTION_PARAMS, given)
    assert values["rate"] == 2.0 and type(values["rate"]) is float
    assert values["planner.designated"] == [120.0, 80.0] and values["num_samples"] == 4
    assert unknown == ["rtae"]
    with pytest.raises(ConfigError, match=re.escape("parameter 'rate': expected a value in [0, 1000], got 5000.0")):
        read_given(PREDICTION_PARAMS, {"rate": 5000.0})
    with pytest.raises(ConfigError, match=re.escape("parameter 'planner.samples': expected a value in [2, 4096]")):
        read_given(PREDICTION_PARAMS, {"planner.samples": 1})
    with pytest.raises(ConfigError, match="'planner.goal': expected every number in"):
        read_given(PREDICTION_PARAMS, {"planner.goal": [np.float64(-3.0).item(), 5.0]})


def _private_attributes(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(private attribute names read or written on any object, names this module defines: assigned or methods)."""
    used, defined = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__"):
            used.add(n.attr)
            if isinstance(n.ctx, ast.Store):
                defined.add(n.attr)
        elif isinstance(n, ast.FunctionDef) and n.name.startswith("_"):
            defined.add(n.name)
        elif isinstance(n, ast.Call) and getattr(n.func, "id", "") in ("getattr", "hasattr", "setattr") and n.args[1:]:
            name = n.args[1].value if isinstance(n.args[1], ast.Constant) else ""
            if isinstance(name, str) and name.startswith("_") and not name.startswith("__"):
                used.add(name)
                if n.func.id == "setattr":
                    defined.add(name)
    return used, defined


@pytest.mark.parametrize("path", sorted((ROOT / "imagine_ros" / "ros").glob("*.py")), ids=lambda p: p.name)
def test_the_rclpy_layer_uses_no_private_rclpy_attributes(path):
    """Every ``x._name`` in the rclpy layer is a name the module itself defines (``self._failing = ...``, a method
    ``_on_image``): nothing reads rclpy's private state (``node._parameter_overrides`` and the like)."""
    used, defined = _private_attributes(ast.parse(path.read_text()))
    assert used <= defined, f"{path.name}: private attributes it does not define: {sorted(used - defined)}"


@pytest.mark.parametrize("module", ["prediction_node.py", "sim_node.py"])
def test_nodes_are_built_to_see_every_given_parameter(module):
    """``declare_and_read`` reads the given values through the public API, which needs the nodes built with
    ``NODE_OPTIONS`` (automatically_declare_parameters_from_overrides)."""
    tree = ast.parse((ROOT / "imagine_ros" / "ros" / module).read_text())
    inits = [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "__init__"
        and isinstance(n.func.value, ast.Call) and getattr(n.func.value.func, "id", "") == "super"
    ]  # fmt: skip
    assert len(inits) == 1
    assert "NODE_OPTIONS" in ast.unparse(inits[0]) and "**{**kwargs, **NODE_OPTIONS}" in ast.unparse(inits[0])
    params_src = (ROOT / "imagine_ros" / "ros" / "params.py").read_text()
    assert 'NODE_OPTIONS = {"automatically_declare_parameters_from_overrides": True}' in params_src


def test_remote_retries_range_matches_the_client():
    """``remote.retries`` counts retries after the first attempt: 0 (no retry) is what the client accepts at least."""
    from imagine_ros.serving.client import MDPClient

    spec = next(p for p in PREDICTION_PARAMS if p.name == "remote.retries")
    values, _ = read_given(PREDICTION_PARAMS, {"remote.retries": 0})
    assert values["remote.retries"] == 0 and spec.low == 0
    with pytest.raises(ConfigError, match=re.escape("'remote.retries': expected a value in [0, 100], got -1")):
        read_given(PREDICTION_PARAMS, {"remote.retries": -1})
    MDPClient("tcp://127.0.0.1:1", retries=spec.low).close()
    with pytest.raises(ValueError, match="retries >= 0"):
        MDPClient("tcp://127.0.0.1:1", retries=spec.low - 1)


@pytest.mark.parametrize(
    ("pixel", "is_set"), [([-1.0, -1.0], False), ([-0.5, 20.0], False), ([30.0, -1.0], False), ([0.0, 0.0], True)]
)
def test_planner_pixels_any_negative_coordinate_is_not_set(pixel, is_set):
    """Docs, config/prediction.yaml and the code agree: a negative coordinate (the default -1) means "not set"."""
    from imagine_ros import pipeline as pl

    values, _ = read_given(
        PREDICTION_PARAMS, {"planner.enabled": True, "planner.designated": pixel, "planner.goal": [40.0, 8.0]}
    )
    hook = pl.planner_from_params(values)
    assert (hook.designated is not None) == is_set and hook.ready == is_set
    yaml_text = (ROOT / "config" / "prediction.yaml").read_text()
    docs = (ROOT / "docs" / "ros2.md").read_text()
    for name in ("planner.designated", "planner.goal"):
        spec = next(p for p in PREDICTION_PARAMS if p.name == name)
        assert "negative coordinate (default -1) = not set" in spec.description and spec.low == -1.0
        assert spec.description in docs  # the docs row is the table's description
        line = next(ln for ln in yaml_text.splitlines() if ln.strip().startswith(name.split(".")[1] + ":"))
        assert "any negative = not set" in line, line


def test_unknown_parameters_are_undeclared_after_the_warning(monkeypatch):
    """declare_and_read, run on a stand-in node with stand-ins for the rclpy modules it imports: a typo that
    automatic declaration declared is warned about (with a hint) and undeclared; ROS's own parameters stay."""
    import importlib
    import sys
    import types

    def module(name: str, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    record = lambda **kw: types.SimpleNamespace(**kw)  # noqa: E731
    enum = types.SimpleNamespace(RELIABLE=1, BEST_EFFORT=2, TRANSIENT_LOCAL=1, VOLATILE=2, KEEP_LAST=1)
    module("rclpy", init=None, ok=None, spin_once=None, try_shutdown=None)
    module("rclpy.logging", get_logger=None)
    module("rclpy.node", Node=object)
    module("rclpy.qos", DurabilityPolicy=enum, HistoryPolicy=enum, QoSProfile=record, ReliabilityPolicy=enum)
    module("rcl_interfaces")
    module("rcl_interfaces.msg", FloatingPointRange=record, IntegerRange=record, ParameterDescriptor=record)
    monkeypatch.delitem(sys.modules, "imagine_ros.ros.params", raising=False)

    class FakeNode:
        def __init__(self, overrides: dict):
            self.params = dict(overrides)  # automatically declared from the overrides
            self.descriptors: dict = {}
            self.warnings: list[str] = []

        def get_parameters_by_prefix(self, prefix):
            return {k: types.SimpleNamespace(value=v) for k, v in self.params.items() if k.startswith(prefix)}

        def has_parameter(self, name):
            return name in self.params

        def undeclare_parameter(self, name):
            del self.params[name]

        def declare_parameter(self, name, value, descriptor, ignore_override=False):
            assert name not in self.params, f"{name} declared twice"
            self.params[name], self.descriptors[name] = value, descriptor

        def get_logger(self):
            return types.SimpleNamespace(warning=self.warnings.append)

    try:
        params = importlib.import_module("imagine_ros.ros.params")
        node = FakeNode({"checkpoint": "m.json", "rtae": 3.0, "use_sim_time": False})
        values = params.declare_and_read(node, PREDICTION_PARAMS)
        assert values["checkpoint"] == "m.json" and values["rate"] == 2.0
        assert node.warnings == ["unknown parameter(s) ignored: rtae (did you mean rate?)"]
        assert "rtae" not in node.params and node.params["use_sim_time"] is False
        assert set(node.params) == {p.name for p in PREDICTION_PARAMS} | {"use_sim_time"}
        assert params.unknown_parameters(node, PREDICTION_PARAMS) == []
        assert node.descriptors["rate"].read_only
    finally:
        sys.modules.pop("imagine_ros.ros.params", None)


def test_docs_name_the_frame_conventions_that_changed():
    """docs/ros2.md "Changes that need your attention" states the suffixes the parameter table enforces."""
    from imagine_ros.node_params import SIM_PARAMS

    text = (ROOT / "docs" / "ros2.md").read_text()
    note = text.split("### Changes that need your attention", 1)[1].split("\n### ", 1)[0]
    camera = next(p for p in SIM_PARAMS if p.name == "camera_frame")
    pixels = next(p for p in SIM_PARAMS if p.name == "pixel_frame")
    assert f"`camera_frame` must end in `{camera.suffix}`" in note and f"`{camera.default}`" in note
    assert "`*_pixels` frame" in note and pixels.suffix == "_pixels" and f"`{pixels.default}`" in note
    with pytest.raises(ConfigError, match="camera_frame"):
        check_value(camera, "camera")
    assert "simulator publishes no `/clock`" in text and "with `use_sim_time` the simulated clock" not in text
