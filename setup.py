"""imagine_ros: an ament_python ROS 2 package that is also a plain pip package.

``sim/``, ``models/``, ``training/`` and ``evaluation/`` live at the top level and are reached through committed
relative symlinks inside ``imagine_ros/`` so that the only import name is ``imagine_ros`` (see docs/architecture.md).
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "imagine_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Sample future camera frames and optical flows from one image; serve, plan and simulate in ROS 2.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["data/*/*"]},  # trained checkpoints: the demo's planner, visual_dynamics
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=[
        "numpy>=1.24",
        "pybullet>=3.2.5",
        "gymnasium>=0.29",
        "h5py>=3.8",
        "tqdm>=4.60",
        "pillow>=9.0",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "torch>=2.1,<3",
        "safetensors>=0.4",
        "tensorboard>=2.12",
        "pyzmq>=25",
        "msgpack>=1.0",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-timeout>=2",
            "hypothesis>=6",
            "ruff>=0.5",
            "rosbags-image>=0.9",
            "mcap>=1.1",  # an MCAP reader and a ROS 2 CDR decoder that this project did not write (bag tests)
            "mcap-ros2-support>=0.5",
            "av>=12",  # the lerobot extra, so that CI runs the LeRobot tests
            "pyarrow>=14",
            "setuptools>=64",
            "wheel",
            "mkdocs>=1.6",  # the docs extra, so that CI builds the documentation (tests/docs/test_docs_site.py)
        ],
        "bench": ["panda-gym>=3.0"],
        "lerobot": ["av>=12", "pyarrow>=14"],  # export-lerobot / import-lerobot (MP4 and parquet)
        "docs": ["mkdocs>=1.6"],  # mkdocs serve / mkdocs build --strict (mkdocs.yml)
    },
    entry_points={
        "console_scripts": [
            "imagine-ros = imagine_ros.cli:main",
            "imagine_prediction = imagine_ros.ros.prediction_node:main",
            "imagine_sim = imagine_ros.ros.sim_node:main",
        ],
    },
    zip_safe=False,
)
