"""The parameters of the ROS 2 nodes, as plain data: names, types, defaults, descriptions and checks.

The rclpy nodes (:mod:`imagine_ros.ros`) declare exactly these parameters (with a ``ParameterDescriptor`` built from
each :class:`Param`) and validate the values with :func:`validate`; the launch-file test, the README table and the
YAML files in ``config/`` are checked against the same tables, so none of them needs rclpy.

Types are the ROS 2 parameter types: ``bool``, ``integer``, ``double``, ``string``, ``double_array``. Every number
has a closed range (``low``, ``high``), which the ROS descriptor carries as ``integer_range`` (step 1) or
``floating_point_range`` (no step), see :func:`descriptor_fields`; double arrays are bounded element-wise. The nodes
read the values they were given (:func:`read_given`) and check them here before declaring, so an integer is accepted
for a double (``rate: 2`` or ``-p rate:=2`` is 2.0, ``[120, 80]`` a double array) and any other mismatch or a value
out of range is a :class:`ConfigError` naming the parameter and what it expects; the parameter is then declared with
the checked value and its own type. The shipped YAML files write doubles with a decimal point all the same. Every
parameter is read once, at start: ``read_only`` in the table (a change at run time is not supported).
Parameter names with a dot (``remote.endpoint``) are written nested in YAML (``remote: {endpoint: ...}``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagine_ros.errors import ConfigError

PREDICTION_NODE = "imagine_prediction"
SIM_NODE = "imagine_sim"
TYPES = ("bool", "integer", "double", "string", "double_array")


@dataclass(frozen=True)
class Param:
    """One node parameter: ``type`` is one of :data:`TYPES`; ``low``/``high`` bound numbers (inclusive; required for
    ``integer`` and ``double``, element-wise and optional for ``double_array``), ``choices`` a string's values,
    ``length`` an array's length; ``read_only``: no change at run time (the node reads it once, at start)."""

    name: str
    type: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    length: int | None = None
    read_only: bool = True
    suffix: str = ""  # a string must end with it (frame naming conventions)

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"parameter {self.name}: unknown type {self.type!r}")
        if self.type in ("integer", "double"):
            if self.low is None or self.high is None or not self.low <= self.high:
                raise ValueError(f"parameter {self.name}: a number needs a closed range low <= high (ROS descriptors)")
            if self.type == "integer" and not (float(self.low).is_integer() and float(self.high).is_integer()):
                raise ValueError(f"parameter {self.name}: an integer range needs integer bounds")
        check_value(self, self.default)  # the defaults themselves must pass

    @property
    def range_text(self) -> str:
        """A short human text of the constraint (for descriptors and the README)."""
        parts = []
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        if self.suffix:
            parts.append(f"ends with {self.suffix}")
        if self.low is not None and self.high is not None:
            parts.append(f"in [{_num(self.low)}, {_num(self.high)}]")
        elif self.low is not None:
            parts.append(f">= {_num(self.low)}")
        elif self.high is not None:
            parts.append(f"<= {_num(self.high)}")
        if self.length is not None:
            parts.append(f"{self.length} numbers")
        return "; ".join(parts)


def _num(v: float) -> str:
    """A bound as text: integers in full (2147483647), other numbers short (0.01)."""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def check_value(p: Param, value: Any) -> Any:
    """``value`` converted to the parameter's Python type, or :class:`ConfigError` naming the parameter."""

    def fail(why: str) -> ConfigError:
        return ConfigError(f"parameter {p.name!r}: {why}, got {value!r}")

    if p.type == "bool":
        if not isinstance(value, bool):
            raise fail("expected true or false")
        return value
    if p.type == "string":
        if not isinstance(value, str):
            raise fail("expected a string")
        if p.choices and value not in p.choices:
            raise fail(f"expected one of {', '.join(p.choices)}")
        if p.suffix and (not value.endswith(p.suffix) or value == p.suffix):
            raise fail(f"expected a name that ends with {p.suffix}")
        return value
    if p.type == "double_array":
        if isinstance(value, str | bytes):
            raise fail("expected a list of numbers")
        try:
            value = list(value)  # rclpy gives array.array('d')
        except TypeError:
            raise fail("expected a list of numbers") from None
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                raise fail("expected a list of finite numbers")
            out.append(float(v))
        if p.length is not None and len(out) != p.length:
            raise fail(f"expected {p.length} numbers")
        if any((p.low is not None and v < p.low) or (p.high is not None and v > p.high) for v in out):
            raise fail(f"expected every number {p.range_text.split('; ')[0]}")
        return out
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"expected {'an integer' if p.type == 'integer' else 'a number'}")
    if p.type == "integer":
        if isinstance(value, float):
            raise fail("expected an integer")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise fail("expected a finite number")
    if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
        raise fail(f"expected a value {p.range_text}")
    return value


def validate(specs: Sequence[Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """All parameters of a node: defaults filled in, each value checked; unknown names are refused."""
    known = {p.name: p for p in specs}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return {p.name: check_value(p, values.get(p.name, p.default)) for p in specs}


def defaults(specs: Sequence[Param]) -> dict[str, Any]:
    return {p.name: p.default for p in specs}


#: parameters ROS itself reads (or declares) on every node: never reported as unknown
ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")
ROS_PARAMETER_PREFIXES = ("qos_overrides.",)

#: ``rcl_interfaces/msg/ParameterType`` values of :data:`TYPES`
ROS_PARAMETER_TYPES = {"bool": 1, "integer": 2, "double": 3, "string": 4, "double_array": 8}


def read_given(specs: Sequence[Param], given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The values a node was given (parameter files, ``-p``, overrides; ROS's own parameters may be among them) ->
    (every parameter of ``specs`` checked, defaults filled in; the given names ``specs`` does not know, sorted).

    Raises :class:`ConfigError` naming the parameter for a value of the wrong type or out of range.
    """
    known = {p.name for p in specs}
    return validate(specs, {n: v for n, v in given.items() if n in known}), unknown_names(specs, given)


def unknown_names(specs: Sequence[Param], names: Iterable[str]) -> list[str]:
    """The ``names`` that ``specs`` does not declare (typos), ROS's own parameters left out; sorted."""
    known = {p.name for p in specs}
    return sorted(
        n for n in names if n not in known and n not in ROS_PARAMETERS and not n.startswith(ROS_PARAMETER_PREFIXES)
    )


def descriptor_fields(p: Param) -> dict[str, Any]:
    """The fields of the ``rcl_interfaces/msg/ParameterDescriptor`` of ``p`` (plain data; the rclpy layer builds the
    message from them): its ROS type, description, constraints text, ``read_only``, and the range of a number as
    ``integer_range`` / ``floating_point_range``, a list of at most one ``{from_value, to_value, step}`` (integers:
    step 1; doubles: step 0.0 = any value in between). Arrays carry their bounds in ``additional_constraints`` only
    (ROS checks ranges on scalars)."""
    integer_range: list[dict[str, Any]] = []
    floating_point_range: list[dict[str, Any]] = []
    if p.type == "integer":
        integer_range.append({"from_value": int(p.low), "to_value": int(p.high), "step": 1})
    elif p.type == "double":
        floating_point_range.append({"from_value": float(p.low), "to_value": float(p.high), "step": 0.0})
    return {
        "name": p.name,
        "type": ROS_PARAMETER_TYPES[p.type],
        "description": p.description,
        "additional_constraints": "; ".join(t for t in (p.type, p.range_text) if t),
        "read_only": p.read_only,
        "dynamic_typing": False,
        "floating_point_range": floating_point_range,
        "integer_range": integer_range,
    }


# ----------------------------------------------------------------------------------------------------------------------
# imagine_prediction

PREDICTION_PARAMS: tuple[Param, ...] = (
    Param("backend", "string", "local", "where the model runs: in this process or on a serving worker",
          choices=("local", "remote")),
    Param("checkpoint", "string", "", "local backend: model checkpoint (NAME.json next to NAME.safetensors); required"),
    Param("device", "string", "auto", "local backend: torch device (auto = CUDA when available, else cpu; cuda:1 ...)"),
    Param("remote.endpoint", "string", "tcp://127.0.0.1:5555", "remote backend: the broker's ZeroMQ endpoint"),
    Param("remote.service", "string", "", "remote backend: service name = the model's method name; required"),
    Param("remote.timeout", "double", 10.0, "remote backend: seconds to wait for a reply before a retry",
          low=0.01, high=3600.0),
    Param("remote.retries", "integer", 3, "remote backend: retries after the first attempt, then a failure (0 = "
          "no retry)", low=0, high=100),
    Param("remote.server_public_key", "string", "",
          "remote backend: CURVE public key file of the broker (enables encryption; '' = plain TCP)"),
    Param("remote.client_secret_key", "string", "",
          "remote backend: CURVE secret key file of this client ('' = a fresh key pair, for brokers that accept "
          "any client)"),
    Param("resize", "string", "crop",
          "how camera images become the model's square input: crop = centre square then resize, stretch = resize "
          "the whole image, exact = refuse other sizes", choices=("crop", "stretch", "exact")),
    Param("rate", "double", 2.0, "most predictions per second (Hz); 0 = as fast as the model goes", low=0.0,
          high=1000.0),
    Param("num_samples", "integer", 4, "sampled futures per prediction (grid rows)", low=1, high=64),
    Param("seed", "integer", -1, "noise seed used for every prediction (same seed: futures change only with the "
          "image and eta); -1 = fresh noise each time", low=-1, high=2**31 - 1),
    Param("eta_frame", "string", "panda_link0",
          "frame_id that eta messages must carry (others are refused and counted); '' = accept any frame"),
    Param("eta_max_age", "double", 0.0,
          "seconds after which the last eta is too old to use; 0 = it never expires", low=0.0, high=86400.0),
    Param("require_eta", "bool", False,
          "wait for an eta before predicting; false = predict unconditioned (training mean eta) until one arrives"),
    Param("flow_vis_max", "double", 0.0,
          "flow (pixels) shown at full colour saturation in future/flow_vis; 0 = the largest flow of each prediction",
          low=0.0, high=10000.0),
    Param("diagnostics_period", "double", 5.0,
          "seconds between diagnostics (log line + /diagnostics message); 0 = off", low=0.0, high=3600.0),
    Param("planner.enabled", "bool", False, "run the CEM planner on each frame and publish its eta on ~/planned_eta"),
    Param("planner.samples", "integer", 64, "planner: candidate etas per CEM iteration", low=2, high=4096),
    Param("planner.iterations", "integer", 3, "planner: CEM iterations", low=1, high=100),
    Param("planner.elites", "integer", 8, "planner: best candidates refitted per iteration", low=1, high=4096),
    Param("planner.eta_low", "double_array", [0.35, -0.2, 0.0],
          "planner: lower corner of the eta search box (metres, eta_frame)", length=3,
          low=-10.0, high=10.0),
    Param("planner.eta_high", "double_array", [0.75, 0.2, 0.2],
          "planner: upper corner of the eta search box (metres, eta_frame; equal to eta_low on an axis "
          "fixes it, e.g. z at the pushing height)", length=3,
          low=-10.0, high=10.0),
    Param("planner.designated", "double_array", [-1.0, -1.0],
          "planner: pixel (x right, y down) of the object to push in the camera image; a negative coordinate "
          "(default -1) = not set (wait for ~/planner/designated)", length=2, low=-1.0, high=100000.0),
    Param("planner.goal", "double_array", [-1.0, -1.0],
          "planner: goal pixel (x, y) of the object in the camera image; a negative coordinate (default -1) = "
          "not set (wait for ~/planner/goal)", length=2, low=-1.0, high=100000.0),
    Param("planner.track", "bool", True,
          "planner: move the designated pixel to where the plan expects the object after each step (MPC)"),
)  # fmt: skip

# ----------------------------------------------------------------------------------------------------------------------
# imagine_sim

SIM_PARAMS: tuple[Param, ...] = (
    Param("image_size", "integer", 64, "camera image side in pixels", low=16, high=2048),
    Param("num_objects", "integer", 3, "objects in the bin", low=1, high=8),
    Param("frame_dt", "double", 0.2, "simulated seconds per step (one camera frame)", low=0.01, high=2.0),
    Param("real_time_factor", "double", 1.0,
          "simulated seconds per wall-clock second (the timer runs every frame_dt / real_time_factor)", low=0.01,
          high=100.0),
    Param("max_step", "double", 0.07, "largest end-effector move per step and axis, metres", low=0.001, high=0.2),
    Param("seed", "integer", 0, "seed of the first scene (episode k uses seed + k)", low=0, high=2**31 - 1),
    Param("task", "bool", False,
          "task mode: a designated object and a goal; publishes their pixels on ~/task/object_pixel and "
          "~/task/goal_pixel"),
    Param("episode_steps", "integer", 0, "steps before a new scene is drawn; 0 = never", low=0, high=10**9),
    Param("renderer", "string", "tiny", "pybullet renderer: tiny (CPU) or egl (GPU plugin)",
          choices=("tiny", "egl")),
    Param("camera_frame", "string", "camera_optical_frame",
          "frame_id of the camera image and camera_info: the camera's optical frame (x right, y down, z forward), "
          "published on /tf_static relative to base_frame", suffix="_optical_frame"),
    Param("pixel_frame", "string", "camera_pixels",
          "frame_id of the task pixels (x, y, 0 in pixels of the camera image, not metres); no transform is ever "
          "published for it, so TF tools cannot misread them", suffix="_pixels"),
    Param("base_frame", "string", "panda_link0",
          "frame_id of end-effector positions and parent of the camera's static transform; targets in other frames "
          "are refused"),
)  # fmt: skip

NODE_PARAMS: dict[str, tuple[Param, ...]] = {PREDICTION_NODE: PREDICTION_PARAMS, SIM_NODE: SIM_PARAMS}

#: topics of each node (relative names are remappable): (name, message type, direction, description)
NODE_TOPICS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    PREDICTION_NODE: (
        ("image", "sensor_msgs/msg/Image", "sub", "camera; rgb8, bgr8, mono8, rgba8, bgra8"),
        ("eta", "geometry_msgs/msg/PointStamped", "sub", "eta: target end-effector position (metres, eta_frame)"),
        ("~/planner/designated", "geometry_msgs/msg/PointStamped", "sub",
         "planner: pixel (x, y) of the object to push, camera image; frame_id must end with _pixels"),
        ("~/planner/goal", "geometry_msgs/msg/PointStamped", "sub",
         "planner: goal pixel (x, y), camera image; frame_id must end with _pixels"),
        ("~/future/frames", "sensor_msgs/msg/Image", "pub",
         "rgb8 grid of sampled futures: rows = samples, columns = time steps; input header"),
        ("~/future/flows", "sensor_msgs/msg/Image", "pub",
         "32FC2 grid of forward flows (dx, dy) in model pixels, same layout; input header"),
        ("~/future/flow_vis", "sensor_msgs/msg/Image", "pub", "rgb8 colour coding of the flows grid; input header"),
        ("~/planned_eta", "geometry_msgs/msg/PointStamped", "pub", "planner: the chosen eta (metres, eta_frame)"),
        ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", "pub",
         "latency, dropped frames, failures (every diagnostics_period)"),
    ),
    SIM_NODE: (
        ("~/camera/image_raw", "sensor_msgs/msg/Image", "pub", "rgb8 camera image"),
        ("~/camera/camera_info", "sensor_msgs/msg/CameraInfo", "pub", "camera intrinsics (K, P)"),
        ("~/ee_position", "geometry_msgs/msg/PointStamped", "pub", "end-effector position (metres, base_frame)"),
        ("~/task/object_pixel", "geometry_msgs/msg/PointStamped", "pub",
         "task mode: pixel (x, y, 0) of the designated object, frame pixel_frame (pixels, not metres)"),
        ("~/task/goal_pixel", "geometry_msgs/msg/PointStamped", "pub",
         "task mode: goal pixel (x, y, 0), frame pixel_frame (pixels, not metres)"),
        ("/tf_static", "tf2_msgs/msg/TFMessage", "pub",
         "the camera's pose: base_frame -> camera_frame (static transform, sent once, kept for late joiners)"),
        ("~/target", "geometry_msgs/msg/PointStamped", "sub",
         "commanded end-effector target (metres, base_frame); the hand moves towards it by max_step per step"),
    ),
}  # fmt: skip


#: QoS of every topic, ``(reliability, depth)`` with history keep-last and volatile durability (``/tf_static``:
#: transient local, as tf2's static broadcaster and listeners use, see :data:`TRANSIENT_LOCAL`), following REP-2003:
#: the camera's image and camera_info are published *reliable* (default-QoS tools such as rqt_image_view, RViz and
#: ``ros2 topic echo`` receive them, and an image's camera_info arrives with it); the prediction node subscribes to
#: images *best effort* (it matches reliable and best-effort cameras and never waits for a frame it would drop anyway);
#: everything else is the ROS 2 default (reliable, depth 10), the predictions' large images with depth 2.
TOPIC_QOS: dict[str, dict[str, tuple[str, int]]] = {
    PREDICTION_NODE: {
        "image": ("best_effort", 5),
        "eta": ("reliable", 10),
        "~/planner/designated": ("reliable", 10),
        "~/planner/goal": ("reliable", 10),
        "~/future/frames": ("reliable", 2),
        "~/future/flows": ("reliable", 2),
        "~/future/flow_vis": ("reliable", 2),
        "~/planned_eta": ("reliable", 10),
        "/diagnostics": ("reliable", 10),
    },
    SIM_NODE: {
        "~/camera/image_raw": ("reliable", 5),
        "~/camera/camera_info": ("reliable", 5),
        "~/ee_position": ("reliable", 10),
        "~/task/object_pixel": ("reliable", 10),
        "~/task/goal_pixel": ("reliable", 10),
        "~/target": ("reliable", 10),
        "/tf_static": ("reliable", 1),
    },
}

#: topics whose durability is transient local (late subscribers get the last message): the static transforms
TRANSIENT_LOCAL: frozenset[str] = frozenset({"/tf_static"})


def qos_text(node_name: str, topic: str) -> str:
    """How the README's topic tables state a topic's QoS, e.g. ``reliable, depth 10``."""
    reliability, depth = TOPIC_QOS[node_name][topic]
    durability = ", transient local" if topic in TRANSIENT_LOCAL else ""
    return f"{reliability.replace('_', ' ')}, depth {depth}{durability}"


def file_parameter(data: Any, node_name: str, name: str) -> Any:
    """The value that a ROS 2 parameter file (its loaded YAML ``data``) gives parameter ``name`` of the node
    ``node_name`` (in the root namespace), or None when it sets none.

    Sections read: ``/**`` (every node), then ``node_name`` / ``/node_name``, which win over the wildcard. Dotted names
    may be nested (``remote: {endpoint: ...}``) or written with their dots.
    """
    value = None
    if not isinstance(data, Mapping):
        return None
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key)
        params = section.get("ros__parameters") if isinstance(section, Mapping) else None
        found = _lookup(params, name) if isinstance(params, Mapping) else None
        if found is not None:
            value = found
    return value


def _lookup(tree: Mapping[str, Any], name: str) -> Any:
    if name in tree:
        return tree[name]
    head, dot, rest = name.partition(".")
    while dot:
        sub = tree.get(head)
        if isinstance(sub, Mapping):
            found = _lookup(sub, rest)
            if found is not None:
                return found
        more, dot, rest = rest.partition(".")
        head = f"{head}.{more}"
    return None


def parse_text(specs: Sequence[Param], name: str, text: str) -> Any:
    """A parameter value given as text (a launch argument) -> the parameter's type, checked.

    ``"2"`` becomes 2.0 for a double (so the node gets the parameter's own ROS type), ``"true"``/``"false"`` a
    bool, ``"[0.1, 0.2, 0.3]"`` a list for a double array; strings stay as they are.
    """
    known = {p.name: p for p in specs}
    if name not in known:
        raise ConfigError(f"unknown parameter {name!r}; known: {', '.join(sorted(known))}")
    p = known[name]
    text = str(text).strip()
    try:
        if p.type == "string":
            value: Any = text
        elif p.type == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError
            value = text.lower() == "true"
        elif p.type == "integer":
            value = int(text)
        elif p.type == "double":
            value = float(text)
        else:
            inner = text.strip("[]").strip()
            value = [float(v) for v in inner.split(",")] if inner else []
    except ValueError:
        raise ConfigError(f"parameter {name!r}: cannot read {text!r} as {p.type}") from None
    return check_value(p, value)
