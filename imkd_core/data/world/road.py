"""Road geometry: a constant-curvature street with lanes, markings, crosswalks and sidewalks.

Road coordinates are `s` (arc length along the centre line) and `d` (signed lateral offset, +left
of the direction of increasing s). The ground plane is z = 0 in the global frame. Layout from the
centre line outwards, on both sides: driving lanes, an optional bike lane, an optional parking
lane, the curb (road edge), the sidewalk, a grass verge, then buildings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imkd_core.data.world.materials import M


@dataclass(frozen=True)
class Road:
    x0: float
    y0: float
    heading0: float
    kappa: float  # curvature 1/m, + turns left; |kappa| <= 1/150
    lanes: int  # driving lanes per direction
    lane_width: float
    bike_lane: float  # width, 0 = none
    parking: float  # width, 0 = none
    sidewalk: float
    verge: float
    left_hand_traffic: bool  # Singapore drives on the left
    crosswalks: tuple[float, ...] = ()
    yellow_centre: bool = True

    # ---------------------------------------------------------------- layout (|d| offsets)
    @property
    def lanes_edge(self) -> float:
        return self.lanes * self.lane_width

    @property
    def edge(self) -> float:
        """|d| of the curb: the end of the drivable surface."""
        return self.lanes_edge + self.bike_lane + self.parking

    @property
    def sidewalk_outer(self) -> float:
        return self.edge + self.sidewalk

    @property
    def building_line(self) -> float:
        return self.sidewalk_outer + self.verge

    @property
    def forward_sign(self) -> float:
        """Sign of d for lanes driving toward +s (right-hand traffic: right side, d < 0)."""
        return 1.0 if self.left_hand_traffic else -1.0

    def lane_center(self, lane: int, forward: bool) -> float:
        sign = self.forward_sign if forward else -self.forward_sign
        return sign * (lane + 0.5) * self.lane_width

    def side_offset(self, forward: bool, magnitude: float) -> float:
        """d on the side of the forward (or oncoming) lanes at |d| = magnitude."""
        sign = self.forward_sign if forward else -self.forward_sign
        return sign * magnitude

    # ---------------------------------------------------------------- geometry
    def to_world(self, s, d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s, d) -> global x, y and the heading of the direction of increasing s."""
        s = np.asarray(s, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64)
        theta = self.heading0 + self.kappa * s
        if abs(self.kappa) < 1e-9:
            cx = self.x0 + s * np.cos(self.heading0)
            cy = self.y0 + s * np.sin(self.heading0)
        else:
            cx = self.x0 + (np.sin(theta) - np.sin(self.heading0)) / self.kappa
            cy = self.y0 - (np.cos(theta) - np.cos(self.heading0)) / self.kappa
        x = cx - d * np.sin(theta)
        y = cy + d * np.cos(theta)
        return x, y, theta

    def to_road(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Global x, y -> (s, d); exact for the constant-curvature line (|s| < pi / |kappa|)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        c, si = np.cos(self.heading0), np.sin(self.heading0)
        if abs(self.kappa) < 1e-9:
            dx, dy = x - self.x0, y - self.y0
            return dx * c + dy * si, -dx * si + dy * c
        r = 1.0 / self.kappa
        # centre of curvature: start point + r * left normal
        ccx, ccy = self.x0 - r * si, self.y0 + r * c
        vx, vy = x - ccx, y - ccy
        dist = np.hypot(vx, vy)
        ang0 = np.arctan2(self.y0 - ccy, self.x0 - ccx)
        ang = np.arctan2(vy, vx)
        dang = (ang - ang0 + np.pi) % (2 * np.pi) - np.pi
        s = dang / self.kappa
        d = r - np.sign(self.kappa) * dist
        return s, d

    def ground_material(self, s, d) -> np.ndarray:
        """Material id of the ground at road coordinates (vectorised)."""
        s = np.asarray(s)
        ad = np.abs(d)
        mat = np.full(ad.shape, M.GRASS, dtype=np.int8)
        mat[ad < self.sidewalk_outer] = M.CONCRETE
        mat[np.abs(ad - self.edge) < 0.12] = M.CURB
        on_road = ad < self.edge - 0.12
        mat[on_road] = M.ASPHALT
        if self.bike_lane > 0:
            bike = (ad > self.lanes_edge + 0.1) & (ad < self.lanes_edge + self.bike_lane)
            mat[bike] = M.BIKE_LANE
        paint = np.zeros(ad.shape, dtype=bool)
        # double centre line
        paint |= np.abs(ad - 0.15) < 0.06
        # dashed lane dividers: 3 m dash, 6 m gap
        dash = np.mod(s, 9.0) < 3.0
        for k in range(1, self.lanes):
            paint |= (np.abs(ad - k * self.lane_width) < 0.075) & dash
        # solid edge line of the driving lanes (and of the bike lane)
        paint |= np.abs(ad - self.lanes_edge) < 0.08
        if self.bike_lane > 0:
            paint |= np.abs(ad - self.lanes_edge - self.bike_lane) < 0.08
        centre = paint & (ad < 0.3)
        # zebra crosswalks: 0.5 m stripes across the whole carriageway, 4 m deep
        for sc in self.crosswalks:
            zebra = (np.abs(s - sc) < 2.0) & on_road & (np.mod(d + 100.0, 1.0) < 0.5)
            paint |= zebra
            centre &= ~zebra
        mat[paint & on_road] = M.PAINT_WHITE
        if self.yellow_centre:
            mat[centre & on_road] = M.PAINT_YELLOW
        return mat

    def drivable_polygon(self, s_min: float, s_max: float, step: float = 2.0) -> np.ndarray:
        """(K, 2) global polygon of the drivable surface between s_min and s_max (for the map)."""
        s = np.arange(s_min, s_max + step, step)
        lx, ly, _ = self.to_world(s, np.full_like(s, self.edge))
        rx, ry, _ = self.to_world(s, np.full_like(s, -self.edge))
        return np.concatenate([np.stack([lx, ly], 1), np.stack([rx, ry], 1)[::-1]], axis=0)
