"""The losses of the student (detection + the IMKD stages) and of the teacher.

Our reading of IMKD (docs/ARCHITECTURE.md §IMKD), every term switchable with a weight
(`config.distill`):
- Stage 1, LiDAR -> radar: `adaptor1(radar BEV)` vs teacher BEV features, squared error
  (channel mean) weighted per cell by the intensity map I (LiDAR reflectance, or the teacher
  features' magnitude: `distill.intensity_map.source`);
- intensity prediction: the radar branch's intensity head vs I (BCE with soft targets);
  both radar terms skip the samples that have no radar point (modality dropout);
- Stage 2, LiDAR -> fused: `adaptor2(first k channels of the student's BEV features)` vs teacher
  BEV features, weighted by I x (soft GT heatmap + floor); with `stage2.levels` including
  `input`, also `adaptor2_input(fusion output)` (the BEV backbone's input) vs the same target;
- response distillation (optional): student heatmap vs teacher heatmap probabilities;
- depth supervision: per-pixel depth-bin cross entropy against the nearest LiDAR return
  projected into each camera at feature resolution.
Stage 3 is an architecture (the fusion), switched by `fusion.mode`.

The teacher is never trained through these losses: its outputs are detached here (and a frozen
teacher has `requires_grad=False` anyway). The adaptors are training-only modules owned by
`IMKDLoss`; give its parameters to the optimiser together with the student's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from imkd_core.config import ModelConfig
from imkd_core.device import batch_normaliser
from imkd_core.distill.intensity import feature_intensity_map, intensity_map
from imkd_core.models.head import (
    class_map_tensor,
    detection_loss,
    encode_targets,
    soft_center_heatmap,
)
from imkd_core.models.resnet import conv_bn


def adaptor(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(conv_bn(cin, cout, 3), nn.Conv2d(cout, cout, 1))


def weighted_feature_mse(student: torch.Tensor, teacher: torch.Tensor,
                         weight: torch.Tensor) -> torch.Tensor:
    """sum_cells w * mean_c (s - t)^2 / sum_cells w; zero (with a graph) when sum w = 0."""
    err = (student.float() - teacher.float()).pow(2).mean(dim=1, keepdim=True)
    return (err * weight).sum() / batch_normaliser(weight.sum(), minimum=1e-6)


def rms_normalise(features: torch.Tensor) -> torch.Tensor:
    rms = features.float().pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1e-6)
    return features / rms


def build_targets(batch: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Head targets from the batch's (augmented) GT boxes."""
    if "gt_boxes" not in batch:
        raise KeyError("the batch has no 'gt_boxes': training needs samples with ground truth")
    return encode_targets(batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"],
                          config.bev_grid, class_map_tensor(config.classes),
                          config.head, config.num_classes)


def lidar_depth_targets(points: torch.Tensor, mask: torch.Tensor | None, K: torch.Tensor,
                        T: torch.Tensor, image_hw: tuple[int, int], stride: int, d_min: float,
                        d_step: float, bins: int, cam_valid: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """(B, P, 3+) LiDAR points in the (augmented) ego frame, per-camera K (B, N, 3, 3) and
    cam2ego T (B, N, 4, 4) as in the batch -> (B, N, h, w) depth-bin index of the nearest
    return per feature cell, -1 where there is none. T may include the BEV augmentation (a
    similarity): inverting it recovers the original camera-frame depth exactly."""
    B, N = K.shape[:2]
    H, W = image_hw
    h, w = H // stride, W // stride
    with torch.no_grad():
        T_inv = torch.linalg.inv(T.double()).float()  # (B, N, 4, 4)
        xyz = points[..., :3].float()
        p_cam = torch.einsum("bnij,bpj->bnpi", T_inv[..., :3, :3], xyz) + \
            T_inv[..., None, :3, 3]
        uvw = torch.einsum("bnij,bnpj->bnpi", K.float(), p_cam)
        depth = p_cam[..., 2]
        z = uvw[..., 2].clamp(min=1e-6)
        u, v = uvw[..., 0] / z, uvw[..., 1] / z
        col = torch.floor((u + 0.5) / stride).long()
        row = torch.floor((v + 0.5) / stride).long()
        valid = (depth > 1e-3) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        if mask is not None:
            valid &= mask[:, None, :]
        if cam_valid is not None:
            valid &= cam_valid[:, :, None]
        bn = torch.arange(B * N, device=K.device).view(B, N, 1)
        flat = (bn * h + row.clamp(0, h - 1)) * w + col.clamp(0, w - 1)
        table = torch.full((B * N * h * w,), float("inf"), device=K.device)
        table = table.scatter_reduce(0, flat[valid], depth[valid], "amin", include_self=True)
        bin_idx = torch.floor((table - d_min) / d_step)
        ok = torch.isfinite(table) & (bin_idx >= 0) & (bin_idx < bins)
        out = torch.where(ok, bin_idx, torch.full_like(bin_idx, -1)).long()
    return out.view(B, N, h, w)


class IMKDLoss(nn.Module):
    """Everything the student trains on. `forward(student_out, batch, teacher_out)` returns a
    dict of weighted terms (`det_heatmap`, `det_bbox`, `stage1`, `intensity`, `stage2`,
    `response`, `depth`: only the enabled and computable ones) and their sum `total`.
    Terms that need LiDAR (I, depth) or the teacher are skipped when those are absent."""

    def __init__(self, config: ModelConfig, teacher_channels: int | None = None):
        super().__init__()
        self.config = config
        d = config.distill
        t_ch = teacher_channels or config.lidar.bev_backbone.out_channels
        self.adaptor1 = adaptor(config.radar.channels, t_ch) \
            if d.stage1.enabled and config.radar.enabled else None
        levels = d.stage2.levels if d.stage2.enabled else []
        self.adaptor2 = adaptor(d.stage2.channels, t_ch) if "output" in levels else None
        self.adaptor2_input = adaptor(config.fusion.channels, t_ch) if "input" in levels \
            else None

    def forward(self, student_out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                teacher_out: dict[str, torch.Tensor] | None = None,
                targets: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        cfg = self.config
        d = cfg.distill
        if targets is None:
            targets = build_targets(batch, cfg)
        losses = {f"det_{k}": v for k, v in detection_loss(student_out, targets, cfg.head).items()}

        has_lidar = "lidar_points" in batch
        t_bev = None
        if teacher_out is not None:
            t_bev = teacher_out["bev"].detach()
        imap = None
        if d.intensity_map.source == "teacher_features":
            if t_bev is not None:
                imap = feature_intensity_map(t_bev, d.intensity_map)
        elif has_lidar:
            imap = intensity_map(batch["lidar_points"], batch.get("lidar_mask"), cfg.bev_grid,
                                 d.intensity_map)
        # (B,) samples with radar returns; None when all have (the common case, kept exact)
        radar_present = None
        if "radar_mask" in batch:
            present = batch["radar_mask"].any(dim=1)
            if not bool(present.all()):
                radar_present = present.float()[:, None, None, None]

        if self.adaptor1 is not None and t_bev is not None and (imap is not None or
                                                                 not d.stage1.intensity_weighted):
            target = rms_normalise(t_bev) if d.stage1.normalize_teacher else t_bev
            w = imap if d.stage1.intensity_weighted else torch.ones_like(t_bev[:, :1])
            if radar_present is not None:
                w = w * radar_present
            pred = self.adaptor1(student_out["radar_bev"])
            losses["stage1"] = d.stage1.weight * weighted_feature_mse(pred, target, w)

        if d.intensity_prediction.enabled and imap is not None and cfg.radar.enabled:
            logits = student_out["intensity_logits"].float()
            if radar_present is None:
                bce = F.binary_cross_entropy_with_logits(logits, imap)
            else:
                per_cell = F.binary_cross_entropy_with_logits(logits, imap, reduction="none")
                w = radar_present.expand_as(per_cell)
                bce = (per_cell * w).sum() / batch_normaliser(w.sum(), minimum=1.0)
            losses["intensity"] = d.intensity_prediction.weight * bce

        stage2_levels = [(a, f) for a, f in ((self.adaptor2, "output"),
                                             (self.adaptor2_input, "input")) if a is not None]
        if stage2_levels and t_bev is not None and (imap is not None or
                                                    not d.stage2.intensity_weighted):
            s2 = d.stage2
            target = rms_normalise(t_bev) if s2.normalize_teacher else t_bev
            w = imap if s2.intensity_weighted else torch.ones_like(t_bev[:, :1])
            if s2.label_guided:
                w = w * (soft_center_heatmap(targets) + s2.floor)
            student_maps = {"output": student_out["bev"][:, : s2.channels],
                            "input": student_out["fused"]}
            losses["stage2"] = s2.weight * sum(
                weighted_feature_mse(a(student_maps[level]), target, w)
                for a, level in stage2_levels)

        if d.response.enabled and teacher_out is not None:
            t_prob = torch.sigmoid(teacher_out["heatmap"].detach().float())
            s_prob = torch.sigmoid(student_out["heatmap"].float())
            w = t_prob.amax(dim=1, keepdim=True) + 0.1
            err = (s_prob - t_prob).pow(2).mean(dim=1, keepdim=True)
            losses["response"] = d.response.weight * (err * w).sum() \
                / batch_normaliser(w.sum())

        if d.depth.enabled and has_lidar and "depth_logits" in student_out:
            logits = student_out["depth_logits"]  # (B, N, D, h, w)
            dc = cfg.camera.depth
            gt = lidar_depth_targets(batch["lidar_points"], batch.get("lidar_mask"),
                                     batch["intrinsics"], batch["cam2ego"],
                                     (cfg.image.height, cfg.image.width), cfg.camera.stride,
                                     dc.d_min, dc.d_step, dc.num_bins, batch.get("cam_valid"))
            flat_logits = logits.permute(0, 1, 3, 4, 2).reshape(-1, logits.shape[2]).float()
            flat_gt = gt.reshape(-1)
            sel = flat_gt >= 0
            if bool(sel.any()):
                ce = F.cross_entropy(flat_logits[sel], flat_gt[sel], reduction="sum") \
                    / batch_normaliser(sel.sum().float())
            else:
                ce = flat_logits.sum() * 0.0
            losses["depth"] = d.depth.weight * ce

        losses["total"] = sum(losses.values())
        return losses


def teacher_loss(teacher_out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                 config: ModelConfig, targets: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
    """The teacher trains on detection only."""
    if targets is None:
        targets = build_targets(batch, config)
    losses = {f"det_{k}": v for k, v in detection_loss(teacher_out, targets, config.head).items()}
    losses["total"] = sum(losses.values())
    return losses
