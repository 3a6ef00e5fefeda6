"""Camera images: every pixel is a ray cast into the world, then shaded.

Visibility is exact (the nearest surface wins, per pixel), so objects occlude each other. Shading
is Lambertian under a sun (day), an overcast sky with fog, wet darkening and rain streaks (rain),
or street lights, the ego's headlights and glowing lamps/lights/windows (night). Objects are told
apart by shape, part layout and colour, as in a real image; their depth is only implied (size,
position on the ground plane), so a camera can classify but has to infer depth.

For the annotations' visibility level, each render also returns per object the number of pixels
where it is the nearest surface (`visible`) and where it would be seen with nothing in front
(`potential`).
"""

from __future__ import annotations

import cv2
import numpy as np

from imkd_core.data.world.materials import EMISSION_NIGHT, M
from imkd_core.data.world.raycast import (
    GROUND,
    NOTHING,
    camera_rects,
    part_corners,
    surfaces,
    trace_parts,
)
from imkd_core.data.world.scene import SceneModel, Snapshot

MAX_RANGE = 160.0


def camera_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float32 unit ray directions through pixel centres, optical frame."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    d = np.stack([x, y, np.ones_like(x)], axis=-1)
    return (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32)


def _sky(dirs: np.ndarray, condition: str) -> np.ndarray:
    up = np.clip(dirs[:, 2], 0.0, 1.0)[:, None].astype(np.float32)
    if condition == "day":
        horizon, zenith = np.array([0.86, 0.89, 0.93]), np.array([0.42, 0.60, 0.88])
    elif condition == "rain":
        horizon, zenith = np.array([0.66, 0.68, 0.70]), np.array([0.48, 0.50, 0.53])
    else:
        horizon, zenith = np.array([0.06, 0.06, 0.09]), np.array([0.01, 0.012, 0.03])
    w = np.sqrt(up)
    return (horizon * (1 - w) + zenith * w).astype(np.float32)


def _light(scene: SceneModel, surf, dirs, dist, T_world_ego: np.ndarray) -> np.ndarray:
    """Irradiance (K, 3) at hit points."""
    n = surf.normal
    cond = scene.condition
    if cond == "day":
        lam = np.clip(n @ scene.sun, 0.0, None)[:, None].astype(np.float32)
        return np.array([0.42, 0.45, 0.52], np.float32) + lam * np.array([0.78, 0.74, 0.66],
                                                                         np.float32)
    if cond == "rain":
        lam = np.clip(n[:, 2], 0.0, None)[:, None]
        return np.array([0.40, 0.41, 0.43], np.float32) + 0.15 * lam.astype(np.float32)
    # night: street lights, ego headlights, faint ambient
    p = surf.offset  # float32, relative to the camera
    lamps = scene.lamps - surf.origin[None, :]
    if len(lamps):
        # the street lights within reach, all at once: (points, lamps) arrays
        lamps = lamps[np.linalg.norm(lamps[:, :2], axis=1) < 45.0].astype(np.float32)
    irr_scalar = np.full(len(n), 0.025, np.float32)
    warm = np.zeros(len(n), np.float32)
    if len(lamps):
        dx = lamps[None, :, 0] - p[:, 0:1]
        dy = lamps[None, :, 1] - p[:, 1:2]
        dz = lamps[None, :, 2] - p[:, 2:3]
        r2 = dx * dx + dy * dy + dz * dz
        cos = (n[:, 0:1] * dx + n[:, 1:2] * dy + n[:, 2:3] * dz) / np.sqrt(r2)
        np.maximum(cos, 0.0, out=cos)
        warm = (1.1 * cos / (1.0 + r2 / 45.0)).sum(axis=1)
    # the ego's headlights: a cone ahead of the car
    head = T_world_ego[:3, 3] + T_world_ego[:3, :3] @ np.array([3.6, 0.0, 0.7]) - surf.origin
    fwd = T_world_ego[:3, 0].astype(np.float32)
    d = p - head.astype(np.float32)
    r = np.sqrt(np.einsum("ij,ij->i", d, d)) + 1e-6
    cos_a = (d @ fwd) / r
    ahead = cos_a > 0.8
    beam = np.zeros(len(n), np.float32)
    if ahead.any():
        da, ra = d[ahead], r[ahead]
        lam = np.clip(-np.einsum("ij,ij->i", n[ahead], da) / ra, 0.0, None)
        beam[ahead] = 3.0 * np.exp(-((1 - cos_a[ahead]) / 0.03)) * lam / (1.0 + (ra / 14.0) ** 2)
    irr_scalar += beam
    return irr_scalar[:, None] + warm[:, None] * np.array([1.0, 0.85, 0.6], np.float32)


def render(scene: SceneModel, snap: Snapshot, T_world_cam: np.ndarray, T_world_ego: np.ndarray,
           K: np.ndarray, rays_cam: np.ndarray, rng: np.random.Generator):
    """-> (image HxWx3 uint8 RGB, visible (N,), potential (N,))."""
    H, W = rays_cam.shape[:2]
    origin = T_world_cam[:3, 3]
    R = T_world_cam[:3, :3]
    dirs_w = (rays_cam.reshape(-1, 3) @ R.T.astype(np.float32)).reshape(H, W, 3)
    radius = np.linalg.norm(snap.part_half, axis=1)
    rel = snap.part_centre - origin
    depth = rel @ R[:, 2]
    cand = np.flatnonzero((depth + radius > 0.1) & (np.linalg.norm(rel, axis=1) - radius
                                                     < MAX_RANGE))
    r0 = np.zeros(len(snap.part_owner), np.int64)
    r1, c0, c1 = r0.copy(), r0.copy(), r0.copy()
    if len(cand):
        corners_c = (part_corners(snap, cand) - origin) @ R
        r0[cand], r1[cand], c0[cand], c1[cand] = camera_rects(corners_c, K, W, H)
    owners = np.unique(snap.part_owner[cand[(r1[cand] > r0[cand]) & (c1[cand] > c0[cand])]])
    t_img, part_img, potential = trace_parts(origin, dirs_w, snap, owners, (r0, r1, c0, c1),
                                             MAX_RANGE)
    t = t_img.reshape(-1)
    part = part_img.reshape(-1)
    visible = np.bincount(snap.part_owner[part[part >= 0]], minlength=len(snap.size))

    flat_dirs = dirs_w.reshape(-1, 3)
    img = np.empty((H * W, 3), np.float32)
    sky = part == NOTHING
    img[sky] = _sky(flat_dirs[sky], scene.condition)
    hit = np.flatnonzero(~sky)
    surf = surfaces(origin, flat_dirs[hit], t[hit], part[hit], snap, scene.road)
    albedo = surf.colour
    ground = part[hit] == GROUND
    tex = 1.0 + 0.07 * ((surf.variant.astype(np.float32) / 255.0) - 0.5) * ground
    albedo = albedo * tex[:, None]
    if scene.condition == "rain":
        albedo = albedo * np.where(ground, 0.72, 0.92)[:, None].astype(np.float32)
    colour = albedo * _light(scene, surf, flat_dirs[hit], t[hit], T_world_ego)
    if scene.condition == "night":
        glow = EMISSION_NIGHT[surf.material]
        lit = (surf.material == M.WINDOW) & (surf.variant < 90)
        glow[surf.material == M.WINDOW] = 0.0
        glow[lit] = EMISSION_NIGHT[M.WINDOW]
        colour = colour + glow
    fog_dist = {"day": 420.0, "rain": 75.0, "night": 180.0}[scene.condition]
    fog_col = {"day": (0.84, 0.87, 0.91), "rain": (0.62, 0.64, 0.66),
               "night": (0.03, 0.03, 0.05)}[scene.condition]
    f = np.exp(-t[hit] / fog_dist)[:, None].astype(np.float32)
    img[hit] = colour * f + np.array(fog_col, np.float32) * (1 - f)
    img = img.reshape(H, W, 3)

    if scene.condition == "rain":
        overlay = np.zeros((H, W), np.uint8)
        n = int(120 * W * H / (800 * 450))
        x0 = rng.uniform(0, W, n)
        y0 = rng.uniform(-0.1 * H, H, n)
        length = rng.uniform(0.02, 0.06, n) * H
        slant = rng.normal(0.15, 0.03, n)
        for a, b, ln, s in zip(x0, y0, length, slant):
            cv2.line(overlay, (int(a), int(b)), (int(a + s * ln), int(b + ln)), 255, 1,
                     cv2.LINE_AA)
        img = img + (overlay.astype(np.float32) / 255.0 * 0.25)[..., None]
        img = cv2.GaussianBlur(img, (3, 3), 0.7)
    sigma = {"day": 2.0, "rain": 3.0, "night": 5.0}[scene.condition]
    img *= 255.0
    img += sigma * noise_patch(rng, H, W) + 0.5  # + 0.5: round half up when truncating
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8), visible, potential


_NOISE_BANK: dict[tuple[int, int], np.ndarray] = {}


def noise_patch(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) unit Gaussian sensor noise: a random window into a fixed bank (drawing fresh
    noise for every pixel of every image costs more than the rendering). The bank depends only
    on the image size (constant seed), the window offset comes from `rng`: deterministic."""
    key = (height, width)
    bank = _NOISE_BANK.get(key)
    if bank is None:
        gen = np.random.default_rng(20240901 + 7919 * height + width)
        bank = gen.standard_normal((height + 96, width + 96, 3), dtype=np.float32)
        _NOISE_BANK.clear()  # one image size per world: keep memory bounded
        _NOISE_BANK[key] = bank
    oy = int(rng.integers(0, bank.shape[0] - height))
    ox = int(rng.integers(0, bank.shape[1] - width))
    return bank[oy:oy + height, ox:ox + width]


def encode_jpeg(image_rgb: np.ndarray, quality: int) -> bytes:
    """Deterministic JPEG bytes (fixed libjpeg settings through OpenCV: baseline, 4:2:0,
    no optimisation pass)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 0,
                            cv2.IMWRITE_JPEG_PROGRESSIVE, 0])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
