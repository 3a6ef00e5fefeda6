"""Camera-radar BEV fusion. Stage 3 of IMKD (our reading, docs/ARCHITECTURE.md §IMKD):

1. project camera and radar BEV features to C channels;
2. gates: a small conv net sees [camera, radar, predicted intensity] and outputs one sigmoid
   gate per channel per modality (where radar is unreliable, its channels can be closed);
3. cross-modal windowed attention, both ways: every camera cell queries the radar cells in a
   k x k window around it, every radar cell queries the camera cells. Radar evidence is
   weighted by the predicted intensity: `out = sum_j softmax(q.k_j)_j * I_j * v_j`, so a radar
   cell the intensity head believes in contributes, and one it does not is suppressed; with no
   radar/intensity at all the camera path passes through unchanged (residual);
4. concat the two refined maps and convolve.
`ConcatFusion` (concat + conv) is the ablation. Both take the same inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from imkd_core.config import FusionConfig
from imkd_core.models.resnet import conv_bn


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, heads: int,
                     value_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of each cell of q (B, C, H, W) over the `window` x `window`
    neighbourhood in k, v. `value_weight` (B, 1, H, W), when given, multiplies each key cell's
    value after the softmax. Cells outside the map are excluded. A loop over the window offsets
    only (window**2 steps), never over cells."""
    B, C, H, W = q.shape
    d = C // heads
    r = window // 2
    kp = F.pad(k, (r, r, r, r))
    vp = F.pad(v, (r, r, r, r))
    valid = F.pad(q.new_ones((1, 1, H, W)), (r, r, r, r))
    wp = F.pad(value_weight, (r, r, r, r)) if value_weight is not None else None
    qh = q.view(B, heads, d, H, W)
    scale = 1.0 / math.sqrt(d)
    logits, offsets = [], []
    for dy in range(window):
        for dx in range(window):
            ks = kp[..., dy:dy + H, dx:dx + W].reshape(B, heads, d, H, W)
            logit = (qh * ks).sum(2) * scale  # (B, heads, H, W)
            logit = logit.masked_fill(valid[..., dy:dy + H, dx:dx + W] == 0, -1e4)
            logits.append(logit)
            offsets.append((dy, dx))
    attn = torch.stack(logits, dim=2).softmax(dim=2)  # (B, heads, k2, H, W)
    out = q.new_zeros((B, heads, d, H, W))
    for i, (dy, dx) in enumerate(offsets):
        vs = vp[..., dy:dy + H, dx:dx + W].reshape(B, heads, d, H, W)
        a = attn[:, :, i]
        if wp is not None:
            a = a * wp[:, :, dy:dy + H, dx:dx + W]
        out = out + a.unsqueeze(2) * vs
    return out.view(B, C, H, W)


class ConcatFusion(nn.Module):
    def __init__(self, cam_channels: int, radar_channels: int, cfg: FusionConfig):
        super().__init__()
        self.conv = nn.Sequential(conv_bn(cam_channels + radar_channels, cfg.channels, 3),
                                  conv_bn(cfg.channels, cfg.channels, 3))
        self.out_channels = cfg.channels

    def forward(self, cam: torch.Tensor, radar: torch.Tensor,
                intensity: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(torch.cat([cam, radar], dim=1))


class IntensityGuidedFusion(nn.Module):
    def __init__(self, cam_channels: int, radar_channels: int, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.channels
        self.proj_cam = conv_bn(cam_channels, C, 1)
        self.proj_radar = conv_bn(radar_channels, C, 1)
        if cfg.gate:
            self.gate = nn.Sequential(conv_bn(2 * C + 1, C, 3), nn.Conv2d(C, 2 * C, 1))
            nn.init.zeros_(self.gate[-1].weight)
            nn.init.constant_(self.gate[-1].bias, 2.0)  # start mostly open
        if cfg.attention:
            self.cam_qkv = nn.Conv2d(C, 3 * C, 1)  # cam queries, cam keys/values (for radar)
            self.radar_qkv = nn.Conv2d(C, 3 * C, 1)
            self.cam_out = nn.Conv2d(C, C, 1)
            self.radar_out = nn.Conv2d(C, C, 1)
        self.out = conv_bn(2 * C, C, 3)
        self.out_channels = C

    def forward(self, cam: torch.Tensor, radar: torch.Tensor,
                intensity: torch.Tensor | None = None) -> torch.Tensor:
        """cam (B, Cc, H, W), radar (B, Cr, H, W), intensity: predicted I in [0, 1] (B,1,H,W)."""
        c = self.proj_cam(cam)
        r = self.proj_radar(radar)
        if intensity is None:
            intensity = c.new_ones((c.shape[0], 1, *c.shape[-2:]))
        if self.cfg.detach_intensity:
            intensity = intensity.detach()
        if self.cfg.gate:
            g = torch.sigmoid(self.gate(torch.cat([c, r, intensity], dim=1)))
            gc, gr = g.chunk(2, dim=1)
            c = c * gc
            r = r * gr
        if self.cfg.attention:
            cq, ck, cv = self.cam_qkv(c).chunk(3, dim=1)
            rq, rk, rv = self.radar_qkv(r).chunk(3, dim=1)
            weight = intensity if self.cfg.intensity_weighting else None
            cam_from_radar = window_attention(cq, rk, rv, self.cfg.window, self.cfg.heads,
                                              value_weight=weight)
            radar_from_cam = window_attention(rq, ck, cv, self.cfg.window, self.cfg.heads)
            c = c + self.cam_out(cam_from_radar)
            r = r + self.radar_out(radar_from_cam)
        return self.out(torch.cat([c, r], dim=1))


def build_fusion(cam_channels: int, radar_channels: int, cfg: FusionConfig) -> nn.Module:
    if cfg.mode == "concat":
        return ConcatFusion(cam_channels, radar_channels, cfg)
    return IntensityGuidedFusion(cam_channels, radar_channels, cfg)
