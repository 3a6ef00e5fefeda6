"""Values off a ROS message, one function each, for rosbags and rclpy messages alike.

The bag reader (rosbags messages) and the node (rclpy messages) read the same fields, so each
reading is written once here and duck-typed: it only touches the message's fields, never its
class. Every message that cannot be used raises `WireError` with the reason; the caller adds
where the message came from (a topic, a bag path).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imkd_core.data.image_codec import (
    ImageDecodeError,
    decode_compressed_image,
    decode_raw_image,
)
from imkd_core.geometry import make_transform
from imkd_core.sample import NUSCENES_RADAR_FIELDS
from imkd_core.wire.pointcloud2 import PointCloud2Error, decode_pointcloud2


class WireError(ValueError):
    """A message that cannot be used, or values that cannot make one; the text says why."""


def stamp_ns(time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(time.sec) * 1_000_000_000 + int(time.nanosec)


# ---------------------------------------------------------------------------------- transforms
def transform_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 float64 `T_parent_child`, refused unless finite with a
    non-zero quaternion. ROS quaternions are x, y, z, w; the matrix is built exactly as the
    nuScenes reader builds its transforms (`make_transform([w, x, y, z], translation)`), so a
    pose read back from a bag has the reader's bits."""
    q, t = transform.rotation, transform.translation
    quat = np.array([q.w, q.x, q.y, q.z], dtype=np.float64)
    trans = np.array([t.x, t.y, t.z], dtype=np.float64)
    if not (np.all(np.isfinite(quat)) and np.all(np.isfinite(trans))) or (
            np.linalg.norm(quat) < 1e-6):
        raise WireError(f"invalid transform (rotation {quat.tolist()}, "
                        f"translation {trans.tolist()})")
    return make_transform(quat, trans)  # normalises the quaternion


def tf_message_to_list(msg) -> tuple[list[tuple[str, str, int, np.ndarray]], list[str]]:
    """tf2_msgs/TFMessage -> ([(parent, child, stamp_ns, T_parent_child)], [problems]): the
    usable transforms (frame names without a leading "/") and, per unusable one, the reason."""
    out, problems = [], []
    for ts in msg.transforms:
        parent, child = ts.header.frame_id.lstrip("/"), ts.child_frame_id.lstrip("/")
        try:
            if not parent or not child:
                raise WireError("empty frame_id or child_frame_id")
            out.append((parent, child, stamp_ns(ts.header.stamp),
                        transform_matrix(ts.transform)))
        except WireError as exc:
            problems.append(f"{parent or '?'}->{child or '?'}: {exc}")
    return out, problems


# -------------------------------------------------------------------------------- point clouds
def pointcloud2_array(msg, names: Sequence[str] | None = None) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> (N, len(names)) float32 of `names` (default: every field),
    every point kept. Layout problems (truncated or misaligned data, missing fields) raise."""
    try:
        return decode_pointcloud2(msg.fields, msg.data, int(msg.width), int(msg.height),
                                  int(msg.point_step), int(msg.row_step), bool(msg.is_bigendian),
                                  names)
    except PointCloud2Error as exc:
        raise WireError(str(exc)) from exc


def radar_points(msg, max_points: int) -> tuple[np.ndarray, int]:
    """A live radar PointCloud2 -> ((N, 18) float32 `NUSCENES_RADAR_FIELDS`, number of points
    dropped for NaN/Inf in any field: a bad return does not spoil the sweep). More than
    `max_points` points (the node's max_radar_points; a nuScenes radar sends at most 125) is
    refused before anything is decoded."""
    count = int(msg.width) * int(msg.height)
    if count > max_points:
        raise WireError(f"{count} points exceed max_radar_points={max_points}")
    points = pointcloud2_array(msg, NUSCENES_RADAR_FIELDS)
    finite = np.isfinite(points).all(axis=1)
    dropped = int(points.shape[0] - finite.sum())
    return (points[finite] if dropped else points), dropped


# --------------------------------------------------------------------------------- cameras
def image_from_msg(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8/bgr8/mono8 and their alpha variants) or CompressedImage (JPEG,
    PNG; told apart by its `format` field) -> (H, W, 3) uint8 RGB, decoded by the code that
    decodes the nuScenes reader's image files (`image_codec`). For unpadded rgb8 this is a
    view of the message's buffer (no copy), otherwise a new array."""
    try:
        if hasattr(msg, "format"):
            return decode_compressed_image(bytes(msg.data), msg.format)
        return decode_raw_image(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    except ImageDecodeError as exc:
        raise WireError(str(exc)) from exc


def camera_info_intrinsics(msg) -> np.ndarray:
    """sensor_msgs/CameraInfo -> (3, 3) float64 intrinsics, checked for a usable pinhole."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise WireError("K has non-finite entries")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0:
        raise WireError(f"K is not a pinhole matrix (fx={K[0, 0]}, fy={K[1, 1]}, "
                        f"K[2,2]={K[2, 2]}); uncalibrated camera?")
    return K
