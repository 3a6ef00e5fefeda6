"""Serialised (CDR) messages: what a bag stores and what `Publisher.publish` takes as bytes.

The node publishes its detections and markers with these, and the bag converter writes ground
truth with the same functions, so a detection on the wire and a ground-truth box in a bag are
the same bytes for the same box. `header_stamp` reads a stamp without deserialising.
"""

from __future__ import annotations

import struct

import numpy as np

from imkd_core.geometry import yaw_to_quaternion
from imkd_core.sample import CLASSES, Boxes
from imkd_core.wire.messages import markers_msg
from imkd_core.wire.names import BASE_FRAME, MARKERS_TYPE
from imkd_core.wire.typestore import typestore


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


def markers_cdr(boxes: Boxes, stamp: int, frame_id: str = BASE_FRAME,
                lifetime_ns: int = 1_000_000_000) -> bytes:
    """`markers_msg`, serialised (CDR) for a bag or `Publisher.publish`."""
    return bytes(typestore().serialize_cdr(markers_msg(boxes, stamp, frame_id, lifetime_ns),
                                           MARKERS_TYPE))


def header_stamp(raw: bytes) -> int:
    """The header stamp of a serialised message whose first field is a std_msgs/Header, read
    from the CDR bytes directly (4-byte encapsulation header, then int32 sec, uint32 nanosec),
    so that a message is only deserialised when it is used."""
    sec, nanosec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec * 1_000_000_000 + nanosec
