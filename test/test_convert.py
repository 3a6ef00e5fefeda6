"""Message <-> numpy conversions of the node (`imkd_core.wire.fields`), and the detection/marker
bytes it publishes (real rclpy message classes and deserialiser, no DDS needed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import Marker, MarkerArray

from imkd_core.geometry import box_corners, make_transform, matrix_to_quaternion, quaternion_yaw
from imkd_core.sample import CLASSES, NUSCENES_RADAR_FIELDS, Boxes
from imkd_core.wire.camera_model import CameraModel
from imkd_core.wire.cdr import detections_cdr, markers_cdr
from imkd_core.wire.fields import (
    WireError,
    image_from_msg,
    radar_points,
    stamp_ns,
    tf_message_to_list,
)
from imkd_core.wire.names import DETECTIONS_TYPE
from imkd_core.wire.pointcloud2 import encode_pointcloud2
from imkd_core.wire.typestore import typestore
from imkd_ros import convert
from imkd_ros.tf_buffer import TfCache, TfLookupError, interpolate_transform

RNG = np.random.default_rng(0)


def image_msg(rgb: np.ndarray, encoding: str) -> Image:
    if encoding == "bgr8":
        data = rgb[..., ::-1]
    elif encoding == "mono8":
        data = rgb[..., 0]
    else:
        data = rgb
    height, width = rgb.shape[:2]
    step = width * (1 if encoding == "mono8" else 3)
    return Image(height=height, width=width, encoding=encoding, step=step,
                 data=np.ascontiguousarray(data).tobytes())


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_image_encodings_give_rgb(encoding):
    rgb = RNG.integers(0, 255, (9, 16, 3), dtype=np.uint8)
    out = image_from_msg(image_msg(rgb, encoding))
    assert out.shape == (9, 16, 3) and out.dtype == np.uint8
    expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(out, expected)


def test_image_row_padding_is_removed():
    rgb = RNG.integers(0, 255, (4, 5, 3), dtype=np.uint8)
    padded = np.zeros((4, 20), dtype=np.uint8)
    padded[:, :15] = rgb.reshape(4, 15)
    msg = Image(height=4, width=5, encoding="rgb8", step=20, data=padded.tobytes())
    np.testing.assert_array_equal(image_from_msg(msg), rgb)


@pytest.mark.parametrize("change, reason", [
    (dict(encoding="yuv422"), "unsupported encoding"),
    (dict(encoding="16UC1"), "unsupported encoding"),
    (dict(step=10), "step 10 <"),
    (dict(height=5), "data has 144 bytes"),
    (dict(width=0), "empty image"),
])
def test_bad_images_are_refused_with_reason(change, reason):
    msg = image_msg(np.zeros((3, 16, 3), np.uint8), "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(WireError, match=reason):
        image_from_msg(msg)


@pytest.mark.parametrize("ext, fmt", [(".png", "rgb8; png compressed bgr8"), (".jpg", "jpeg")])
def test_compressed_images_decode(ext, fmt):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 30, 10)
    ok, buf = cv2.imencode(ext, rgb[..., ::-1])
    assert ok
    out = image_from_msg(CompressedImage(format=fmt, data=buf.tobytes()))
    assert out.shape == (32, 48, 3)
    if ext == ".png":
        np.testing.assert_array_equal(out, rgb)
    else:  # lossy: compare away from the colour edge; channel order must be RGB
        assert np.abs(out[:, :12].astype(int) - (200, 30, 10)).max() <= 8
        assert out[:, 36:].max() <= 8


def test_bad_compressed_images():
    with pytest.raises(WireError, match="unsupported compressed format"):
        image_from_msg(CompressedImage(format="theora", data=b"x"))
    with pytest.raises(WireError, match="cannot decode"):
        image_from_msg(CompressedImage(format="jpeg", data=b"not a jpeg at all"))


def test_camera_info_k_checked():
    """rclpy's CameraInfo (arrays for k, d, p) through `camera_model`; the rules are tested in
    test_camera_model.py."""
    K = [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0]
    msg = CameraInfo(width=1600, height=900, distortion_model="plumb_bob", d=[0.0] * 5, k=K)
    np.testing.assert_array_equal(CameraModel.from_msg(msg).for_image(1600, 900).K,
                                  np.reshape(K, (3, 3)))
    with pytest.raises(WireError, match="not a pinhole"):
        CameraModel.from_msg(CameraInfo())  # all-zero K
    with pytest.raises(WireError, match="non-finite"):
        CameraModel.from_msg(CameraInfo(k=[np.nan, *K[1:]]))


def radar_cloud(points: np.ndarray) -> PointCloud2:
    fields, data, step = encode_pointcloud2(points, NUSCENES_RADAR_FIELDS)
    msg = PointCloud2(height=1, width=len(points), point_step=step, row_step=step * len(points),
                      is_dense=True, data=data)
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    return msg


def test_pointcloud2_roundtrip_nan_removal_and_limits():
    points = RNG.normal(size=(40, 18)).astype(np.float32)
    out, dropped = radar_points(radar_cloud(points), 100)
    np.testing.assert_array_equal(out, points)
    assert dropped == 0
    points[3, 0], points[7, 5] = np.nan, np.inf
    out, dropped = radar_points(radar_cloud(points), 100)
    assert dropped == 2 and out.shape == (38, 18)
    np.testing.assert_array_equal(out, np.delete(points, [3, 7], axis=0))
    empty, _ = radar_points(radar_cloud(points[:0]), 100)
    assert empty.shape == (0, 18)
    with pytest.raises(WireError, match="exceed max_radar_points=10"):
        radar_points(radar_cloud(points), 10)


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "truncated"),
    ("misalign", "does not fit in point_step"),
    ("drop_field", "not in the cloud"),
])
def test_malformed_pointcloud2_refused(damage, reason):
    msg = radar_cloud(RNG.normal(size=(5, 18)).astype(np.float32))
    if damage == "truncate":
        msg.data = bytes(msg.data)[:-7]
    elif damage == "misalign":
        msg.fields[-1].offset = msg.point_step - 2
    else:
        msg.fields = list(msg.fields)[1:]
    with pytest.raises(WireError, match=reason):
        radar_points(msg, 100)


def transform_stamped(parent, child, sec, T) -> TransformStamped:
    ts = TransformStamped()
    ts.header.frame_id, ts.child_frame_id = parent, child
    ts.header.stamp.sec = sec
    w, x, y, z = matrix_to_quaternion(T[:3, :3])
    ts.transform.rotation.w, ts.transform.rotation.x = w, x
    ts.transform.rotation.y, ts.transform.rotation.z = y, z
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = T[:3, 3]
    return ts


def test_tf_message_and_cache_interpolation():
    T0 = make_transform([np.cos(0.1), 0, 0, np.sin(0.1)], [100.0, 50.0, 0.0])
    T1 = make_transform([np.cos(0.3), 0, 0, np.sin(0.3)], [102.0, 51.0, 0.2])
    bad = TransformStamped()
    bad.header.frame_id, bad.child_frame_id = "map", "base_link"
    bad.transform.rotation.w = 0.0  # a zero quaternion: no rotation at all
    msg = TFMessage(transforms=[transform_stamped("map", "base_link", 10, T0),
                                transform_stamped("/map", "base_link", 11, T1), bad])
    transforms, problems = tf_message_to_list(msg)
    assert len(transforms) == 2 and len(problems) == 1 and "map->base_link" in problems[0]
    cache = TfCache(max_hold_ns=50_000_000)
    for parent, child, stamp, T in transforms:
        cache.add(parent, child, stamp, T)
    np.testing.assert_allclose(cache.lookup("map", "base_link", 10 * 10**9), T0, atol=1e-12)
    mid = cache.lookup("map", "base_link", 10 * 10**9 + 250_000_000)
    np.testing.assert_allclose(mid[:3, 3], [100.5, 50.25, 0.05])
    assert np.isclose(quaternion_yaw(matrix_to_quaternion(mid[:3, :3])), 0.2 + 0.25 * 0.4)
    assert np.allclose(cache.lookup("map", "base_link", 11 * 10**9 + 40_000_000), T1)  # held
    with pytest.raises(TfLookupError, match="outside the cached span"):
        cache.lookup("map", "base_link", 12 * 10**9)
    with pytest.raises(TfLookupError, match="no /tf map -> odom"):
        cache.lookup("map", "odom", 10 * 10**9)
    np.testing.assert_allclose(interpolate_transform(T0, T1, 1.0), T1, atol=1e-12)
    # A bag loop: a stamp far in the past starts the edge afresh (no pose pairs across it).
    assert cache.add("map", "base_link", 2 * 10**9, T1)
    assert not cache.add("map", "base_link", 2 * 10**9 + 1, T1)
    with pytest.raises(TfLookupError, match="outside the cached span"):
        cache.lookup("map", "base_link", 10 * 10**9)


def test_tf_static_chain():
    cache = TfCache()
    T_base_mount = make_transform([1, 0, 0, 0], [1.0, 0, 1.5])
    T_mount_cam = make_transform([0.5, -0.5, 0.5, -0.5], [0.1, 0, 0])
    cache.set_static("base_link", "mount", T_base_mount)
    cache.set_static("mount", "CAM_FRONT", T_mount_cam)
    np.testing.assert_allclose(cache.static_lookup("base_link", "CAM_FRONT"),
                               T_base_mount @ T_mount_cam)
    with pytest.raises(TfLookupError, match="stuck at 'CAM_BACK'"):
        cache.static_lookup("base_link", "CAM_BACK")


def detections(n: int) -> Boxes:
    params = np.zeros((n, 9))
    params[:, 0] = np.arange(n) * 5.0
    params[:, 1] = -2.0
    params[:, 2] = 0.8
    params[:, 3:6] = [4.5, 1.9, 1.6]
    params[:, 6] = np.linspace(-3, 3, n)
    params[:, 7:9] = [3.0, -1.0]
    params[n - 1:, 7:9] = 0.0  # the last box is parked: a transparent velocity arrow
    return Boxes(params=params, labels=np.arange(n) % len(CLASSES),
                 scores=np.linspace(0.9, 0.3, n).astype(np.float32))


def reference_detections(boxes: Boxes, stamp: int, frame_id: str):
    """The Detection3DArray of docs/ARCHITECTURE.md §Conventions, built field by field from
    rosbags' types: the oracle for the bytes `detections_cdr` writes directly."""
    t = typestore().types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](
        sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id=frame_id)
    scores = np.ones(len(boxes)) if boxes.scores is None else boxes.scores
    out = []
    for p, label, score in zip(boxes.params, boxes.labels, scores):
        half = p[6] / 2
        pose = t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=np.sin(half),
                                                          w=np.cos(half)))
        hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=CLASSES[label],
                                                             score=float(score)),
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)))
        bbox = t["vision_msgs/msg/BoundingBox3D"](
            center=pose, size=t["geometry_msgs/msg/Vector3"](x=p[3], y=p[4], z=p[5]))
        out.append(t["vision_msgs/msg/Detection3D"](header=header, results=[hypothesis],
                                                    bbox=bbox, id=""))
    return t[DETECTIONS_TYPE](header=header, detections=out)


@pytest.mark.parametrize("n", [0, 1, 4, 11])
@pytest.mark.parametrize("frame_id", ["base_link", "ego"])
@pytest.mark.parametrize("with_scores", [True, False])
def test_detections_cdr_is_the_serialised_message(n, frame_id, with_scores):
    boxes = detections(n)
    if not with_scores:  # ground truth: score 1.0
        boxes = Boxes(params=boxes.params, labels=boxes.labels)
    stamp = 1_532_402_927_647_951_000
    data = detections_cdr(boxes, stamp, frame_id)
    expected = typestore().serialize_cdr(reference_detections(boxes, stamp, frame_id),
                                         DETECTIONS_TYPE)
    assert data == bytes(expected)
    # ... and rclpy reads it as the node's subscribers will.
    msg = deserialize_message(data, Detection3DArray)
    assert msg.header.frame_id == frame_id and stamp_ns(msg.header.stamp) == stamp
    assert len(msg.detections) == n
    for det, p, label in zip(msg.detections, boxes.params, boxes.labels):
        c = det.bbox.center
        assert [c.position.x, c.position.y, c.position.z] == list(p[:3])
        assert [det.bbox.size.x, det.bbox.size.y, det.bbox.size.z] == list(p[3:6])
        q = [c.orientation.w, c.orientation.x, c.orientation.y, c.orientation.z]
        assert np.isclose(np.cos(quaternion_yaw(q) - p[6]), 1.0)
        assert det.id == "" and len(det.results) == 1
        assert det.results[0].hypothesis.class_id == CLASSES[label]
        assert det.results[0].pose.pose == c


def test_markers_deleteall_box_text_arrow():
    boxes = detections(3)
    data = markers_cdr(boxes, 5_000_000_007, "base_link", 1_500_000_000)
    markers = deserialize_message(data, MarkerArray).markers
    assert markers[0].action == Marker.DELETEALL
    assert len(markers) == 1 + 3 + 3 + 3  # boxes, labels, an arrow per box
    for k in range(3):
        name = CLASSES[boxes.labels[k]]
        box, text = (m for m in markers if m.ns == name and m.id in (3 * k, 3 * k + 1))
        assert box.type == Marker.LINE_LIST and len(box.points) == 24
        assert box.header.frame_id == "base_link" and box.header.stamp.nanosec == 7
        pts = np.array([[p.x, p.y, p.z] for p in box.points])
        corners = box_corners(boxes.params[k:k + 1])[0]
        assert np.allclose(np.sort(np.unique(pts.round(6), axis=0), axis=0),
                           np.sort(corners.round(6), axis=0))
        assert text.type == Marker.TEXT_VIEW_FACING
        assert text.text == f"{name} {boxes.scores[k]:.2f}"
        assert box.lifetime.sec == 1 and box.lifetime.nanosec == 500_000_000
    arrows = [m for m in markers if m.type == Marker.ARROW and m.action == Marker.ADD]
    assert [m.id for m in arrows] == [2, 5, 8]
    for arrow, params in zip(arrows, boxes.params):  # the velocity, exactly (float64 points)
        tail, tip = arrow.points
        assert [tip.x - tail.x, tip.y - tail.y] == list(params[7:9])
    assert [m.color.a for m in arrows] == [1.0, 1.0, 0.0]  # the parked box's is invisible
    assert len({(m.ns, m.id) for m in markers[1:]}) == len(markers) - 1
    empty = deserialize_message(markers_cdr(detections(0), 0), MarkerArray)
    assert [m.action for m in empty.markers] == [Marker.DELETEALL]


def test_label_info_lists_classes():
    msg = convert.label_info("base_link", Header().stamp, 0.25)
    assert [c.class_name for c in msg.class_map] == list(CLASSES)
    assert [c.class_id for c in msg.class_map] == list(range(len(CLASSES)))
    assert np.isclose(msg.threshold, 0.25)
