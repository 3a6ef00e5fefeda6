"""Synthetic `Sample`s with known geometry, for model tests and benchmarks (no dataset needed).

Six cameras in the nuScenes layout (K scaled to the requested image size), five radars, a
LiDAR, and random boxes of the 10 classes. Images are flat-shaded: each object's projected box
outline is filled with a class colour (far objects first), the rest is a sky/road gradient.
LiDAR returns lie on the object surfaces (class-dependent reflectance) and on the ground (weak);
radar returns sit near object centres (RCS, true velocity) plus clutter. It is not the project's
synthetic world (`imkd_core.data.world`): it only has to be cheap and geometrically exact.
"""

from __future__ import annotations

import numpy as np

from imkd_core.geometry import box_corners, make_transform, project_to_image
from imkd_core.sample import (
    CAMERA_NAMES,
    CLASSES,
    RADAR_NAMES,
    RADAR_POINT_COLUMNS,
    Boxes,
    CameraData,
    LidarData,
    RadarData,
    Sample,
)

# heading (deg) of each camera's optical axis in the ego frame, nuScenes-like
CAMERA_YAW_DEG = {"CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": -55.0, "CAM_BACK_RIGHT": -110.0,
                  "CAM_BACK": 180.0, "CAM_BACK_LEFT": 110.0, "CAM_FRONT_LEFT": 55.0}
RADAR_YAW_DEG = {"RADAR_FRONT": 0.0, "RADAR_FRONT_RIGHT": -90.0, "RADAR_BACK_RIGHT": -160.0,
                 "RADAR_BACK_LEFT": 160.0, "RADAR_FRONT_LEFT": 90.0}
# typical (l, w, h) per class, CLASSES order
CLASS_SIZES = np.array([[4.6, 1.9, 1.7], [6.9, 2.5, 2.8], [6.5, 2.8, 3.2], [11.0, 2.9, 3.5],
                        [12.0, 2.9, 3.9], [0.5, 2.5, 1.0], [2.1, 0.8, 1.5], [1.7, 0.6, 1.3],
                        [0.7, 0.7, 1.75], [0.4, 0.4, 1.0]])
CLASS_COLOURS = np.array([[200, 40, 40], [40, 200, 40], [200, 200, 40], [40, 40, 200],
                          [200, 40, 200], [40, 200, 200], [240, 140, 20], [140, 20, 240],
                          [250, 250, 250], [250, 120, 160]], dtype=np.uint8)
CLASS_REFLECTANCE = np.array([60, 50, 70, 55, 60, 120, 40, 30, 15, 200], dtype=np.float64)


def camera_extrinsic(yaw_deg: float, height: float = 1.5, forward: float = 1.0) -> np.ndarray:
    """T_ego_cam of an optical-frame camera (z forward, x right, y down) looking along yaw."""
    psi = np.deg2rad(yaw_deg)
    z_axis = np.array([np.cos(psi), np.sin(psi), 0.0])
    x_axis = np.array([np.sin(psi), -np.cos(psi), 0.0])
    y_axis = np.array([0.0, 0.0, -1.0])
    R = np.stack([x_axis, y_axis, z_axis], axis=1)
    return make_transform(R, [forward * np.cos(psi), forward * np.sin(psi), height])


def camera_intrinsic(height: int, width: int, back: bool = False) -> np.ndarray:
    f = (809.2 if back else 1266.4) * width / 1600.0
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0 + 0.02 * height],
                     [0.0, 0.0, 1.0]])


def random_boxes(rng: np.random.Generator, n: int, extent: float = 40.0,
                 min_separation: float = 3.0) -> Boxes:
    """`n` non-overlapping boxes on the ground, z = geometric centre."""
    params, labels = [], []
    tries = 0
    while len(params) < n and tries < 200 * n:
        tries += 1
        cls = int(rng.integers(len(CLASSES)))
        xy = rng.uniform(-extent, extent, size=2)
        if np.hypot(*xy) < 4.0:
            continue
        lwh = CLASS_SIZES[cls] * rng.uniform(0.9, 1.1, size=3)
        if any(np.hypot(*(xy - p[:2])) < max(min_separation, (lwh[0] + p[3]) / 2 + 0.5)
               for p in params):
            continue
        yaw = rng.uniform(-np.pi, np.pi)
        speed = rng.uniform(0, 8) if cls in (0, 1, 3, 6, 7) else rng.uniform(0, 1.5) * (cls == 8)
        params.append([xy[0], xy[1], lwh[2] / 2, *lwh, yaw, speed * np.cos(yaw),
                       speed * np.sin(yaw)])
        labels.append(cls)
    params = np.array(params, dtype=np.float64).reshape(-1, 9)
    return Boxes(params=params, labels=np.array(labels, dtype=np.int64),
                 num_lidar_pts=np.full(len(labels), 10, dtype=np.int64))


def render_image(boxes: Boxes, T_ego_cam: np.ndarray, K: np.ndarray, height: int,
                 width: int) -> np.ndarray:
    img = np.empty((height, width, 3), dtype=np.uint8)
    horizon = int(K[1, 2])
    rows = np.arange(height)[:, None]
    img[..., 0] = np.where(rows < horizon, 150, 80)
    img[..., 1] = np.where(rows < horizon, 180, 80)
    img[..., 2] = np.where(rows < horizon, 220, 90)
    if len(boxes) == 0:
        return img
    corners = box_corners(boxes.params)  # (M, 8, 3)
    depth_order = np.argsort(-np.hypot(boxes.params[:, 0], boxes.params[:, 1]))
    for i in depth_order:  # a handful of objects; painter's algorithm
        uv, depth = project_to_image(corners[i], T_ego_cam, K)
        if (depth <= 0.5).any():
            continue
        u0, v0 = np.floor(uv.min(0)).astype(int)
        u1, v1 = np.ceil(uv.max(0)).astype(int)
        u0, u1 = max(u0, 0), min(u1, width)
        v0, v1 = max(v0, 0), min(v1, height)
        if u1 > u0 and v1 > v0:
            shade = np.clip(1.2 - depth.mean() / 60.0, 0.4, 1.0)
            img[v0:v1, u0:u1] = (CLASS_COLOURS[boxes.labels[i]] * shade).astype(np.uint8)
    return img


def lidar_points(rng: np.random.Generator, boxes: Boxes, per_object: int = 150,
                 ground: int = 4000) -> np.ndarray:
    pts = []
    for p, cls in zip(boxes.params, boxes.labels):
        local = rng.uniform(-0.5, 0.5, size=(per_object, 3)) * p[3:6]
        face = rng.integers(0, 2, size=per_object)  # snap to a side face (l or w)
        local[face == 0, 0] = np.sign(local[face == 0, 0]) * p[3] / 2
        local[face == 1, 1] = np.sign(local[face == 1, 1]) * p[4] / 2
        c, s = np.cos(p[6]), np.sin(p[6])
        xyz = np.stack([local[:, 0] * c - local[:, 1] * s + p[0],
                        local[:, 0] * s + local[:, 1] * c + p[1], local[:, 2] + p[2]], 1)
        inten = np.clip(rng.normal(CLASS_REFLECTANCE[cls], 10, per_object), 0, 255)
        pts.append(np.concatenate([xyz, inten[:, None], np.zeros((per_object, 1))], 1))
    r = np.sqrt(rng.uniform(3**2, 50**2, ground))
    a = rng.uniform(-np.pi, np.pi, ground)
    pts.append(np.stack([r * np.cos(a), r * np.sin(a), rng.normal(0, 0.03, ground),
                         rng.uniform(0, 12, ground), np.zeros(ground)], 1))
    return np.concatenate(pts, 0).astype(np.float32)


def radar_clouds(rng: np.random.Generator, boxes: Boxes, clutter: int = 30,
                 sweeps: int = 3) -> dict[str, RadarData]:
    cols = len(RADAR_POINT_COLUMNS)
    rows = []
    for p, cls in zip(boxes.params, boxes.labels):
        for _ in range(int(rng.integers(1, 4)) * sweeps):
            row = np.zeros(cols, dtype=np.float32)
            row[:2] = p[:2] + rng.normal(0, 0.4, 2)
            row[2] = 0.5
            row[3] = (10.0 if cls < 5 else 0.0) + rng.normal(0, 2)
            row[4:6] = p[7:9] + rng.normal(0, 0.2, 2)
            row[6] = rng.uniform(0, 0.3)
            rows.append(row)
    for _ in range(clutter):
        row = np.zeros(cols, dtype=np.float32)
        row[:2] = rng.uniform(-50, 50, 2)
        row[2] = 0.5
        row[3] = rng.normal(-5, 3)
        row[6] = rng.uniform(0, 0.3)
        rows.append(row)
    pts = np.array(rows, dtype=np.float32).reshape(-1, cols)
    az = np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))
    yaws = np.array([RADAR_YAW_DEG[n] for n in RADAR_NAMES])
    diff = np.abs((az[:, None] - yaws[None] + 180) % 360 - 180)
    owner = diff.argmin(1)
    out = {}
    for i, name in enumerate(RADAR_NAMES):
        half = np.deg2rad(yaws[i]) / 2
        T = make_transform([np.cos(half), 0.0, 0.0, np.sin(half)], [0.0, 0.0, 0.5])
        out[name] = RadarData(points=pts[owner == i], T_ego_radar=T, stamp=0)
    return out


def make_sample(seed: int = 0, num_objects: int = 12, image_hw: tuple[int, int] = (225, 400),
                with_lidar: bool = True, with_radar: bool = True,
                boxes: Boxes | None = None) -> Sample:
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, num_objects) if boxes is None else boxes
    H, W = image_hw
    cameras = {}
    for name in CAMERA_NAMES:
        T = camera_extrinsic(CAMERA_YAW_DEG[name])
        K = camera_intrinsic(H, W, back=name == "CAM_BACK")
        cameras[name] = CameraData(image=render_image(boxes, T, K, H, W), K=K, T_ego_cam=T,
                                   stamp=0)
    lidar = None
    if with_lidar:
        lidar = LidarData(points=lidar_points(rng, boxes), T_ego_lidar=np.eye(4), stamp=0)
    radars = radar_clouds(rng, boxes) if with_radar else {}
    return Sample(token=f"synthetic-{seed}", timestamp=0, T_map_ego=np.eye(4), cameras=cameras,
                  radars=radars, lidar=lidar, gt=boxes, scene_name="synthetic")
