"""rosbag2 <-> `Sample`, without ROS: the bag layout, message builders, a safe writer and the
reader that turns a bag back into the `Sample`s the nuScenes reader gives.

Everything here uses the pure-Python `rosbags` library and the shared type store
(`imkd_core.data.ros_types`), so it runs on machines with or without a ROS 2 distro.

## Bag layout (DESIGN.md §4)

- `/CAM_X/image_raw`: `sensor_msgs/Image` rgb8, frame `CAM_X` (nuScenes camera frames are
  optical: z forward, x right, y down), every camera frame; or, with `images="compressed"`,
  `/CAM_X/image_raw/compressed`: `sensor_msgs/CompressedImage`, the file's own bytes;
- `/CAM_X/camera_info`: `sensor_msgs/CameraInfo` (plumb_bob, D = 0, K, R = I, P = [K|0],
  width/height), with every image;
- `/RADAR_X`: `sensor_msgs/PointCloud2` with the 18 nuScenes fields in their PCD types (43-byte
  points), frame `RADAR_X`, every sweep;
- `/LIDAR_TOP`: `PointCloud2` x, y, z, intensity (float32), ring (uint16), every sweep;
- `/tf`: `tf2_msgs/TFMessage` `map -> base_link`, one per ego pose (i.e. per sensor stamp);
- `/tf_static`: `base_link -> <sensor>` for every sensor of the scene, as the scene's first
  message, transient-local QoS (latched) in the metadata;
- `/gt/detections`: `vision_msgs/Detection3DArray` in `base_link` (class name as `class_id`,
  score 1, `id` empty), every keyframe, stamped with the keyframe time;
- `/gt/markers`: `visualization_msgs/MarkerArray`: DELETEALL, then per box a LINE_LIST box, a
  TEXT label and, when moving, a velocity ARROW; `ns` = class name;
- `/imkd/keyframes`: `std_msgs/String`, one JSON record per keyframe (below), written just after
  the keyframe's last sensor message.

Header stamps are the sensors' own timestamps (nuScenes microseconds x 1000). The bag's log
(receive) time equals the header stamp, except that a later scene whose stamps overlap an
earlier one is shifted as a whole so that log time never runs backwards (stamps untouched).
Sweeps and keyframes are all there, in log-time order.

## Keyframes: `/imkd/keyframes`

Nothing in the standard messages says which sweep is a keyframe, what the sample token is, or
carries a box's velocity, attribute, visibility and point counts. So each keyframe gets one
`std_msgs/String` holding JSON:

    {"format": "imkd-keyframe/1", "token": ..., "scene": ..., "scene_start": <log ns>,
     "timestamp": <ns>, "data": {"CAM_FRONT": <stamp ns>, ..., "LIDAR_TOP": <stamp ns>},
     "gt": {"params": [[x, y, z, l, w, h, yaw, vx, vy], ...], "labels": ["car", ...],
            "attributes": [...], "visibility": [...], "num_lidar_pts": [...],
            "num_radar_pts": [...], "instance_tokens": [...]}}

`data` names, per sensor, the stamp of the keyframe's message on that sensor's topic; floats are
written with `repr` precision, so the boxes come back bit-exact. `scene_start` is the log time
of the scene's first message: sweeps before it belong to another scene (nuScenes' `prev` chains
end at a scene's start). `read_bag_samples` rebuilds each keyframe's `Sample` from these
records plus the sensor topics, with the same sweep maths (`imkd_core.data.sweeps`) and the
same defaults as `NuScenesReader`, so the two agree exactly: points, intrinsics and transforms
bit for bit, raw images pixel for pixel (compressed images are decoded by the same PIL call as
the reader's). Any `ros2 bag play` consumer can ignore the topic.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from imkd_core.data.image_codec import (
    ImageDecodeError,
    decode_compressed_image,
    decode_raw_image,
)
from imkd_core.data.pointcloud2 import (
    FLOAT32,
    UINT16,
    datatype_of,
    decode_pointcloud2,
    encode_pointcloud2,
)
from imkd_core.data.radar_pcd import RADAR_DTYPE
from imkd_core.data.ros_types import typestore
from imkd_core.data.sweeps import (
    RadarFilter,
    RawSweep,
    aggregate_lidar_sweeps,
    aggregate_radar_sweeps,
    sensor_to_keyframe,
)
from imkd_core.geometry import BOX_EDGES, box_corners, make_transform, yaw_to_quaternion
from imkd_core.sample import (
    CAMERA_NAMES,
    CLASS_COLORS,
    CLASS_INDEX,
    CLASSES,
    LIDAR_NAME,
    NUSCENES_RADAR_FIELDS,
    RADAR_NAMES,
    Boxes,
    CameraData,
    LidarData,
    RadarData,
    Sample,
)

# ---------------------------------------------------------------------------------- layout
MAP_FRAME = "map"
BASE_FRAME = "base_link"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
GT_DETECTIONS_TOPIC = "/gt/detections"
GT_MARKERS_TOPIC = "/gt/markers"
KEYFRAMES_TOPIC = "/imkd/keyframes"
KEYFRAME_FORMAT = "imkd-keyframe/1"
BAG_VERSION = 8  # rosbag2 metadata version that Humble reads (Jazzy and later read it too)
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"
TF_TYPE = "tf2_msgs/msg/TFMessage"
DETECTIONS_TYPE = "vision_msgs/msg/Detection3DArray"
MARKERS_TYPE = "visualization_msgs/msg/MarkerArray"
STRING_TYPE = "std_msgs/msg/String"

LIDAR_FIELDS: tuple[str, ...] = ("x", "y", "z", "intensity", "ring")
LIDAR_DATATYPES: tuple[int, ...] = (FLOAT32, FLOAT32, FLOAT32, FLOAT32, UINT16)
RADAR_DATATYPES: tuple[int, ...] = tuple(
    datatype_of(RADAR_DTYPE[name]) for name in NUSCENES_RADAR_FIELDS)


def image_topic(camera: str, compressed: bool = False) -> str:
    return f"/{camera}/image_raw" + ("/compressed" if compressed else "")


def camera_info_topic(camera: str) -> str:
    return f"/{camera}/camera_info"


def pointcloud_topic(sensor: str) -> str:
    return f"/{sensor}"


def _qos(depth: int, durability: QosDurability) -> Qos:
    zero = QosTime(sec=0, nsec=0)  # 0 = "unspecified": the RMW default (infinite)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=QosReliability.RELIABLE,
               durability=durability, deadline=zero, lifespan=zero,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
               avoid_ros_namespace_conventions=False)


# Reliable publishers match both reliable and best-effort subscribers. /tf_static is latched
# (transient local, depth 1: one message holds every sensor), as tf2's static broadcaster does.
QOS_DATA = _qos(10, QosDurability.VOLATILE)
QOS_TF = _qos(100, QosDurability.VOLATILE)
QOS_LATCHED = _qos(1, QosDurability.TRANSIENT_LOCAL)


def topic_qos(topic: str) -> Qos:
    if topic == TF_STATIC_TOPIC:
        return QOS_LATCHED
    if topic == TF_TOPIC:
        return QOS_TF
    return QOS_DATA


class BagError(RuntimeError):
    """A bag that cannot be written or read as this module expects."""


# --------------------------------------------------------------------------- message builders
def _t(name: str):
    return typestore().types[name]


def time_msg(stamp_ns: int):
    stamp_ns = int(stamp_ns)
    return _t("builtin_interfaces/msg/Time")(sec=stamp_ns // 1_000_000_000,
                                             nanosec=stamp_ns % 1_000_000_000)


def stamp_ns(time) -> int:
    """builtin_interfaces/Time -> integer ns."""
    return int(time.sec) * 1_000_000_000 + int(time.nanosec)


def header_msg(stamp: int, frame_id: str):
    return _t("std_msgs/msg/Header")(stamp=time_msg(stamp), frame_id=frame_id)


def image_msg(image: np.ndarray, stamp: int, frame_id: str):
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise BagError(f"expected an (H, W, 3) RGB image, got {image.shape}")
    h, w = image.shape[:2]
    return _t(IMAGE_TYPE)(header=header_msg(stamp, frame_id), height=h, width=w,
                          encoding="rgb8", is_bigendian=0, step=w * 3, data=image.reshape(-1))


def compressed_image_msg(data: bytes, fmt: str, stamp: int, frame_id: str):
    return _t(COMPRESSED_TYPE)(header=header_msg(stamp, frame_id), format=fmt,
                               data=np.frombuffer(data, dtype=np.uint8))


def camera_info_msg(K: np.ndarray, width: int, height: int, stamp: int, frame_id: str):
    """Pinhole, undistorted (nuScenes images are rectified): plumb_bob with D = 0, R = I,
    P = [K | 0]."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    roi = _t("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0,
                                                 do_rectify=False)
    return _t(CAMERA_INFO_TYPE)(
        header=header_msg(stamp, frame_id), height=int(height), width=int(width),
        distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1).copy(),
        r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def pointcloud2_msg(points: np.ndarray, names: Sequence[str], datatypes: Sequence[int],
                    stamp: int, frame_id: str):
    """(N, K) points -> a dense, unorganised (height 1) little-endian PointCloud2."""
    fields, data, point_step = encode_pointcloud2(points, names, datatypes)
    point_field = _t("sensor_msgs/msg/PointField")
    return _t(POINTCLOUD2_TYPE)(
        header=header_msg(stamp, frame_id), height=1, width=len(points),
        fields=[point_field(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        is_bigendian=False, point_step=point_step, row_step=point_step * len(points),
        data=np.frombuffer(data, dtype=np.uint8), is_dense=True)


def pointcloud2_array(msg, names: Sequence[str] | None = None) -> np.ndarray:
    """A PointCloud2 message (rosbags) -> (N, K) float32 of `names` (default: all fields)."""
    fields = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    return decode_pointcloud2(fields, msg.data, msg.width, msg.height, msg.point_step,
                              msg.row_step, bool(msg.is_bigendian), names)


def transform_msg(parent: str, child: str, stamp: int, translation, rotation_wxyz):
    """geometry_msgs/TransformStamped from a translation and a `[w, x, y, z]` quaternion, the
    values passed through unchanged (so reading them back rebuilds the same matrix)."""
    w, x, y, z = (float(v) for v in rotation_wxyz)
    tx, ty, tz = (float(v) for v in translation)
    return _t("geometry_msgs/msg/TransformStamped")(
        header=header_msg(stamp, parent), child_frame_id=child,
        transform=_t("geometry_msgs/msg/Transform")(
            translation=_t("geometry_msgs/msg/Vector3")(x=tx, y=ty, z=tz),
            rotation=_t("geometry_msgs/msg/Quaternion")(x=x, y=y, z=z, w=w)))


def tf_msg(transforms: Sequence) -> Any:
    return _t(TF_TYPE)(transforms=list(transforms))


def transform_matrix(transform_stamped) -> np.ndarray:
    """TransformStamped -> 4x4 `T_parent_child`, built exactly as the nuScenes reader builds
    its transforms (`make_transform([w, x, y, z], translation)`)."""
    t, q = transform_stamped.transform.translation, transform_stamped.transform.rotation
    return make_transform([q.w, q.x, q.y, q.z], [t.x, t.y, t.z])


def _pose_msg(x, y, z, yaw):
    q = yaw_to_quaternion(float(yaw))
    return _t("geometry_msgs/msg/Pose")(
        position=_t("geometry_msgs/msg/Point")(x=float(x), y=float(y), z=float(z)),
        orientation=_t("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=float(q[3]),
                                                       w=float(q[0])))


def detections_cdr(boxes: Boxes, stamp: int, frame_id: str = BASE_FRAME) -> bytes:
    """Boxes (ego frame) -> a serialised vision_msgs/Detection3DArray (CDR, as a bag stores it
    and `Publisher.publish` takes it): centre = geometric centre, size = (l, w, h), one
    hypothesis per box with the class name as `class_id` and the box's score (1.0 for ground
    truth), zero covariance, `id` empty. Velocity is not part of Detection3D (see the markers).

    The bytes are written directly: building the ~600 message objects of 100 boxes costs more
    than the rest of the node's post-processing. Tests check the bytes against the rosbags
    serialiser and rclpy's deserialiser."""
    params = np.asarray(boxes.params, dtype=np.float64).reshape(-1, 9)
    scores = (np.ones(len(params)) if boxes.scores is None
              else np.asarray(boxes.scores, dtype=np.float64))
    quats = yaw_to_quaternion(params[:, 6]).reshape(-1, 4)  # [w, x, y, z]
    # Per box, the 54 float64 that follow its class name, contiguous in CDR: score, pose
    # (position, orientation x y z w), covariance (36), bbox centre (same pose), size.
    values = np.zeros((len(params), 54))
    values[:, 0] = scores
    values[:, 1:4] = params[:, :3]
    values[:, 4:8] = quats[:, [1, 2, 3, 0]]
    values[:, 44:51] = values[:, 1:8]
    values[:, 51:54] = params[:, 3:6]
    out = _CdrWriter()
    out.header(stamp, frame_id)
    out.uint32(len(params))
    for label, row in zip(np.asarray(boxes.labels).tolist(), values):
        out.header(stamp, frame_id)
        out.uint32(1)  # results
        out.string(CLASSES[label])
        out.float64s(row)
        out.string("")  # id
    return bytes(out.buf)


class _CdrWriter:
    """Little-endian CDR (XCDR1, what ROS 2 middlewares and bags carry) for `detections_cdr`.
    Alignment counts from the end of the 4-byte encapsulation header."""

    def __init__(self) -> None:
        self.buf = bytearray(b"\x00\x01\x00\x00")

    def _align(self, size: int) -> None:
        self.buf += bytes(-(len(self.buf) - 4) % size)

    def uint32(self, value: int) -> None:
        self._align(4)
        self.buf += struct.pack("<I", value)

    def string(self, text: str) -> None:
        data = text.encode() + b"\x00"
        self.uint32(len(data))
        self.buf += data

    def float64s(self, values: np.ndarray) -> None:
        self._align(8)
        self.buf += np.asarray(values, dtype="<f8").tobytes()

    def header(self, stamp: int, frame_id: str) -> None:
        stamp = int(stamp)
        self._align(4)
        self.buf += struct.pack("<iI", stamp // 1_000_000_000, stamp % 1_000_000_000)
        self.string(frame_id)


def _marker(header, ns: str, marker_id: int, marker_type: int, action: int = 0, pose=None,
            scale=(1.0, 1.0, 1.0), color=(1.0, 1.0, 1.0, 1.0), lifetime_ns: int = 0,
            points=(), text: str = ""):
    t = typestore().types
    vec3, point = t["geometry_msgs/msg/Vector3"], t["geometry_msgs/msg/Point"]
    if pose is None:
        pose = t["geometry_msgs/msg/Pose"](
            position=point(x=0.0, y=0.0, z=0.0),
            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    return t["visualization_msgs/msg/Marker"](
        header=header, ns=ns, id=marker_id, type=marker_type, action=action, pose=pose,
        scale=vec3(x=float(scale[0]), y=float(scale[1]), z=float(scale[2])),
        color=t["std_msgs/msg/ColorRGBA"](r=color[0], g=color[1], b=color[2], a=color[3]),
        lifetime=t["builtin_interfaces/msg/Duration"](sec=lifetime_ns // 1_000_000_000,
                                                      nanosec=lifetime_ns % 1_000_000_000),
        frame_locked=False,
        points=[point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in points],
        colors=[], texture_resource="",
        texture=t[COMPRESSED_TYPE](header=header_msg(0, ""), format="",
                                   data=np.zeros(0, np.uint8)),
        uv_coordinates=[], text=text, mesh_resource="",
        mesh_file=t["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
        mesh_use_embedded_materials=False)


MARKER_LINE_LIST, MARKER_TEXT, MARKER_ARROW, MARKER_DELETEALL = 5, 9, 0, 3


def markers_msg(boxes: Boxes, stamp: int, frame_id: str = BASE_FRAME,
                lifetime_ns: int = 1_000_000_000, min_speed: float = 0.2):
    """Boxes -> visualization_msgs/MarkerArray: a DELETEALL, then per box a LINE_LIST box, a
    TEXT_VIEW_FACING label above it (the class name, and the score when the boxes have scores)
    and, when faster than `min_speed` m/s, an ARROW showing one second of motion. `ns` is the
    class name; ids per box are 3i, 3i+1, 3i+2. Ground truth and the node's detections look
    the same in RViz."""
    header = header_msg(stamp, frame_id)
    markers = [_marker(header, "", 0, MARKER_ARROW, action=MARKER_DELETEALL)]
    corners = box_corners(boxes.params) if len(boxes) else np.zeros((0, 8, 3))
    for i, (params, label) in enumerate(zip(boxes.params, boxes.labels)):
        name = CLASSES[int(label)]
        rgba = (*CLASS_COLORS[int(label)], 1.0)
        edges = corners[i][BOX_EDGES]
        markers.append(_marker(header, name, 3 * i, MARKER_LINE_LIST, scale=(0.05, 0, 0),
                               color=rgba, lifetime_ns=lifetime_ns, points=edges))
        x, y, z, _, _, h = params[:6]
        label_pose = _pose_msg(x, y, z + h / 2 + 0.4, 0.0)
        text = name if boxes.scores is None else f"{name} {float(boxes.scores[i]):.2f}"
        markers.append(_marker(header, name, 3 * i + 1, MARKER_TEXT, pose=label_pose,
                               scale=(0, 0, 0.6), color=rgba, lifetime_ns=lifetime_ns,
                               text=text))
        vx, vy = float(params[7]), float(params[8])
        if math.hypot(vx, vy) > min_speed:
            markers.append(_marker(header, name, 3 * i + 2, MARKER_ARROW,
                                   scale=(0.15, 0.3, 0.3), color=rgba, lifetime_ns=lifetime_ns,
                                   points=[(x, y, z), (x + vx, y + vy, z)]))
    return _t(MARKERS_TYPE)(markers=markers)


def markers_cdr(boxes: Boxes, stamp: int, frame_id: str = BASE_FRAME,
                lifetime_ns: int = 1_000_000_000) -> bytes:
    """`markers_msg`, serialised (CDR) for a bag or `Publisher.publish`."""
    return bytes(typestore().serialize_cdr(markers_msg(boxes, stamp, frame_id, lifetime_ns),
                                           MARKERS_TYPE))


def string_msg(text: str):
    return _t(STRING_TYPE)(data=text)


def boxes_to_json(boxes: Boxes | None) -> dict | None:
    """Ground truth -> JSON-able dict (floats keep full precision through json's repr)."""
    if boxes is None:
        return None

    def ints(values):
        return None if values is None else [int(v) for v in values]

    return {
        "params": [[float(v) for v in row] for row in np.asarray(boxes.params)],
        "labels": [CLASSES[int(i)] for i in boxes.labels],
        "scores": None if boxes.scores is None else [float(s) for s in boxes.scores],
        "attributes": list(boxes.attributes),
        "visibility": ints(boxes.visibility),
        "num_lidar_pts": ints(boxes.num_lidar_pts),
        "num_radar_pts": ints(boxes.num_radar_pts),
        "instance_tokens": list(boxes.instance_tokens),
    }


def boxes_from_json(data: dict | None) -> Boxes | None:
    if data is None:
        return None

    def ints(values):
        return None if values is None else np.asarray(values, dtype=np.int64).reshape(-1)

    params = np.asarray(data["params"], dtype=np.float64).reshape(-1, 9)
    return Boxes(
        params=params,
        labels=np.asarray([CLASS_INDEX[n] for n in data["labels"]], dtype=np.int64),
        scores=None if data.get("scores") is None else np.asarray(data["scores"], np.float32),
        attributes=list(data.get("attributes") or []),
        visibility=ints(data.get("visibility")),
        num_lidar_pts=ints(data.get("num_lidar_pts")),
        num_radar_pts=ints(data.get("num_radar_pts")),
        instance_tokens=list(data.get("instance_tokens") or []),
    )


# ------------------------------------------------------------------------------------ writer
class BagWriter:
    """A rosbag2 writer that never leaves a finished-looking bag behind unless it finished.

    Writes the bag as `<out>.partial/<name>/` and moves it to `<out>` only after rosbags has
    written the index and `metadata.yaml` (so the storage file is `<name>.mcap` and the bag is
    complete wherever it lies); on any exception (Ctrl-C included) the partial directory is
    deleted. A process killed with SIGKILL leaves at most `<out>.partial/`, never `<out>`.
    Connections are added on first use with the topic's QoS (`topic_qos`).
    """

    def __init__(self, out: str | Path, storage: str = "mcap", overwrite: bool = False):
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.storage = storage
        self.overwrite = overwrite
        self.bytes_written = 0
        self.messages_written = 0
        self.counts: dict[str, int] = defaultdict(int)
        self._writer: Writer | None = None
        self._connections: dict[str, Any] = {}
        self._store = typestore()

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        if self.out.exists():
            if not self.overwrite:
                raise BagError(f"{self.out} exists; remove it or choose another --out")
            shutil.rmtree(self.out) if self.out.is_dir() else self.out.unlink()
        if self.partial.exists():  # left by an interrupted run of ours
            shutil.rmtree(self.partial)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir()
        self._writer = Writer(self.partial / self.out.name, version=BAG_VERSION,
                              storage_plugin=STORAGES[self.storage])
        self._writer.open()

    def _connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self._store,
                                               offered_qos_profiles=[topic_qos(topic)])
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"{topic}: written as {conn.msgtype}, now {msgtype}")
        return conn

    def write(self, topic: str, log_ns: int, msg) -> int:
        """Serialise `msg` (a rosbags message of the shared store) and write it; returns bytes."""
        msgtype = msg.__msgtype__
        data = self._store.serialize_cdr(msg, msgtype)
        return self.write_raw(topic, msgtype, log_ns, data)

    def write_raw(self, topic: str, msgtype: str, log_ns: int, data) -> int:
        if self._writer is None:
            raise BagError("bag is not open")
        self._writer.write(self._connection(topic, msgtype), int(log_ns), data)
        size = len(data)
        self.bytes_written += size
        self.messages_written += 1
        self.counts[topic] += 1
        return size

    def close(self) -> Path:
        if self._writer is None:
            return self.out
        writer, self._writer = self._writer, None
        try:
            writer.close()
            (self.partial / self.out.name).rename(self.out)
            self.partial.rmdir()
        except BaseException:
            shutil.rmtree(self.partial, ignore_errors=True)
            raise
        return self.out

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # cleaning up after an error that is already propagating
                pass
        shutil.rmtree(self.partial, ignore_errors=True)


# ------------------------------------------------------------------------------------ reader
def open_reader(bag_path: str | Path) -> Reader:
    path = Path(bag_path)
    if not (path / "metadata.yaml").is_file():
        hint = " (an interrupted conversion?)" if path.name.endswith(".partial") else ""
        raise BagError(f"{path}: not a finished rosbag2 directory, no metadata.yaml{hint}")
    return Reader(path)  # opened by `with`


def decode_image(msg) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> (H, W, 3) uint8 RGB, decoded by the same code
    as the nuScenes reader's image files and the node's live messages (`image_codec`)."""
    try:
        if msg.__msgtype__ == COMPRESSED_TYPE:
            return decode_compressed_image(msg.data.tobytes(), msg.format)
        return decode_raw_image(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    except ImageDecodeError as exc:
        raise BagError(f"{msg.__msgtype__}: {exc}") from exc


@dataclass
class _SceneState:
    """What the reader keeps while walking one scene."""

    poses: dict[int, np.ndarray] = field(default_factory=dict)  # stamp -> T_map_ego
    static: dict[str, np.ndarray] = field(default_factory=dict)  # frame -> T_ego_sensor
    sweeps: dict[str, deque] = field(default_factory=dict)  # sensor -> (stamp, raw bytes)
    images: dict[tuple[str, int], tuple[str, bytes]] = field(default_factory=dict)
    infos: dict[tuple[str, int], bytes] = field(default_factory=dict)


def read_keyframe_records(bag_path: str | Path) -> list[dict]:
    """The `/imkd/keyframes` records of a bag, in log-time order."""
    with open_reader(bag_path) as reader:
        return _keyframe_records(reader)


def _keyframe_records(reader: Reader) -> list[dict]:
    conns = [c for c in reader.connections if c.topic == KEYFRAMES_TOPIC]
    if not conns:
        raise BagError(f"{reader.path}: no {KEYFRAMES_TOPIC} topic; only bags written by "
                       "nuscenes2bag can be read back into Samples")
    store = typestore()
    records = []
    for conn, _, raw in reader.messages(connections=conns):
        record = json.loads(store.deserialize_cdr(raw, conn.msgtype).data)
        if record.get("format") != KEYFRAME_FORMAT:
            raise BagError(f"{reader.path}: keyframe record format {record.get('format')!r}, "
                           f"expected {KEYFRAME_FORMAT!r}")
        records.append(record)
    return records


def read_bag_samples(
    bag_path: str | Path,
    radar_sweeps: int = 6,
    lidar_sweeps: int = 10,
    radar_filter: RadarFilter | str | dict | None = "nuscenes",
    load_lidar: bool = True,
    load_images: bool = True,
    load_radar: bool = True,
    lidar_min_distance: float = 1.0,
    camera_ego_motion: bool = True,
    cameras: Sequence[str] = CAMERA_NAMES,
    radars: Sequence[str] = RADAR_NAMES,
) -> Iterator[Sample]:
    """The keyframes of a `nuscenes2bag` bag as `Sample`s, in time order.

    Arguments and defaults are `NuScenesReader`'s, with the same meaning (sweep counts include
    the keyframe; sweeps are the sensor's previous messages within the scene), and with equal
    arguments the Samples are equal to the reader's for the same keyframes. Memory stays
    bounded: one scene's ego poses, the last sweeps per sensor and the keyframe images not yet
    used.
    """
    if radar_sweeps < 1 or lidar_sweeps < 1:
        raise ValueError("radar_sweeps and lidar_sweeps count the keyframe: must be >= 1")
    radar_filter = RadarFilter.from_spec(radar_filter)
    store = typestore()
    with open_reader(bag_path) as reader:
        records = _keyframe_records(reader)
        if not records:
            return
        scene_starts = sorted({int(r["scene_start"]) for r in records})
        wanted_images = {(ch, int(r["data"][ch])) for r in records for ch in cameras
                         if ch in r["data"]}
        topics: dict[str, tuple[str, str]] = {}  # topic -> (kind, sensor)
        for ch in cameras:
            topics[image_topic(ch)] = ("image", ch)
            topics[image_topic(ch, compressed=True)] = ("image", ch)
            topics[camera_info_topic(ch)] = ("info", ch)
        if load_radar:
            for ch in radars:
                topics[pointcloud_topic(ch)] = ("sweep", ch)
        topics[pointcloud_topic(LIDAR_NAME)] = ("sweep", LIDAR_NAME)
        topics[TF_TOPIC] = ("tf", "")
        topics[TF_STATIC_TOPIC] = ("tf_static", "")
        topics[KEYFRAMES_TOPIC] = ("keyframe", "")
        conns = [c for c in reader.connections if c.topic in topics]
        depth = {ch: radar_sweeps + 32 for ch in radars}
        depth[LIDAR_NAME] = (lidar_sweeps if load_lidar else 1) + 32

        state = _SceneState()
        next_start = iter([*scene_starts[1:], None])
        boundary = next(next_start)
        record_index = 0
        for conn, log_ns, raw in reader.messages(connections=conns):
            while boundary is not None and log_ns >= boundary:
                state = _SceneState()
                boundary = next(next_start)
            kind, sensor = topics[conn.topic]
            if kind == "sweep":
                state.sweeps.setdefault(sensor, deque(maxlen=depth[sensor])).append(
                    (_header_stamp(raw), raw))
            elif kind == "image":
                key = (sensor, _header_stamp(raw))
                if key in wanted_images and (key not in state.images
                                             or conn.msgtype == IMAGE_TYPE):
                    state.images[key] = (conn.msgtype, raw)
            elif kind == "info":
                key = (sensor, _header_stamp(raw))
                if key in wanted_images:
                    state.infos[key] = raw
            elif kind == "tf":
                for tr in store.deserialize_cdr(raw, conn.msgtype).transforms:
                    if tr.header.frame_id == MAP_FRAME and tr.child_frame_id == BASE_FRAME:
                        state.poses[stamp_ns(tr.header.stamp)] = transform_matrix(tr)
            elif kind == "tf_static":
                for tr in store.deserialize_cdr(raw, conn.msgtype).transforms:
                    if tr.header.frame_id == BASE_FRAME:
                        state.static[tr.child_frame_id] = transform_matrix(tr)
            else:
                record = records[record_index]
                record_index += 1
                yield _assemble(record, state, store, radar_sweeps, lidar_sweeps, radar_filter,
                                load_lidar, load_images, load_radar, lidar_min_distance,
                                camera_ego_motion, cameras, radars, reader.path)


def _header_stamp(raw: bytes) -> int:
    """The header stamp of a message whose first field is a std_msgs/Header, read from the CDR
    bytes directly (4-byte encapsulation header, then int32 sec, uint32 nanosec) so a sweep
    is only deserialised when a keyframe uses it."""
    sec, nanosec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def _need(table: dict, key, what: str, record: dict, path):
    try:
        return table[key]
    except KeyError:
        raise BagError(f"{path}: keyframe {record['token']} (scene {record['scene']}) needs "
                       f"{what}, which the bag does not have") from None


def _assemble(record, state: _SceneState, store, radar_sweeps, lidar_sweeps, radar_filter,
              load_lidar, load_images, load_radar, lidar_min_distance, camera_ego_motion,
              cameras, radars, path) -> Sample:
    data = {ch: int(stamp) for ch, stamp in record["data"].items()}
    key_stamp = int(record["timestamp"])
    if LIDAR_NAME not in data:
        raise BagError(f"{path}: keyframe {record['token']} has no {LIDAR_NAME} stamp")
    lidar_stamp = data[LIDAR_NAME]
    T_map_ego = _need(state.poses, lidar_stamp, f"the ego pose at {lidar_stamp}", record, path)
    sample = Sample(token=record["token"], timestamp=key_stamp, T_map_ego=T_map_ego,
                    scene_name=record["scene"])
    for ch in cameras:
        if ch not in data:
            continue
        key = (ch, data[ch])
        info = store.deserialize_cdr(
            _need(state.infos, key, f"{ch} camera_info at {data[ch]}", record, path),
            CAMERA_INFO_TYPE)
        T_ego_cam = _need(state.static, ch, f"the {ch} calibration (/tf_static)", record, path)
        if camera_ego_motion:
            pose = _need(state.poses, data[ch], f"the ego pose at {data[ch]}", record, path)
            T_ego_cam = sensor_to_keyframe(T_ego_cam, pose, T_map_ego)
        if load_images:
            msgtype, raw = _need(state.images, key, f"the {ch} image at {data[ch]}", record, path)
            image = decode_image(store.deserialize_cdr(raw, msgtype))
            if msgtype == IMAGE_TYPE:
                image = image.copy()
        else:
            image = np.zeros((int(info.height), int(info.width), 3), np.uint8)
        state.images.pop(key, None)
        state.infos.pop(key, None)
        sample.cameras[ch] = CameraData(image=image, K=info.k.reshape(3, 3).astype(np.float64),
                                        T_ego_cam=T_ego_cam, stamp=data[ch])
    if load_radar:
        for ch in radars:
            if ch not in data:
                continue
            sweeps = _sweeps(state, ch, data[ch], radar_sweeps, NUSCENES_RADAR_FIELDS, store,
                             record, path)
            points = aggregate_radar_sweeps(sweeps, T_map_ego, key_stamp, radar_filter)
            sample.radars[ch] = RadarData(points=points, T_ego_radar=sweeps[0].T_ego_sensor,
                                          stamp=sweeps[0].stamp)
    if load_lidar:
        sweeps = _sweeps(state, LIDAR_NAME, lidar_stamp, lidar_sweeps, LIDAR_FIELDS[:4], store,
                         record, path)
        points = aggregate_lidar_sweeps(sweeps, T_map_ego, key_stamp, lidar_min_distance)
        sample.lidar = LidarData(points=points, T_ego_lidar=sweeps[0].T_ego_sensor,
                                 stamp=lidar_stamp)
    sample.gt = boxes_from_json(record.get("gt"))
    return sample


def _sweeps(state: _SceneState, sensor: str, key_stamp: int, count: int, names, store, record,
            path) -> list[RawSweep]:
    """The sensor's message at `key_stamp` and up to `count - 1` earlier ones, newest first."""
    buffer = list(state.sweeps.get(sensor, ()))
    index = next((i for i, (stamp, _) in enumerate(buffer) if stamp == key_stamp), None)
    if index is None:
        raise BagError(f"{path}: keyframe {record['token']} (scene {record['scene']}) needs the "
                       f"{sensor} sweep at {key_stamp}, which the bag does not have")
    T_ego_sensor = _need(state.static, sensor, f"the {sensor} calibration (/tf_static)", record,
                         path)
    sweeps = []
    for stamp, raw in reversed(buffer[max(0, index - count + 1): index + 1]):
        msg = store.deserialize_cdr(raw, POINTCLOUD2_TYPE)
        sweeps.append(RawSweep(
            points=pointcloud2_array(msg, names), T_ego_sensor=T_ego_sensor,
            T_map_ego=_need(state.poses, stamp, f"the ego pose at {stamp}", record, path),
            stamp=stamp))
    return sweeps
