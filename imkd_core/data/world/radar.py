"""Continental ARS 408-like radar: sparse cluster detections in the nuScenes 18-field format.

A horizontal fan of rays (3 elevations x 0.5 deg azimuth, +-60 deg, range by azimuth as the
ARS 408 near/far beams) finds the surfaces the radar can see. Hits are merged into resolution
cells per object (0.6 m range x 1.5 deg azimuth), each gets an RCS (class mean, aspect, 2.5 dB
spread), a detection probability from a range^4 SNR model, and at most a class-dependent number
of clusters survive. What makes radar radar:

- positions are 2D (z = 0 in the radar frame) with ~1 deg azimuth noise: weak on extent and height;
- RCS by class overlaps between classes: weak on class;
- Doppler: `vx, vy` are the radial velocity relative to the moving sensor, `vx_comp, vy_comp`
  the ego-motion-compensated radial velocity of the object (both along the line of sight, as
  nuScenes); crossing objects show ~0 radial speed;
- occluded vehicles are sometimes seen through multipath (under other cars);
- clutter: false alarms, and real returns from unannotated walls, poles, signs and trees;
- missed detections for small / far / grazing targets.
"""

from __future__ import annotations

import numpy as np

from imkd_core.data.world.raycast import SphericalGrid, part_corners, surfaces, trace_pairs
from imkd_core.data.world.rig import (
    RADAR_AZIMUTH_STEP_DEG,
    RADAR_ELEVATIONS_DEG,
    RADAR_FOV_DEG,
    radar_max_range,
)
from imkd_core.data.world.scene import SceneModel, Snapshot
from imkd_core.sample import NUSCENES_RADAR_FIELDS

F = {name: i for i, name in enumerate(NUSCENES_RADAR_FIELDS)}
MAX_POINTS = 125  # the ARS 408 reports at most this many clusters per cycle
SNR_OFFSET_DB = 78.0
RANGE_CELL = 0.6
AZIMUTH_CELL = np.radians(1.5)
VEHICLES = ("car", "truck", "bus", "trailer", "construction_vehicle")


def radar_grid() -> SphericalGrid:
    n = round(2 * RADAR_FOV_DEG / RADAR_AZIMUTH_STEP_DEG) + 1
    az = np.radians(np.linspace(-RADAR_FOV_DEG, RADAR_FOV_DEG, n))
    return SphericalGrid(np.radians(np.array(RADAR_ELEVATIONS_DEG)), az, wrap=False)


def _detect_probability(rcs_db, rng_m, rain: bool):
    snr = rcs_db - 40.0 * np.log10(np.maximum(rng_m, 1.0)) + SNR_OFFSET_DB - (1.5 if rain else 0)
    return 0.92 / (1.0 + np.exp(-(snr - 12.0) / 2.5))


def scan(scene: SceneModel, snap: Snapshot, T_world_radar: np.ndarray, sensor_velocity: np.ndarray,
         grid: SphericalGrid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One radar cycle -> (N, 18) float32 in NUSCENES_RADAR_FIELDS order (radar frame) and
    (N,) owner index per point (-1 clutter)."""
    origin = T_world_radar[:3, 3]
    R = T_world_radar[:3, :3]
    rain = scene.condition == "rain"
    dirs_w = (grid.dirs.reshape(-1, 3) @ R.T).reshape(grid.dirs.shape).astype(np.float32)
    radius = np.linalg.norm(snap.part_half, axis=1)
    rel = snap.part_centre - origin
    ahead = rel @ R[:, 0]
    parts = np.flatnonzero((np.linalg.norm(rel, axis=1) - radius < 100.0) & (ahead + radius > 0))
    corners_s = (part_corners(snap, parts) - origin) @ R
    r0, r1, c0, ncols = grid.rects(corners_s)
    t, part = trace_pairs(origin, dirs_w, snap, parts, r0, r1, c0, ncols, 100.0, wrap=False,
                          ground=False)
    hit = np.flatnonzero(part >= 0)
    az_ray = grid.azimuth[hit % grid.shape[1]]
    el_ray = grid.elevation[hit // grid.shape[1]]
    rng_h = t[hit] * np.cos(el_ray)
    ok = rng_h <= radar_max_range(az_ray)
    hit, az_ray, rng_h = hit[ok], az_ray[ok], rng_h[ok]
    flat = dirs_w.reshape(-1, 3)
    surf = surfaces(origin, flat[hit], t[hit], part[hit], snap, scene.road)
    cos_inc = np.abs(np.einsum("ij,ij->i", surf.normal, flat[hit]))
    owner = surf.owner

    # one candidate per (owner, range cell, azimuth cell): the best-aligned surface
    key_r = np.floor(rng_h / RANGE_CELL).astype(np.int64)
    key_a = np.floor((az_ray + np.pi) / AZIMUTH_CELL).astype(np.int64)
    order = np.lexsort((-cos_inc, key_a, key_r, owner))
    ko, kr, ka = owner[order], key_r[order], key_a[order]
    first = np.ones(len(order), bool)
    first[1:] = (ko[1:] != ko[:-1]) | (kr[1:] != kr[:-1]) | (ka[1:] != ka[:-1])
    cand = order[first]
    c_owner = owner[cand]
    actors = scene.actors
    base_rcs = np.array([actors[o].rcs_db for o in c_owner])
    rcs = base_rcs + 6.0 * np.log10(np.maximum(cos_inc[cand], 0.1)) + rng.normal(0, 2.5,
                                                                                  len(cand))
    p = _detect_probability(rcs, rng_h[cand], rain)
    detected = rng.random(len(cand)) < p
    cand, c_owner, rcs = cand[detected], c_owner[detected], rcs[detected]
    # at most `radar_points` clusters per object: the strongest
    keep = np.zeros(len(cand), bool)
    order = np.lexsort((-rcs, c_owner))
    so = c_owner[order]
    rank = np.arange(len(order)) - np.searchsorted(so, so)
    limit = np.array([actors[o].radar_points for o in so])
    keep[order[rank < limit]] = True
    cand, c_owner, rcs = cand[keep], c_owner[keep], rcs[keep]
    r_true, az_true = rng_h[cand], az_ray[cand]

    # multipath: a vehicle hidden behind another is sometimes still seen
    seen = set(c_owner.tolist())
    extra_o, extra_r, extra_a, extra_rcs = [], [], [], []
    for o in np.flatnonzero(scene.annotated):
        if o in seen or actors[o].kind not in VEHICLES:
            continue
        d = snap.centre[o] - origin
        fwd, left = d @ R[:, 0], d @ R[:, 1]
        r = float(np.hypot(fwd, left))
        a = float(np.arctan2(left, fwd))
        if fwd <= 0 or abs(a) > np.radians(RADAR_FOV_DEG) or r > radar_max_range(np.array(a)):
            continue
        if rng.random() < 0.15:
            extra_o.append(o)
            extra_r.append(max(r - 0.4 * snap.size[o, 0], 1.0))
            extra_a.append(a)
            extra_rcs.append(actors[o].rcs_db - 6.0 + rng.normal(0, 2.5))
    if extra_o:
        c_owner = np.concatenate([c_owner, extra_o])
        r_true = np.concatenate([r_true, extra_r])
        az_true = np.concatenate([az_true, extra_a])
        rcs = np.concatenate([rcs, extra_rcs])

    n = len(c_owner)
    sigma_a = np.radians(np.where(np.abs(az_true) < np.radians(9.0), 0.5, 1.1))
    r_meas = r_true + rng.normal(0, 1, n) * (0.08 + 0.002 * r_true)
    a_meas = az_true + rng.normal(0, 1, n) * sigma_a
    # velocities: radial projection on the true line of sight (world frame)
    u_world = (R @ np.stack([np.cos(az_true), np.sin(az_true), np.zeros(n)]))[:2]
    v_obj = np.stack([snap.vx[c_owner], snap.vy[c_owner]]).reshape(2, n)
    vr_comp = np.sum(v_obj * u_world, axis=0) + rng.normal(0, 0.12, n)
    vr_raw = vr_comp - np.sum(np.asarray(sensor_velocity)[:2, None] * u_world, axis=0)
    speed = np.hypot(v_obj[0], v_obj[1])

    pts = np.zeros((n, len(NUSCENES_RADAR_FIELDS)), np.float64)
    ca, sa = np.cos(a_meas), np.sin(a_meas)
    pts[:, F["x"]] = r_meas * ca
    pts[:, F["y"]] = r_meas * sa
    pts[:, F["rcs"]] = np.round(rcs * 2.0) / 2.0
    pts[:, F["vx"]], pts[:, F["vy"]] = vr_raw * ca, vr_raw * sa
    pts[:, F["vx_comp"]], pts[:, F["vy_comp"]] = vr_comp * ca, vr_comp * sa
    moving = speed > 0.5
    dyn = np.where(moving, np.where(vr_comp > 0.4, 0, np.where(vr_comp < -0.4, 2, 6)),
                   np.where(rcs > -5.0, 1, 3))
    pts[:, F["dyn_prop"]] = dyn
    pts[:, F["is_quality_valid"]] = 1
    pts[:, F["ambig_state"]] = 3
    pts[:, F["x_rms"]] = np.clip(np.rint(3 + r_true / 10.0), 0, 31)
    pts[:, F["y_rms"]] = np.clip(np.rint(3 + r_true * sigma_a * 8.0), 0, 31)
    pts[:, F["vx_rms"]] = np.clip(rng.integers(3, 6, n), 0, 31)
    pts[:, F["vy_rms"]] = np.clip(rng.integers(3, 6, n), 0, 31)
    pts[:, F["invalid_state"]] = 0
    pts[:, F["pdh0"]] = np.where(rng.random(n) < 0.9, 1, 2)
    owners = np.asarray(c_owner, np.int64)

    # clutter: false alarms of the radar itself
    n_c = int(rng.poisson(3.5 if rain else 2.5))
    if n + n_c == 0:
        n_c = 1
    if n_c:
        cl = np.zeros((n_c, len(NUSCENES_RADAR_FIELDS)))
        a = rng.uniform(-1, 1, n_c) * np.radians(RADAR_FOV_DEG)
        r = np.minimum(2.0 + 60.0 * rng.random(n_c) ** 1.5, radar_max_range(a))
        cl[:, F["x"]], cl[:, F["y"]] = r * np.cos(a), r * np.sin(a)
        u = (R @ np.stack([np.cos(a), np.sin(a), np.zeros(n_c)]))[:2]
        vr_c = rng.normal(0, 0.25, n_c)
        vr_r = vr_c - np.sum(np.asarray(sensor_velocity)[:2, None] * u, axis=0)
        cl[:, F["vx"]], cl[:, F["vy"]] = vr_r * np.cos(a), vr_r * np.sin(a)
        cl[:, F["vx_comp"]], cl[:, F["vy_comp"]] = vr_c * np.cos(a), vr_c * np.sin(a)
        cl[:, F["rcs"]] = np.round(rng.normal(-9.0, 4.0, n_c) * 2.0) / 2.0
        cl[:, F["dyn_prop"]] = np.where(rng.random(n_c) < 0.5, 1, 3)
        cl[:, F["is_quality_valid"]] = 1
        cl[:, F["ambig_state"]] = np.where(rng.random(n_c) < 0.8, 3, 4)
        cl[:, F["invalid_state"]] = np.where(rng.random(n_c) < 0.65, 0,
                                             rng.choice([1, 2, 6, 14, 16], n_c))
        cl[:, F["pdh0"]] = rng.integers(2, 7, n_c)
        cl[:, F["x_rms"]] = np.clip(np.rint(3 + r / 10.0), 0, 31)
        cl[:, F["y_rms"]] = np.clip(np.rint(3 + r * 0.15), 0, 31)
        cl[:, F["vx_rms"]] = rng.integers(4, 9, n_c)
        cl[:, F["vy_rms"]] = rng.integers(4, 9, n_c)
        pts = np.concatenate([pts, cl])
        owners = np.concatenate([owners, np.full(n_c, -1)])
    if len(pts) > MAX_POINTS:
        top = np.sort(np.argsort(-pts[:, F["rcs"]], kind="stable")[:MAX_POINTS])
        pts, owners = pts[top], owners[top]
    # the radar reports clusters ordered by range, with per-cycle ids
    order = np.argsort(np.hypot(pts[:, F["x"]], pts[:, F["y"]]), kind="stable")
    pts, owners = pts[order], owners[order]
    pts[:, F["id"]] = np.arange(len(pts))
    return pts.astype(np.float32), owners


def default_filter_mask(points: np.ndarray) -> np.ndarray:
    """The points nuscenes-devkit's RadarPointCloud.from_file keeps by default."""
    return ((points[:, F["invalid_state"]] == 0) & (points[:, F["dyn_prop"]] < 7)
            & (points[:, F["ambig_state"]] == 3))
