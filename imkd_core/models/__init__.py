"""Models: backbones, camera and radar branches, LiDAR teacher, fusion, head, detectors."""
