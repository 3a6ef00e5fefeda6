"""The foundation: environment completeness, interface wire layout, real DDS across processes,
and a `colcon build` of the package as a ROS 2 user would run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ros_peer import message_type

PY = sys.executable

# vision_msgs 4.1.1 as released (Humble/Jazzy): message -> ordered (field, type). Our build
# must match exactly, or our messages would not be wire-compatible with a real ROS 2 system.
VISION_MSGS_4_1_1 = {
    "Point2D": [("x", "double"), ("y", "double")],
    "Pose2D": [("position", "vision_msgs/Point2D"), ("theta", "double")],
    "BoundingBox2D": [("center", "vision_msgs/Pose2D"), ("size_x", "double"),
                      ("size_y", "double")],
    "BoundingBox2DArray": [("header", "std_msgs/Header"),
                           ("boxes", "sequence<vision_msgs/BoundingBox2D>")],
    "BoundingBox3D": [("center", "geometry_msgs/Pose"), ("size", "geometry_msgs/Vector3")],
    "BoundingBox3DArray": [("header", "std_msgs/Header"),
                           ("boxes", "sequence<vision_msgs/BoundingBox3D>")],
    "ObjectHypothesis": [("class_id", "string"), ("score", "double")],
    "ObjectHypothesisWithPose": [("hypothesis", "vision_msgs/ObjectHypothesis"),
                                 ("pose", "geometry_msgs/PoseWithCovariance")],
    "Classification": [("header", "std_msgs/Header"),
                       ("results", "sequence<vision_msgs/ObjectHypothesis>")],
    "Detection2D": [("header", "std_msgs/Header"),
                    ("results", "sequence<vision_msgs/ObjectHypothesisWithPose>"),
                    ("bbox", "vision_msgs/BoundingBox2D"), ("id", "string")],
    "Detection2DArray": [("header", "std_msgs/Header"),
                         ("detections", "sequence<vision_msgs/Detection2D>")],
    "Detection3D": [("header", "std_msgs/Header"),
                    ("results", "sequence<vision_msgs/ObjectHypothesisWithPose>"),
                    ("bbox", "vision_msgs/BoundingBox3D"), ("id", "string")],
    "Detection3DArray": [("header", "std_msgs/Header"),
                         ("detections", "sequence<vision_msgs/Detection3D>")],
    "VisionClass": [("class_id", "uint16"), ("class_name", "string")],
    "LabelInfo": [("header", "std_msgs/Header"),
                  ("class_map", "sequence<vision_msgs/VisionClass>"), ("threshold", "float")],
    "VisionInfo": [("header", "std_msgs/Header"), ("method", "string"),
                   ("database_location", "string"), ("database_version", "int32")],
}


def test_environment_imports_everything_a_user_needs():
    code = ("import rclpy, vision_msgs.msg, tf2_msgs.msg, sensor_msgs.msg, "
            "visualization_msgs.msg, torch, nuscenes, rosbags, imkd_core, imkd_ros")
    subprocess.run([PY, "-c", code], check=True, timeout=120)


def test_imkd_doctor_reports_a_complete_environment():
    out = subprocess.run([PY, "-m", "imkd_core.cli", "doctor"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MISSING" not in out.stdout


@pytest.mark.parametrize("name", sorted(VISION_MSGS_4_1_1))
def test_vision_msgs_match_the_released_definitions(name):
    fields = list(message_type(f"vision_msgs/msg/{name}").get_fields_and_field_types().items())
    assert fields == VISION_MSGS_4_1_1[name]


def test_tf_message_layout():
    cls = message_type("tf2_msgs/msg/TFMessage")
    assert cls.get_fields_and_field_types() == {
        "transforms": "sequence<geometry_msgs/TransformStamped>"}


def _detections_spec() -> dict:
    """A Detection3DArray with several detections and hypotheses, every field non-default."""
    detections = []
    for i in range(4):
        covariance = [float(i * 36 + k) / 7.0 for k in range(36)]
        detections.append({
            "header": {"stamp": {"sec": 1532402927, "nanosec": 647951000 + i},
                       "frame_id": "base_link"},
            "results": [
                {"hypothesis": {"class_id": cls, "score": 0.9 - 0.1 * j},
                 "pose": {"pose": {"position": {"x": 1.5 * i, "y": -2.25 * j, "z": 0.5},
                                   "orientation": {"x": 0.0, "y": 0.0, "z": 0.6, "w": 0.8}},
                          "covariance": covariance}}
                for j, cls in enumerate(("car", "truck", "pedestrian")[: i % 3 + 1])
            ],
            "bbox": {"center": {"position": {"x": 10.0 + i, "y": -3.5, "z": 0.9},
                                "orientation": {"x": 0.0, "y": 0.0, "z": 0.28, "w": 0.96}},
                     "size": {"x": 4.5, "y": 1.9, "z": 1.6 + 0.1 * i}},
            "id": f"track-{i}",
        })
    return {"header": {"stamp": {"sec": 1532402927, "nanosec": 647951000},
                       "frame_id": "base_link"},
            "detections": detections}


def _assert_same(expected, received, path="msg"):
    if isinstance(expected, dict):
        for key, value in expected.items():
            _assert_same(value, received[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(expected) == len(received), path
        for k, (a, b) in enumerate(zip(expected, received)):
            _assert_same(a, b, f"{path}[{k}]")
    elif isinstance(expected, float):
        assert received == pytest.approx(expected, rel=0, abs=0), path
    else:
        assert received == expected, path


@pytest.mark.ros
def test_detection3d_array_crosses_real_dds_between_processes(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec = _detections_spec()
    spec_path.write_text(json.dumps(spec))
    received_path = spec_path.with_suffix(".received.json")
    topic = f"/imkd_test/detections_{os.getpid()}"
    peer = str(Path(__file__).with_name("ros_peer.py"))
    msg_type = "vision_msgs/msg/Detection3DArray"
    sub = subprocess.Popen([PY, peer, "sub", msg_type, topic, str(received_path)])
    pub = subprocess.Popen([PY, peer, "pub", msg_type, topic, str(spec_path)])
    try:
        assert sub.wait(timeout=60) == 0
        assert pub.wait(timeout=60) == 0
    finally:
        for proc in (sub, pub):
            if proc.poll() is None:
                proc.kill()
    _assert_same(spec, json.loads(received_path.read_text()))


def test_colcon_build_installs_a_complete_ros_package(tmp_path, repo_root):
    workspace = tmp_path / "ws"
    shutil.copytree(repo_root, workspace / "src" / "imkd_ros",
                    ignore=shutil.ignore_patterns(".venv", ".git", "build", "install", "log",
                                                  "data", "outputs", "__pycache__",
                                                  "*.egg-info"))
    colcon = Path(sys.executable).with_name("colcon")
    build = subprocess.run([str(colcon), "build"], cwd=workspace, timeout=600,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    # interfaces/ holds fallback copies of vision_msgs/tf2_msgs: colcon must never build them
    # over a distro's (COLCON_IGNORE), so imkd_ros is the only package in the install tree.
    assert sorted(p.name for p in (workspace / "install").iterdir() if p.is_dir()) == [
        "imkd_ros"]
    share = workspace / "install" / "imkd_ros" / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "imkd_ros").is_file()
    manifest = ET.parse(share / "imkd_ros" / "package.xml").getroot()
    assert manifest.get("format") == "3"
    assert manifest.findtext("name") == "imkd_ros"
    depends = {e.text for e in manifest.iter("exec_depend")}
    assert {"rclpy", "sensor_msgs", "vision_msgs", "visualization_msgs", "geometry_msgs",
            "std_msgs", "tf2_msgs"} <= depends
    # Every launch file and config file of the source tree is installed under share/.
    for pattern in ("launch/*.launch.py", "config/*.yaml", "config/*.rviz",
                    "config/model/*.yaml"):
        for source in repo_root.glob(pattern):
            assert (share / "imkd_ros" / source.relative_to(repo_root)).is_file(), source
    # Console scripts land in lib/imkd_ros, where `ros2 run imkd_ros <name>` looks.
    scripts = workspace / "install" / "imkd_ros" / "lib" / "imkd_ros"
    assert (scripts / "imkd").is_file()
    site = next((workspace / "install" / "imkd_ros" / "lib").glob("python3*/site-packages"))
    assert (site / "imkd_core" / "geometry.py").is_file()
    assert (site / "imkd_ros" / "__init__.py").is_file()


def test_package_xml_is_format_3_with_real_dependency_keys(repo_root):
    manifest = ET.parse(repo_root / "package.xml").getroot()
    assert manifest.get("format") == "3"
    assert manifest.find("export/build_type").text == "ament_python"
    maintainer = manifest.find("maintainer")
    assert "@" in maintainer.get("email")


def test_setup_is_a_no_op_when_nothing_changed(repo_root):
    out = subprocess.run(["bash", str(repo_root / "scripts" / "setup.sh")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout
