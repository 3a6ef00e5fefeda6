"""Sample -> model tensors. The ONE preprocessing path: offline training/evaluation and the ROS
node all call `Preprocessor` (the node through `DetectorPipeline.preprocess`).

Per sample (unbatched; `collate` pads and stacks):
- `images` (N, 3, H, W) float32, normalised; each camera image is resized (antialiased
  bilinear) so its width fits the model width (x a training-time factor), then cropped/padded to
  H x W (vertical window placed by `image.crop_anchor_v`), then optionally flipped. The same 2D
  affine map `image_aug` A (3x3, pixel centres on integers) is folded into the intrinsics:
  `intrinsics = A @ K`, so `intrinsics @ p_cam` lands on the augmented pixel of p.
  A missing camera gives a zero image, `cam_valid` False and a placeholder calibration; in
  training, `augment.camera_dropout` / `radar_dropout` take sensors away the same way.
- `bev_aug` (4, 4): flip-x/flip-y, then rotation about z, then isotropic scale. It is applied to
  every point cloud (xyz; radar velocities too), every box (centre, size, yaw, velocity) and every
  camera extrinsic (`cam2ego = bev_aug @ T_ego_cam`), so the teacher voxels, the radar pillars,
  the camera lift-splat, the intensity map and the targets all see one consistent scene.
- `radar_points` (P, 7) x, y, z, rcs, vx_comp, vy_comp, dt of all radars; `lidar_points`
  (P, 5) x, y, z, intensity (raw), dt, only `with_lidar`; both filtered to the grid extent and
  subsampled to `max_points` (random in training, evenly strided otherwise: deterministic).
- `gt_boxes` (M, 9) and `gt_labels` (M,) (global CLASSES indices) when the sample has GT: the
  boxes the devkit evaluates (`evaluated_boxes`: at least one LiDAR or radar point).
After `collate`: a leading batch dim, and `radar_mask`, `lidar_mask`, `gt_mask` (B, P) for the
padded keys.

Each camera's model input depends only on its own image and the augmentation, so a caller that
receives images one at a time (the ROS node) can run `Preprocessor.prepare_image` as each image
arrives and hand the results to `__call__` (`prepared=`): the same function on the same
pixels, so the tensors are identical, but the resizing is off the path from a complete frame
to its detections.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from imkd_core.config import AugmentConfig, ModelConfig
from imkd_core.sample import RADAR_MODEL_COLUMNS, Boxes, Sample

PADDED_KEYS = {"radar_points": "radar_mask", "lidar_points": "lidar_mask",
               "gt_boxes": "gt_mask", "gt_labels": None}


@dataclass
class AugParams:
    """One draw of the augmentation; the identity by default (what inference uses)."""

    image_scale: float = 1.0  # extra resize factor on top of the fit-width scale
    crop_dx: int = 0  # crop window offset from its nominal place, pixels of the resized image
    crop_dy: int = 0
    image_flip: bool = False
    bev_rotation: float = 0.0  # radians about +z
    bev_scale: float = 1.0
    bev_flip_x: bool = False
    bev_flip_y: bool = False
    cameras_out: tuple[str, ...] = ()  # modality dropout: fed as absent cameras
    radars_out: bool = False  # modality dropout: no radar points

    @classmethod
    def draw(cls, cfg: AugmentConfig, rng: np.random.Generator, height: int,
             width: int, cameras: Sequence[str] = ()) -> AugParams:
        jitter = cfg.image_crop_jitter
        params = cls(
            image_scale=float(rng.uniform(*cfg.image_scale)),
            crop_dx=round(rng.uniform(-jitter, jitter) * width),
            crop_dy=round(rng.uniform(-jitter, jitter) * height),
            image_flip=bool(rng.random() < cfg.image_flip),
            bev_rotation=float(np.deg2rad(rng.uniform(-cfg.bev_rotation_deg,
                                                      cfg.bev_rotation_deg))),
            bev_scale=float(rng.uniform(*cfg.bev_scale)),
            bev_flip_x=bool(rng.random() < cfg.bev_flip_x),
            bev_flip_y=bool(rng.random() < cfg.bev_flip_y),
        )
        # drawn last and only when enabled, so runs without dropout keep their random streams
        if cfg.camera_dropout > 0:
            params.cameras_out = tuple(name for name in cameras
                                       if rng.random() < cfg.camera_dropout)
        if cfg.radar_dropout > 0:
            params.radars_out = bool(rng.random() < cfg.radar_dropout)
        return params


def bev_matrix(aug: AugParams) -> np.ndarray:
    """4x4 BEV augmentation: p' = s * Rz(theta) @ Flip @ p."""
    flip = np.diag([-1.0 if aug.bev_flip_x else 1.0, -1.0 if aug.bev_flip_y else 1.0, 1.0])
    c, s = math.cos(aug.bev_rotation), math.sin(aug.bev_rotation)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    A = np.eye(4)
    A[:3, :3] = aug.bev_scale * rot @ flip
    return A


@dataclass(frozen=True)
class ImageTransform:
    """Resize to (resized_h, resized_w), crop the window at (x0, y0) (negative: padding) of
    size (out_h, out_w), then flip. `matrix` maps original pixel coords to output ones."""

    resized_h: int
    resized_w: int
    x0: int
    y0: int
    out_h: int
    out_w: int
    flip: bool
    matrix: np.ndarray


def image_transform(orig_h: int, orig_w: int, out_h: int, out_w: int, anchor_v: float,
                    aug: AugParams) -> ImageTransform:
    scale = out_w / orig_w * aug.image_scale
    rh, rw = max(1, round(orig_h * scale)), max(1, round(orig_w * scale))
    sx, sy = rw / orig_w, rh / orig_h  # the exact factors interpolate(size=...) applies
    x0 = round((rw - out_w) / 2.0) + aug.crop_dx
    y0 = round((rh - out_h) * anchor_v) + aug.crop_dy
    # pixel centres on integers: u' = sx * (u + 0.5) - 0.5 (align_corners=False resize)
    S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    C = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    Fl = np.array([[-1.0, 0.0, out_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if aug.image_flip \
        else np.eye(3)
    return ImageTransform(rh, rw, x0, y0, out_h, out_w, aug.image_flip, Fl @ C @ S)


def transform_image(image: np.ndarray, tf: ImageTransform, mean: torch.Tensor, std: torch.Tensor,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, out_h, out_w) float32 normalised; padding is 0 (= the mean)."""
    img = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    img = img.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W), channels-last in memory
    # On the CPU, torch resizes uint8 channels-last images in a vectorised kernel about 15x
    # faster than float (a nuScenes 1600x900 camera: ~1 ms vs ~15 ms); it rounds to whole grey
    # levels. Other devices resize in float.
    if img.device.type != "cpu":
        img = img.float()
    if (tf.resized_h, tf.resized_w) != tuple(img.shape[-2:]):
        antialias = tf.resized_w < img.shape[-1]
        img = F.interpolate(img, size=(tf.resized_h, tf.resized_w), mode="bilinear",
                            align_corners=False, antialias=antialias)
    img = img[0].float()
    out = img.new_zeros((3, tf.out_h, tf.out_w))
    # overlap of the crop window [y0, y0+out_h) x [x0, x0+out_w) with the resized image
    ys, ye = max(tf.y0, 0), min(tf.y0 + tf.out_h, tf.resized_h)
    xs, xe = max(tf.x0, 0), min(tf.x0 + tf.out_w, tf.resized_w)
    if ye > ys and xe > xs:
        patch = (img[:, ys:ye, xs:xe] - mean.to(img.device)[:, None, None]) / \
            std.to(img.device)[:, None, None]
        out[:, ys - tf.y0:ye - tf.y0, xs - tf.x0:xe - tf.x0] = patch
    if tf.flip:
        out = out.flip(-1)
    return out


@dataclass(frozen=True)
class PreparedImage:
    """One camera image as the model takes it: `tensor` (3, H, W) float32 normalised, on the
    preprocessor's device; `matrix` (3, 3) maps original pixels to model-input pixels; `source`
    is the original image's shape (H, W, 3), checked against the sample's image when used."""

    tensor: torch.Tensor
    matrix: np.ndarray
    source: tuple[int, ...]


def augment_points(points: np.ndarray, A: np.ndarray, velocity_cols: tuple[int, ...] = ()
                   ) -> np.ndarray:
    """Apply the BEV augmentation to (N, F) points: xyz, and (vx, vy) column pairs."""
    out = np.array(points, dtype=np.float32, copy=True)
    if len(out) == 0:
        return out
    out[:, :3] = (points[:, :3].astype(np.float64) @ A[:3, :3].T).astype(np.float32)
    for c in velocity_cols:
        v = points[:, c:c + 2].astype(np.float64) @ A[:2, :2].T
        out[:, c:c + 2] = v.astype(np.float32)
    return out


def augment_boxes(boxes: np.ndarray, A: np.ndarray) -> np.ndarray:
    """(M, 9) ego boxes -> boxes in the augmented frame (A: flip, rotation, isotropic scale)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 9)
    out = boxes.copy()
    if len(boxes) == 0:
        return out
    L = A[:3, :3]
    scale = float(np.cbrt(abs(np.linalg.det(L))))
    out[:, :3] = boxes[:, :3] @ L.T
    out[:, 3:6] = boxes[:, 3:6] * scale
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6])], axis=1) @ L[:2, :2].T
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    out[:, 7:9] = boxes[:, 7:9] @ L[:2, :2].T
    return out


def subsample(n: int, max_points: int, rng: np.random.Generator | None) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    if rng is not None:
        return np.sort(rng.choice(n, max_points, replace=False))
    return np.linspace(0, n - 1, max_points).round().astype(np.int64)


def ground_last_subsample(z: np.ndarray, max_points: int, ground_below: float | None,
                          rng: np.random.Generator | None) -> np.ndarray:
    """Indices of at most `max_points` points: those at or above `ground_below` first (a
    subsample of them when they alone are too many), then ground points to fill the budget.
    `ground_below=None`: `subsample`, uniform over all points."""
    if ground_below is None or len(z) <= max_points:
        return subsample(len(z), max_points, rng)
    above = np.flatnonzero(z >= ground_below)
    if len(above) >= max_points:
        return above[subsample(len(above), max_points, rng)]
    ground = np.flatnonzero(z < ground_below)
    fill = ground[subsample(len(ground), max_points - len(above), rng)]
    return np.sort(np.concatenate([above, fill]))


class Preprocessor:
    """`Preprocessor(config, train)(sample)` -> dict of CPU (or `device`) tensors, unbatched."""

    def __init__(self, config: ModelConfig, train: bool = False, with_lidar: bool = False,
                 device: torch.device | str = "cpu"):
        self.config = config
        self.train = train
        self.with_lidar = with_lidar
        self.device = torch.device(device)
        self.grid = config.bev_grid
        self.mean = torch.tensor(config.image.mean, dtype=torch.float32)
        self.std = torch.tensor(config.image.std, dtype=torch.float32)

    def draw_aug(self, rng: np.random.Generator) -> AugParams:
        if not (self.train and self.config.augment.enabled):
            return AugParams()
        return AugParams.draw(self.config.augment, rng, self.config.image.height,
                              self.config.image.width, self.config.image.cameras)

    def _inside(self, points: np.ndarray) -> np.ndarray:
        g = self.grid
        return ((points[:, 0] >= g.x_min) & (points[:, 0] < g.x_max) & (points[:, 1] >= g.y_min)
                & (points[:, 1] < g.y_max) & (points[:, 2] >= g.z_min) & (points[:, 2] < g.z_max))

    def prepare_image(self, image: np.ndarray, aug: AugParams | None = None) -> PreparedImage:
        """(H, W, 3) uint8 camera image -> its model input (`aug`: the identity by default)."""
        cfg = self.config.image
        tf = image_transform(image.shape[0], image.shape[1], cfg.height, cfg.width,
                             cfg.crop_anchor_v, aug or AugParams())
        return PreparedImage(transform_image(image, tf, self.mean, self.std, self.device),
                             tf.matrix, tuple(image.shape))

    def __call__(self, sample: Sample, aug: AugParams | None = None,
                 rng: np.random.Generator | None = None,
                 prepared: Mapping[str, PreparedImage] | None = None) -> dict[str, torch.Tensor]:
        """`prepared`: camera name -> `prepare_image(sample.cameras[name].image)` made earlier
        with the identity augmentation (evaluation only); cameras not in it are prepared here."""
        cfg = self.config
        if aug is None:
            if self.train and rng is None:
                rng = np.random.default_rng()
            aug = self.draw_aug(rng) if self.train else AugParams()
        prepared = prepared or {}
        if prepared and aug != AugParams():
            raise ValueError("prepared images are made without augmentation; "
                             "pass prepared=None when augmenting")
        point_rng = rng if self.train else None
        A = bev_matrix(aug)
        H, W = cfg.image.height, cfg.image.width
        device = self.device

        images, Ks, Ts, valid = [], [], [], []
        image_aug = None
        for name in cfg.image.cameras:
            cam = None if name in aug.cameras_out else sample.cameras.get(name)
            if cam is None or cam.image is None or cam.image.size == 0:
                images.append(torch.zeros((3, H, W), device=device))
                Ks.append(np.array([[W, 0.0, (W - 1) / 2], [0.0, W, (H - 1) / 2], [0, 0, 1.0]]))
                Ts.append(A.copy())
                valid.append(False)
                continue
            image = prepared.get(name)
            if image is None:
                image = self.prepare_image(cam.image, aug)
            elif image.source != cam.image.shape:
                raise ValueError(f"{name}: prepared image was made from a {image.source} image, "
                                 f"the sample's is {cam.image.shape}")
            images.append(image.tensor)
            Ks.append(image.matrix @ np.asarray(cam.K, dtype=np.float64))
            Ts.append(A @ np.asarray(cam.T_ego_cam, dtype=np.float64))
            valid.append(True)
            image_aug = image.matrix if image_aug is None else image_aug
        out: dict[str, torch.Tensor] = {
            "images": torch.stack(images) if images else torch.zeros((0, 3, H, W)),
            "cam_valid": torch.tensor(valid, dtype=torch.bool),
            "intrinsics": torch.tensor(np.array(Ks).reshape(-1, 3, 3), dtype=torch.float32),
            "cam2ego": torch.tensor(np.array(Ts).reshape(-1, 4, 4), dtype=torch.float32),
            "image_aug": torch.tensor(image_aug if image_aug is not None else np.eye(3),
                                      dtype=torch.float32),
            "bev_aug": torch.tensor(A, dtype=torch.float32),
        }

        n_cols = len(RADAR_MODEL_COLUMNS)  # the model's inputs lead RADAR_POINT_COLUMNS
        radar = np.asarray(sample.radar_points(), dtype=np.float32)[:, :n_cols]
        if aug.radars_out:
            radar = radar[:0]
        radar = augment_points(radar, A, velocity_cols=(4,))
        radar = radar[self._inside(radar)] if len(radar) else radar.reshape(0, n_cols)
        radar = radar[subsample(len(radar), cfg.radar.pillars.max_points, point_rng)]
        out["radar_points"] = torch.from_numpy(np.ascontiguousarray(radar))

        if self.with_lidar and sample.lidar is not None:
            lidar = np.asarray(sample.lidar.points, dtype=np.float32)[:, :5]
            lidar = augment_points(lidar, A)
            lidar = lidar[self._inside(lidar)] if len(lidar) else lidar.reshape(0, 5)
            lidar = lidar[ground_last_subsample(lidar[:, 2], cfg.lidar.pillars.max_points,
                                                cfg.lidar.ground_below, point_rng)]
            out["lidar_points"] = torch.from_numpy(np.ascontiguousarray(lidar))

        if sample.gt is not None:
            gt = evaluated_boxes(sample.gt)
            boxes = augment_boxes(gt.params, A)
            out["gt_boxes"] = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 9)
            out["gt_labels"] = torch.as_tensor(np.asarray(gt.labels), dtype=torch.long)
        return out


def evaluated_boxes(gt: Boxes) -> Boxes:
    """The ground truth the devkit scores: boxes with at least one LiDAR or radar point
    (mmdet3d's `valid_flag`). A box no sensor saw is not a target: learning to predict it
    teaches hallucination, and every such prediction is a false positive in the evaluation
    (on the world ~30 % of the boxes on the grid carry no point). Boxes without point counts
    (both None) are all kept."""
    if gt.num_lidar_pts is None and gt.num_radar_pts is None:
        return gt
    points = np.zeros(len(gt), dtype=np.int64)
    for counts in (gt.num_lidar_pts, gt.num_radar_pts):
        if counts is not None:
            points = points + np.asarray(counts, dtype=np.int64)
    return gt if bool((points > 0).all()) else gt.select(points > 0)


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-sample dicts; variable-length keys are zero-padded with a bool mask."""
    if not items:
        raise ValueError("collate: empty batch")
    batch: dict[str, torch.Tensor] = {}
    keys = set().union(*(item.keys() for item in items))
    for key in sorted(keys):
        if key in PADDED_KEYS:
            present = [item.get(key) for item in items]
            ref = next(t for t in present if t is not None)
            tensors = [t if t is not None else ref.new_zeros((0, *ref.shape[1:]))
                       for t in present]
            n = max(1, max(t.shape[0] for t in tensors))
            padded = ref.new_zeros((len(items), n, *ref.shape[1:]))
            mask = torch.zeros((len(items), n), dtype=torch.bool)
            for i, t in enumerate(tensors):
                padded[i, : t.shape[0]] = t
                mask[i, : t.shape[0]] = True
            batch[key] = padded
            if PADDED_KEYS[key] is not None:
                batch[PADDED_KEYS[key]] = mask
        else:
            if any(key not in item for item in items):
                raise KeyError(f"collate: {key!r} missing from some samples")
            tensors = [item[key] for item in items]
            # one sample (inference): a view, not a copy of six camera images
            batch[key] = tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)
    return batch


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str
              ) -> dict[str, torch.Tensor]:
    device = torch.device(device)
    return {k: v.to(device, non_blocking=device.type == "cuda") for k, v in batch.items()}
