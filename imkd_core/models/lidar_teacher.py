"""LiDAR teacher encoder: pillars (or height-sliced voxels) over x, y, z, intensity, dt, then a
SECOND-style BEV backbone. Intensity arrives raw (0..255, nuScenes) and is scaled here."""

from __future__ import annotations

import torch
from torch import nn

from imkd_core.config import LidarTeacherConfig
from imkd_core.geometry import BEVGrid
from imkd_core.models.bev_backbone import BEVBackbone
from imkd_core.models.pillars import PillarEncoder

LIDAR_SCALES = [50.0, 50.0, 5.0, 255.0, 1.0]


class LidarEncoder(nn.Module):
    def __init__(self, cfg: LidarTeacherConfig, grid: BEVGrid):
        super().__init__()
        self.cfg = cfg
        p = cfg.pillars
        self.pillars = PillarEncoder(grid, LIDAR_SCALES, p.channels, p.layers, p.z_bins)
        bb = cfg.bev_backbone
        self.backbone = BEVBackbone(self.pillars.out_channels, bb.channels, bb.layers,
                                    bb.strides, bb.out_channels)
        self.out_channels = bb.out_channels

    def forward(self, points: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, P, 5) + (B, P) -> (B, C, ny, nx) teacher BEV features."""
        points = points[..., :5]
        keep = points[..., 4] <= self.cfg.max_dt
        mask = keep if mask is None else mask & keep
        return self.backbone(self.pillars(points, mask))
