"""rclpy QoS profiles of the node, made from the wire's `QosSpec`s (`imkd_core.wire.names`),
where the QoS of every topic is stated once for the bag tools and the node alike."""

from __future__ import annotations

from dataclasses import replace

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from imkd_core.wire.names import QOS_SENSOR, QosSpec

RADAR_DEPTH = 5  # radar inputs keep a deeper queue than images: their messages are small
# Reliable inputs (a bag replay) keep ~1 s of 12 Hz camera: with depth 2, a callback thread
# that fell behind under load let the reader overwrite images a keyframe names, and the node
# dropped that keyframe; reliable delivery is only worth it if the queue holds what it delivers.
RELIABLE_DEPTH = 12


def profile(spec: QosSpec) -> QoSProfile:
    """The rclpy profile of `spec`: keep-last, reliable or best effort, latched or volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=spec.depth,
        reliability=ReliabilityPolicy.RELIABLE if spec.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if spec.transient_local
                    else DurabilityPolicy.VOLATILE))


def sensor_profile(reliable: bool, depth: int = QOS_SENSOR.depth) -> QoSProfile:
    """A sensor input: `QOS_SENSOR`, reliable on request (parameter `reliable_inputs`), and
    then at least `RELIABLE_DEPTH` deep."""
    depth = max(depth, RELIABLE_DEPTH) if reliable else depth
    return profile(replace(QOS_SENSOR, depth=depth, reliable=reliable))
