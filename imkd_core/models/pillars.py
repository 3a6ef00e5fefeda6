"""PointPillars-style point encoder shared by the radar branch and the LiDAR teacher.

Vectorised end to end: per-point features (the raw columns, scaled, plus the offset to the
cell centre and to the mean of the cell's points) -> a per-point MLP (Linear, LayerNorm, ReLU)
-> max over the points of each cell (`scatter_reduce(amax)`) -> a dense (B, C * z_bins, ny, nx)
BEV map. Empty cells, and every cell of a sample without points, are exactly zero.
"""

from __future__ import annotations

import torch
from torch import nn

from imkd_core.geometry import BEVGrid
from imkd_core.models.bev import flat_cell_index


class PillarEncoder(nn.Module):
    """(B, P, F) padded points (first three columns x, y, z) + (B, P) mask -> BEV features.

    `scales` divides each raw input column (so inputs are O(1)); `z_bins > 1` slices each
    pillar into height voxels whose features are stacked as channels.
    """

    def __init__(self, grid: BEVGrid, scales: list[float], channels: int, layers: int = 1,
                 z_bins: int = 1):
        super().__init__()
        self.grid = grid
        self.z_bins = z_bins
        self.channels = channels
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32),
                             persistent=False)
        cin = len(scales) + 5  # + (dx, dy) to the cell centre, (dx, dy, dz) to the cell mean
        mlp: list[nn.Module] = []
        for i in range(layers):
            mlp += [nn.Linear(cin if i == 0 else channels, channels, bias=False),
                    nn.LayerNorm(channels), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*mlp)

    @property
    def out_channels(self) -> int:
        return self.channels * self.z_bins

    def cells(self, points: torch.Tensor, mask: torch.Tensor | None):
        """The flat (batch, z-slice, row, col) index of every point and the inside mask."""
        return flat_cell_index(points, mask, self.grid, self.z_bins)

    def forward(self, points: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, P = points.shape[:2]
        g = self.grid
        n_cells = B * self.z_bins * g.ny * g.nx
        flat, inside = self.cells(points, mask)
        # static shapes: every (padded) point is encoded; points outside the grid or masked
        # out go to an extra trash row n_cells, dropped at the end
        idx = torch.where(inside, flat, torch.full_like(flat, n_cells)).reshape(-1)
        pts = points.reshape(B * P, -1)
        xyz = pts[:, :3]
        counts = pts.new_zeros(n_cells + 1).index_add_(0, idx, torch.ones_like(xyz[:, 0]))
        sums = pts.new_zeros((n_cells + 1, 3)).index_add_(0, idx, xyz)
        mean = sums[idx] / counts[idx].clamp(min=1.0).unsqueeze(1)
        cell_xy = idx % (g.ny * g.nx)
        cx = g.x_min + ((cell_xy % g.nx).to(pts.dtype) + 0.5) * g.cell
        cy = g.y_min + ((cell_xy // g.nx).to(pts.dtype) + 0.5) * g.cell
        extra = torch.stack([xyz[:, 0] - cx, xyz[:, 1] - cy], dim=1) / g.cell
        feats = torch.cat([pts / self.scales, extra, (xyz - mean) / g.cell], dim=1)
        feats = self.mlp(feats)  # >= 0 (ReLU): a zero table + amax leaves empty cells at 0
        out = pts.new_zeros((n_cells + 1, self.channels))
        out = out.scatter_reduce(0, idx.unsqueeze(1).expand_as(feats), feats, "amax",
                                 include_self=True)[:n_cells]
        out = out.view(B, self.z_bins, g.ny, g.nx, self.channels)
        return out.permute(0, 1, 4, 2, 3).reshape(B, self.z_bins * self.channels, g.ny, g.nx)
