"""config/imkd.rviz (what `rviz:=true` opens) shows what this project publishes: every topic it
names is one the detector (launched as imkd_detector) or a nuscenes2bag bag publishes, with
the message type its display reads; it shows the six cameras, the five radars, the detections'
markers and the ground-truth markers (white, apart from the class-coloured detections)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from imkd_core.sample import CAMERA_NAMES, CLASS_COLORS, GT_COLOR, LIDAR_NAME, RADAR_NAMES
from imkd_core.wire.names import (
    GT_DETECTIONS_TOPIC,
    GT_MARKERS_TOPIC,
    KEYFRAMES_TOPIC,
    TF_STATIC_TOPIC,
    TF_TOPIC,
    camera_info_topic,
    image_topic,
    pointcloud_topic,
)
from imkd_ros.parameters import NODE_NAME

REPO = Path(__file__).resolve().parents[1]
# the message type each RViz display class subscribes to
DISPLAY_TYPES = {"rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
                 "rviz_default_plugins/PointCloud2": "sensor_msgs/msg/PointCloud2",
                 "rviz_default_plugins/Image": "sensor_msgs/msg/Image"}
MESSAGE_PACKAGES = {"Detection3DArray": "vision_msgs", "LabelInfo": "vision_msgs",
                    "MarkerArray": "visualization_msgs", "String": "std_msgs",
                    "Float64": "std_msgs"}


def node_outputs() -> dict[str, str]:
    """The detector's publishers, read from its source and resolved as launched."""
    source = (REPO / "imkd_ros/detector_node.py").read_text()
    topics = {f"/{NODE_NAME}/{name}": f"{MESSAGE_PACKAGES[cls]}/msg/{cls}"
              for cls, name in re.findall(r'pub\((\w+), "~/([\w/]+)"', source)}
    assert f"/{NODE_NAME}/output/markers" in topics, "the node's publishers were not found"
    return topics


def bag_topics() -> dict[str, str]:
    """What nuscenes2bag writes (imkd_core.wire.names), raw images or compressed."""
    topics = {TF_TOPIC: "tf2_msgs/msg/TFMessage", TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage",
              GT_DETECTIONS_TOPIC: "vision_msgs/msg/Detection3DArray",
              GT_MARKERS_TOPIC: "visualization_msgs/msg/MarkerArray",
              KEYFRAMES_TOPIC: "std_msgs/msg/String"}
    for cam in CAMERA_NAMES:
        topics[image_topic(cam)] = "sensor_msgs/msg/Image"
        topics[image_topic(cam, True)] = "sensor_msgs/msg/CompressedImage"
        topics[camera_info_topic(cam)] = "sensor_msgs/msg/CameraInfo"
    for sensor in (*RADAR_NAMES, LIDAR_NAME):
        topics[pointcloud_topic(sensor)] = "sensor_msgs/msg/PointCloud2"
    return topics


def displays(tree) -> list[dict]:
    """Every display, groups' members included."""
    found = []
    for display in tree:
        found.append(display)
        found += displays(display.get("Displays", []))
    return found


def test_every_rviz_topic_is_published_with_the_type_its_display_reads():
    config = yaml.safe_load((REPO / "config/imkd.rviz").read_text())
    shown = {}
    for display in displays(config["Visualization Manager"]["Displays"]):
        if "Topic" in display:
            shown[display["Topic"]["Value"]] = display
    published = {**bag_topics(), **node_outputs()}
    for topic, display in shown.items():
        assert topic in published, f"{display['Name']}: nothing publishes {topic}"
        assert DISPLAY_TYPES[display["Class"]] == published[topic], display["Name"]
    images = {t for t, d in shown.items() if d["Class"].endswith("/Image")}
    assert images == {image_topic(cam) for cam in CAMERA_NAMES}
    clouds = {t for t, d in shown.items() if d["Class"].endswith("/PointCloud2")}
    assert clouds == {pointcloud_topic(radar) for radar in RADAR_NAMES}
    for markers in (f"/{NODE_NAME}/output/markers", GT_MARKERS_TOPIC):
        assert shown[markers]["Enabled"] is True, markers
    assert GT_COLOR not in CLASS_COLORS  # ground truth looks unlike any detection
