"""Launch files, parameter files, node code and README agree, checked without ROS (``ast`` + YAML; the launch files
also run with stand-ins for ``launch``/``launch_ros``).

- every ``Node(...)`` names an executable that ``setup.py`` installs, whose ``main`` exists;
- every parameter a launch file sets exists on that node with the right type, every remapped topic exists;
- every ``ExecuteProcess`` runs an ``imagine-ros`` subcommand with flags the CLI accepts;
- every file a launch file names (``*.launch.py``, ``*.yaml``) is in the package and installed by ``data_files``;
- ``config/*.yaml`` are ROS 2 parameter files holding exactly the declared parameters, with values of their types;
- the nodes declare the parameter tables and create exactly the topics of :data:`NODE_TOPICS`;
- ``docs/ros2.md`` documents every parameter with its type and default.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML  # a dependency of rosbags; PyYAML is not needed

from imagine_ros import node_params
from imagine_ros.cli import build_parser
from imagine_ros.node_params import NODE_PARAMS, NODE_TOPICS, TOPIC_QOS, check_value, qos_text

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
OURS = ["prediction.launch.py", "prediction_remote.launch.py", "sim_prediction.launch.py"]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node: ast.expr | None):
    return node.value if isinstance(node, ast.Constant) else None


@dataclass(frozen=True)
class ExecutableInPackage:
    executable: str
    package: str


def _cmd_words(node: ast.expr) -> list:
    """The words of a command list literal (``a + b`` concatenated): constants, ``ExecutableInPackage`` calls."""
    if isinstance(node, ast.BinOp):
        return _cmd_words(node.left) + _cmd_words(node.right)
    if not isinstance(node, ast.List):
        return [None]
    words = []
    for e in node.elts:
        if isinstance(e, ast.Call) and _call_name(e) == "ExecutableInPackage":
            words.append(ExecutableInPackage(_const(_kw(e, "executable")), _const(_kw(e, "package"))))
        else:
            words.append(_const(e))
    return words


def _setup() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """console_scripts {name: "module:function"} and data_files [(destination, glob pattern or path)]."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) == "setup")
    entry = _kw(call, "entry_points")
    scripts = {}
    for k, v in zip(entry.keys, entry.values):
        if _const(k) == "console_scripts":
            for item in v.elts:
                name, target = (s.strip() for s in item.value.split("="))
                scripts[name] = target
    data = []
    for item in _kw(call, "data_files").elts:
        dest, files = item.elts
        dest_text = dest.value if isinstance(dest, ast.Constant) else ast.unparse(dest)
        for f in ast.walk(files):
            if isinstance(f, ast.Constant) and isinstance(f.value, str):
                data.append((dest_text, f.value))
            elif isinstance(f, ast.JoinedStr):
                data.append((dest_text, ast.unparse(f)))
    return scripts, data


def _module_file(module: str) -> Path:
    path = ROOT / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _expand(node_name: str, topic: str) -> str:
    """A node's topic name as seen from outside: ``~/x`` -> ``/node/x``, ``x`` -> ``/x`` (root namespace)."""
    if topic.startswith("~/"):
        return f"/{node_name}/{topic[2:]}"
    return topic if topic.startswith("/") else f"/{topic}"


def _topic_names(node_name: str) -> set[str]:
    names = set()
    for topic, *_ in NODE_TOPICS[node_name]:
        names.add(topic)
        names.add(_expand(node_name, topic))
    return names


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _module_dicts(tree: ast.Module) -> dict[str, dict]:
    """Module-level ``NAME = {...}`` literals."""
    out = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                out[target.id] = ast.literal_eval(stmt.value)
    return out


def _parameter_names(func: ast.FunctionDef, arg: ast.expr, module_dicts: dict[str, dict]) -> set[str]:
    """Parameter names set by one element of ``parameters=[...]``: a dict literal, or a variable built in ``func``
    from a dict literal / comprehension over a ``*_OVERRIDES`` dict / ``x["name"] = ...`` / ``x.update({...})``."""
    names: set[str] = set()

    def from_dict_expr(expr: ast.expr) -> None:
        if isinstance(expr, ast.Dict):
            names.update(_const(k) for k in expr.keys)
        elif isinstance(expr, ast.DictComp):
            for gen in expr.generators:
                src = gen.iter
                if isinstance(src, ast.Call) and isinstance(src.func, ast.Attribute):
                    src = src.func.value  # X.items()
                if isinstance(src, ast.Name) and src.id in module_dicts:
                    names.update(module_dicts[src.id].values())

    if isinstance(arg, ast.Dict | ast.DictComp):
        from_dict_expr(arg)
    elif isinstance(arg, ast.Name):
        var = arg.id
        for n in ast.walk(func):
            if isinstance(n, ast.Assign):
                for t in n.targets:
                    if isinstance(t, ast.Name) and t.id == var:
                        from_dict_expr(n.value)
                    elif isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == var:
                        names.add(_const(t.slice))
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "update":
                if isinstance(n.func.value, ast.Name) and n.func.value.id == var:
                    from_dict_expr(n.args[0])
    return names


def _node_calls(path: Path):
    """(function, Node call) for every ``Node(...)`` of a launch file."""
    tree = ast.parse(path.read_text())
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef):
            for n in ast.walk(func):
                if isinstance(n, ast.Call) and _call_name(n) == "Node":
                    yield tree, func, n


# ----------------------------------------------------------------------------------------------------------------------


def test_our_launch_files_exist_and_define_generate_launch_description():
    names = [p.name for p in LAUNCH_FILES]
    for name in OURS:
        assert name in names
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text())
        funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "generate_launch_description" in funcs, path.name


def test_setup_installs_executables_launch_and_config_files():
    scripts, data = _setup()
    assert scripts["imagine_prediction"] == "imagine_ros.ros.prediction_node:main"
    assert scripts["imagine_sim"] == "imagine_ros.ros.sim_node:main"
    for target in scripts.values():
        module, func = target.split(":")
        tree = ast.parse(_module_file(module).read_text())
        assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, target
    destinations = {pattern: dest for dest, pattern in data}
    assert destinations["launch/*.launch.py"].replace("'", "").endswith("/launch")
    assert destinations["config/*.yaml"].replace("'", "").endswith("/config")
    installed = set(glob.glob("launch/*.launch.py", root_dir=ROOT)) | set(glob.glob("config/*.yaml", root_dir=ROOT))
    for name in OURS:
        assert f"launch/{name}" in installed
    assert {"config/prediction.yaml", "config/sim.yaml"} <= installed


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_nodes_parameters_and_remappings_exist(path):
    scripts, _ = _setup()
    calls = list(_node_calls(path))
    if path.name in OURS:
        assert calls, f"{path.name} starts no node"
    for tree, func, call in calls:
        assert _const(_kw(call, "package")) == "imagine_ros"
        executable = _const(_kw(call, "executable"))
        assert executable in scripts, f"{path.name}: executable {executable!r} is not a console script of setup.py"
        name = _const(_kw(call, "name"))
        assert name == executable and name in NODE_PARAMS, f"{path.name}: node name {name!r}"
        declared = {p.name for p in NODE_PARAMS[name]}
        module_dicts = _module_dicts(tree)
        params = _kw(call, "parameters")
        # a list, or ``[file, overrides] if overrides else [file]`` (no empty override dict)
        lists = [params.body, params.orelse] if isinstance(params, ast.IfExp) else [params]
        assert all(isinstance(x, ast.List) and x.elts for x in lists), f"{path.name}: {name} gets no parameters"
        set_names = set()
        for element in (e for x in lists for e in x.elts):
            set_names |= _parameter_names(func, element, module_dicts)
        set_names.discard(None)
        unknown = set_names - declared
        assert not unknown, f"{path.name}: {name} has no parameter(s) {sorted(unknown)}"
        remaps = _kw(call, "remappings")
        if remaps is not None:
            for pair in remaps.elts:
                src = _const(pair.elts[0])
                assert src in _topic_names(name), f"{path.name}: {name} has no topic {src!r} to remap"
                assert not src.startswith("/"), f"{path.name}: absolute source {src!r} breaks under a namespace"
                dst = _const(pair.elts[1])
                if isinstance(dst, str) and dst.lstrip("/").startswith("imagine_"):
                    assert not dst.startswith("/"), f"{path.name}: absolute target {dst!r} breaks under a namespace"
                    other = dst.split("/")[0]
                    assert f"/{dst}" in _topic_names(other), f"{path.name}: {dst!r} is no topic of {other}"
    # every *_OVERRIDES table maps declared launch arguments onto parameters of its node
    tree = ast.parse(path.read_text())
    dicts = _module_dicts(tree)
    arguments = dicts.get("ARGUMENTS", {})
    for table, node_name in (("PREDICTION_OVERRIDES", "imagine_prediction"), ("SIM_OVERRIDES", "imagine_sim")):
        for arg, param in dicts.get(table, {}).items():
            assert arg in arguments, f"{path.name}: {table} uses undeclared launch argument {arg!r}"
            assert param in {p.name for p in NODE_PARAMS[node_name]}, f"{path.name}: {param!r} of {node_name}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_processes_and_files_exist(path):
    tree = ast.parse(path.read_text())
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    for s in strings:
        if s.endswith(".launch.py") and " " not in s:
            assert (ROOT / "launch" / s).exists(), f"{path.name} names launch/{s}, which does not exist"
        if s.endswith(".yaml") and " " not in s:
            assert (ROOT / "config" / s).exists(), f"{path.name} names config/{s}, which does not exist"
    if path.name == "prediction_remote.launch.py":
        assert "serving.launch.py" in strings
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    scripts, _ = _setup()
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) == "ExecuteProcess"):
        cmd = _kw(call, "cmd")
        if isinstance(cmd, ast.Name):  # cmd built in a variable: find its list literal(s)
            lists = [
                a.value
                for a in ast.walk(tree)
                if isinstance(a, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == cmd.id for t in a.targets)
                and isinstance(a.value, ast.List | ast.BinOp)
            ]
            words = [w for lst in lists for w in _cmd_words(lst)]
        else:
            words = _cmd_words(cmd)
        # the console script colcon installed in lib/imagine_ros, not whatever "imagine-ros" the PATH finds
        assert isinstance(words[0], ExecutableInPackage), f"{path.name}: run {words[0]!r} via ExecutableInPackage"
        assert words[0].package == "imagine_ros", f"{path.name}: {words[0]}"
        assert words[0].executable in scripts, f"{path.name}: {words[0].executable!r} is not a console script"
        sub = subparsers[words[1]]
        flags = {s for a in sub._actions for s in a.option_strings}
        for w in words[2:]:
            if isinstance(w, str) and w.startswith("--"):
                assert w in flags, f"{path.name}: imagine-ros {words[1]} has no flag {w}"
    # extend-assignments (serve += [...]) in serving.launch.py are covered by walking every list literal
    for a in ast.walk(tree):
        if isinstance(a, ast.AugAssign) and isinstance(a.value, ast.List):
            words = [_const(e) for e in a.value.elts]
            serve_flags = {s for act in subparsers["serve"]._actions for s in act.option_strings}
            for w in words:
                if isinstance(w, str) and w.startswith("--"):
                    assert w in serve_flags, f"{path.name}: imagine-ros serve has no flag {w}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_parameter_files_hold_exactly_the_declared_parameters_with_their_types(path):
    data = YAML(typ="safe", pure=True).load(path.read_text())
    assert isinstance(data, dict) and data
    for node_name, section in data.items():
        assert node_name in NODE_PARAMS, f"{path.name}: unknown node {node_name!r}"
        assert list(section) == ["ros__parameters"], f"{path.name}: {node_name} must hold only ros__parameters"
        values = _flatten(section["ros__parameters"])
        specs = {p.name: p for p in NODE_PARAMS[node_name]}
        assert set(values) == set(specs), f"{path.name}: differs from the declared parameters"
        for name, value in values.items():
            p = specs[name]
            kind = {"bool": bool, "integer": int, "double": float, "string": str, "double_array": list}[p.type]
            # exact YAML types: rclpy refuses 2 for a double parameter and "1" for an integer one
            assert type(value) is kind, f"{path.name}: {name} = {value!r} is {type(value).__name__}, not {p.type}"
            if p.type == "double_array":
                assert all(type(v) is float for v in value), f"{path.name}: {name} needs decimal points"
            assert check_value(p, value) == (list(value) if p.type == "double_array" else value)
            assert value == p.default, f"{path.name}: {name} = {value!r} differs from the default {p.default!r}"


@pytest.mark.parametrize(
    ("module", "table", "node_name"),
    [
        ("imagine_ros/ros/prediction_node.py", "PREDICTION_PARAMS", "imagine_prediction"),
        ("imagine_ros/ros/sim_node.py", "SIM_PARAMS", "imagine_sim"),
    ],
)
def test_nodes_declare_the_tables_and_create_exactly_the_documented_topics(module, table, node_name):
    tree = ast.parse((ROOT / module).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    declare = [c for c in calls if _call_name(c) == "declare_and_read"]
    assert len(declare) == 1 and ast.unparse(declare[0].args[1]) == table
    assert not [c for c in calls if _call_name(c) == "declare_parameter"], "declare through the table only"
    topics = set()
    for c in calls:
        if _call_name(c) in ("create_publisher", "create_subscription"):
            kind = "pub" if _call_name(c) == "create_publisher" else "sub"
            topics.add((_const(c.args[1]), ast.unparse(c.args[0]), kind))
    documented = {(t, msgtype.rsplit("/", 1)[1], kind) for t, msgtype, kind, _ in NODE_TOPICS[node_name]}
    assert topics == documented
    # every topic gets its QoS from the table (REP-2003), by its own name: q("topic") with q = partial(topic_qos, NODE)
    for c in calls:
        if _call_name(c) in ("create_publisher", "create_subscription"):
            qos = c.args[-1]
            assert isinstance(qos, ast.Call) and _call_name(qos) == "q", ast.unparse(c)
            assert _const(qos.args[0]) == _const(c.args[1]), ast.unparse(c)
    assert set(TOPIC_QOS[node_name]) == {t for t, *_ in NODE_TOPICS[node_name]}
    partials = [c for c in calls if _call_name(c) == "partial" and ast.unparse(c.args[0]) == "topic_qos"]
    assert len(partials) == 1 and getattr(node_params, ast.unparse(partials[0].args[1])) == node_name
    assert any(_call_name(c) == "create_timer" for c in calls)
    init = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert ast.unparse(init.args.defaults[0]) in ("PREDICTION_NODE", "SIM_NODE")
    assert getattr(node_params, ast.unparse(init.args.defaults[0])) == node_name


def test_readme_documents_every_parameter_and_topic():
    text = (ROOT / "docs" / "ros2.md").read_text(encoding="utf-8")
    for node_name, specs in NODE_PARAMS.items():
        heading = f"### `{node_name}`: parameters"
        assert heading in text
        section = text.split(heading, 1)[1].split("\n### ", 1)[0]
        for p in specs:
            row = next((line for line in section.splitlines() if line.startswith(f"| `{p.name}` ")), None)
            assert row is not None, f"README lacks parameter {p.name}"
            assert p.type in row, f"README row of {p.name} lacks its type {p.type}"
            assert f"`{_yaml_text(p.default)}`" in row, f"README row of {p.name} lacks its default"
            assert p.range_text in row, f"README row of {p.name} lacks its range {p.range_text!r}"
        for topic, msgtype, *_ in NODE_TOPICS[node_name]:
            assert f"`{topic}`" in text and msgtype in text, topic
            row = next(line for line in text.splitlines() if line.startswith(f"| `{topic}` | {msgtype} |"))
            assert f"| {qos_text(node_name, topic)} |" in row, f"README row of {topic} lacks its QoS"
    for name in OURS:
        assert f"ros2 launch imagine_ros {name}" in text
    assert "colcon build" in text and "export-bag" in text


def _yaml_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    if isinstance(value, list):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    return repr(value)


# ----------------------------------------------------------------------------------------------------------------------
# the launch files run, with stand-ins for launch, launch_ros, ament_index_python and PyYAML


class _Entity:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def _run_launch_file(monkeypatch, name: str, **arguments: str) -> list:
    """The actions a launch file's OpaqueFunction returns for these launch arguments (others: their defaults)."""
    mods = {
        m: types.ModuleType(m)
        for m in (
            "launch",
            "launch.actions",
            "launch.substitutions",
            "launch.launch_description_sources",
            "launch_ros",
            "launch_ros.actions",
            "launch_ros.substitutions",
            "ament_index_python",
            "ament_index_python.packages",
            "yaml",
        )
    }
    mods["launch"].LaunchDescription = _Entity
    for cls in ("DeclareLaunchArgument", "ExecuteProcess", "OpaqueFunction", "IncludeLaunchDescription"):
        setattr(mods["launch.actions"], cls, type(cls, (_Entity,), {}))
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch.launch_description_sources"].PythonLaunchDescriptionSource = type("Source", (_Entity,), {})
    mods["launch_ros.actions"].Node = type("Node", (_Entity,), {})
    mods["launch_ros.substitutions"].ExecutableInPackage = type("ExecutableInPackage", (_Entity,), {})
    mods["ament_index_python.packages"].get_package_share_directory = lambda package: str(ROOT)
    mods["yaml"].safe_load = lambda stream: YAML(typ="safe", pure=True).load(stream)
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), ROOT / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description().args[0]
    context = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert set(arguments) <= set(context), f"{name}: unknown launch arguments {set(arguments) - set(context)}"
    context.update(arguments)
    opaque = next(e for e in entities if type(e).__name__ == "OpaqueFunction")
    return opaque.kwargs["function"](context)


def _nodes_by_name(actions) -> dict:
    return {a.kwargs["name"]: a.kwargs for a in actions if type(a).__name__ == "Node"}


def test_prediction_launch_passes_overrides_only_when_given(monkeypatch):
    node = _nodes_by_name(_run_launch_file(monkeypatch, "prediction.launch.py"))["imagine_prediction"]
    assert node["parameters"] == [str(ROOT / "config" / "prediction.yaml")]
    node = _nodes_by_name(_run_launch_file(monkeypatch, "prediction.launch.py", rate="2", checkpoint="/m/vd.json"))
    assert node["imagine_prediction"]["parameters"][1] == {"rate": 2.0, "checkpoint": "/m/vd.json"}
    assert type(node["imagine_prediction"]["parameters"][1]["rate"]) is float


def test_sim_prediction_launch_takes_eta_frame_from_the_simulator(monkeypatch, tmp_path):
    nodes = _nodes_by_name(_run_launch_file(monkeypatch, "sim_prediction.launch.py", checkpoint="/m/vd.json"))
    # planner unset: the parameter files decide planner.enabled and task (no override), as for every other argument
    assert nodes["imagine_sim"]["parameters"] == [str(ROOT / "config" / "sim.yaml")]  # no empty override dict
    assert nodes["imagine_prediction"]["parameters"][1] == {"checkpoint": "/m/vd.json", "eta_frame": "panda_link0"}
    own = tmp_path / "sim.yaml"
    own.write_text("imagine_sim:\n  ros__parameters:\n    base_frame: world\n    seed: 3\n")
    nodes = _nodes_by_name(
        _run_launch_file(monkeypatch, "sim_prediction.launch.py", sim_params=str(own), planner="true")
    )
    assert nodes["imagine_sim"]["parameters"] == [str(own), {"task": True}]
    assert nodes["imagine_prediction"]["parameters"][1] == {"planner.enabled": True, "eta_frame": "world"}


def test_serving_launch_runs_the_installed_console_script(monkeypatch):
    actions = _run_launch_file(monkeypatch, "serving.launch.py", checkpoint="/m/vd.json", workers="2")
    cmds = [a.kwargs["cmd"] for a in actions]
    assert len(cmds) == 3
    parser = build_parser()
    for cmd, sub in zip(cmds, ["broker", "serve", "serve"]):
        assert type(cmd[0]).__name__ == "ExecutableInPackage"
        assert cmd[0].kwargs == {"executable": "imagine-ros", "package": "imagine_ros"}
        assert parser.parse_args(cmd[1:]).command == sub


def test_file_parameter_reads_ros2_parameter_files():
    data = YAML(typ="safe", pure=True).load((ROOT / "config" / "sim.yaml").read_text())
    assert node_params.file_parameter(data, "imagine_sim", "base_frame") == "panda_link0"
    assert node_params.file_parameter(data, "imagine_prediction", "base_frame") is None
    data = {
        "/**": {"ros__parameters": {"base_frame": "odom", "remote": {"endpoint": "tcp://a:1"}}},
        "/imagine_sim": {"ros__parameters": {"base_frame": "world"}},
    }
    assert node_params.file_parameter(data, "imagine_sim", "base_frame") == "world"  # the node's own section wins
    assert node_params.file_parameter(data, "other", "base_frame") == "odom"
    assert node_params.file_parameter(data, "other", "remote.endpoint") == "tcp://a:1"
    assert node_params.file_parameter(None, "imagine_sim", "base_frame") is None


def test_qos_follows_rep_2003():
    """Sensor publishers are reliable (default-QoS tools receive them; an image and its camera_info arrive together);
    the prediction node's camera subscription is best effort (matches any camera, never waits for a late frame)."""
    sim, pred = TOPIC_QOS["imagine_sim"], TOPIC_QOS["imagine_prediction"]
    assert sim["~/camera/image_raw"][0] == sim["~/camera/camera_info"][0] == "reliable"
    assert sim["~/camera/image_raw"][1] == sim["~/camera/camera_info"][1]
    assert pred["image"][0] == "best_effort"
    # the static transform: reliable, transient local (tf2's static listeners ask for it), one message
    assert sim["/tf_static"] == ("reliable", 1) and node_params.TRANSIENT_LOCAL == {"/tf_static"}
    assert qos_text("imagine_sim", "/tf_static") == "reliable, depth 1, transient local"
    assert all(r in ("reliable", "best_effort") and d >= 1 for q in TOPIC_QOS.values() for r, d in q.values())
