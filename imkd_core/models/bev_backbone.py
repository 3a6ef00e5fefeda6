"""SECOND-style BEV backbone + neck: conv stages at increasing strides, each brought back to the
grid resolution (transposed conv) and concatenated, then fused to `out_channels`. Input and
output are on the same BEV grid, so every BEV map in the model shares one resolution."""

from __future__ import annotations

import torch
from torch import nn

from imkd_core.models.resnet import conv_bn


class BEVBackbone(nn.Module):
    def __init__(self, in_channels: int, channels: list[int], layers: list[int],
                 strides: list[int], out_channels: int):
        super().__init__()
        self.stages = nn.ModuleList()
        self.ups = nn.ModuleList()
        cin = in_channels
        total = 1
        for c, n, s in zip(channels, layers, strides):
            total *= s
            blocks = [conv_bn(cin, c, 3, stride=s)] + [conv_bn(c, c, 3) for _ in range(n)]
            self.stages.append(nn.Sequential(*blocks))
            cin = c
            if total == 1:
                self.ups.append(conv_bn(c, c, 1))
            else:
                self.ups.append(nn.Sequential(
                    nn.ConvTranspose2d(c, c, total, total, bias=False), nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True)))
        self.out = conv_bn(sum(channels), out_channels, 3)
        self.out_channels = out_channels
        self.total_stride = total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ups = []
        for stage, up in zip(self.stages, self.ups):
            x = stage(x)
            ups.append(up(x))
        h, w = ups[0].shape[-2:]
        ups = [u[..., :h, :w] for u in ups]
        return self.out(torch.cat(ups, dim=1))
