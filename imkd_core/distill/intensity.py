"""The BEV intensity map I (IMKD's reliability prior), computed at training time.

`distill.intensity_map.source: reflectance` (ours, the default): I[b, 0, iy, ix] = max over the
cell's LiDAR returns of (clip(r / normalizer, 0, 1))**gamma, then dilated by a (2d+1)^2
max-pool. It uses the batch's LiDAR points, i.e. the points after the sample's BEV
augmentation, and the shared cell rule (`imkd_core.models.bev`), so I is aligned with every BEV
feature map of the student and the teacher. Cells without returns are 0.

`source: teacher_features` (the alternative reading): I = (|f| / max |f|)**gamma with |f| the
channel L2 norm of the teacher's BEV features, per sample, then the same dilation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from imkd_core.config import IntensityMapConfig
from imkd_core.geometry import BEVGrid
from imkd_core.models.bev import flat_cell_index


def intensity_map(points: torch.Tensor, mask: torch.Tensor | None, grid: BEVGrid,
                  cfg: IntensityMapConfig, dilate: bool = True) -> torch.Tensor:
    """(B, P, 4+) LiDAR points (x, y, z, raw intensity, ...) + (B, P) mask -> (B, 1, ny, nx)."""
    B = points.shape[0]
    flat, inside = flat_cell_index(points, mask, grid)
    if cfg.min_height is not None:
        inside = inside & (points[..., 2] >= cfg.min_height)
    values = (points[..., 3].float() / cfg.normalizer).clamp(0.0, 1.0) ** cfg.gamma
    table = points.new_zeros(B * grid.ny * grid.nx, dtype=torch.float32)
    table = table.scatter_reduce(0, flat[inside], values[inside], "amax", include_self=True)
    imap = table.view(B, 1, grid.ny, grid.nx)
    return _dilated(imap, cfg) if dilate else imap


def feature_intensity_map(features: torch.Tensor, cfg: IntensityMapConfig,
                          dilate: bool = True) -> torch.Tensor:
    """(B, C, ny, nx) teacher BEV features -> (B, 1, ny, nx) in [0, 1], no gradient."""
    with torch.no_grad():
        magnitude = features.float().pow(2).sum(dim=1, keepdim=True).sqrt()
        peak = magnitude.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        imap = (magnitude / peak) ** cfg.gamma
    return _dilated(imap, cfg) if dilate else imap


def _dilated(imap: torch.Tensor, cfg: IntensityMapConfig) -> torch.Tensor:
    if cfg.dilation <= 0:
        return imap
    return F.max_pool2d(imap, 2 * cfg.dilation + 1, stride=1, padding=cfg.dilation)
