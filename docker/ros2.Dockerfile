# imagine_ros in a ROS 2 workspace, built with colcon; runs the node tests over real ROS 2 topics.
#   docker build -f docker/ros2.Dockerfile --build-arg ROS_DISTRO=humble -t imagine_ros:humble .
#   docker build -f docker/ros2.Dockerfile --build-arg ROS_DISTRO=jazzy -t imagine_ros:jazzy .
#   docker run --rm imagine_ros:humble        # tests/ros/test_ros_nodes.py (+ the rclpy-free ROS tests), then colcon test
# colcon runs as `/opt/venv/bin/python -m colcon` (apt's colcon is importable there: --system-site-packages), so that
# colcon build writes scripts for the venv's Python and colcon test runs pytest where torch & co. are installed.
# The same recipe runs in CI (.github/workflows/ros.yml); docs/ros2.md, "Container and CI".
ARG ROS_DISTRO=humble
FROM ros:${ROS_DISTRO}
ARG ROS_DISTRO
ENV ROS_DISTRO=${ROS_DISTRO} DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# package.xml's exec_depends from apt (the ROS ones as ros-$ROS_DISTRO-*), plus a compiler for pybullet's sdist
# where no wheel fits the distro's Python; python3-numpy is the distro's numpy 1.x that rclpy was built with.
# python3-opencv is left out: pip's opencv-python-headless (setup.py) is the cv2 used, one cv2 rather than two
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential python3-pip python3-venv python3-colcon-common-extensions \
        python3-yaml python3-numpy python3-h5py python3-zmq python3-msgpack python3-tqdm \
        python3-pil python3-pytest \
        ros-${ROS_DISTRO}-rclpy ros-${ROS_DISTRO}-std-msgs ros-${ROS_DISTRO}-sensor-msgs \
        ros-${ROS_DISTRO}-geometry-msgs ros-${ROS_DISTRO}-diagnostic-msgs ros-${ROS_DISTRO}-rcl-interfaces \
        ros-${ROS_DISTRO}-tf2-msgs ros-${ROS_DISTRO}-ament-index-python ros-${ROS_DISTRO}-launch \
        ros-${ROS_DISTRO}-launch-ros ros-${ROS_DISTRO}-ros2launch \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /ws/src/imagine_ros
COPY . .

# the pip dependencies (torch, pybullet, gymnasium, rosbags, ...) in a venv that sees the ROS Python and the apt
# numpy (Jazzy's system Python refuses pip, PEP 668); ros-constraints.txt keeps numpy 1.x for rclpy. CPU torch
# first, from PyTorch's CPU index: setup.py's torch is then met and pip does not pull GBs of CUDA wheels
RUN python3 -m venv --system-site-packages /opt/venv \
    && /opt/venv/bin/pip install -c ros-constraints.txt --index-url https://download.pytorch.org/whl/cpu torch \
    && /opt/venv/bin/pip install -c ros-constraints.txt -e '.[test]' \
    && /opt/venv/bin/python -c "import torch; assert not torch.version.cuda, torch.version.cuda" \
    && /opt/venv/bin/python -c "import numpy; assert numpy.__version__.startswith('1.'), numpy.__version__"
ENV PATH=/opt/venv/bin:${PATH}

WORKDIR /ws
RUN source /opt/ros/${ROS_DISTRO}/setup.bash \
    && /opt/venv/bin/python -m colcon build --symlink-install --packages-select imagine_ros \
        --event-handlers console_direct+

# IMAGINE_ROS_REQUIRE_RCLPY: tests/ros/test_ros_nodes.py fails instead of skipping when rclpy cannot be imported
ENV IMAGINE_ROS_REQUIRE_RCLPY=1
CMD ["bash", "-c", "source /opt/ros/${ROS_DISTRO}/setup.bash && source /ws/install/setup.bash && cd /ws/src/imagine_ros && python -m pytest -q -rs tests/ros/test_ros_nodes.py tests/ros/test_launch_files.py tests/ros/test_node_params.py tests/ros/test_pipeline.py && cd /ws && /opt/venv/bin/python -m colcon test --packages-select imagine_ros --pytest-args tests/ros/test_ros_nodes.py && /opt/venv/bin/python -m colcon test-result --verbose"]
