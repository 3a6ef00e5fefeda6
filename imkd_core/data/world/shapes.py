"""Object shapes: every object is a small set of cuboid parts with materials, in the object's
own frame (x forward, y left, z up; origin at the box's geometric centre).

The parts give cameras something to classify (a car has a glass cabin, wheels, plates and lights;
a cone is an orange stack with a white band; a pedestrian has legs, a torso and a head), give the
LiDAR surfaces of different reflectivity, and all lie strictly inside the annotated box so point
counts and box fits are exact.
"""

from __future__ import annotations

import numpy as np

from imkd_core.data.world.materials import ALBEDO, M

MARGIN = 0.015  # parts stay this far inside the annotated box

CAR_COLOURS = np.array([
    (0.92, 0.92, 0.92), (0.08, 0.08, 0.09), (0.62, 0.63, 0.65), (0.35, 0.36, 0.38),
    (0.70, 0.08, 0.08), (0.10, 0.20, 0.55), (0.05, 0.10, 0.25), (0.15, 0.35, 0.20),
    (0.78, 0.72, 0.58), (0.85, 0.55, 0.10),
], dtype=np.float32)
CAR_COLOUR_P = np.array([0.22, 0.18, 0.16, 0.12, 0.08, 0.08, 0.06, 0.04, 0.04, 0.02])
CARGO_COLOURS = np.array([
    (0.93, 0.93, 0.93), (0.75, 0.76, 0.78), (0.20, 0.30, 0.60), (0.65, 0.10, 0.10),
    (0.25, 0.45, 0.25)], dtype=np.float32)
BUS_COLOURS = np.array([(0.75, 0.12, 0.10), (0.12, 0.30, 0.65), (0.20, 0.55, 0.30),
                        (0.92, 0.92, 0.90)], dtype=np.float32)
CLOTH_COLOURS = np.array([
    (0.10, 0.10, 0.12), (0.20, 0.22, 0.35), (0.55, 0.10, 0.10), (0.85, 0.85, 0.85),
    (0.30, 0.45, 0.25), (0.60, 0.50, 0.35), (0.25, 0.25, 0.28), (0.15, 0.30, 0.55),
    (0.80, 0.60, 0.15)], dtype=np.float32)
SKIN_COLOURS = np.array([(0.85, 0.67, 0.55), (0.70, 0.52, 0.40), (0.45, 0.32, 0.24),
                         (0.92, 0.76, 0.64)], dtype=np.float32)
FACADE_COLOURS = np.array([
    (0.72, 0.66, 0.58), (0.60, 0.58, 0.55), (0.78, 0.76, 0.70), (0.55, 0.40, 0.32),
    (0.45, 0.47, 0.50), (0.85, 0.82, 0.74)], dtype=np.float32)


class PartList:
    """Collects parts given as ground-based ranges (x0, x1, y0, y1, z0, z1), z from the ground."""

    def __init__(self, length: float, width: float, height: float):
        self.size = np.array([length, width, height])
        self.rows: list[tuple[float, ...]] = []
        self.mats: list[int] = []
        self.colours: list[np.ndarray] = []

    def add(self, x0, x1, y0, y1, z0, z1, mat: M, colour=None) -> None:
        hl, hw, h = self.size[0] / 2 - MARGIN, self.size[1] / 2 - MARGIN, self.size[2]
        x0, x1 = max(x0, -hl), min(x1, hl)
        y0, y1 = max(y0, -hw), min(y1, hw)
        z0, z1 = max(z0, MARGIN), min(z1, h - MARGIN)
        if x1 - x0 < 1e-3 or y1 - y0 < 1e-3 or z1 - z0 < 1e-3:
            return
        self.rows.append(((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2 - h / 2,
                          (x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2))
        self.mats.append(int(mat))
        self.colours.append(ALBEDO[int(mat)] if colour is None else np.asarray(colour, np.float32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K, 6) centre + half extents, (K,) material ids, (K, 3) colours."""
        return (np.array(self.rows, dtype=np.float64).reshape(-1, 6),
                np.array(self.mats, dtype=np.int16),
                np.array(self.colours, dtype=np.float32).reshape(-1, 3))


def _axle(p: PartList, xc: float, diameter: float, w: float) -> None:
    p.add(xc - diameter / 2, xc + diameter / 2, -w / 2, w / 2, 0.0, diameter, M.TIRE)


def _lights_and_plates(p: PartList, L, w, z_light, z_plate, front=True, rear=True) -> None:
    t = 0.07
    if rear:
        x0 = -L / 2
        p.add(x0, x0 + t, 0.28 * w, 0.47 * w, z_light, z_light + 0.12, M.TAILLIGHT)
        p.add(x0, x0 + t, -0.47 * w, -0.28 * w, z_light, z_light + 0.12, M.TAILLIGHT)
        p.add(x0, x0 + t, -0.26, 0.26, z_plate, z_plate + 0.12, M.PLATE)
    if front:
        x1 = L / 2
        p.add(x1 - t, x1, 0.25 * w, 0.45 * w, z_light, z_light + 0.1, M.HEADLIGHT)
        p.add(x1 - t, x1, -0.45 * w, -0.25 * w, z_light, z_light + 0.1, M.HEADLIGHT)
        p.add(x1 - t, x1, -0.26, 0.26, z_plate, z_plate + 0.12, M.PLATE)


def car_parts(L, w, h, colour) -> PartList:
    p = PartList(L, w, h)
    d = min(0.68, 0.40 * h)
    _axle(p, L / 2 - 0.17 * L, d, w)
    _axle(p, -L / 2 + 0.19 * L, d, w)
    body_top = 0.58 * h
    p.add(-L / 2 + 0.05, L / 2 - 0.05, -w / 2, w / 2, 0.45 * d, body_top, M.BODY, colour)
    p.add(-0.33 * L, 0.17 * L, -0.44 * w, 0.44 * w, body_top, 0.94 * h, M.GLASS)
    p.add(-0.31 * L, 0.13 * L, -0.43 * w, 0.43 * w, 0.94 * h, h, M.BODY, colour)
    _lights_and_plates(p, L, w, 0.44 * h, 0.30 * h)
    return p


def truck_parts(L, w, h, colour, cargo) -> PartList:
    p = PartList(L, w, h)
    d = min(0.95, 0.33 * h)
    cab = min(2.4, 0.36 * L)
    _axle(p, L / 2 - 0.6 * cab, d, w)
    _axle(p, -L / 2 + 0.16 * L, d, w)
    if L > 7.5:
        _axle(p, -L / 2 + 0.16 * L + 1.3, d, w)
    x_cab = L / 2 - cab
    p.add(x_cab, L / 2 - 0.05, -w / 2, w / 2, 0.5 * d, 0.50 * h, M.BODY, colour)
    p.add(x_cab + 0.15, L / 2 - 0.1, -0.46 * w, 0.46 * w, 0.50 * h, 0.72 * h, M.GLASS)
    p.add(x_cab + 0.15, L / 2 - 0.15, -0.46 * w, 0.46 * w, 0.72 * h, 0.77 * h, M.BODY, colour)
    p.add(-L / 2 + 0.05, x_cab - 0.2, -w / 2, w / 2, 0.9 * d, h, M.BODY, cargo)
    # rear under-run bar with retro-reflective tape
    p.add(-L / 2, -L / 2 + 0.08, -0.45 * w, 0.45 * w, 0.45, 0.55, M.REFLECTOR)
    _lights_and_plates(p, L, w, 0.75, 0.62, front=False)
    p.add(L / 2 - 0.07, L / 2, -0.45 * w, -0.25 * w, 0.32 * h, 0.36 * h, M.HEADLIGHT)
    p.add(L / 2 - 0.07, L / 2, 0.25 * w, 0.45 * w, 0.32 * h, 0.36 * h, M.HEADLIGHT)
    p.add(L / 2 - 0.07, L / 2, -0.26, 0.26, 0.2 * h, 0.24 * h, M.PLATE)
    return p


def bus_parts(L, w, h, colour) -> PartList:
    p = PartList(L, w, h)
    d = 1.0
    _axle(p, L / 2 - 0.22 * L, d, w)
    _axle(p, -L / 2 + 0.25 * L, d, w)
    p.add(-L / 2 + 0.05, L / 2 - 0.05, -w / 2, w / 2, 0.35, 0.45 * h, M.BODY, colour)
    p.add(-L / 2 + 0.1, L / 2 - 0.08, -0.48 * w, 0.48 * w, 0.45 * h, 0.86 * h, M.GLASS)
    p.add(-L / 2 + 0.05, L / 2 - 0.05, -w / 2, w / 2, 0.86 * h, h, M.BODY, colour)
    p.add(L / 2 - 0.1, L / 2 - 0.04, -0.35 * w, 0.35 * w, 0.80 * h, 0.86 * h, M.LAMP)
    _lights_and_plates(p, L, w, 0.22 * h, 0.12 * h)
    return p


def trailer_parts(L, w, h, cargo) -> PartList:
    p = PartList(L, w, h)
    d = 0.95
    _axle(p, -L / 2 + 1.2, d, w)
    _axle(p, -L / 2 + 2.5, d, w)
    p.add(L / 2 - 2.0, L / 2 - 1.8, -0.4 * w, 0.4 * w, 0.0, 1.1, M.POLE)  # landing gear
    p.add(-L / 2 + 0.05, L / 2 - 0.05, -w / 2 + 0.04, w / 2 - 0.04, 1.1, h, M.BODY, cargo)
    # conspicuity tape along both sides and the rear
    p.add(-L / 2 + 0.05, L / 2 - 0.05, w / 2 - 0.04, w / 2, 1.2, 1.3, M.REFLECTOR)
    p.add(-L / 2 + 0.05, L / 2 - 0.05, -w / 2, -w / 2 + 0.04, 1.2, 1.3, M.REFLECTOR)
    p.add(-L / 2, -L / 2 + 0.05, -0.48 * w, 0.48 * w, 1.15, 1.3, M.REFLECTOR)
    _lights_and_plates(p, L, w, 0.85, 0.6, front=False)
    return p


def construction_parts(L, w, h) -> PartList:
    p = PartList(L, w, h)
    p.add(-L / 2 + 0.3, L / 2 - 1.0, -w / 2, -w / 2 + 0.55, 0.0, 0.9, M.TIRE)  # tracks
    p.add(-L / 2 + 0.3, L / 2 - 1.0, w / 2 - 0.55, w / 2, 0.0, 0.9, M.TIRE)
    p.add(-L / 2 + 0.1, L / 2 - 1.2, -0.45 * w, 0.45 * w, 0.9, 0.5 * h, M.CONSTRUCTION)
    p.add(-0.15 * L, 0.2 * L, 0.0, 0.45 * w, 0.5 * h, 0.9 * h, M.GLASS)
    p.add(-0.15 * L, 0.2 * L, 0.0, 0.45 * w, 0.9 * h, 0.95 * h, M.CONSTRUCTION)
    p.add(-0.1 * L, -0.05 * L, 0.1 * w, 0.2 * w, 0.95 * h, h, M.LAMP)  # beacon
    p.add(0.1 * L, L / 2 - 0.3, -0.12, 0.12, 0.62 * h, 0.72 * h, M.CONSTRUCTION)  # boom
    p.add(L / 2 - 1.0, L / 2, -0.42 * w, 0.42 * w, 0.05, 0.45 * h, M.CONSTRUCTION,
          ALBEDO[M.CONSTRUCTION] * 0.6)  # bucket
    p.add(-L / 2, -L / 2 + 0.07, -0.3 * w, 0.3 * w, 0.9, 1.05, M.REFLECTOR)
    return p


def barrier_parts(L, w, h) -> PartList:
    """nuScenes barriers: L is the thickness (~0.5 m), w the long side (~2.5 m)."""
    p = PartList(L, w, h)
    p.add(-L / 2, L / 2, -w / 2 + 0.05, -w / 2 + 0.35, 0.0, 0.12, M.CONCRETE)
    p.add(-L / 2, L / 2, w / 2 - 0.35, w / 2 - 0.05, 0.0, 0.12, M.CONCRETE)
    p.add(-L / 2 + 0.1, L / 2 - 0.1, -w / 2, w / 2, 0.12, 0.95 * h, M.BARRIER)
    p.add(-L / 2 + 0.05, L / 2 - 0.05, -w / 2 + 0.1, w / 2 - 0.1, 0.68 * h, 0.80 * h,
          M.BARRIER_STRIP)
    return p


def cone_parts(L, w, h) -> PartList:
    p = PartList(L, w, h)
    p.add(-L / 2, L / 2, -w / 2, w / 2, 0.0, 0.05, M.TIRE)
    p.add(-0.32 * L, 0.32 * L, -0.32 * w, 0.32 * w, 0.05, 0.42 * h, M.CONE)
    p.add(-0.26 * L, 0.26 * L, -0.26 * w, 0.26 * w, 0.42 * h, 0.62 * h, M.CONE_BAND)
    p.add(-0.17 * L, 0.17 * L, -0.17 * w, 0.17 * w, 0.62 * h, h, M.CONE)
    return p


def pedestrian_parts(L, w, h, shirt, trousers, skin, moving: bool, hivis: bool,
                     sitting: bool = False) -> PartList:
    p = PartList(L, w, h)
    stride = 0.28 if moving else 0.12
    if sitting:
        p.add(-0.1, L / 2, -0.18, 0.18, 0.35, 0.5, M.CLOTH, trousers)
        p.add(-L / 2, -0.1, -0.18, 0.18, 0.0, 0.5, M.CONCRETE)  # the bench/seat
        torso0 = 0.5
    else:
        p.add(-stride, stride, -0.17, 0.17, 0.0, 0.47 * h, M.CLOTH, trousers)
        torso0 = 0.47 * h
    torso_mat, torso_col = (M.HIVIS, None) if hivis else (M.CLOTH, shirt)
    p.add(-0.14, 0.14, -w / 2, w / 2, torso0, 0.83 * h, torso_mat, torso_col)
    p.add(-0.1, 0.11, -0.09, 0.09, 0.85 * h, h, M.SKIN, skin)
    return p


def cycle_parts(L, w, h, frame_colour, rider: bool, motor: bool, shirt, trousers,
                skin) -> PartList:
    p = PartList(L, w, h)
    d = 0.62 if motor else 0.66
    tyre_w = 0.14 if motor else 0.05
    p.add(L / 2 - d, L / 2, -tyre_w / 2, tyre_w / 2, 0.0, d, M.TIRE)
    p.add(-L / 2, -L / 2 + d, -tyre_w / 2, tyre_w / 2, 0.0, d, M.TIRE)
    if motor:
        p.add(-0.32 * L, 0.32 * L, -0.2, 0.2, 0.3, 0.85, M.BODY, frame_colour)
        p.add(0.3 * L, 0.36 * L, -0.08, 0.08, 0.75, 0.85, M.HEADLIGHT)
        p.add(-0.36 * L, -0.32 * L, -0.1, 0.1, 0.62, 0.75, M.PLATE)
    else:
        p.add(-0.3 * L, 0.3 * L, -0.04, 0.04, 0.35, 0.75, M.FRAME, frame_colour)
        p.add(-0.36 * L, -0.32 * L, -0.04, 0.04, 0.76, 0.84, M.REFLECTOR)
    if rider:
        seat = 0.85 if motor else 0.9
        p.add(-0.15, 0.2, -0.16, 0.16, 0.35, seat + 0.1, M.CLOTH, trousers)
        p.add(-0.25, 0.08, -0.2, 0.2, seat + 0.1, h - 0.27, M.CLOTH, shirt)
        head_col = frame_colour if motor else skin
        p.add(-0.14, 0.08, -0.11, 0.11, h - 0.25, h, M.BODY if motor else M.SKIN, head_col)
    return p


def bin_parts(L, w, h) -> PartList:
    p = PartList(L, w, h)
    p.add(-L / 2, L / 2, -w / 2, w / 2, 0.0, 0.92 * h, M.BIN)
    p.add(-L / 2, L / 2, -w / 2, w / 2, 0.92 * h, h, M.BIN, ALBEDO[M.BIN] * 0.6)
    return p


# ----------------------------------------------------------------------- static structures
def building_parts(L, w, h, colour) -> PartList:
    p = PartList(L, w, h)
    p.add(-L / 2, L / 2, -w / 2, w / 2, 0.0, h, M.FACADE, colour)
    return p


def light_pole_parts(arm_sign: float) -> tuple[PartList, np.ndarray]:
    """A street light: pole, arm toward the road (+y * arm_sign) and lamp head."""
    L, w, h = 0.5, 3.2, 7.6
    p = PartList(L, w, h)
    y_pole = -arm_sign * (w / 2 - 0.2)
    p.add(-0.1, 0.1, y_pole - 0.1, y_pole + 0.1, 0.0, 7.2, M.POLE)
    y0, y1 = sorted([y_pole, y_pole + arm_sign * 2.8])
    p.add(-0.06, 0.06, y0, y1, 7.2, 7.35, M.POLE)
    ye = y_pole + arm_sign * 2.8
    p.add(-0.2, 0.2, ye - 0.3, ye + 0.3, 7.0, 7.2, M.LAMP)
    return p, np.array([0.0, ye, 7.0 - h / 2])


def sign_parts() -> PartList:
    L, w, h = 0.12, 0.8, 2.9
    p = PartList(L, w, h)
    p.add(-0.04, 0.04, -0.04, 0.04, 0.0, 2.1, M.POLE)
    p.add(0.04, 0.06, -0.38, 0.38, 2.1, h, M.SIGN)
    p.add(-0.06, 0.04, -0.38, 0.38, 2.1, h, M.POLE)
    return p


def tree_parts(crown: float, height: float) -> PartList:
    p = PartList(crown, crown, height)
    p.add(-0.15, 0.15, -0.15, 0.15, 0.0, height * 0.45, M.TRUNK)
    p.add(-crown / 2, crown / 2, -crown / 2, crown / 2, height * 0.4, height, M.FOLIAGE)
    return p
