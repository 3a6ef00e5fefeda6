"""ament_python build of imkd_ros: the Python packages, the ament index marker, package.xml,
launch/ and config/ under share/imkd_ros; console scripts go to lib/imkd_ros (setup.cfg)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "imkd_ros"


def share(subdir: str, pattern: str) -> tuple[str, list[str]]:
    return (f"share/{PACKAGE}/{subdir}", sorted(glob(f"{subdir}/{pattern}")))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["imkd_core", "imkd_core.*", "imkd_ros", "imkd_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        share("launch", "*.launch.py"),
        share("config", "*.yaml"),
        share("config", "*.rviz"),
        share("config", "*.schema.json"),
        share("config/model", "*.yaml"),
        share("config/benchmark", "*.yaml"),
        # the shipped student and its teacher (models/README.md): the node's default checkpoint
        share("models", "*.pt"),
        share("models", "*.json"),
        # .msg text that imkd_core.wire.typestore registers with rosbags (bag schemas)
        share("interfaces/vision_msgs/msg", "*.msg"),
        share("interfaces/tf2_msgs/msg", "*.msg"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="imkd_ros maintainers",
    maintainer_email="imkd-ros@example.com",
    description="Camera + radar 3D detection for ROS 2, distilled from a LiDAR teacher (IMKD).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "imkd = imkd_core.cli:main",
            "nuscenes2bag = imkd_ros.nuscenes2bag:main",
            "imkd-replay = imkd_ros.replay:main",
            "imkd-score = imkd_ros.score:main",
            "detector = imkd_ros.detector_node:main",
        ],
    },
)
