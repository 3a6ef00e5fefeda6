"""Serialised (CDR) Detection3DArray and MarkerArray -> Boxes, without rclpy.

The inverse of `imkd_core.wire.cdr` for any detector's output: `decode_detections` reads a
`vision_msgs/Detection3DArray` (centre = `bbox.center`, size = `bbox.size` as (l, w, h), yaw
from the quaternion, class = `results[0].hypothesis.class_id`, score = `results[0]...score`);
`decode_velocities` reads the ARROW markers that carry velocity by the project's convention
(docs/ARCHITECTURE.md §Conventions, Messages: id 3i+2 <-> detection i of the array with the
same stamp, points (x, y, z) -> (x + vx, y + vy, z)). One decoder for bags and live raw
subscriptions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from imkd_core.geometry import quaternion_yaw
from imkd_core.sample import CLASS_INDEX, Boxes
from imkd_core.wire.fields import WireError, stamp_ns
from imkd_core.wire.messages import MARKER_ARROW
from imkd_core.wire.names import DETECTIONS_TYPE, MARKERS_TYPE
from imkd_core.wire.typestore import typestore

MARKER_ADD = 0  # visualization_msgs/Marker.ADD


@dataclass
class DetectionArray:
    """One decoded Detection3DArray: the boxes it holds in its header frame (velocity 0) and,
    per box, its index in the message (what the arrow marker ids count)."""

    stamp: int  # ns
    frame_id: str
    boxes: Boxes
    indices: np.ndarray  # (N,) int64, the message index of each kept box
    skipped: Counter = field(default_factory=Counter)  # why -> detections left out

    def with_velocities(self, velocities: dict[int, tuple[float, float]]) -> tuple[Boxes, int]:
        """The boxes with (vx, vy) from `velocities` (message index -> velocity; absent: 0),
        and how many boxes got one."""
        params = self.boxes.params.copy()
        found = 0
        for row, index in enumerate(self.indices.tolist()):
            if index in velocities:
                params[row, 7:9] = velocities[index]
                found += 1
        boxes = Boxes(params=params, labels=self.boxes.labels, scores=self.boxes.scores)
        return boxes, found


def decode_detections(raw: bytes | memoryview) -> DetectionArray:
    """A serialised Detection3DArray -> `DetectionArray`. Detections without a hypothesis,
    with a class name that is not a nuScenes detection class, or with non-finite values are
    left out and counted in `skipped` (reason -> count). Bytes that are no Detection3DArray
    raise `WireError`."""
    msg = _deserialize(raw, DETECTIONS_TYPE)
    skipped: Counter = Counter()
    rows, labels, indices = [], [], []
    for index, det in enumerate(msg.detections):
        if not len(det.results):
            skipped["no hypothesis (results empty)"] += 1
            continue
        hypothesis = det.results[0].hypothesis
        label = CLASS_INDEX.get(hypothesis.class_id)
        if label is None:
            skipped[f"class {hypothesis.class_id[:40]!r} is not a nuScenes class"] += 1
            continue
        p, q, s = det.bbox.center.position, det.bbox.center.orientation, det.bbox.size
        rows.append([p.x, p.y, p.z, s.x, s.y, s.z, q.w, q.x, q.y, q.z, hypothesis.score])
        labels.append(label)
        indices.append(index)
    values = np.asarray(rows, dtype=np.float64).reshape(-1, 11)
    params = np.zeros((len(values), 9))
    params[:, :6] = values[:, :6]
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero quaternion gives NaN
        params[:, 6] = quaternion_yaw(values[:, 6:10]) if len(values) else 0.0
    good = np.isfinite(params).all(axis=1) & np.isfinite(values[:, 10])
    if not good.all():
        skipped["non-finite pose, size or score, or a zero quaternion"] += int((~good).sum())
    boxes = Boxes(params=params[good], labels=np.asarray(labels, dtype=np.int64)[good],
                  scores=values[good, 10].astype(np.float32))
    return DetectionArray(stamp=stamp_ns(msg.header.stamp), frame_id=msg.header.frame_id,
                          boxes=boxes, indices=np.asarray(indices, dtype=np.int64)[good],
                          skipped=skipped)


def decode_velocities(raw: bytes | memoryview) -> tuple[int, dict[int, tuple[float, float]]]:
    """A serialised MarkerArray -> (stamp ns, detection index -> (vx, vy)) from its ADD ARROW
    markers with id 3i+2 and two points. The stamp is the first marker's (the DELETEALL's in
    the node's arrays; 0 for an empty array); arrows stamped otherwise are ignored."""
    msg = _deserialize(raw, MARKERS_TYPE)
    if not len(msg.markers):
        return 0, {}
    stamp = stamp_ns(msg.markers[0].header.stamp)
    velocities = {}
    for marker in msg.markers:
        if (marker.action != MARKER_ADD or marker.type != MARKER_ARROW or marker.id % 3 != 2
                or len(marker.points) != 2 or stamp_ns(marker.header.stamp) != stamp):
            continue
        tail, tip = marker.points
        velocity = (tip.x - tail.x, tip.y - tail.y)
        if np.isfinite(velocity).all():
            velocities[marker.id // 3] = velocity
    return stamp, velocities


def _deserialize(raw: bytes | memoryview, msgtype: str):
    try:
        return typestore().deserialize_cdr(bytes(raw), msgtype)
    except Exception as exc:  # rosbags raises assorted errors for truncated / foreign bytes
        raise WireError(f"not a {msgtype}: {type(exc).__name__}: {str(exc)[:100]}") from None
