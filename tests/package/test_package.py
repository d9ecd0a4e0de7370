"""Packaging: ament_python metadata, the symlinked sub-packages, the wheel's contents and the console script."""

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_package_xml_is_format_3_ament_python_with_ros_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "imagine_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "launch", "launch_ros"} <= deps
    assert (ROOT / "resource" / "imagine_ros").exists()
    # every ROS package the rclpy layer imports is an exec_depend (colcon/rosdep install nothing else)
    imported = set()
    for path in (ROOT / "imagine_ros" / "ros").glob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module and not n.module.startswith("imagine_ros"):
                imported.add(n.module.split(".")[0])
            elif isinstance(n, ast.Import):
                imported.update(a.name.split(".")[0] for a in n.names)
    ros_packages = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert ros_packages and ros_packages <= deps, f"not in package.xml: {sorted(ros_packages - deps)}"


@pytest.mark.parametrize("name", ["sim", "models", "training", "evaluation"])
def test_top_level_folders_are_reached_only_through_relative_symlinks(name):
    link = ROOT / "imagine_ros" / name
    assert link.is_symlink() and str(link.readlink()) == f"../{name}"
    module = __import__(f"imagine_ros.{name}", fromlist=["_"])
    assert Path(module.__file__).resolve() == (ROOT / name / "__init__.py").resolve()


@pytest.mark.slow
def test_wheel_holds_the_subpackages_ament_marker_and_console_script(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("imagine_ros-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in [
        "imagine_ros/sim/env.py",
        "imagine_ros/sim/storage.py",
        "imagine_ros/models/__init__.py",
        "imagine_ros/training/__init__.py",
        "imagine_ros/evaluation/__init__.py",
        "imagine_ros/cli/__init__.py",
    ]:
        assert path in names, path
    data = [n for n in names if ".data/data/share/" in n]
    assert any(n.endswith("share/ament_index/resource_index/packages/imagine_ros") for n in data)
    assert any(n.endswith("share/imagine_ros/package.xml") for n in data)
    assert not any(n.startswith(("sim/", "models/", "training/", "evaluation/")) for n in names)  # one import name only
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "imagine-ros = imagine_ros.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.slow
def test_console_script_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "imagine_ros.cli", "--help"], check=True, capture_output=True, text=True
    ).stdout
    for cmd in ["collect", "shapes", "gif", "info", "export-bag"]:
        assert cmd in out
