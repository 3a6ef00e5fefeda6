"""ROS messages <-> numpy for the detector node, vectorised (no per-point or per-pixel loops).

Inputs: `Image` (rgb8/bgr8/mono8 and their alpha variants), `CompressedImage` (JPEG/PNG),
`CameraInfo`, `PointCloud2` (decoded by `imkd_core.data.pointcloud2`, which the bag tools share),
`TFMessage`. Every check that fails raises `ConversionError` with the reason; the node adds the
topic name and drops the message. Output: the latched `LabelInfo` (DESIGN.md §4); detections and
markers are serialised by `imkd_core.data.bag` (`detections_cdr`, `markers_cdr`), the same
bytes the bag converter writes for ground truth.
"""

from __future__ import annotations

import numpy as np
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo, VisionClass

from imkd_core.data.image_codec import (
    ImageDecodeError,
    decode_compressed_image,
    decode_raw_image,
)
from imkd_core.data.pointcloud2 import PointCloud2Error, decode_pointcloud2
from imkd_core.geometry import make_transform
from imkd_core.sample import CLASSES


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
