"""BEV-grid maths in torch, shared by every branch, target and loss.

The one rule: a point's cell is `floor((x - x_min) / cell), floor((y - y_min) / cell)` and it is
inside when both indices are in range and `z_min <= z < z_max` — exactly
`imkd_core.geometry.BEVGrid.point_to_cell`. Teacher voxels, radar pillars, camera lift-splat and
the intensity map all call `point_cells` below, so they cannot disagree.
BEV maps are (B, C, ny, nx): row = iy (y grows with the row), column = ix.
"""

from __future__ import annotations

import torch

from imkd_core.geometry import BEVGrid


def point_cells(xyz: torch.Tensor, grid: BEVGrid, z_bins: int = 1
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 3+) points -> integer ix, iy, iz (height slice of `z_bins`) and the inside mask."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    ix = torch.floor((x - grid.x_min) / grid.cell).long()
    iy = torch.floor((y - grid.y_min) / grid.cell).long()
    inside = (ix >= 0) & (ix < grid.nx) & (iy >= 0) & (iy < grid.ny)
    inside &= (z >= grid.z_min) & (z < grid.z_max)
    if z_bins > 1:
        iz = torch.floor((z - grid.z_min) / ((grid.z_max - grid.z_min) / z_bins)).long()
        iz = iz.clamp(0, z_bins - 1)
    else:
        iz = torch.zeros_like(ix)
    return ix, iy, iz, inside


def flat_cell_index(xyz: torch.Tensor, mask: torch.Tensor | None, grid: BEVGrid,
                    z_bins: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P, 3+) padded points + (B, P) validity -> (B, P) flat index into a
    (B * z_bins * ny * nx) table, and the (B, P) mask of points that land in the grid."""
    B, P = xyz.shape[:2]
    ix, iy, iz, inside = point_cells(xyz, grid, z_bins)
    if mask is not None:
        inside &= mask
    b = torch.arange(B, device=xyz.device).view(B, 1).expand(B, P)
    flat = ((b * z_bins + iz) * grid.ny + iy) * grid.nx + ix
    return torch.where(inside, flat, torch.zeros_like(flat)), inside


def cell_centers(grid: BEVGrid, device=None, dtype=torch.float32
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    xs = grid.x_min + (torch.arange(grid.nx, device=device, dtype=dtype) + 0.5) * grid.cell
    ys = grid.y_min + (torch.arange(grid.ny, device=device, dtype=dtype) + 0.5) * grid.cell
    return xs, ys
