"""FPN neck: lateral 1x1 + top-down pathway over ResNet stages, merged into ONE map at the
camera branch's stride (16 by default), which is what the depth net and lift-splat consume.

Levels finer than the output stride are average-pooled down, coarser ones bilinearly upsampled;
the sum goes through a 3x3 conv (+BN, ReLU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from imkd_core.models.resnet import conv_bn


class FPN(nn.Module):
    def __init__(self, in_channels: list[int], in_strides: list[int], out_channels: int,
                 out_stride: int = 16):
        super().__init__()
        if out_stride not in in_strides:
            raise ValueError(f"FPN output stride {out_stride} is not one of {in_strides}")
        self.in_strides = list(in_strides)
        self.out_stride = out_stride
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, 1, 1) for _ in in_channels)
        self.merge = conv_bn(out_channels, out_channels, 3)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals = [lat(f) for lat, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        index = self.in_strides.index(self.out_stride)
        size = feats[index].shape[-2:]
        merged = None
        for i, (smooth, lat) in enumerate(zip(self.smooth, laterals)):
            p = smooth(lat)
            if i < index:
                p = F.adaptive_avg_pool2d(p, size)
            elif i > index:
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            merged = p if merged is None else merged + p
        return self.merge(merged)
