"""The ROS 2 command line finds imkd_ros as on a distro: `make setup` registers the package in
the venv's ament index when it installs the `ros2` wheels (no distro here), a sourced distro
with a colcon install of imkd_ros does the same. Checked through the real `ros2`, as a user
types it: `ros2 pkg prefix|executables` and `ros2 launch ... --show-args`, against the
arguments the launch file itself declares. Nothing here talks DDS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from imkd_ros.demo import ament_prefix_path, ros2_executable

pytest.importorskip(
    "ros2cli", reason="the ROS 2 command line is not importable here: `make setup` installs it "
                      "from ../shared/wheels/ros2cli (ROS2CLI_WHEELS=...), or source a distro")

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = "detector.launch.py"


def ros2(*args: str) -> str:
    """`ros2 ARGS` with this venv on AMENT_PREFIX_PATH, as `source .venv/bin/activate` sets it."""
    env = {**os.environ, "AMENT_PREFIX_PATH": ament_prefix_path()}
    result = subprocess.run([ros2_executable(), *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"ros2 {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def prefix() -> Path:
    return Path(ros2("pkg", "prefix", "imkd_ros").strip())


def test_imkd_ros_is_in_the_ament_index(prefix):
    assert (prefix / "share/ament_index/resource_index/packages/imkd_ros").is_file()
    share = prefix / "share" / "imkd_ros"
    assert ET.parse(share / "package.xml").getroot().findtext("name") == "imkd_ros"
    for relative in (f"launch/{LAUNCH_FILE}", "config/detector.yaml", "config/imkd.rviz"):
        assert (share / relative).is_file(), relative
    if prefix == Path(sys.prefix):  # setup's registration: links to this checkout's files
        for relative in ("package.xml", f"launch/{LAUNCH_FILE}", "config/detector.yaml"):
            assert (share / relative).resolve() == REPO / relative, relative


def test_ros2_pkg_executables_lists_the_console_scripts():
    listed = {tuple(line.split()) for line in ros2("pkg", "executables", "imkd_ros").splitlines()}
    expected = {("imkd_ros", exe) for exe in ("detector", "imkd", "nuscenes2bag", "imkd-replay")}
    assert expected <= listed


# lark-parser 0.12 (launch's frontend parser) imports the deprecated sre_parse
@pytest.mark.filterwarnings("ignore::DeprecationWarning:lark.utils")
def test_ros2_launch_show_args_lists_the_declared_arguments(prefix):
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    declared = get_launch_description_from_python_launch_file(
        str(prefix / "share/imkd_ros/launch" / LAUNCH_FILE)).get_launch_arguments()
    shown = ros2("launch", "imkd_ros", LAUNCH_FILE, "--show-args")
    names = re.findall(r"^    '([^']+)':$", shown, flags=re.M)
    assert names == [argument.name for argument in declared]
    assert "checkpoint" in names
    for argument in declared:
        assert argument.description in shown, argument.name
