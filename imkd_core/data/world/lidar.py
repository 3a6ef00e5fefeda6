"""A spinning 32-beam LiDAR (HDL-32E geometry), ray-cast against the world.

Each scan is taken at one instant (the sweep's timestamp) from the LiDAR's pose at that time and
written in the sensor frame as nuScenes does: float32 (x, y, z, intensity, ring), in firing
order (azimuth-major). Range noise is ~1-2 cm; returns from very dark surfaces are often lost;
intensity follows `materials.lidar_intensity` (surface, incidence, range) with speckle noise.
Rain attenuates returns, drops more of them and adds a few near-range droplet echoes.
"""

from __future__ import annotations

import numpy as np

from imkd_core.data.world.materials import lidar_intensity
from imkd_core.data.world.raycast import SphericalGrid, part_corners, surfaces, trace_pairs
from imkd_core.data.world.rig import LIDAR_ELEVATIONS_DEG
from imkd_core.data.world.scene import SceneModel, Snapshot

MIN_RANGE = 0.8


def lidar_grid(azimuth_steps: int) -> SphericalGrid:
    step = 2 * np.pi / azimuth_steps
    az = -np.pi + step * (np.arange(azimuth_steps) + 0.5)
    return SphericalGrid(np.radians(LIDAR_ELEVATIONS_DEG), az, wrap=True)


def candidate_parts(snap: Snapshot, origin: np.ndarray, max_range: float) -> np.ndarray:
    """Parts whose bounding sphere comes within max_range of the origin."""
    radius = np.linalg.norm(snap.part_half, axis=1)
    dist = np.linalg.norm(snap.part_centre - origin[None], axis=1)
    return np.flatnonzero(dist - radius < max_range)


def scan(scene: SceneModel, snap: Snapshot, T_world_lidar: np.ndarray, grid: SphericalGrid,
         rng: np.random.Generator, max_range: float) -> tuple[np.ndarray, np.ndarray]:
    """One LiDAR scan -> (N, 5) float32 points in the LiDAR frame and (N,) owner indices
    (-1 ground or nothing annotated, -3 rain echo)."""
    origin = T_world_lidar[:3, 3]
    R = T_world_lidar[:3, :3]
    dirs_w = (grid.dirs.reshape(-1, 3) @ R.T).reshape(grid.dirs.shape).astype(np.float32)
    parts = candidate_parts(snap, origin, max_range)
    corners = part_corners(snap, parts)
    corners_s = (corners - origin) @ R  # world -> sensor (R orthonormal)
    r0, r1, c0, ncols = grid.rects(corners_s)
    t, part = trace_pairs(origin, dirs_w, snap, parts, r0, r1, c0, ncols, max_range, wrap=True)
    rain = scene.condition == "rain"
    hit = np.flatnonzero(np.isfinite(t) & (t > MIN_RANGE))
    flat_dirs = dirs_w.reshape(-1, 3)
    surf = surfaces(origin, flat_dirs[hit], t[hit], part[hit], snap, scene.road)
    cos_inc = np.abs(np.einsum("ij,ij->i", surf.normal, flat_dirs[hit]))
    rng_m = t[hit]
    attenuation = np.exp(-0.006 * rng_m) if rain else 1.0
    clean = lidar_intensity(surf.material, cos_inc, rng_m, attenuation)
    p_drop = 0.004 + 0.5 * (clean < 0.6) + (0.03 + 0.002 * rng_m if rain else 0.0)
    keep = rng.random(len(hit)) >= p_drop
    hit, rng_m, clean, owner = hit[keep], rng_m[keep], clean[keep], surf.owner[keep]
    rng_m = rng_m + rng.normal(0.0, 0.012, len(hit)) + rng.normal(0.0, 1.0, len(hit)) * (
        0.0002 * rng_m)
    intensity = clean * np.exp(rng.normal(0.0, 0.08, len(hit))) + rng.normal(0.0, 0.6, len(hit))
    intensity = np.clip(np.rint(intensity), 0, 255)
    sensor_dirs = grid.dirs.reshape(-1, 3)[hit]
    xyz = sensor_dirs * rng_m[:, None]
    ring = hit // grid.shape[1]
    col = hit % grid.shape[1]
    pts = np.column_stack([xyz, intensity, ring]).astype(np.float32)
    if rain:  # droplet echoes close to the sensor
        n = int(rng.poisson(90))
        rows = rng.integers(0, grid.shape[0], n)
        cols = rng.integers(0, grid.shape[1], n)
        d = grid.dirs[rows, cols] * rng.uniform(1.0, 6.0, n)[:, None]
        echo = np.column_stack([d, rng.integers(0, 4, n), rows]).astype(np.float32)
        pts = np.concatenate([pts, echo])
        col = np.concatenate([col, cols])
        ring = np.concatenate([ring, rows])
        owner = np.concatenate([owner, np.full(n, -3)])
    order = np.lexsort((ring, col))  # firing order: azimuth, then beam
    return pts[order], owner[order]
