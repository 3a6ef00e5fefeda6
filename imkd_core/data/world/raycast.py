"""Vectorised ray casting against the ground plane (z = 0) and yawed cuboid parts.

Every sensor is a 2D grid of rays from one origin: camera pixels (rows x columns), LiDAR beams x
azimuth steps, radar elevation x azimuth. Each part is culled to the grid rectangle its corners
can reach (image bounding box, or azimuth/elevation interval), then tested with the slab method
in its own frame. Two drivers share the maths:

- `trace_pairs`: all (ray, part) candidate pairs in one batch; fastest for LiDAR and radar;
- `trace_parts`: a loop over owners and parts on image rectangles; keeps, per owner, how many
  rays would hit it with nothing in front (`potential`), which the visibility level needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imkd_core.data.world.materials import ALBEDO, M
from imkd_core.data.world.road import Road
from imkd_core.data.world.scene import Snapshot

GROUND = -1
NOTHING = -2
_EPS_T = 1e-3

_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
                         dtype=np.float64)
# the 12 edges of a box as pairs of `_CORNER_SIGNS` rows (corners differing in one sign)
_EDGES = np.array([(i, j) for i in range(8) for j in range(i + 1, 8)
                   if np.sum(_CORNER_SIGNS[i] != _CORNER_SIGNS[j]) == 1])


def part_corners(snap: Snapshot, parts: np.ndarray | None = None) -> np.ndarray:
    """(P, 8, 3) world corners of the parts (all, or the given indices)."""
    idx = slice(None) if parts is None else parts
    c, h, yaw = snap.part_centre[idx], snap.part_half[idx], snap.part_yaw[idx]
    local = _CORNER_SIGNS[None] * h[:, None, :]
    cos, sin = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    out = np.empty_like(local)
    out[..., 0] = c[:, None, 0] + cos * local[..., 0] - sin * local[..., 1]
    out[..., 1] = c[:, None, 1] + sin * local[..., 0] + cos * local[..., 1]
    out[..., 2] = c[:, None, 2] + local[..., 2]
    return out


def _local_origin(origin: np.ndarray, snap: Snapshot, parts) -> tuple[np.ndarray, ...]:
    """Per part: the ray origin in the part frame (x, y, z) and the part's cos/sin(yaw)."""
    d = origin[None, :] - snap.part_centre[parts]
    cos, sin = np.cos(snap.part_yaw[parts]), np.sin(snap.part_yaw[parts])
    ox = cos * d[:, 0] + sin * d[:, 1]
    oy = -sin * d[:, 0] + cos * d[:, 1]
    return ox, oy, d[:, 2], cos, sin


def slab(ox, oy, oz, cos, sin, hx, hy, hz, dx, dy, dz) -> np.ndarray:
    """Ray/box entry distance (inf where missed or where the origin is inside). Arguments
    broadcast: origin in the box frame, box yaw cos/sin and half extents, world directions."""
    lx = cos * dx + sin * dy
    ly = -sin * dx + cos * dy
    with np.errstate(divide="ignore", invalid="ignore"):
        ix, iy, iz = 1.0 / lx, 1.0 / ly, 1.0 / dz
        a, b = (-hx - ox) * ix, (hx - ox) * ix
        tmin, tmax = np.minimum(a, b), np.maximum(a, b)
        a, b = (-hy - oy) * iy, (hy - oy) * iy
        tmin = np.maximum(tmin, np.minimum(a, b))
        tmax = np.minimum(tmax, np.maximum(a, b))
        a, b = (-hz - oz) * iz, (hz - oz) * iz
        tmin = np.maximum(tmin, np.minimum(a, b))
        tmax = np.minimum(tmax, np.maximum(a, b))
        hit = (tmax >= tmin) & (tmin > _EPS_T)
    return np.where(hit, tmin, np.inf).astype(np.float32)


def ground_distance(origin, dirs, max_range) -> np.ndarray:
    """Distance along each ray to the ground plane z = 0 (inf if not hit within max_range)."""
    dz = dirs[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dz < -1e-6, -origin[2] / dz, np.inf)
    t[t > max_range] = np.inf
    return t.astype(np.float32)


# ------------------------------------------------------------------------------- culling
@dataclass
class SphericalGrid:
    """Rays by elevation (rows, ascending) x azimuth (columns) in a sensor frame (x fwd, y
    left, z up). `wrap` = the azimuths close a full turn (spinning LiDAR)."""

    elevation: np.ndarray  # (R,) radians, ascending
    azimuth: np.ndarray  # (C,) radians, ascending, evenly spaced
    wrap: bool

    def __post_init__(self) -> None:
        el, az = np.meshgrid(self.elevation, self.azimuth, indexing="ij")
        self.dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)],
                             axis=-1).astype(np.float32)
        self.step = float(self.azimuth[1] - self.azimuth[0])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.elevation), len(self.azimuth)

    def rects(self, corners_sensor: np.ndarray, margin_rows: float = 0.004):
        """Per part (P, 8, 3 corners in the sensor frame) -> r0, r1, c0, ncols (cols wrap
        modulo C when `wrap`, else are clipped)."""
        C = self.shape[1]
        x, y, z = corners_sensor[..., 0], corners_sensor[..., 1], corners_sensor[..., 2]
        cx, cy = x.mean(1), y.mean(1)
        dist = np.hypot(cx, cy)
        radius = np.max(np.hypot(x - cx[:, None], y - cy[:, None]), axis=1)
        a_c = np.arctan2(cy, cx)
        rel = (np.arctan2(y, x) - a_c[:, None] + np.pi) % (2 * np.pi) - np.pi
        a_lo, a_hi = a_c + rel.min(1), a_c + rel.max(1)
        surround = dist <= radius * 1.05 + 0.05
        d_min = np.maximum(dist - radius, 0.05)
        d_max = dist + radius
        z_hi, z_lo = z.max(1), z.min(1)
        el_hi = np.arctan2(z_hi, np.where(z_hi > 0, d_min, d_max))
        el_lo = np.arctan2(z_lo, np.where(z_lo > 0, d_max, d_min))
        r0 = np.searchsorted(self.elevation, el_lo - margin_rows)
        r1 = np.searchsorted(self.elevation, el_hi + margin_rows, side="right")
        a0 = self.azimuth[0] - self.step / 2
        c0 = np.floor((a_lo - a0) / self.step).astype(np.int64) - 1
        ncols = np.ceil((a_hi - a_lo) / self.step).astype(np.int64) + 3
        if self.wrap:
            c0 = np.mod(c0, C)
            full = surround | (ncols >= C)
            c0[full], ncols[full] = 0, C
        else:
            # the interval may be expressed around +-pi: shift into the grid's range
            shift = np.round((a_lo - a0) / (2 * np.pi) - (C * self.step / 2) / (2 * np.pi))
            c0 = np.floor((a_lo - 2 * np.pi * shift - a0) / self.step).astype(np.int64) - 1
            c1 = np.minimum(c0 + ncols, C)
            c0 = np.maximum(c0, 0)
            c0[surround], c1[surround] = 0, C
            ncols = np.maximum(c1 - c0, 0)
        return r0, r1, c0, ncols


def camera_rects(corners_cam: np.ndarray, K: np.ndarray, width: int, height: int,
                 near: float = 0.1):
    """Per part (P, 8, 3 corners in the optical frame) -> r0, r1, c0, c1 pixel rectangle."""
    z = corners_cam[..., 2]
    in_front = z > near
    zz = np.where(in_front, z, 1.0)
    u = K[0, 0] * corners_cam[..., 0] / zz + K[0, 2]
    v = K[1, 1] * corners_cam[..., 1] / zz + K[1, 2]
    c0 = np.floor(np.where(in_front, u, np.inf).min(1) - 0.5).astype(np.float64)
    c1 = np.ceil(np.where(in_front, u, -np.inf).max(1) - 0.5) + 1
    r0 = np.floor(np.where(in_front, v, np.inf).min(1) - 0.5)
    r1 = np.ceil(np.where(in_front, v, -np.inf).max(1) - 0.5) + 1
    partial = np.flatnonzero(in_front.any(1) & ~in_front.all(1))
    if len(partial):
        # clip the box at the near plane: the visible part's outline is spanned by the corners
        # in front and the points where edges cross the plane
        c = corners_cam[partial]
        a, b = c[:, _EDGES[:, 0]], c[:, _EDGES[:, 1]]  # (Q, 12, 3)
        za, zb = a[..., 2], b[..., 2]
        cross = (za > near) != (zb > near)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(cross, (near - za) / (zb - za), 0.0)
        p = a + f[..., None] * (b - a)
        pts = np.concatenate([c, p], axis=1)
        ok = np.concatenate([in_front[partial], cross], axis=1)
        zz = np.maximum(pts[..., 2], near)
        pu = np.where(ok, K[0, 0] * pts[..., 0] / zz + K[0, 2], np.nan)
        pv = np.where(ok, K[1, 1] * pts[..., 1] / zz + K[1, 2], np.nan)
        c0[partial] = np.floor(np.nanmin(pu, 1) - 0.5)
        c1[partial] = np.ceil(np.nanmax(pu, 1) - 0.5) + 1
        r0[partial] = np.floor(np.nanmin(pv, 1) - 0.5)
        r1[partial] = np.ceil(np.nanmax(pv, 1) - 0.5) + 1
    none = ~in_front.any(1)
    c0 = np.clip(np.nan_to_num(c0, posinf=width, neginf=0), 0, width).astype(np.int64)
    c1 = np.clip(np.nan_to_num(c1, posinf=width, neginf=0), 0, width).astype(np.int64)
    r0 = np.clip(np.nan_to_num(r0, posinf=height, neginf=0), 0, height).astype(np.int64)
    r1 = np.clip(np.nan_to_num(r1, posinf=height, neginf=0), 0, height).astype(np.int64)
    c1[none] = c0[none]
    return r0, r1, c0, c1


# ------------------------------------------------------------------------------- drivers
def trace_pairs(origin: np.ndarray, dirs_w: np.ndarray, snap: Snapshot, parts: np.ndarray,
                r0, r1, c0, ncols, max_range: float, wrap: bool, ground: bool = True):
    """Cast a (R, C) grid of world-frame rays; candidate parts with their grid rectangles.
    Returns t (R*C,) float32 and part (R*C,) int64 (GROUND / NOTHING / part index)."""
    R, C = dirs_w.shape[:2]
    flat_dirs = dirs_w.reshape(-1, 3)
    t_best = ground_distance(origin, flat_dirs, max_range) if ground else np.full(
        R * C, np.inf, np.float32)
    best = np.where(np.isfinite(t_best), GROUND, NOTHING).astype(np.int64)
    nr = np.maximum(r1 - r0, 0)
    area = nr * ncols
    keep = area > 0
    parts, r0, ncols, c0, area = parts[keep], r0[keep], ncols[keep], c0[keep], area[keep]
    total = int(area.sum())
    if total == 0:
        return t_best, best
    which = np.repeat(np.arange(len(parts)), area)
    k = np.arange(total) - np.repeat(np.cumsum(area) - area, area)
    nc = ncols[which]
    row = r0[which] + k // nc
    col = c0[which] + k % nc
    if wrap:
        col %= C
    ray = row * C + col
    ox, oy, oz, cos, sin = _local_origin(origin, snap, parts)
    half = snap.part_half[parts]
    d = flat_dirs[ray]
    t = slab(ox[which], oy[which], oz[which], cos[which], sin[which], half[which, 0],
             half[which, 1], half[which, 2], d[:, 0], d[:, 1], d[:, 2])
    hit = t < max_range
    ray, t, which = ray[hit], t[hit], which[hit]
    np.minimum.at(t_best, ray, t)
    win = t <= t_best[ray]
    best[ray[win]] = parts[which[win]]
    return t_best, best


def trace_parts(origin: np.ndarray, dirs_w: np.ndarray, snap: Snapshot, owners: np.ndarray,
                rects: tuple[np.ndarray, ...], max_range: float):
    """Camera driver: loop over owners; `rects` are per-part (r0, r1, c0, c1) for all parts.
    Returns t (H, W), part (H, W) and potential (N,) unoccluded hit counts per owner."""
    t_img = ground_distance(origin, dirs_w, max_range)
    part_img = np.where(np.isfinite(t_img), GROUND, NOTHING).astype(np.int64)
    potential = np.zeros(len(snap.size), dtype=np.int64)
    r0, r1, c0, c1 = rects
    dx, dy, dz = dirs_w[..., 0], dirs_w[..., 1], dirs_w[..., 2]
    for o in owners:
        p0, p1 = snap.part_start[o], snap.part_start[o + 1]
        pr0, pr1, pc0, pc1 = r0[p0:p1], r1[p0:p1], c0[p0:p1], c1[p0:p1]
        live = (pr1 > pr0) & (pc1 > pc0)
        if not live.any():
            continue
        R0, R1 = int(pr0[live].min()), int(pr1[live].max())
        C0, C1 = int(pc0[live].min()), int(pc1[live].max())
        own_t = np.full((R1 - R0, C1 - C0), np.inf, np.float32)
        own_p = np.full((R1 - R0, C1 - C0), NOTHING, np.int64)
        idx = np.arange(p0, p1)[live]
        ox, oy, oz, cos, sin = _local_origin(origin, snap, idx)
        for j, p in enumerate(idx):
            a, b, c, e = pr0[p - p0], pr1[p - p0], pc0[p - p0], pc1[p - p0]
            h = snap.part_half[p]
            t = slab(ox[j], oy[j], oz[j], cos[j], sin[j], h[0], h[1], h[2],
                     dx[a:b, c:e], dy[a:b, c:e], dz[a:b, c:e])
            view_t = own_t[a - R0:b - R0, c - C0:e - C0]
            m = t < view_t
            view_t[m] = t[m]
            own_p[a - R0:b - R0, c - C0:e - C0][m] = p
        own_t[own_t > max_range] = np.inf
        potential[o] = int(np.isfinite(own_t).sum())
        g_t = t_img[R0:R1, C0:C1]
        m = own_t < g_t
        g_t[m] = own_t[m]
        part_img[R0:R1, C0:C1][m] = own_p[m]
    return t_img, part_img, potential


# ------------------------------------------------------------------------------- surfaces
@dataclass
class Surface:
    """What rays hit: per ray (flattened), only where something was hit."""

    origin: np.ndarray  # (3,) world
    offset: np.ndarray  # (K, 3) float32 hit point minus origin
    normal: np.ndarray  # (K, 3) world, unit
    material: np.ndarray  # (K,) material id after patterns
    colour: np.ndarray  # (K, 3) albedo 0..1
    owner: np.ndarray  # (K,) owner index, -1 ground
    variant: np.ndarray  # (K,) small integer hash for per-window/per-tile variation

    @property
    def point(self) -> np.ndarray:
        return self.origin[None, :] + self.offset


def surfaces(origin, dirs, t, part, snap: Snapshot, road: Road) -> Surface:
    """Hit points, normals and materials for rays with a finite t (flattened inputs)."""
    rel_hit = dirs.astype(np.float32) * t.astype(np.float32)[:, None]
    n = len(t)
    normal = np.zeros((n, 3), np.float32)
    material = np.empty(n, np.int64)
    owner = np.full(n, -1, np.int64)
    variant = np.zeros(n, np.int64)
    g = np.flatnonzero(part == GROUND)
    if len(g):
        gx = origin[0] + rel_hit[g, 0].astype(np.float64)
        gy = origin[1] + rel_hit[g, 1].astype(np.float64)
        s, d = road.to_road(gx, gy)
        mat = road.ground_material(s.astype(np.float32), d.astype(np.float32)).astype(np.int64)
        material[g] = mat
        normal[g, 2] = 1.0
        variant[g] = (np.floor(gx * 0.5).astype(np.int64) * 73856093
                      ^ np.floor(gy * 0.5).astype(np.int64) * 19349663) & 0xFF
    o = np.flatnonzero(part >= 0)
    colour = np.empty((n, 3), np.float32)
    if len(g):
        colour[g] = np.take(ALBEDO, material[g], axis=0)
    if len(o):
        p = part[o]
        centre = (snap.part_centre - origin[None, :]).astype(np.float32)
        yaw = snap.part_yaw.astype(np.float32)
        cos_p, sin_p = np.cos(yaw), np.sin(yaw)
        half_p = snap.part_half.astype(np.float32)
        rel = np.take(rel_hit, o, axis=0) - np.take(centre, p, axis=0)
        cos, sin = np.take(cos_p, p), np.take(sin_p, p)
        lx = cos * rel[:, 0] + sin * rel[:, 1]
        ly = -sin * rel[:, 0] + cos * rel[:, 1]
        lz = rel[:, 2]
        half = np.take(half_p, p, axis=0)
        rx, ry, rz = np.abs(lx) / half[:, 0], np.abs(ly) / half[:, 1], np.abs(lz) / half[:, 2]
        ax0 = (rx >= ry) & (rx >= rz)
        ax1 = ~ax0 & (ry >= rz)
        ax2 = ~ax0 & ~ax1
        sign = np.where(np.where(ax0, lx, np.where(ax1, ly, lz)) < 0, -1.0, 1.0).astype(
            np.float32)
        nx, ny = ax0 * sign, ax1 * sign
        normal[o] = np.stack([cos * nx - sin * ny, sin * nx + cos * ny, ax2 * sign], axis=1)
        mat = np.take(snap.part_mat, p)
        col = np.take(snap.part_colour, p, axis=0)
        var = np.zeros(len(p), np.int64)
        # facade windows: a grid of glass on the vertical faces
        fac = np.flatnonzero((mat == M.FACADE) & ~ax2)
        if len(fac):
            u = np.where(ax0[fac], ly[fac], lx[fac]) + 200.0
            zb = lz[fac] + half[fac, 2]
            um, zm = np.mod(u, 3.0), np.mod(zb, 3.2)
            win = (um > 0.7) & (um < 2.3) & (zm > 0.9) & (zm < 2.4) & (zb > 0.9)
            fi = fac[win]
            mat[fi] = M.WINDOW
            col[fi] = ALBEDO[M.WINDOW]
            var[fi] = (np.floor(u[win] / 3.0).astype(np.int64) * 92821
                       + np.floor(zb[win] / 3.2).astype(np.int64) * 68917 + p[fi] * 7919) & 0xFF
        # barriers: red/white stripes along the long side
        bar = np.flatnonzero(mat == M.BARRIER)
        if len(bar):
            red = np.mod(ly[bar] + 50.0, 1.0) < 0.5
            col[bar[red]] = (0.80, 0.12, 0.10)
        material[o] = mat
        colour[o] = col
        owner[o] = np.take(snap.part_owner, p)
        variant[o] = var
    return Surface(origin, rel_hit, normal, material, colour, owner, variant)
