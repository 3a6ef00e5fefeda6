"""IMKD distillation: BEV intensity maps and the losses of the three stages."""

from imkd_core.distill.intensity import feature_intensity_map, intensity_map
from imkd_core.distill.losses import IMKDLoss, build_targets, lidar_depth_targets, teacher_loss

__all__ = ["IMKDLoss", "build_targets", "feature_intensity_map", "intensity_map",
           "lidar_depth_targets", "teacher_loss"]
