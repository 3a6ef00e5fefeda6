"""The launch file and what it needs. Most checks work without `launch`/`launch_ros` (a clone
without ../shared/wheels/ros2cli has neither): the package installs into a colcon-like tree
(lib/imkd_ros/<exe>, share/imkd_ros/...) holding every executable and file the launch file
names, its remappings cover the node's inputs with the nuscenes2bag topic names, and the
parameter file loads through rclpy's `--params-file` into a running node. Where launch_ros is
importable (after `make setup` here, or a sourced distro), the last test really launches it
through `LaunchService`; test_ros2_launch.py runs `ros2 launch` with a bag."""

from __future__ import annotations

import ast
import json
import re
import runpy
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
from std_msgs.msg import String
from vision_msgs.msg import LabelInfo

from imkd_core.wire.names import KEYFRAMES_TOPIC, camera_info_topic, image_topic, pointcloud_topic
from imkd_ros.demo import ament_prefix_path
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


def launch_arguments() -> dict[str, tuple[str | None, str]]:
    """The launch file's ARGUMENTS literal: name -> (default or None if required, description)."""
    assign = next(n for n in launch_ast().body if isinstance(n, ast.Assign)
                  and getattr(n.targets[0], "id", "") == "ARGUMENTS")
    return ast.literal_eval(assign.value)


def arguments_table(arguments: dict[str, tuple[str | None, str]]) -> str:
    rows = ["| argument | default | description |", "| --- | --- | --- |"]
    for name, (default, description) in arguments.items():
        shown = "required" if default is None else f"`{default}`" if default else "empty"
        rows.append(f"| `{name}` | {shown} | {description.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


def test_readme_launch_arguments_table_is_the_declared_arguments():
    """generate_launch_description declares exactly ARGUMENTS (test_ros2_cli.py checks that
    through `ros2 launch --show-args`); the README's table is made from them."""
    text = (LAUNCH_FILE.parents[1] / "README.md").read_text()
    block = re.search(r"<!-- launch arguments:[^\n]*-->\n(.*?)<!-- /launch arguments -->", text,
                      re.S)
    expected = arguments_table(launch_arguments())
    assert block and block.group(1) == expected, f"the README block must read:\n{expected}"


def test_replay_waits_for_exactly_the_detector_inputs(tmp_path):
    """bag:=... starts imkd-replay with `--wait-for` the topics the detector subscribes to
    under the launch file's remappings: its sensors from the parameter file, the keyframes
    only with trigger:=keyframes, never topics nothing reads (/LIDAR_TOP, /gt/*)."""
    pytest.importorskip("launch_ros", reason="the launch file imports launch_ros")
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    get_launch_description_from_python_launch_file(str(LAUNCH_FILE))  # it loads
    namespace = runpy.run_path(str(LAUNCH_FILE))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "cameras": ["CAM_FRONT"], "radars": ["RADAR_FRONT"]}}}))
    values = namespace["file_parameters"](str(params))
    assert namespace["detector_inputs"]({**values, "trigger": "keyframes"}, False) == [
        "/tf", "/tf_static", "/CAM_FRONT/camera_info", "/CAM_FRONT/image_raw", "/RADAR_FRONT",
        KEYFRAMES_TOPIC]
    camera_only = {"cameras": "CAM_FRONT", "radars": "none", "trigger": "cameras"}
    assert namespace["detector_inputs"](camera_only, False) == [
        "/tf", "/tf_static", "/CAM_FRONT/camera_info", "/CAM_FRONT/image_raw"]
    assert namespace["detector_inputs"]({"cameras": ["CAM_FRONT"], "radars": []}, False)[-1] == (
        "/CAM_FRONT/image_raw")
    defaults = namespace["file_parameters"](str(LAUNCH_FILE.parents[1] / "config/detector.yaml"))
    inputs = namespace["detector_inputs"]({**defaults, "trigger": "cameras"}, True)
    assert len(inputs) == 2 + 2 * 6 + 5 and image_topic("CAM_BACK", True) in inputs
    assert KEYFRAMES_TOPIC not in inputs and "/LIDAR_TOP" not in inputs


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
def test_launch_with_launch_testing(tmp_path, monkeypatch):
    """LaunchService.run() works only in the main thread (it installs signal handlers): it runs
    there, and a thread does the DDS checks: the launched detector publishes its latched label
    info, and its status says it runs the sensor subset given as launch arguments (camera-only:
    `radars:=none`), then `LaunchService.shutdown()` (SIGINT to the node) ends it with exit
    code 0."""
    pytest.importorskip("launch_ros", reason="launch_ros is not importable here: `make setup` "
                                             "installs it from ../shared/wheels/ros2cli")
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    import launch

    monkeypatch.setenv("AMENT_PREFIX_PATH", ament_prefix_path())  # FindPackageShare reads it
    checkpoint = write_random_checkpoint(tmp_path / "model.pt")
    exits: dict[str, int] = {}
    service = launch.LaunchService()
    service.include_launch_description(launch.LaunchDescription([
        RegisterEventHandler(OnProcessExit(on_exit=lambda event, _context: exits.update(
            {event.action.name: event.returncode}))),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
            launch_arguments={"checkpoint": str(checkpoint), "device": "cpu",
                              "cameras": "CAM_FRONT,CAM_BACK", "radars": "none"}.items())]))
    received: list[LabelInfo] = []
    statuses: list[dict] = []
    launch_ended = threading.Event()

    def listen() -> None:
        context = rclpy.Context()
        rclpy.init(context=context)
        try:
            node = rclpy.create_node("launch_test_listener", context=context)
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_subscription(LabelInfo, "/imkd_detector/output/label_info",
                                     received.append, latched)
            node.create_subscription(String, "/imkd_detector/debug/status",
                                     lambda m: statuses.append(json.loads(m.data)),
                                     QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            deadline = time.monotonic() + 60
            while not (received and statuses) and not launch_ended.is_set() and (
                    time.monotonic() < deadline):
                executor.spin_once(timeout_sec=0.1)
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)
            service.shutdown()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        code = service.run()
    finally:
        launch_ended.set()
        listener.join(timeout=30)
    assert received, "the launched detector never published its label info"
    assert len(received[0].class_map) == 10
    assert statuses and statuses[0]["mode"] == "degraded"
    assert statuses[0]["configured_without"] == (
        "configured without cameras CAM_FRONT_RIGHT, CAM_BACK_RIGHT, CAM_BACK_LEFT, "
        "CAM_FRONT_LEFT and radars RADAR_FRONT, RADAR_FRONT_RIGHT, RADAR_BACK_RIGHT, "
        "RADAR_BACK_LEFT, RADAR_FRONT_LEFT")
    assert code == 0
    assert list(exits.values()) == [0], exits  # the detector, Ctrl-C'd by launch: clean
