"""rosbags message builders: numpy values -> the messages a bag stores (the shared type store).

Builders pass values through unchanged (a transform's quaternion, an image's pixels, K), so
what a reader takes back off the message is what went in, bit for bit. The node publishes with
rclpy and does not build these; its output bytes come from `imkd_core.wire.cdr`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from imkd_core.geometry import BOX_EDGES, box_corners, yaw_to_quaternion
from imkd_core.sample import CLASS_COLORS, CLASSES, Boxes
from imkd_core.wire.fields import WireError
from imkd_core.wire.names import (
    BASE_FRAME,
    CAMERA_INFO_TYPE,
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    MARKERS_TYPE,
    POINTCLOUD2_TYPE,
    STRING_TYPE,
    TF_TYPE,
)
from imkd_core.wire.pointcloud2 import encode_pointcloud2
from imkd_core.wire.typestore import typestore

MARKER_LINE_LIST, MARKER_TEXT, MARKER_ARROW, MARKER_DELETEALL = 5, 9, 0, 3


def _t(name: str):
    return typestore().types[name]


def time_msg(stamp_ns: int):
    stamp_ns = int(stamp_ns)
    return _t("builtin_interfaces/msg/Time")(sec=stamp_ns // 1_000_000_000,
                                             nanosec=stamp_ns % 1_000_000_000)


def header_msg(stamp: int, frame_id: str):
    return _t("std_msgs/msg/Header")(stamp=time_msg(stamp), frame_id=frame_id)


def image_msg(image: np.ndarray, stamp: int, frame_id: str):
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise WireError(f"expected an (H, W, 3) RGB image, got {image.shape}")
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


def string_msg(text: str):
    return _t(STRING_TYPE)(data=text)


# ------------------------------------------------------------------------------------ markers
def _pose_msg(x, y, z, yaw):
    q = yaw_to_quaternion(float(yaw))
    return _t("geometry_msgs/msg/Pose")(
        position=_t("geometry_msgs/msg/Point")(x=float(x), y=float(y), z=float(z)),
        orientation=_t("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=float(q[3]),
                                                       w=float(q[0])))


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


def markers_msg(boxes: Boxes, stamp: int, frame_id: str = BASE_FRAME,
                lifetime_ns: int = 1_000_000_000, min_speed: float = 0.2,
                color: tuple[float, float, float] | None = None):
    """Boxes -> visualization_msgs/MarkerArray: a DELETEALL, then per box a LINE_LIST box, a
    TEXT_VIEW_FACING label above it (the class name, and the score when the boxes have scores)
    and, when its velocity is finite, an ARROW showing one second of motion, points
    (x, y, z) -> (x + vx, y + vy, z): the box's velocity on the wire (Detection3D has none;
    `imkd-score` reads it back). Arrows of boxes not faster than `min_speed` m/s are fully
    transparent (alpha 0), so RViz shows no blobs for parked boxes. `ns` is the class name;
    ids per box are 3i, 3i+1, 3i+2. Colour: the class's (`CLASS_COLORS`), or `color` for every
    box (ground truth: `GT_COLOR`, to tell it from detections in RViz)."""
    header = header_msg(stamp, frame_id)
    markers = [_marker(header, "", 0, MARKER_ARROW, action=MARKER_DELETEALL)]
    corners = box_corners(boxes.params) if len(boxes) else np.zeros((0, 8, 3))
    for i, (params, label) in enumerate(zip(boxes.params, boxes.labels)):
        name = CLASSES[int(label)]
        rgba = (*(CLASS_COLORS[int(label)] if color is None else color), 1.0)
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
        if math.isfinite(vx) and math.isfinite(vy):
            arrow_rgba = rgba if math.hypot(vx, vy) > min_speed else (*rgba[:3], 0.0)
            markers.append(_marker(header, name, 3 * i + 2, MARKER_ARROW,
                                   scale=(0.15, 0.3, 0.3), color=arrow_rgba,
                                   lifetime_ns=lifetime_ns,
                                   points=[(x, y, z), (x + vx, y + vy, z)]))
    return _t(MARKERS_TYPE)(markers=markers)
