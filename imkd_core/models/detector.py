"""The two detectors: the camera+radar Student (what runs at inference, in the node) and the
LiDAR Teacher (training only). Both take the batch dict of `imkd_core.preprocess` and return a
dict holding the head outputs (`heatmap`, `offset`, `z`, `size`, `rot`, `vel`) plus the
intermediate BEV features the IMKD losses need:

Student: `cam_bev`, `depth_logits` (B, N, D, h, w), `radar_bev`, `intensity_logits`
(B, 1, ny, nx), `fused` (fusion output), `bev` (BEV backbone output = the head's input; Stage 2
distils its first channels).   Teacher: `bev` (its BEV backbone output).

The student's forward is split into the stages the benchmark times: `image_features`,
`camera_bev` (depth + view transform), `radar_bev`, `fuse` (fusion + BEV backbone), `head`.
"""

from __future__ import annotations

import torch
from torch import nn

from imkd_core.config import ModelConfig
from imkd_core.models.bev_backbone import BEVBackbone
from imkd_core.models.camera_branch import CameraBranch
from imkd_core.models.fusion import build_fusion
from imkd_core.models.head import CenterHead
from imkd_core.models.lidar_teacher import LidarEncoder
from imkd_core.models.radar_branch import RadarBranch


class Student(nn.Module):
    kind = "student"

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        grid = config.bev_grid
        self.grid = grid
        self.camera = CameraBranch(config.camera, config.image, grid) if config.camera.enabled \
            else None
        self.radar = RadarBranch(config.radar, grid) if config.radar.enabled else None
        self.cam_channels = config.camera.bev_channels
        self.radar_channels = config.radar.channels
        self.fusion = build_fusion(self.cam_channels, self.radar_channels, config.fusion)
        bb = config.bev_backbone
        self.bev_backbone = BEVBackbone(self.fusion.out_channels, bb.channels, bb.layers,
                                        bb.strides, bb.out_channels)
        self.head_net = CenterHead(bb.out_channels, config.num_classes, config.head)

    def _zeros(self, batch: dict, channels: int) -> torch.Tensor:
        ref = batch["radar_points"] if "radar_points" in batch else batch["images"]
        B = ref.shape[0]
        return ref.new_zeros((B, channels, self.grid.ny, self.grid.nx), dtype=torch.float32)

    # ---- stages (the benchmark times each) ----
    def image_features(self, batch: dict) -> torch.Tensor | None:
        if self.camera is None:
            return None
        return self.camera.image_features(batch["images"])

    def camera_bev(self, feats: torch.Tensor | None, batch: dict):
        if self.camera is None or feats is None:
            return self._zeros(batch, self.cam_channels), None
        return self.camera.view_transform(feats, batch["intrinsics"], batch["cam2ego"],
                                          batch.get("cam_valid"))

    def radar_bev(self, batch: dict):
        if self.radar is None:
            zeros = self._zeros(batch, self.radar_channels)
            return zeros, torch.full_like(zeros[:, :1], -10.0)
        return self.radar(batch["radar_points"], batch.get("radar_mask"))

    def fuse(self, cam_bev: torch.Tensor, radar_bev: torch.Tensor,
             intensity_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.fusion(cam_bev, radar_bev, torch.sigmoid(intensity_logits))
        return fused, self.bev_backbone(fused)

    def head(self, bev: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head_net(bev)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        feats = self.image_features(batch)
        cam_bev, depth_logits = self.camera_bev(feats, batch)
        radar_bev, intensity_logits = self.radar_bev(batch)
        fused, bev = self.fuse(cam_bev, radar_bev, intensity_logits)
        out = dict(self.head(bev))
        out.update(cam_bev=cam_bev, radar_bev=radar_bev, intensity_logits=intensity_logits,
                   fused=fused, bev=bev)
        if depth_logits is not None:
            out["depth_logits"] = depth_logits
        return out


class Teacher(nn.Module):
    kind = "teacher"

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.grid = config.bev_grid
        self.encoder = LidarEncoder(config.lidar, self.grid)
        self.head_net = CenterHead(self.encoder.out_channels, config.num_classes, config.head)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        if "lidar_points" not in batch:
            raise KeyError("the LiDAR teacher needs 'lidar_points' in the batch "
                           "(preprocess with with_lidar=True on samples that carry LiDAR)")
        bev = self.encoder(batch["lidar_points"], batch.get("lidar_mask"))
        out = dict(self.head_net(bev))
        out["bev"] = bev
        return out


MODEL_KINDS: dict[str, type[nn.Module]] = {"student": Student, "teacher": Teacher}


def build_model(kind: str, config: ModelConfig) -> nn.Module:
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {sorted(MODEL_KINDS)}, not {kind!r}")
    return MODEL_KINDS[kind](config)


def freeze(model: nn.Module) -> nn.Module:
    """A frozen teacher: eval mode (BN statistics fixed), no parameter takes gradient."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def count_parameters(model: nn.Module | None) -> int:
    return 0 if model is None else sum(p.numel() for p in model.parameters())
