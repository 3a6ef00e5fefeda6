"""Names on the wire: frames, topics, message types, point layouts and QoS, stated once.

The bag converter writes these, the bag reader and the node read them and the launch file
remaps the node's private inputs onto them (docs/ARCHITECTURE.md §Conventions). QoS is plain
data (`QosSpec`) so that this module needs neither rclpy nor rosbags: the bag writer turns a
spec into the rosbags profile it records, the node into an rclpy `QoSProfile`.

Bag topics:

- `/CAM_X/image_raw`: `sensor_msgs/Image` rgb8, frame `CAM_X` (nuScenes camera frames are
  optical: z forward, x right, y down), or `/CAM_X/image_raw/compressed`:
  `sensor_msgs/CompressedImage` with the image file's own bytes;
- `/CAM_X/camera_info`: `sensor_msgs/CameraInfo` (plumb_bob, D = 0, K, R = I, P = [K|0]);
- `/RADAR_X`: `sensor_msgs/PointCloud2` with the 18 nuScenes fields in their PCD types
  (`RADAR_DATATYPES`, 43-byte points), frame `RADAR_X`;
- `/LIDAR_TOP`: `PointCloud2` `LIDAR_FIELDS` in `LIDAR_DATATYPES`;
- `/tf`: `tf2_msgs/TFMessage` `map -> base_link`, one per ego pose;
- `/tf_static`: `base_link -> <sensor>` for every sensor of a scene, latched;
- `/gt/detections`, `/gt/markers`: ground truth as `vision_msgs/Detection3DArray` in
  `base_link` and `visualization_msgs/MarkerArray` (`imkd_core.wire.cdr`);
- `/imkd/keyframes`: `std_msgs/String`, one `imkd_core.wire.keyframe` record per keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass

from imkd_core.data.radar_pcd import RADAR_DTYPE
from imkd_core.sample import NUSCENES_RADAR_FIELDS
from imkd_core.wire.pointcloud2 import FLOAT32, UINT16, datatype_of

# ------------------------------------------------------------------------------------ frames
MAP_FRAME = "map"
BASE_FRAME = "base_link"

# ------------------------------------------------------------------------------------ topics
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
GT_DETECTIONS_TOPIC = "/gt/detections"
GT_MARKERS_TOPIC = "/gt/markers"
KEYFRAMES_TOPIC = "/imkd/keyframes"


def image_topic(camera: str, compressed: bool = False) -> str:
    return f"/{camera}/image_raw" + ("/compressed" if compressed else "")


def camera_info_topic(camera: str) -> str:
    return f"/{camera}/camera_info"


def pointcloud_topic(sensor: str) -> str:
    return f"/{sensor}"


# ----------------------------------------------------------------------------- message types
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"
TF_TYPE = "tf2_msgs/msg/TFMessage"
DETECTIONS_TYPE = "vision_msgs/msg/Detection3DArray"
MARKERS_TYPE = "visualization_msgs/msg/MarkerArray"
STRING_TYPE = "std_msgs/msg/String"

# ------------------------------------------------------------------------------ point layouts
LIDAR_FIELDS: tuple[str, ...] = ("x", "y", "z", "intensity", "ring")
LIDAR_DATATYPES: tuple[int, ...] = (FLOAT32, FLOAT32, FLOAT32, FLOAT32, UINT16)
RADAR_DATATYPES: tuple[int, ...] = tuple(
    datatype_of(RADAR_DTYPE[name]) for name in NUSCENES_RADAR_FIELDS)


# ---------------------------------------------------------------------------------------- QoS
@dataclass(frozen=True)
class QosSpec:
    """A keep-last QoS profile: history depth, reliable (else best effort), transient local
    ("latched", else volatile). Everything else is the middleware default."""

    depth: int
    reliable: bool = True
    transient_local: bool = False


# Reliable publishers match both reliable and best-effort subscribers. /tf_static is latched
# (transient local, depth 1: one message holds every sensor), as tf2's static broadcaster does.
QOS_DATA = QosSpec(10)  # data topics: what bags record for all but /tf and /tf_static
QOS_TF = QosSpec(100)  # /tf, recorded and subscribed; the node's keyframe records
QOS_LATCHED = QosSpec(1, transient_local=True)  # /tf_static in bags, the node's label_info
# Subscribing to /tf_static: every latched broadcaster's last message is kept.
QOS_TF_STATIC_IN = QosSpec(100, transient_local=True)
# Sensor inputs of the node: best effort, a short queue (reliable on request, for large raw
# images on transports that lose fragments; radar sweeps get a deeper queue).
QOS_SENSOR = QosSpec(2, reliable=False)
QOS_OUTPUT = QosSpec(1)  # the node's status and diagnostics
# The node's detections and markers keep their last 10 for late joiners: a recorder started
# before the node may match its publisher seconds after the first arrays on a loaded machine
# (seen in CI), and a transient-local subscriber then still gets them. Volatile subscribers
# (RViz, most clients) match as before and get only what comes after.
QOS_RESULTS = QosSpec(10, transient_local=True)


def topic_qos(topic: str) -> QosSpec:
    """The QoS a bag records for `topic`."""
    if topic == TF_STATIC_TOPIC:
        return QOS_LATCHED
    if topic == TF_TOPIC:
        return QOS_TF
    return QOS_DATA
