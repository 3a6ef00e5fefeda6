"""CenterPoint-style detection head on the BEV grid, its target encoding, loss and decoding.

Outputs per cell: class heatmap logits (K), sub-cell centre offset (2), z (1, geometric centre),
log size (l, w, h), (sin, cos) yaw, velocity (vx, vy). The regression code of a box whose centre
falls in cell (ix, iy) is

    [(x - x_min)/cell - ix, (y - y_min)/cell - iy, z, log l, log w, log h, sin yaw, cos yaw,
     vx, vy]

so decoding inverts it exactly: a box is recovered to float precision whenever its centre cell is
found, i.e. within grid quantisation (two boxes of one class in one cell: one survives).
Everything is torch and vectorised (Gaussians drawn for all boxes at once); only the greedy
circle-NMS walks its (at most `pre_nms_top_k`) candidates, on a precomputed suppression matrix.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from imkd_core.config import HeadConfig
from imkd_core.device import batch_normaliser
from imkd_core.geometry import BEVGrid
from imkd_core.models.resnet import conv_bn
from imkd_core.sample import CLASSES

REG_KEYS = (("offset", 2), ("z", 1), ("size", 3), ("rot", 2), ("vel", 2))
CODE_SIZE = 10


class CenterHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.shared = conv_bn(in_channels, cfg.channels, 3)

        def branch(cout: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            cin = cfg.channels
            for _ in range(cfg.branch_convs):
                layers.append(conv_bn(cin, cfg.branch_channels, 3))
                cin = cfg.branch_channels
            layers.append(nn.Conv2d(cin, cout, 1))
            return nn.Sequential(*layers)

        self.heatmap = branch(num_classes)
        nn.init.constant_(self.heatmap[-1].bias, -2.19)  # prior 0.1 (CenterNet)
        self.regs = nn.ModuleDict({name: branch(n) for name, n in REG_KEYS})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.shared(x)
        out = {"heatmap": self.heatmap(x)}
        for name, _ in REG_KEYS:
            out[name] = self.regs[name](x)
        return out


def regression_map(preds: dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's regression outputs stacked in code order: (B, 10, H, W)."""
    return torch.cat([preds[name] for name, _ in REG_KEYS], dim=1)


# ------------------------------------------------------------------------------------- targets
def class_map_tensor(classes: list[str], device=None) -> torch.Tensor:
    """Global CLASSES index -> model class index (or -1 when the model does not detect it)."""
    table = torch.full((len(CLASSES),), -1, dtype=torch.long, device=device)
    for i, name in enumerate(classes):
        table[CLASSES.index(name)] = i
    return table


def gaussian_radius(length: torch.Tensor, width: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """CenterNet/CenterPoint radius (in cells) for box extents in cells; vectorised."""
    h, w = length, width
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt((b1**2 - 4 * c1).clamp(min=0))) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt((b2**2 - 16 * c2).clamp(min=0))) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt((b3**2 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def encode_targets(boxes: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                   grid: BEVGrid, class_map: torch.Tensor, cfg: HeadConfig,
                   num_classes: int) -> dict[str, torch.Tensor]:
    """Ground truth (B, M, 9) boxes, (B, M) global labels, (B, M) mask -> targets:
    heatmap (B, K, ny, nx), index (B, M) flat cell, reg (B, M, 10), reg_mask (B, M) bool,
    label (B, M) model class. Boxes whose centre is outside the grid or whose class the model
    does not detect are masked out (not drawn)."""
    B = labels.shape[0]
    H, W = grid.ny, grid.nx
    device = boxes.device
    boxes = boxes.float()
    cls = class_map.to(device)[labels.clamp(min=0)]
    fx = (boxes[..., 0] - grid.x_min) / grid.cell
    fy = (boxes[..., 1] - grid.y_min) / grid.cell
    ix = torch.floor(fx).long()
    iy = torch.floor(fy).long()
    valid = mask.bool() & (cls >= 0) & (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    valid &= (boxes[..., 3] > 0) & (boxes[..., 4] > 0) & (boxes[..., 5] > 0)
    ix = ix.clamp(0, W - 1)
    iy = iy.clamp(0, H - 1)
    index = iy * W + ix
    reg = torch.stack([
        fx - ix, fy - iy, boxes[..., 2],
        torch.log(boxes[..., 3].clamp(min=1e-3)), torch.log(boxes[..., 4].clamp(min=1e-3)),
        torch.log(boxes[..., 5].clamp(min=1e-3)),
        torch.sin(boxes[..., 6]), torch.cos(boxes[..., 6]), boxes[..., 7], boxes[..., 8],
    ], dim=-1)

    heatmap = boxes.new_zeros((B * num_classes, H * W))
    if bool(valid.any()):
        b_idx, m_idx = valid.nonzero(as_tuple=True)
        radius = gaussian_radius(boxes[b_idx, m_idx, 3] / grid.cell,
                                 boxes[b_idx, m_idx, 4] / grid.cell, cfg.gaussian_overlap)
        radius = torch.clamp(torch.floor(radius), min=cfg.min_radius)  # int(), as CenterPoint
        sigma = (2 * radius + 1) / 6.0
        cx = ix[b_idx, m_idx].float()
        cy = iy[b_idx, m_idx].float()
        xs = torch.arange(W, device=device, dtype=torch.float32)
        ys = torch.arange(H, device=device, dtype=torch.float32)
        dx = xs[None, :] - cx[:, None]  # (N, W)
        dy = ys[None, :] - cy[:, None]  # (N, H)
        gx = torch.exp(-(dx**2) / (2 * sigma[:, None] ** 2)) * (dx.abs() <= radius[:, None])
        gy = torch.exp(-(dy**2) / (2 * sigma[:, None] ** 2)) * (dy.abs() <= radius[:, None])
        g = gy[:, :, None] * gx[:, None, :]  # (N, H, W): peak exactly 1 at the centre cell
        g = torch.where(g < torch.finfo(torch.float32).eps, torch.zeros_like(g), g)
        rows = (b_idx * num_classes + cls[b_idx, m_idx]).view(-1, 1).expand(-1, H * W)
        heatmap = heatmap.scatter_reduce(0, rows, g.view(-1, H * W), "amax", include_self=True)
    return {
        "heatmap": heatmap.view(B, num_classes, H, W),
        "index": index,
        "reg": reg,
        "reg_mask": valid,
        "label": cls.clamp(min=0),
    }


# ---------------------------------------------------------------------------------------- loss
def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
               beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss over a Gaussian heatmap, / number of peaks."""
    logits = logits.float()
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_1mp = F.logsigmoid(-logits)
    pos = target.eq(1).float()
    neg = 1.0 - pos
    pos_loss = log_p * (1 - p) ** alpha * pos
    neg_loss = log_1mp * p**alpha * (1 - target) ** beta * neg
    num_pos = batch_normaliser(pos.sum(), minimum=1.0)  # over all DDP ranks
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos


def gather_cells(feature: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map, (B, M) flat cell indices -> (B, M, C)."""
    B, C = feature.shape[:2]
    flat = feature.reshape(B, C, -1)
    return flat.gather(2, index.unsqueeze(1).expand(B, C, index.shape[1])).transpose(1, 2)


def detection_loss(preds: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                   cfg: HeadConfig) -> dict[str, torch.Tensor]:
    """Weighted focal heatmap loss + L1 over the regression code at GT centres."""
    hm = focal_loss(preds["heatmap"], targets["heatmap"])
    reg = gather_cells(regression_map(preds), targets["index"]).float()  # (B, M, 10)
    mask = targets["reg_mask"].float().unsqueeze(-1)
    weights = torch.tensor(cfg.code_weights, device=reg.device, dtype=reg.dtype)
    l1 = (reg - targets["reg"]).abs() * mask * weights
    bbox = l1.sum() / batch_normaliser(mask.sum(), minimum=1.0)
    return {"heatmap": cfg.heatmap_weight * hm, "bbox": cfg.bbox_weight * bbox}


# -------------------------------------------------------------------------------------- decode
def circle_nms_keep(xy: torch.Tensor, labels: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Greedy NMS on score-sorted candidates: a box suppresses later boxes of its class whose
    centre lies within the class's radius (metres). Returns kept indices (sorted input order)."""
    n = xy.shape[0]
    if n == 0:
        return torch.zeros((0,), dtype=torch.long, device=xy.device)
    dist = torch.cdist(xy.float(), xy.float())
    same = labels[:, None] == labels[None, :]
    close = same & (dist <= radius[labels][:, None])
    close = torch.triu(close, diagonal=1).cpu().numpy()
    # Only boxes close to another can suppress or be suppressed: run the sequential greedy
    # pass over those alone (same result, and most candidates are usually not involved).
    involved = np.flatnonzero(close.any(axis=0) | close.any(axis=1))
    close = close[np.ix_(involved, involved)]
    removed_involved = np.zeros(len(involved), dtype=bool)
    for k in range(len(involved)):
        if not removed_involved[k]:
            removed_involved |= close[k]
    removed = np.zeros(n, dtype=bool)
    removed[involved] = removed_involved
    return torch.as_tensor(np.flatnonzero(~removed), dtype=torch.long, device=xy.device)


@torch.no_grad()
def decode(preds: dict[str, torch.Tensor], grid: BEVGrid, cfg: HeadConfig,
           classes: list[str]) -> list[dict[str, torch.Tensor]]:
    """Head outputs -> per sample {'boxes' (n, 9) ego frame, 'scores' (n,), 'labels' (n,)
    global CLASSES indices}, sorted by score."""
    heat = torch.sigmoid(preds["heatmap"].float())
    B, K, H, W = heat.shape
    peaks = F.max_pool2d(heat, 3, stride=1, padding=1)
    heat = heat * (heat == peaks)
    reg = regression_map(preds).float().reshape(B, CODE_SIZE, H * W)
    global_labels = torch.tensor([CLASSES.index(c) for c in classes], device=heat.device)
    nms_radius = torch.tensor(cfg.nms_radius, device=heat.device, dtype=torch.float32)
    top_k = min(cfg.pre_nms_top_k, K * H * W)
    results = []
    for b in range(B):
        scores, inds = heat[b].reshape(-1).topk(top_k)
        keep = scores >= cfg.score_threshold
        scores, inds = scores[keep], inds[keep]
        cls = inds // (H * W)
        cell = inds % (H * W)
        code = reg[b][:, cell].T  # (n, 10)
        x = (cell % W).float() + code[:, 0]
        y = (cell // W).float() + code[:, 1]
        boxes = torch.stack([
            grid.x_min + x * grid.cell, grid.y_min + y * grid.cell, code[:, 2],
            torch.exp(code[:, 3].clamp(max=6)), torch.exp(code[:, 4].clamp(max=6)),
            torch.exp(code[:, 5].clamp(max=6)),
            torch.atan2(code[:, 6], code[:, 7]), code[:, 8], code[:, 9],
        ], dim=1)
        labels = global_labels[cls]
        if cfg.nms == "circle" and boxes.shape[0] > 1:
            kept = circle_nms_keep(boxes[:, :2], labels, nms_radius)
            boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
        n = min(cfg.max_detections, boxes.shape[0])
        results.append({"boxes": boxes[:n], "scores": scores[:n], "labels": labels[:n]})
    return results


def soft_center_heatmap(targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, 1, H, W): max over classes of the GT Gaussian heatmap (Stage 2's label term)."""
    return targets["heatmap"].amax(dim=1, keepdim=True)

