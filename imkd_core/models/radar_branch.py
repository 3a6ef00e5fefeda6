"""Radar branch: pillar encoder over multi-sweep radar points -> radar BEV features, plus the
small head that predicts the LiDAR intensity map I from radar features (IMKD: an intensity
estimate must exist at inference, where there is no LiDAR).

Input columns: `imkd_core.sample.RADAR_MODEL_COLUMNS` (position, RCS, compensated velocity, dt),
positions/velocities in the keyframe ego frame (BEV-augmented like everything else). No points
at all (all radars missing) gives an exactly zero pillar map; the branch still runs.
"""

from __future__ import annotations

import torch
from torch import nn

from imkd_core.config import RadarBranchConfig
from imkd_core.geometry import BEVGrid
from imkd_core.models.pillars import PillarEncoder
from imkd_core.models.resnet import conv_bn
from imkd_core.sample import RADAR_MODEL_COLUMNS

# Divisors that bring each input column (RADAR_MODEL_COLUMNS order) to O(1).
RADAR_SCALES = [50.0, 50.0, 5.0, 20.0, 10.0, 10.0, 1.0]


class RadarBranch(nn.Module):
    def __init__(self, cfg: RadarBranchConfig, grid: BEVGrid):
        super().__init__()
        self.cfg = cfg
        p = cfg.pillars
        self.pillars = PillarEncoder(grid, RADAR_SCALES, p.channels, p.layers, p.z_bins)
        layers = [conv_bn(self.pillars.out_channels, cfg.channels, 3)]
        layers += [conv_bn(cfg.channels, cfg.channels, 3) for _ in range(cfg.encoder_layers - 1)]
        self.encoder = nn.Sequential(*layers)
        self.intensity_head = nn.Sequential(conv_bn(cfg.channels, cfg.intensity_channels, 3),
                                            nn.Conv2d(cfg.intensity_channels, 1, 1))
        nn.init.constant_(self.intensity_head[-1].bias, -2.0)
        self.out_channels = cfg.channels

    def forward(self, points: torch.Tensor, mask: torch.Tensor | None):
        """(B, P, 7) + (B, P) -> radar BEV (B, C, ny, nx), intensity logits (B, 1, ny, nx)."""
        points = points[..., : len(RADAR_MODEL_COLUMNS)]
        keep = points[..., 6] <= self.cfg.max_dt
        mask = keep if mask is None else mask & keep
        bev = self.encoder(self.pillars(points, mask))
        return bev, self.intensity_head(bev)
