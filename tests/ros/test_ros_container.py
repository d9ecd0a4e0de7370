"""The ROS 2 container recipe and CI workflow, checked by reading (they need Docker and a ROS 2 image to run): both
distros, every package.xml dependency installed, the constraints used, CPU torch, colcon run by the venv's Python,
and the node tests run without being skipped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "ros2.Dockerfile"
WORKFLOW = ROOT / ".github" / "workflows" / "ros.yml"
# exec_depends that the image takes from pip instead of apt (one copy of the module, the one setup.py asks for)
FROM_PIP = {"python3-opencv": "opencv-python-headless"}
VENV_PYTHON = "/opt/venv/bin/python"


def _apt_packages(text: str) -> set[str]:
    joined = text.replace("\\\n", " ")
    found: set[str] = set()
    for m in re.finditer(r"apt-get install -y --no-install-recommends (.*?)(?:&&|$)", joined, re.M):
        found.update(m.group(1).split())
    return found


def test_dockerfile_builds_on_the_distro_given_and_installs_every_exec_depend():
    text = DOCKERFILE.read_text()
    assert "ARG ROS_DISTRO=humble\nFROM ros:${ROS_DISTRO}\nARG ROS_DISTRO\n" in text
    apt = _apt_packages(text)
    deps = {e.text for e in ET.parse(ROOT / "package.xml").getroot().findall("exec_depend")}
    setup = (ROOT / "setup.py").read_text()
    for dep in deps:
        if dep in FROM_PIP:
            assert dep not in apt and f'"{FROM_PIP[dep]}' in setup, f"{dep} comes from pip ({FROM_PIP[dep]}), not apt"
            continue
        want = dep if dep.startswith("python3-") else "ros-${ROS_DISTRO}-" + dep.replace("_", "-")
        assert want in apt, f"package.xml exec_depend {dep} is not installed by the Dockerfile ({want})"
    assert "python3-colcon-common-extensions" in apt and "build-essential" in apt


def test_dockerfile_keeps_numpy_1_builds_with_colcon_and_runs_the_node_tests():
    text = DOCKERFILE.read_text()
    assert "python3 -m venv --system-site-packages /opt/venv" in text
    cpu_torch = "pip install -c ros-constraints.txt --index-url https://download.pytorch.org/whl/cpu torch"
    project = "pip install -c ros-constraints.txt -e '.[test]'"
    assert cpu_torch in text and project in text
    assert text.index(cpu_torch) < text.index(project), "CPU torch first, or pip pulls the CUDA wheels from PyPI"
    assert "import torch; assert not torch.version.cuda" in text
    assert "numpy.__version__.startswith('1.')" in text
    # colcon from apt runs under /usr/bin/python3: run by the venv's Python, colcon build writes scripts for the venv
    # and colcon test runs pytest where torch is installed
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    uses = re.findall(r"(\S+ -m )?colcon (build|test-result|test)\b", code)
    assert {verb for _, verb in uses} == {"build", "test", "test-result"}
    assert all(prefix == f"{VENV_PYTHON} -m " for prefix, _ in uses), uses
    assert f"{VENV_PYTHON} -m colcon build --symlink-install --packages-select imagine_ros" in text
    assert "ENV IMAGINE_ROS_REQUIRE_RCLPY=1" in text
    cmd = text.split("CMD ", 1)[1]
    assert "source /opt/ros/${ROS_DISTRO}/setup.bash && source /ws/install/setup.bash" in cmd
    assert "tests/ros/test_ros_nodes.py" in cmd and f"{VENV_PYTHON} -m colcon test --packages-select imagine_ros" in cmd
    tests = (ROOT / "tests" / "ros" / "test_ros_nodes.py").read_text()
    assert 'os.environ.get("IMAGINE_ROS_REQUIRE_RCLPY")' in tests  # in the container a missing rclpy fails
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "imagine_ros" not in ignored and "imagine_ros/data" not in ignored


def test_ci_workflow_builds_both_distros_and_runs_the_container():
    wf = YAML(typ="safe", pure=True).load(WORKFLOW.read_text())
    job = wf["jobs"]["ros2"]
    assert job["strategy"]["matrix"]["distro"] == ["humble", "jazzy"]
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "docker build -f docker/ros2.Dockerfile --build-arg ROS_DISTRO=${{ matrix.distro }}" in runs
    assert "docker run --rm imagine_ros:${{ matrix.distro }}" in runs
    assert any(step.get("uses", "").startswith("actions/checkout@") for step in job["steps"])
    assert {"push", "pull_request"} <= set(wf["on"]) and wf["on"]["push"]["branches"] == ["main"]
    # the docs say when it runs: pushes to main and pull requests, not every push
    assert "on pushes to `main` and on pull requests" in (ROOT / "docs" / "ros2.md").read_text()


def test_docs_describe_the_container_and_ci():
    text = (ROOT / "docs" / "ros2.md").read_text()
    section = text.split("### Container and CI", 1)[1].split("\n### ", 1)[0]
    for needle in ("docker/ros2.Dockerfile", ".github/workflows/ros.yml", "ROS_DISTRO=jazzy", "test_ros_nodes.py"):
        assert needle in section, needle
    install = text.split("### Install in a ROS 2 workspace", 1)[1].split("\n### ", 1)[0]
    commands = install.split("```bash", 1)[1].split("```", 1)[0]
    assert "python -m colcon build --symlink-install" in commands and "&& colcon build" not in commands
    assert "download.pytorch.org/whl/cpu" in install
