"""The node's rclpy-only message helpers: what needs the real ROS message classes.

Decoding the node's inputs (images, camera info, point clouds, TF) needs no rclpy and lives in
`imkd_core.wire.fields`, shared with the bag reader; the detections and markers the node
publishes are serialised by `imkd_core.wire.cdr`, the same bytes the bag converter writes for
ground truth. What is left here builds rclpy messages: the latched `LabelInfo`
(docs/ARCHITECTURE.md §Conventions).
"""

from __future__ import annotations

from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo, VisionClass

from imkd_core.sample import CLASSES


def label_info(frame_id: str, stamp, threshold: float) -> LabelInfo:
    """The class map (index -> nuScenes class name) and the score threshold, for latching."""
    msg = LabelInfo(header=Header(stamp=stamp, frame_id=frame_id), threshold=float(threshold))
    msg.class_map = [VisionClass(class_id=i, class_name=name) for i, name in enumerate(CLASSES)]
    return msg
