"""Geometry every stage shares: SE(3), quaternions, box conversions, camera projection, BEV grid.

Conventions (docs/ARCHITECTURE.md §Conventions): quaternions are nuScenes-ordered
`[w, x, y, z]`; transforms are 4x4 homogeneous matrices named `T_to_from` (so
`T_map_ego @ p_ego = p_map`); internal boxes are `(x, y, z, l, w, h, yaw, vx, vy)` in the ego
frame with z at the geometric centre; nuScenes boxes are global-frame `translation`,
`size = [w, l, h]`, `rotation = [w, x, y, z]`, `velocity`.
Conversions between the two happen here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# --------------------------------------------------------------------------- quaternions / SE(3)
def quaternion_to_matrix(q_wxyz) -> np.ndarray:
    """(…, 4) `[w, x, y, z]` quaternions -> (…, 3, 3) rotation matrices (normalised first)."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rot = np.empty((*q.shape[:-1], 3, 3))
    rot[..., 0, 0] = 1 - 2 * (y * y + z * z)
    rot[..., 0, 1] = 2 * (x * y - z * w)
    rot[..., 0, 2] = 2 * (x * z + y * w)
    rot[..., 1, 0] = 2 * (x * y + z * w)
    rot[..., 1, 1] = 1 - 2 * (x * x + z * z)
    rot[..., 1, 2] = 2 * (y * z - x * w)
    rot[..., 2, 0] = 2 * (x * z - y * w)
    rot[..., 2, 1] = 2 * (y * z + x * w)
    rot[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return rot


def matrix_to_quaternion(rot) -> np.ndarray:
    """(3, 3) rotation matrix -> `[w, x, y, z]` with w >= 0 (Shepperd's method, stable)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def yaw_to_quaternion(yaw) -> np.ndarray:
    """(…,) yaw about +z -> (…, 4) `[w, x, y, z]`."""
    yaw = np.asarray(yaw, dtype=np.float64)
    q = np.zeros((*yaw.shape, 4))
    q[..., 0] = np.cos(yaw / 2)
    q[..., 3] = np.sin(yaw / 2)
    return q


def quaternion_yaw(q_wxyz) -> np.ndarray:
    """(…, 4) quaternions -> (…,) yaw: the heading of the rotated x axis projected on xy."""
    rot = quaternion_to_matrix(q_wxyz)
    return np.arctan2(rot[..., 1, 0], rot[..., 0, 0])


def make_transform(rotation, translation) -> np.ndarray:
    """4x4 transform from a `[w, x, y, z]` quaternion or a 3x3 matrix, and a translation."""
    rotation = np.asarray(rotation, dtype=np.float64)
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation) if rotation.shape == (4,) else rotation
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def invert_transform(T) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (uses R^T, not a general inverse)."""
    T = np.asarray(T, dtype=np.float64)
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inv


def transform_points(T, points) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3+) points; columns past xyz are passed through unchanged."""
    points = np.asarray(points)
    out = points.copy()
    xyz = points[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    out[:, :3] = xyz.astype(points.dtype)
    return out


def rotate_vectors(T, vectors) -> np.ndarray:
    """Rotate (N, 2) or (N, 3) vectors (velocities) by the rotation part of T; 2D means z=0."""
    vectors = np.asarray(vectors, dtype=np.float64)
    full = np.zeros((vectors.shape[0], 3))
    full[:, : vectors.shape[1]] = vectors
    return (full @ T[:3, :3].T)[:, : vectors.shape[1]]


def wrap_angle(angle) -> np.ndarray:
    """Angles to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


# ------------------------------------------------------------------------------- box conversions
def nuscenes_to_ego_boxes(translation, size_wlh, rotation_wxyz, velocity, T_map_ego) -> np.ndarray:
    """nuScenes global boxes -> internal (N, 9) `(x, y, z, l, w, h, yaw, vx, vy)` ego boxes.

    translation (N, 3), size_wlh (N, 3), rotation_wxyz (N, 4), velocity (N, 2|3) in the global
    frame (NaN velocity, as the devkit gives for single-frame tracks, becomes 0).
    """
    translation = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
    size_wlh = np.asarray(size_wlh, dtype=np.float64).reshape(-1, 3)
    rotation_wxyz = np.asarray(rotation_wxyz, dtype=np.float64).reshape(-1, 4)
    velocity = np.nan_to_num(np.asarray(velocity, dtype=np.float64))
    velocity = velocity.reshape(len(translation), -1) if velocity.size else np.zeros((0, 2))
    T_ego_map = invert_transform(T_map_ego)
    boxes = np.zeros((len(translation), 9))
    boxes[:, :3] = transform_points(T_ego_map, translation)
    boxes[:, 3] = size_wlh[:, 1]
    boxes[:, 4] = size_wlh[:, 0]
    boxes[:, 5] = size_wlh[:, 2]
    if len(translation):
        rot_ego = T_ego_map[:3, :3] @ quaternion_to_matrix(rotation_wxyz)
        boxes[:, 6] = np.arctan2(rot_ego[:, 1, 0], rot_ego[:, 0, 0])
        boxes[:, 7:9] = rotate_vectors(T_ego_map, velocity[:, :2])
    return boxes


def ego_to_nuscenes_boxes(boxes, T_map_ego) -> dict[str, np.ndarray]:
    """Internal (N, 9) ego boxes -> nuScenes global `translation`, `size` (wlh), `rotation`
    (`[w, x, y, z]`) and `velocity` (N, 2), as the detection submission format wants them."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 9)
    T_map_ego = np.asarray(T_map_ego, dtype=np.float64)
    translation = transform_points(T_map_ego, boxes[:, :3])
    size = boxes[:, [4, 3, 5]]
    rot_global = T_map_ego[:3, :3] @ quaternion_to_matrix(yaw_to_quaternion(boxes[:, 6]))
    rotation = np.array([matrix_to_quaternion(r) for r in rot_global]).reshape(-1, 4)
    velocity = rotate_vectors(T_map_ego, boxes[:, 7:9])
    return {"translation": translation, "size": size, "rotation": rotation, "velocity": velocity}


def box_corners(boxes) -> np.ndarray:
    """(N, 7+) boxes -> (N, 8, 3) corners. Order: the bottom face (z-) then the top face, each
    counter-clockwise from (+l/2, +w/2) seen from above."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, boxes.shape[-1] if len(boxes) else 9)
    signs = np.array(
        [[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1],
         [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]], dtype=np.float64)
    local = signs[None] * boxes[:, None, 3:6] / 2.0  # (N, 8, 3)
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    x = local[..., 0] * cos[:, None] - local[..., 1] * sin[:, None]
    y = local[..., 0] * sin[:, None] + local[..., 1] * cos[:, None]
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]


# The 12 edges of `box_corners` as 24 corner indices, consecutive pairs (a LINE_LIST).
BOX_EDGES = np.array([0, 1, 1, 2, 2, 3, 3, 0, 4, 5, 5, 6, 6, 7, 7, 4, 0, 4, 1, 5, 2, 6, 3, 7])


def points_in_boxes(points, boxes) -> np.ndarray:
    """(P, 3+) points, (N, 7+) boxes -> (N, P) bool: point inside the (yawed) box."""
    points = np.asarray(points, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    d = points[None, :, :3] - boxes[:, None, :3]  # (N, P, 3)
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    local_x = d[..., 0] * cos + d[..., 1] * sin
    local_y = -d[..., 0] * sin + d[..., 1] * cos
    return (
        (np.abs(local_x) <= boxes[:, None, 3] / 2)
        & (np.abs(local_y) <= boxes[:, None, 4] / 2)
        & (np.abs(d[..., 2]) <= boxes[:, None, 5] / 2)
    )


# ------------------------------------------------------------------------------------- cameras
def project_to_image(points_ego, T_ego_cam, K) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3+) ego points -> (N, 2) pixel coordinates and (N,) depth along the optical axis.
    Points behind the camera get depth <= 0; callers mask them."""
    pts_cam = transform_points(invert_transform(T_ego_cam), np.asarray(points_ego)[:, :3])
    depth = pts_cam[:, 2].astype(np.float64)
    uvw = pts_cam[:, :3].astype(np.float64) @ np.asarray(K, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, depth


# ------------------------------------------------------------------------------------ BEV grid
@dataclass(frozen=True)
class BEVGrid:
    """The one bird's-eye-view grid that every branch, target and loss uses.

    Cells are indexed `[row, col] = [iy, ix]`; cell (0, 0) covers `[x_min, x_min + cell) x
    [y_min, y_min + cell)`. A feature map of this grid has shape (…, ny, nx).
    """

    x_min: float = -51.2
    x_max: float = 51.2
    y_min: float = -51.2
    y_max: float = 51.2
    z_min: float = -5.0
    z_max: float = 3.0
    cell: float = 0.8

    @property
    def nx(self) -> int:
        return round((self.x_max - self.x_min) / self.cell)

    @property
    def ny(self) -> int:
        return round((self.y_max - self.y_min) / self.cell)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ny, self.nx)

    def downsampled(self, factor: int) -> BEVGrid:
        """The same extent at `factor` times coarser cells (e.g. a head's output stride)."""
        return BEVGrid(self.x_min, self.x_max, self.y_min, self.y_max, self.z_min, self.z_max,
                       self.cell * factor)

    def point_to_cell(self, xy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 2+) ego points -> integer (ix, iy) and a mask of points inside the grid extent."""
        xy = np.asarray(xy, dtype=np.float64)
        ix = np.floor((xy[:, 0] - self.x_min) / self.cell).astype(np.int64)
        iy = np.floor((xy[:, 1] - self.y_min) / self.cell).astype(np.int64)
        inside = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        if xy.shape[1] >= 3:
            inside &= (xy[:, 2] >= self.z_min) & (xy[:, 2] < self.z_max)
        return ix, iy, inside

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """x (nx,) and y (ny,) coordinates of the cell centres."""
        xs = self.x_min + (np.arange(self.nx) + 0.5) * self.cell
        ys = self.y_min + (np.arange(self.ny) + 0.5) * self.cell
        return xs, ys
