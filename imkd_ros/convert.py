"""ROS messages <-> numpy for the detector node, vectorised (no per-point or per-pixel loops).

Inputs: `Image` (rgb8/bgr8/mono8 and their alpha variants), `CompressedImage` (JPEG/PNG),
`CameraInfo`, `PointCloud2` (decoded by `imkd_core.data.pointcloud2`, which the bag tools share),
`TFMessage`. Every check that fails raises `ConversionError` with the reason; the node adds the
topic name and drops the message. Outputs: detections (`imkd_core.sample.Boxes`, ego frame) ->
`vision_msgs/Detection3DArray`, RViz `MarkerArray` and `LabelInfo` (DESIGN.md §4).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from vision_msgs.msg import (
    BoundingBox3D,
    Detection3D,
    Detection3DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)
from visualization_msgs.msg import Marker, MarkerArray

from imkd_core.data.image_codec import (
    ImageDecodeError,
    decode_compressed_image,
    decode_raw_image,
)
from imkd_core.data.pointcloud2 import PointCloud2Error, decode_pointcloud2
from imkd_core.geometry import BOX_EDGES, box_corners, make_transform, yaw_to_quaternion
from imkd_core.sample import CLASS_COLORS, CLASSES


class ConversionError(ValueError):
    """A message that cannot be used; the text says why (the caller adds the topic)."""


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# ------------------------------------------------------------------------------------- images
def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB, decoded as the offline readers decode it. For
    unpadded rgb8 this is a view of the message's buffer (no copy), otherwise a new array."""
    try:
        return decode_raw_image(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    except ImageDecodeError as exc:
        raise ConversionError(str(exc)) from exc


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> (H, W, 3) uint8 RGB."""
    try:
        return decode_compressed_image(bytes(msg.data), msg.format)
    except ImageDecodeError as exc:
        raise ConversionError(str(exc)) from exc


def camera_info_intrinsics(msg) -> np.ndarray:
    """sensor_msgs/CameraInfo -> (3, 3) float64 intrinsics, checked for a usable pinhole."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise ConversionError("K has non-finite entries")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0:
        raise ConversionError(f"K is not a pinhole matrix (fx={K[0, 0]}, fy={K[1, 1]}, "
                              f"K[2,2]={K[2, 2]}); uncalibrated camera?")
    return K


# -------------------------------------------------------------------------------- point clouds
def pointcloud2_to_array(msg, names, max_points: int) -> tuple[np.ndarray, int]:
    """sensor_msgs/PointCloud2 -> ((N, len(names)) float32, number of non-finite points dropped).

    Layout problems (truncated or misaligned data, missing fields) raise; points with NaN/Inf
    in any requested field are removed (a bad return does not spoil the sweep); more than
    `max_points` points is refused (a nuScenes radar sends at most 125)."""
    count = int(msg.width) * int(msg.height)
    if count > max_points:
        raise ConversionError(f"{count} points exceed max_radar_points={max_points}")
    layout = (msg.fields, msg.data, int(msg.width), int(msg.height), int(msg.point_step),
              int(msg.row_step), bool(msg.is_bigendian))
    try:
        points = decode_pointcloud2(*layout, list(names))
    except PointCloud2Error as exc:
        raise ConversionError(str(exc)) from exc
    points = np.asarray(points, dtype=np.float32).reshape(-1, len(names))
    finite = np.isfinite(points).all(axis=1)
    dropped = int(points.shape[0] - finite.sum())
    return (points[finite] if dropped else points), dropped


# ------------------------------------------------------------------------------------------ TF
def transform_to_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 float64 (ROS quaternions are x, y, z, w)."""
    q = transform.rotation
    t = transform.translation
    quat = np.array([q.w, q.x, q.y, q.z], dtype=np.float64)
    trans = np.array([t.x, t.y, t.z], dtype=np.float64)
    if not (np.all(np.isfinite(quat)) and np.all(np.isfinite(trans))) or (
            np.linalg.norm(quat) < 1e-6):
        raise ConversionError(f"invalid transform (rotation {quat.tolist()}, "
                              f"translation {trans.tolist()})")
    # make_transform normalises; built exactly as the bag reader builds it (same bits).
    return make_transform(quat, trans)


def tf_message_to_list(msg) -> tuple[list[tuple[str, str, int, np.ndarray]], list[str]]:
    """tf2_msgs/TFMessage -> ([(parent, child, stamp_ns, T_parent_child)], [problems])."""
    out, problems = [], []
    for ts in msg.transforms:
        parent, child = ts.header.frame_id.lstrip("/"), ts.child_frame_id.lstrip("/")
        try:
            if not parent or not child:
                raise ConversionError("empty frame_id or child_frame_id")
            out.append((parent, child, stamp_to_ns(ts.header.stamp),
                        transform_to_matrix(ts.transform)))
        except ConversionError as exc:
            problems.append(f"{parent or '?'}->{child or '?'}: {exc}")
    return out, problems


# --------------------------------------------------------------------------------- detections
def label_info(frame_id: str, stamp, threshold: float) -> LabelInfo:
    """The class map (index -> nuScenes class name) and the score threshold, for latching."""
    msg = LabelInfo(header=Header(stamp=stamp, frame_id=frame_id), threshold=float(threshold))
    msg.class_map = [VisionClass(class_id=i, class_name=name) for i, name in enumerate(CLASSES)]
    return msg


def boxes_to_detections(boxes, header: Header) -> Detection3DArray:
    """Ego-frame `Boxes` with scores -> Detection3DArray: centre = geometric centre, size =
    (l, w, h), orientation from yaw, one hypothesis (class name, score), `id` empty."""
    params = np.asarray(boxes.params, dtype=np.float64)
    quats = yaw_to_quaternion(params[:, 6])  # [w, x, y, z]
    scores = np.asarray(boxes.scores, dtype=np.float64)
    detections = []
    for p, q, label, score in zip(params.tolist(), quats.tolist(), boxes.labels.tolist(),
                                  scores.tolist()):
        det = Detection3D(header=header)
        det.bbox = BoundingBox3D()
        pose = det.bbox.center
        pose.position.x, pose.position.y, pose.position.z = p[0], p[1], p[2]
        pose.orientation.w, pose.orientation.x = q[0], q[1]
        pose.orientation.y, pose.orientation.z = q[2], q[3]
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = p[3], p[4], p[5]
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = CLASSES[label]
        hyp.hypothesis.score = score
        hyp.pose.pose = pose
        det.results = [hyp]
        detections.append(det)
    return Detection3DArray(header=header, detections=detections)


def boxes_to_markers(boxes, header: Header, lifetime_ns: int) -> MarkerArray:
    """DELETEALL, then per detection a LINE_LIST box, a TEXT label (class + score) and a
    velocity ARROW (from the centre, length = speed over one second), `ns` per class."""
    lifetime = Duration(sec=lifetime_ns // 1_000_000_000, nanosec=lifetime_ns % 1_000_000_000)
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    params = np.asarray(boxes.params, dtype=np.float64)
    edges = box_corners(params)[:, BOX_EDGES] if len(params) else np.zeros((0, 24, 3))
    scores = np.asarray(boxes.scores, dtype=np.float64)
    for k, (p, label, score) in enumerate(zip(params.tolist(), boxes.labels.tolist(),
                                              scores.tolist())):
        r, g, b = CLASS_COLORS[label]
        common = dict(header=header, ns=CLASSES[label], action=Marker.ADD, lifetime=lifetime,
                      color=ColorRGBA(r=r, g=g, b=b, a=1.0))
        box = Marker(id=3 * k, type=Marker.LINE_LIST, **common)
        box.pose.orientation.w = 1.0
        box.scale.x = 0.05
        box.points = [Point(x=x, y=y, z=z) for x, y, z in edges[k].tolist()]
        text = Marker(id=3 * k + 1, type=Marker.TEXT_VIEW_FACING, **common)
        text.pose.position.x, text.pose.position.y = p[0], p[1]
        text.pose.position.z = p[2] + p[5] / 2 + 0.5
        text.pose.orientation.w = 1.0
        text.scale.z = 0.6
        text.text = f"{CLASSES[label]} {score:.2f}"
        arrow = Marker(id=3 * k + 2, type=Marker.ARROW, **common)
        arrow.pose.orientation.w = 1.0
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.1, 0.2, 0.2  # shaft, head width/length
        arrow.points = [Point(x=p[0], y=p[1], z=p[2]),
                        Point(x=p[0] + p[7], y=p[1] + p[8], z=p[2])]
        markers += [box, text, arrow]
    return MarkerArray(markers=markers)
