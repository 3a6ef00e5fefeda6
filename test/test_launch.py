"""The launch file and what it needs. `launch`/`launch_ros` are not installable here, so most
checks work without them: the package installs into a colcon-like tree (lib/imkd_ros/<exe>,
share/imkd_ros/...) holding every executable and file the launch file names, its remappings
cover the node's inputs with the nuscenes2bag topic names, and the parameter file loads through
rclpy's `--params-file` into a running node. Where `launch_testing` is importable (a sourced
ROS 2 distro), the last test really launches it."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_rig import write_random_checkpoint
from vision_msgs.msg import LabelInfo

from imkd_core.wire.names import KEYFRAMES_TOPIC, camera_info_topic, image_topic, pointcloud_topic
from imkd_ros.detector_node import DetectorNode
from imkd_ros.parameters import DetectorParams

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "detector.launch.py"


@pytest.fixture(scope="module")
def install_tree(tmp_path_factory, repo_root) -> Path:
    """`setup.py install` with a prefix, as colcon's ament_python build does."""
    prefix = tmp_path_factory.mktemp("install")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build", "--build-base", str(build), "install",
         "--prefix", str(prefix), "--single-version-externally-managed", "--record",
         str(build / "record.txt")], cwd=repo_root, check=True, capture_output=True, timeout=120)
    return prefix


def launch_ast() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def node_actions(tree: ast.Module) -> list[dict[str, str]]:
    """package/executable keyword constants of every `Node(...)` call in the launch file."""
    calls = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node":
            calls.append({k.arg: k.value.value for k in call.keywords
                          if isinstance(k.value, ast.Constant)})
    return calls


def test_launch_file_names_installed_executables_and_files(install_tree):
    tree = launch_ast()
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    nodes = node_actions(tree)
    ours = {n["executable"] for n in nodes if n.get("package") == "imkd_ros"}
    assert ours == {"detector", "imkd-replay"}
    assert {"package": "rviz2", "executable": "rviz2", "name": "rviz2"} in nodes
    for exe in ours:  # where `ros2 run` / launch_ros look for them
        path = install_tree / "lib" / "imkd_ros" / exe
        assert path.is_file() and path.stat().st_mode & 0o111, path
    share = install_tree / "share" / "imkd_ros"
    for relative in ("launch/detector.launch.py", "config/detector.yaml", "config/imkd.rviz",
                     "package.xml"):
        assert (share / relative).is_file(), relative
    assert (install_tree / "share/ament_index/resource_index/packages/imkd_ros").is_file()
    source = LAUNCH_FILE.read_text()
    assert "/config/detector.yaml" in source and "/config/imkd.rviz" in source
    rviz = yaml.safe_load((share / "config/imkd.rviz").read_text())
    topics = {d.get("Topic", {}).get("Value") for d in rviz["Visualization Manager"]["Displays"]}
    assert {"/imkd_detector/output/markers", "/CAM_FRONT/image_raw", "/RADAR_FRONT"} <= topics


def test_remappings_cover_every_node_input_with_bag_topics():
    """Evaluates the launch file's own `remappings` (no `launch` needed for it)."""
    tree = launch_ast()
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
                and n.name == "remappings")
    namespace: dict = {}
    exec(compile("from imkd_core.wire.names import *\nfrom imkd_core.sample import *\n",
                 "<imports>", "exec"), namespace)
    exec(compile(ast.Module(body=[func], type_ignores=[]), str(LAUNCH_FILE), "exec"), namespace)
    params = yaml.safe_load((LAUNCH_FILE.parents[1] / "config/detector.yaml").read_text())
    params = params["/**"]["ros__parameters"]
    for compressed in (False, True):
        remaps = dict(namespace["remappings"](compressed))
        inputs = {f"~/input/{c}/image" for c in params["cameras"]}
        inputs |= {f"~/input/{c}/camera_info" for c in params["cameras"]}
        inputs |= {f"~/input/{r}/points" for r in params["radars"]} | {"~/input/keyframes"}
        assert set(remaps) == inputs
        for cam in params["cameras"]:
            assert remaps[f"~/input/{cam}/image"] == image_topic(cam, compressed)
            assert remaps[f"~/input/{cam}/camera_info"] == camera_info_topic(cam)
        for radar in params["radars"]:
            assert remaps[f"~/input/{radar}/points"] == pointcloud_topic(radar)
        assert remaps["~/input/keyframes"] == KEYFRAMES_TOPIC


@pytest.mark.ros
def test_parameter_file_loads_into_the_node(install_tree, tmp_path):
    params_file = install_tree / "share/imkd_ros/config/detector.yaml"
    values = yaml.safe_load(params_file.read_text())["/**"]["ros__parameters"]
    assert set(values) == {f.name for f in fields(DetectorParams)}, (
        "config/detector.yaml and the node disagree")
    checkpoint = write_random_checkpoint(tmp_path / "model.pt")
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(params_file),
                                      "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu"])
    try:
        node = DetectorNode(context=context)  # declares, type-checks and validates them all
        try:
            for name, value in values.items():
                if name not in ("checkpoint", "device"):
                    assert node.get_parameter(name).value == value, name
            assert node.get_parameter("checkpoint").value == str(checkpoint)
        finally:
            node.stop()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.ros
@pytest.mark.slow
def test_launch_with_launch_testing(tmp_path):
    launch_testing = pytest.importorskip(
        "launch_testing", reason="launch_testing is not importable here (no ROS 2 distro "
                                 "sourced); this test runs where it is")
    import launch_ros  # noqa: F401 - the launch file needs it
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    import launch

    assert launch_testing is not None
    checkpoint = write_random_checkpoint(tmp_path / "model.pt")
    service = launch.LaunchService()
    service.include_launch_description(launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
            launch_arguments={"checkpoint": str(checkpoint), "device": "cpu"}.items())]))
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    context = rclpy.Context()
    rclpy.init(context=context)
    received: list[LabelInfo] = []
    try:
        node = rclpy.create_node("launch_test_listener", context=context)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(LabelInfo, "/imkd_detector/output/label_info",
                                 received.append, latched)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert received, "the launched detector never published its label info"
        assert len(received[0].class_map) == 10
    finally:
        service.shutdown()
        runner.join(timeout=30)
        rclpy.try_shutdown(context=context)
