"""LiDAR teacher encoder: pillars (or height-sliced voxels) over x, y, z, intensity, dt, then a
SECOND-style BEV backbone. Intensity arrives raw (0..255, nuScenes) and is scaled here.

With `pillar_subdivision` f > 1 the pillars sit on cells f times finer than the BEV grid (a
1.6 m cell keeps one max-pooled feature for every point in it; 0.8 m pillars keep four), and a
stride-f conv brings them to the grid, so the backbone, the head, the targets and the features
the distillation losses read are all on the one BEV grid of the student."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from imkd_core.config import LidarTeacherConfig
from imkd_core.geometry import BEVGrid
from imkd_core.models.bev_backbone import BEVBackbone
from imkd_core.models.pillars import PillarEncoder
from imkd_core.models.resnet import conv_bn

LIDAR_SCALES = [50.0, 50.0, 5.0, 255.0, 1.0]


def pillar_grid(grid: BEVGrid, subdivision: int) -> BEVGrid:
    """The teacher's pillar grid: `grid`'s extent, cells `subdivision` times finer."""
    if subdivision < 1:
        raise ValueError(f"lidar.pillar_subdivision must be >= 1, not {subdivision}")
    return grid if subdivision == 1 else replace(grid, cell=grid.cell / subdivision)


class LidarEncoder(nn.Module):
    def __init__(self, cfg: LidarTeacherConfig, grid: BEVGrid):
        super().__init__()
        self.cfg = cfg
        p = cfg.pillars
        f = cfg.pillar_subdivision
        self.pillars = PillarEncoder(pillar_grid(grid, f), LIDAR_SCALES, p.channels, p.layers,
                                     p.z_bins)
        cin = self.pillars.out_channels
        # fine pillars -> the BEV grid: a learned stride-f conv (identity when f == 1)
        self.to_grid = nn.Identity() if f == 1 else conv_bn(cin, cin, f + 1, stride=f)
        bb = cfg.bev_backbone
        self.backbone = BEVBackbone(cin, bb.channels, bb.layers, bb.strides, bb.out_channels)
        self.out_channels = bb.out_channels

    def forward(self, points: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, P, 5) + (B, P) -> (B, C, ny, nx) teacher BEV features."""
        points = points[..., :5]
        keep = points[..., 4] <= self.cfg.max_dt
        mask = keep if mask is None else mask & keep
        return self.backbone(self.to_grid(self.pillars(points, mask)))
