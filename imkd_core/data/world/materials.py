"""Surface materials: what a camera sees (albedo, night glow) and what a LiDAR measures.

Reflectance intensity is the signal IMKD distils, so it follows the physics that make it useful:
a diffuse surface returns `rho_d * cos(incidence)`; retro-reflective surfaces (licence plates,
tail-light reflectors, cone bands, barrier strips, sign faces, hi-vis vests, road paint with glass
beads) return `rho_r` almost independently of the incidence angle; everything falls off with
range. Dark asphalt at grazing incidence is dim, a plate at 40 m is still bright.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class M(IntEnum):
    """Material ids (index into the property tables below)."""

    ASPHALT = 0
    PAINT_WHITE = 1
    PAINT_YELLOW = 2
    CONCRETE = 3
    GRASS = 4
    BIKE_LANE = 5
    FACADE = 6
    WINDOW = 7
    POLE = 8
    SIGN = 9
    LAMP = 10
    BODY = 11  # vehicle paint, colour per object
    GLASS = 12
    TIRE = 13
    PLATE = 14
    TAILLIGHT = 15
    HEADLIGHT = 16
    CLOTH = 17  # colour per object
    SKIN = 18
    HIVIS = 19
    CONE = 20
    CONE_BAND = 21
    BARRIER = 22  # red/white stripes along the barrier
    BARRIER_STRIP = 23
    CONSTRUCTION = 24
    FRAME = 25  # bicycle / motorcycle frame, colour per object
    FOLIAGE = 26
    TRUNK = 27
    REFLECTOR = 28
    BIN = 29
    CURB = 30


N_MATERIALS = len(M)

# name: (albedo RGB 0..1, rho_diffuse, rho_retro, night emission RGB 0..1)
_PROPS: dict[M, tuple[tuple[float, float, float], float, float, tuple[float, float, float]]] = {
    M.ASPHALT: ((0.24, 0.24, 0.25), 0.07, 0.0, (0, 0, 0)),
    M.PAINT_WHITE: ((0.85, 0.85, 0.82), 0.30, 0.18, (0, 0, 0)),
    M.PAINT_YELLOW: ((0.85, 0.70, 0.20), 0.28, 0.15, (0, 0, 0)),
    M.CONCRETE: ((0.55, 0.54, 0.52), 0.20, 0.0, (0, 0, 0)),
    M.GRASS: ((0.25, 0.40, 0.18), 0.30, 0.0, (0, 0, 0)),
    M.BIKE_LANE: ((0.45, 0.22, 0.20), 0.10, 0.0, (0, 0, 0)),
    M.FACADE: ((0.60, 0.55, 0.50), 0.25, 0.0, (0, 0, 0)),
    M.WINDOW: ((0.18, 0.22, 0.28), 0.04, 0.0, (0.55, 0.45, 0.25)),
    M.POLE: ((0.45, 0.47, 0.50), 0.28, 0.0, (0, 0, 0)),
    M.SIGN: ((0.90, 0.90, 0.90), 0.20, 0.85, (0, 0, 0)),
    M.LAMP: ((0.95, 0.93, 0.80), 0.30, 0.0, (1.0, 0.9, 0.6)),
    M.BODY: ((0.50, 0.50, 0.50), 0.30, 0.0, (0, 0, 0)),
    M.GLASS: ((0.10, 0.13, 0.17), 0.05, 0.0, (0, 0, 0)),
    M.TIRE: ((0.05, 0.05, 0.05), 0.04, 0.0, (0, 0, 0)),
    M.PLATE: ((0.92, 0.92, 0.88), 0.20, 0.90, (0, 0, 0)),
    M.TAILLIGHT: ((0.70, 0.05, 0.05), 0.15, 0.70, (0.9, 0.05, 0.03)),
    M.HEADLIGHT: ((0.90, 0.90, 0.85), 0.30, 0.40, (1.0, 1.0, 0.9)),
    M.CLOTH: ((0.30, 0.30, 0.40), 0.15, 0.0, (0, 0, 0)),
    M.SKIN: ((0.75, 0.57, 0.45), 0.25, 0.0, (0, 0, 0)),
    M.HIVIS: ((0.95, 0.65, 0.05), 0.30, 0.75, (0, 0, 0)),
    M.CONE: ((0.95, 0.40, 0.05), 0.30, 0.0, (0, 0, 0)),
    M.CONE_BAND: ((0.95, 0.95, 0.95), 0.20, 0.95, (0, 0, 0)),
    M.BARRIER: ((0.90, 0.88, 0.85), 0.35, 0.0, (0, 0, 0)),
    M.BARRIER_STRIP: ((0.95, 0.85, 0.20), 0.20, 0.85, (0, 0, 0)),
    M.CONSTRUCTION: ((0.92, 0.70, 0.05), 0.40, 0.0, (0, 0, 0)),
    M.FRAME: ((0.20, 0.20, 0.25), 0.20, 0.0, (0, 0, 0)),
    M.FOLIAGE: ((0.18, 0.38, 0.15), 0.35, 0.0, (0, 0, 0)),
    M.TRUNK: ((0.30, 0.22, 0.15), 0.12, 0.0, (0, 0, 0)),
    M.REFLECTOR: ((0.80, 0.10, 0.05), 0.15, 0.80, (0, 0, 0)),
    M.BIN: ((0.15, 0.35, 0.20), 0.15, 0.0, (0, 0, 0)),
    M.CURB: ((0.70, 0.70, 0.68), 0.22, 0.0, (0, 0, 0)),
}

ALBEDO = np.array([_PROPS[m][0] for m in M], dtype=np.float32)
RHO_DIFFUSE = np.array([_PROPS[m][1] for m in M], dtype=np.float32)
RHO_RETRO = np.array([_PROPS[m][2] for m in M], dtype=np.float32)
EMISSION_NIGHT = np.array([_PROPS[m][3] for m in M], dtype=np.float32)
RETRO_REFLECTIVE = RHO_RETRO > 0.5  # the materials a test may call "retro-reflective"

# Range fall-off scale of the return (m) and overall gain to nuScenes' 0..255 intensity.
INTENSITY_RANGE_SCALE = 25.0
INTENSITY_GAIN = 255.0


def lidar_intensity(material, cos_incidence, distance, attenuation=1.0) -> np.ndarray:
    """Noise-free reflectance intensity (0..255 float) of LiDAR returns.

    material: (N,) material ids (see `M`); cos_incidence: (N,) |cos| between beam and normal;
    distance: (N,) range in m; attenuation: scalar or (N,) extra two-way loss (rain).
    """
    material = np.asarray(material, dtype=np.int64)
    cos_incidence = np.clip(np.abs(np.asarray(cos_incidence, dtype=np.float32)), 0.0, 1.0)
    distance = np.asarray(distance, dtype=np.float32)
    diffuse = RHO_DIFFUSE[material] * cos_incidence
    retro = RHO_RETRO[material] * np.power(cos_incidence, 0.2)
    falloff = 1.0 / np.sqrt(1.0 + (distance / INTENSITY_RANGE_SCALE) ** 2)
    return np.clip(INTENSITY_GAIN * (diffuse + retro) * falloff * attenuation, 0.0, 255.0)
