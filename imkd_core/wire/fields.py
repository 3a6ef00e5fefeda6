"""Values off a ROS message, one function each, for rosbags and rclpy messages alike.

The bag reader (rosbags messages) and the node (rclpy messages) read the same fields, so each
reading is written once here and duck-typed: it only touches the message's fields, never its
class. Every message that cannot be used raises `WireError` with the reason; the caller adds
where the message came from (a topic, a bag path).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

from imkd_core.data.image_codec import (
    DEFAULT_MAX_PIXELS,
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
# tf2's own rule (BufferCore::setTransform): |q|^2 must be within this of 1, else it is refused.
QUATERNION_TOLERANCE = 0.01
MAX_TRANSFORMS = 10_000  # per TFMessage; a robot's whole tree is a few hundred


def transform_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 float64 `T_parent_child`, refused unless finite with a
    unit quaternion (within tf2's tolerance). ROS quaternions are x, y, z, w; the matrix is
    built exactly as the nuScenes reader builds its transforms (`make_transform([w, x, y, z],
    translation)`), so a pose read back from a bag has the reader's bits."""
    q, t = transform.rotation, transform.translation
    quat = np.array([q.w, q.x, q.y, q.z], dtype=np.float64)
    trans = np.array([t.x, t.y, t.z], dtype=np.float64)
    with np.errstate(over="ignore"):  # a huge finite quaternion: inf, then refused
        norm2 = float(quat @ quat)
    if not (np.all(np.isfinite(quat)) and np.all(np.isfinite(trans))) or (
            abs(norm2 - 1.0) >= QUATERNION_TOLERANCE):
        raise WireError(f"invalid transform (rotation {quat.tolist()}, translation "
                        f"{trans.tolist()}): needs finite values and a unit quaternion")
    return make_transform(quat, trans)  # normalises the quaternion


def tf_message_to_list(msg) -> tuple[list[tuple[str, str, int, np.ndarray]], list[str]]:
    """tf2_msgs/TFMessage -> ([(parent, child, stamp_ns, T_parent_child)], [problems]): the
    usable transforms (frame names without a leading "/") and, per unusable one, the reason."""
    out, problems = [], []
    if len(msg.transforms) > MAX_TRANSFORMS:
        return [], [f"{len(msg.transforms)} transforms in one message exceed {MAX_TRANSFORMS}"]
    for ts in msg.transforms:
        parent, child = str(ts.header.frame_id).lstrip("/"), str(ts.child_frame_id).lstrip("/")
        try:
            if not parent or not child:
                raise WireError("empty frame_id or child_frame_id")
            if parent == child:
                raise WireError("a frame cannot be its own parent")
            out.append((parent, child, stamp_ns(ts.header.stamp),
                        transform_matrix(ts.transform)))
        except (WireError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"{parent[:80] or '?'}->{child[:80] or '?'}: {exc}")
    return out, problems


# -------------------------------------------------------------------------------- point clouds
def pointcloud2_array(msg, names: Sequence[str] | None = None) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> (N, len(names)) float32 of `names` (default: every field),
    every point kept. Layout problems (truncated or misaligned data, missing fields) raise."""
    try:
        return decode_pointcloud2(msg.fields, msg.data, msg.width, msg.height, msg.point_step,
                                  msg.row_step, bool(msg.is_bigendian), names)
    except PointCloud2Error as exc:
        raise WireError(str(exc)) from exc


def radar_points(msg, max_points: int) -> tuple[np.ndarray, int]:
    """A live radar PointCloud2 -> ((N, 18) float32 `NUSCENES_RADAR_FIELDS`, number of points
    dropped for NaN/Inf in any field: a bad return does not spoil the sweep). More than
    `max_points` points (the node's max_radar_points; a nuScenes radar sends at most 125) is
    refused before anything is decoded. A field of another numeric type is converted; a field
    with count > 1 (an array where a radar gives one value) is refused."""
    try:
        count = operator.index(msg.width) * operator.index(msg.height)
    except TypeError:
        raise WireError(f"width {msg.width!r:.40} and height {msg.height!r:.40} must be "
                        "integers") from None
    if count > max_points:
        raise WireError(f"{count} points exceed max_radar_points={max_points}")
    points = pointcloud2_array(msg, NUSCENES_RADAR_FIELDS)
    if points.shape[1] != len(NUSCENES_RADAR_FIELDS):
        counts = {f.name: f.count for f in msg.fields if f.name in NUSCENES_RADAR_FIELDS}
        raise WireError(f"radar fields need count 1, got {counts}")
    finite = np.isfinite(points).all(axis=1)
    dropped = int(points.shape[0] - finite.sum())
    return (points[finite] if dropped else points), dropped


# --------------------------------------------------------------------------------- cameras
def image_from_msg(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image (rgb8/bgr8/mono8 and their alpha variants) or CompressedImage (JPEG,
    PNG; told apart by its `format` field) -> (H, W, 3) uint8 RGB, decoded by the code that
    decodes the nuScenes reader's image files (`image_codec`). For unpadded rgb8 this is a
    view of the message's buffer (no copy), otherwise a new array. An image declaring more
    than `max_pixels` pixels (raw: width x height; compressed: its header) is refused before
    it is decoded."""
    try:
        if hasattr(msg, "format"):
            return decode_compressed_image(bytes(msg.data), msg.format, max_pixels)
        return decode_raw_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                max_pixels)
    except ImageDecodeError as exc:
        raise WireError(str(exc)) from exc
