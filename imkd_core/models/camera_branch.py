"""Camera branch: ResNet + FPN -> per-pixel depth distribution + context -> lift-splat to BEV.

Lift-splat is vectorised (no Python loop over cameras, points or pixels):
- the frustum is fixed by the model input size, the feature stride and the depth bins: feature
  pixel (i, j) sits at input pixel (j*s + (s-1)/2, i*s + (s-1)/2) (pixel centres on integers,
  the OpenCV/nuScenes convention), depth bin k at its centre d_k;
- per calibration, every frustum point goes to ego (`T_ego_cam @ d K^-1 [u, v, 1]`, with the K
  and T the preprocessing produced: image resize/crop/flip folded into K, BEV augmentation into
  T), then to a flat BEV cell index via the shared `point_cells`. In eval mode the index tables
  of the points inside the grid are cached per calibration (the node's calibration never
  changes), so a frame only pays for the gather + `index_add_` splat; in training (and when
  traced/compiled) every point is kept and those outside the grid go to a trash row, so shapes
  are static;
- splat: features (depth prob x context) of the points inside the grid are summed per cell.
A camera marked missing (`cam_valid` False) contributes nothing.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from imkd_core.config import CameraBranchConfig, ImageConfig
from imkd_core.geometry import BEVGrid
from imkd_core.models.bev import point_cells
from imkd_core.models.fpn import FPN
from imkd_core.models.resnet import BasicBlock, ResNet, conv_bn


def camera_params(K: torch.Tensor, T: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 3, 3) intrinsics + (..., 4, 4) extrinsics -> (..., 16) normalised descriptors."""
    intr = torch.stack([K[..., 0, 0] / width, K[..., 1, 1] / height,
                        K[..., 0, 2] / width, K[..., 1, 2] / height], dim=-1)
    rot = T[..., :3, :3].flatten(-2)
    trans = T[..., :3, 3] / 10.0
    return torch.cat([intr, rot, trans], dim=-1)


class DepthNet(nn.Module):
    """Image features -> depth logits (D bins) and context features (C channels); optionally
    camera-aware (BEVDepth): an MLP over the camera descriptors SE-gates both paths, so depth
    from appearance can account for focal length, crop and flip."""

    def __init__(self, in_channels: int, mid_channels: int, depth_bins: int,
                 context_channels: int, camera_aware: bool):
        super().__init__()
        self.reduce = conv_bn(in_channels, mid_channels, 3)
        self.camera_aware = camera_aware
        if camera_aware:
            self.mlp = nn.Sequential(nn.Linear(16, mid_channels), nn.ReLU(inplace=True),
                                     nn.Linear(mid_channels, 2 * mid_channels))
        self.context = nn.Conv2d(mid_channels, context_channels, 1)
        self.depth = nn.Sequential(BasicBlock(mid_channels, mid_channels),
                                   nn.Conv2d(mid_channels, depth_bins, 1))

    def forward(self, x: torch.Tensor, cam: torch.Tensor | None):
        x = self.reduce(x)
        x_ctx, x_dep = x, x
        if self.camera_aware and cam is not None:
            g_ctx, g_dep = torch.sigmoid(self.mlp(cam)).chunk(2, dim=-1)
            x_ctx = x * g_ctx[:, :, None, None]
            x_dep = x * g_dep[:, :, None, None]
        return self.depth(x_dep), self.context(x_ctx)


class LiftSplat(nn.Module):
    """Depth distribution x context on the frustum -> (B, C, ny, nx) BEV features."""

    def __init__(self, grid: BEVGrid, image_size: tuple[int, int], stride: int,
                 d_min: float, d_step: float, depth_bins: int, cache_size: int = 4):
        super().__init__()
        self.grid = grid
        self.h, self.w = image_size[0] // stride, image_size[1] // stride
        self.D = depth_bins
        d = d_min + (torch.arange(depth_bins, dtype=torch.float32) + 0.5) * d_step
        u = torch.arange(self.w, dtype=torch.float32) * stride + (stride - 1) / 2.0
        v = torch.arange(self.h, dtype=torch.float32) * stride + (stride - 1) / 2.0
        dd, vv, uu = torch.meshgrid(d, v, u, indexing="ij")  # (D, h, w)
        frustum = torch.stack([uu * dd, vv * dd, dd], dim=-1)  # (D, h, w, 3): d * [u, v, 1]
        self.register_buffer("frustum", frustum, persistent=False)
        self.register_buffer("depth_centers", d, persistent=False)
        self.cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()

    def frustum_points(self, K: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, 3) K + (B, N, 4, 4) T_ego_cam -> (B, N, D, h, w, 3) ego points."""
        M = T[..., :3, :3] @ torch.linalg.inv(K)  # (B, N, 3, 3)
        pts = torch.einsum("bnij,dhwj->bndhwi", M, self.frustum.to(M.dtype))
        return pts + T[..., None, None, None, :3, 3]

    def geometry(self, K: torch.Tensor, T: torch.Tensor, compact: bool = True):
        """Index tables for the splat: (point index into the (B*N*D*h*w) depth table, pixel
        index into the (B*N*h*w) context table, BEV cell index into the (B*ny*nx [+1])
        output table). `compact`: only the points inside the grid (data-dependent size, what
        the cached eval path uses); otherwise every point, those outside the grid sent to an
        extra trash row `B*ny*nx` (static shapes: no host sync, traceable/exportable)."""
        B = K.shape[0]
        n_cells = B * self.grid.ny * self.grid.nx
        with torch.no_grad():
            pts = self.frustum_points(K.float(), T.float())
            ix, iy, _, inside = point_cells(pts, self.grid)
            b = torch.arange(B, device=K.device).view(B, 1, 1, 1, 1)
            cells = ((b * self.grid.ny + iy) * self.grid.nx + ix).reshape(-1)
            inside = inside.reshape(-1)
            hw = self.h * self.w
            if compact:
                keep = inside.nonzero().squeeze(1)
                cells = cells[keep]
            else:
                keep = torch.arange(inside.numel(), device=K.device)
                cells = torch.where(inside, cells, torch.full_like(cells, n_cells))
            pix = (keep // (self.D * hw)) * hw + keep % hw
        return keep, pix, cells

    def cached_geometry(self, K: torch.Tensor, T: torch.Tensor):
        """`geometry(compact=True)`, memoised per calibration (LRU): in eval the node's
        calibration never changes, so a frame only pays for the gather + splat."""
        key = (tuple(K.shape), str(K.device), K.detach().cpu().numpy().tobytes(),
               T.detach().cpu().numpy().tobytes())
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        out = self.geometry(K, T, compact=True)
        self._cache[key] = out
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def forward(self, depth: torch.Tensor, context: torch.Tensor, K: torch.Tensor,
                T: torch.Tensor, geometry: tuple[torch.Tensor, ...] | None = None
                ) -> torch.Tensor:
        """depth (B, N, D, h, w) probabilities, context (B, N, C, h, w). `geometry`: the index
        tables of `geometry(K, T)`, made by the caller (the exported models take them as
        inputs: computed once per calibration on the host, no matrix inverse in the graph)."""
        B, C = context.shape[0], context.shape[2]
        n_cells = B * self.grid.ny * self.grid.nx
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if geometry is not None:
            keep, pix, cells = geometry
        elif self.training or tracing:
            keep, pix, cells = self.geometry(K, T, compact=False)
        else:
            keep, pix, cells = self.cached_geometry(K, T)
        dep = depth.reshape(-1)[keep]
        ctx = context.permute(0, 1, 3, 4, 2).reshape(-1, C)[pix]
        out = context.new_zeros((n_cells + 1, C))  # + the trash row of the static path
        out.index_add_(0, cells, dep.unsqueeze(1) * ctx)
        out = out[:n_cells]
        return out.view(B, self.grid.ny, self.grid.nx, C).permute(0, 3, 1, 2).contiguous()


class CameraBranch(nn.Module):
    """images (B, N, 3, H, W) -> camera BEV (B, C, ny, nx) + depth logits (B, N, D, h, w)."""

    def __init__(self, cfg: CameraBranchConfig, image: ImageConfig, grid: BEVGrid):
        super().__init__()
        self.cfg = cfg
        self.image_size = (image.height, image.width)
        self.backbone = ResNet(cfg.backbone.depth, cfg.backbone.base_width)
        # FPN over the stride-8/16/32 stages (stride 4 is too fine to pay for here)
        self.neck = FPN(self.backbone.out_channels[1:], self.backbone.strides[1:],
                        cfg.neck_channels, cfg.stride)
        dc = cfg.depth
        self.depth_net = DepthNet(cfg.neck_channels, dc.mid_channels, dc.num_bins,
                                  cfg.context_channels, dc.camera_aware)
        self.lift = LiftSplat(grid, self.image_size, cfg.stride, dc.d_min, dc.d_step,
                              dc.num_bins)
        self.bev_conv = conv_bn(cfg.context_channels, cfg.bev_channels, 3)
        self.out_channels = cfg.bev_channels

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W) -> (B*N, C, h, w) at the branch stride."""
        return self.neck(self.backbone(images.flatten(0, 1))[1:])

    def view_transform(self, feats: torch.Tensor, K: torch.Tensor, T: torch.Tensor,
                       cam_valid: torch.Tensor | None = None,
                       geometry: tuple[torch.Tensor, ...] | None = None):
        """Image features -> (camera BEV, depth logits (B, N, D, h, w)); `geometry`: see
        `LiftSplat.forward`."""
        B, N = K.shape[:2]
        cam = camera_params(K, T, *self.image_size).flatten(0, 1).to(feats.dtype)
        depth_logits, context = self.depth_net(feats, cam)
        h, w = depth_logits.shape[-2:]
        depth_logits = depth_logits.view(B, N, -1, h, w)
        context = context.view(B, N, -1, h, w)
        probs = depth_logits.softmax(dim=2)
        if cam_valid is not None:
            probs = probs * cam_valid.to(probs.dtype)[:, :, None, None, None]
        bev = self.lift(probs, context, K, T, geometry)
        return self.bev_conv(bev), depth_logits

    def forward(self, images, K, T, cam_valid=None):
        return self.view_transform(self.image_features(images), K, T, cam_valid)
