"""Models: backbones, camera and radar branches, LiDAR teacher, fusion, head, detectors.

One module per block: `resnet` (ResNet-18/34/50), `fpn`, `camera_branch` (depth + lift-splat),
`pillars` (shared point encoder), `radar_branch`, `lidar_teacher`, `bev_backbone`, `fusion`
(Stage 3), `head` (CenterPoint head, targets, decoding + NMS), `detector` (Student, Teacher),
`bev` (the BEV cell rule every block shares).
"""

from imkd_core.models.detector import Student, Teacher, build_model, count_parameters, freeze

__all__ = ["Student", "Teacher", "build_model", "count_parameters", "freeze"]
