"""The street one scene is built on, and the tools every population step places objects with.

`SceneLayout` holds the scene under construction: the fine time grid (10 ms) all motion is
sampled on, the road and where it lies in the log's map, the ego's drive along it, the
unannotated structure beside it (buildings, street lights, signs, trees), and every actor placed
so far. `_add` places an object only where its whole trajectory keeps clear of everything
already there (oriented-box overlap over time, `_Occupancy`), so nothing drives through anything
else; `_model` packs the result into the `scene.SceneModel` the sensors read. The class
statistics (`CLASS_SPECS`: nuScenes mean sizes, radar cross-sections, speeds) live here too.
What goes on the street, and in which order, is `population.SceneBuilder`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imkd_core.data.world import shapes
from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.road import Road
from imkd_core.data.world.scene import KEYFRAME_INTERVAL, Actor, SceneModel
from imkd_core.sample import ATTRIBUTES

ATTR = {name: i for i, name in enumerate(ATTRIBUTES)}
EGO_SIZE = (4.08, 1.73, 1.56)  # Renault Zoe
EGO_CENTRE_AHEAD = 1.35  # box centre ahead of the ego frame origin (rear axle), m


@dataclass(frozen=True)
class ClassSpec:
    name: str
    category: str
    size: tuple[float, float, float]  # mean l, w, h (nuScenes statistics)
    size_std: float  # relative
    rcs_db: float  # mean radar cross-section, dBsm
    radar_points: int  # at most this many radar clusters per scan
    speed: tuple[float, float] = (0.0, 0.0)


CLASS_SPECS: dict[str, ClassSpec] = {s.name: s for s in (
    ClassSpec("car", "vehicle.car", (4.61, 1.95, 1.72), 0.07, 9.0, 4, (5.0, 13.0)),
    ClassSpec("truck", "vehicle.truck", (6.9, 2.5, 2.9), 0.14, 16.0, 6, (4.0, 11.0)),
    ClassSpec("construction_vehicle", "vehicle.construction", (6.4, 2.75, 3.1), 0.1, 15.0, 5,
              (0.5, 1.5)),
    ClassSpec("bus", "vehicle.bus.rigid", (11.2, 2.95, 3.45), 0.05, 18.0, 7, (4.0, 10.0)),
    ClassSpec("trailer", "vehicle.trailer", (10.5, 2.85, 3.75), 0.12, 16.0, 6),
    ClassSpec("barrier", "movable_object.barrier", (0.5, 2.5, 0.98), 0.06, 1.0, 2),
    ClassSpec("motorcycle", "vehicle.motorcycle", (2.1, 0.8, 1.45), 0.06, 1.0, 2, (5.0, 12.0)),
    ClassSpec("bicycle", "vehicle.bicycle", (1.75, 0.62, 1.62), 0.05, -5.0, 1, (3.0, 6.0)),
    ClassSpec("pedestrian", "human.pedestrian.adult", (0.73, 0.67, 1.76), 0.06, -8.0, 1,
              (0.9, 1.7)),
    ClassSpec("traffic_cone", "movable_object.trafficcone", (0.41, 0.41, 0.95), 0.08, -12.0, 1),
    ClassSpec("bin", "movable_object.pushable_pullable", (0.6, 0.6, 1.05), 0.05, -4.0, 1),
)}
# Radar properties of unannotated structure.
STATIC_RCS = {"building": (13.0, 3), "pole": (5.0, 1), "sign": (8.0, 1), "tree": (-2.0, 1)}


class _Occupancy:
    """Oriented-box overlap test of a candidate trajectory against everything placed so far."""

    def __init__(self, steps: np.ndarray):
        self.steps = steps  # coarse grid indices
        self.items: list[tuple[np.ndarray, ...]] = []

    def add(self, x, y, yaw, length, width) -> None:
        st = self.steps
        self.items.append((x[st], y[st], yaw[st], np.full(len(st), length / 2),
                           np.full(len(st), width / 2)))

    def free(self, x, y, yaw, length, width, margin: float) -> bool:
        if not self.items:
            return True
        st = self.steps
        ax, ay, ayaw = x[st][None], y[st][None], yaw[st][None]
        ahl, ahw = length / 2 + margin, width / 2 + margin
        bx, by, byaw, bhl, bhw = (np.stack(v) for v in zip(*self.items))
        # cheap reject: bounding circles never meet
        reach = np.hypot(ahl, ahw) + np.hypot(bhl, bhw)
        near = (np.hypot(bx - ax, by - ay) < reach).any(axis=1)
        if not near.any():
            return True
        bx, by, byaw, bhl, bhw = bx[near], by[near], byaw[near], bhl[near], bhw[near]
        dx, dy = bx - ax, by - ay
        ca, sa, cb, sb = np.cos(ayaw), np.sin(ayaw), np.cos(byaw), np.sin(byaw)
        separated = np.zeros(dx.shape, dtype=bool)
        for ux, uy in ((ca, sa), (-sa, ca), (cb, sb), (-sb, cb)):
            dist = np.abs(dx * ux + dy * uy)
            ra = ahl * np.abs(ca * ux + sa * uy) + ahw * np.abs(-sa * ux + ca * uy)
            rb = bhl * np.abs(cb * ux + sb * uy) + bhw * np.abs(-sb * ux + cb * uy)
            separated |= dist > ra + rb
        return bool(separated.all())


def speed_profile(rng, kind: str, v0: float, t: np.ndarray, horizon: float) -> np.ndarray:
    if kind == "constant":
        return np.full(t.shape, v0)
    if kind == "wavy":
        return np.clip(v0 + 0.12 * v0 * np.sin(2 * np.pi * t / rng.uniform(6, 14)
                                                 + rng.uniform(0, 6.3)), 0, None)
    if kind == "stop":  # decelerate to a standstill
        ts, dec = rng.uniform(0.1, 0.6) * horizon, rng.uniform(1.5, 3.0)
        return np.clip(v0 - dec * np.clip(t - ts, 0, None), 0, None)
    if kind == "go":  # wait, then pull away
        tg, acc = rng.uniform(0.1, 0.5) * horizon, rng.uniform(1.0, 2.2)
        return np.clip(acc * (t - tg), 0, v0)
    if kind == "still":
        return np.zeros(t.shape)
    raise ValueError(kind)


def integrate(v: np.ndarray, dt: float, i_ref: int, s_ref: float) -> np.ndarray:
    s = np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) * 0.5 * dt)])
    return s - s[i_ref] + s_ref


def sized(rng, spec: ClassSpec, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    common = np.clip(rng.normal(0, spec.size_std), -2 * spec.size_std, 2 * spec.size_std)
    own = np.clip(rng.normal(0, spec.size_std * 0.5, 3), -spec.size_std, spec.size_std)
    return np.array(spec.size) * np.array(scale) * (1 + common + own)


class SceneLayout:
    """The scene under construction (see the module docstring). `population.SceneBuilder.build`
    draws the road and runs the steps in order; deterministic given the rng."""

    def __init__(self, cfg: WorldConfig, index: int, name: str, rng: np.random.Generator):
        self.cfg, self.index, self.name, self.rng = cfg, index, name, rng
        self.horizon = (cfg.samples_per_scene - 1) * KEYFRAME_INTERVAL
        self.dt = 0.01
        self.t0 = -1.0
        self.n = round((self.horizon + 2.0 - self.t0) / self.dt) + 1
        self.t = self.t0 + self.dt * np.arange(self.n)
        self.i0 = round(-self.t0 / self.dt)  # grid index of t = 0
        self.occ = _Occupancy(np.arange(0, self.n, 10))
        self.actors: list[Actor] = []
        self.features: list[str] = []

    # ---------------------------------------------------------------- helpers
    def _add(self, kind, size, parts: shapes.PartList, x, y, yaw, attr, margin=0.3,
             annotated=True, category=None, rcs=None, radar_points=None, lamp=None,
             check=True, footprint=None) -> bool:
        """Add an object if its trajectory is free. `footprint` = (dx, dy, l, w) in the object
        frame replaces the box for the overlap test (a street light's pole, not its arm)."""
        x = np.broadcast_to(np.asarray(x, float), (self.n,)).copy()
        y = np.broadcast_to(np.asarray(y, float), (self.n,)).copy()
        yaw = np.broadcast_to(np.asarray(yaw, float), (self.n,)).copy()
        fx, fy, fl, fw = x, y, size[0], size[1]
        if footprint is not None:
            dx, dy, fl, fw = footprint
            fx = x + np.cos(yaw) * dx - np.sin(yaw) * dy
            fy = y + np.sin(yaw) * dx + np.cos(yaw) * dy
        if check and not self.occ.free(fx, fy, yaw, fl, fw, margin):
            return False
        self.occ.add(fx, fy, yaw, fl, fw)
        spec = CLASS_SPECS.get(kind)
        if rcs is None:
            rcs = spec.rcs_db if spec else STATIC_RCS[kind][0]
        if radar_points is None:
            radar_points = spec.radar_points if spec else STATIC_RCS[kind][1]
        local, mats, cols = parts.arrays()
        attr = np.broadcast_to(np.asarray(attr, np.int8), (self.n,)).copy()
        self.actors.append(Actor(
            kind, category if category is not None else (spec.category if spec else ""),
            np.asarray(size, float), local, mats, cols, x, y, yaw, attr, annotated,
            float(rcs + self.rng.normal(0, 1.5)), radar_points, lamp))
        return True

    def _vehicle_attr(self, speed: np.ndarray, parked: bool) -> np.ndarray:
        if parked:
            return np.full(self.n, ATTR["vehicle.parked"], np.int8)
        return np.where(speed > 0.3, ATTR["vehicle.moving"], ATTR["vehicle.stopped"]).astype(
            np.int8)

    def _colour(self, palette, p=None):
        return palette[self.rng.choice(len(palette), p=p)]

    def _vehicle_shape(self, kind, size):
        L, w, h = size
        if kind == "car":
            return shapes.car_parts(L, w, h, self._colour(shapes.CAR_COLOURS,
                                                          shapes.CAR_COLOUR_P))
        if kind == "truck":
            return shapes.truck_parts(L, w, h, self._colour(shapes.CAR_COLOURS),
                                      self._colour(shapes.CARGO_COLOURS))
        if kind == "bus":
            return shapes.bus_parts(L, w, h, self._colour(shapes.BUS_COLOURS))
        if kind == "trailer":
            return shapes.trailer_parts(L, w, h, self._colour(shapes.CARGO_COLOURS))
        if kind == "construction_vehicle":
            return shapes.construction_parts(L, w, h)
        if kind == "motorcycle":
            shirt, trousers, skin = self._person_colours()
            return shapes.cycle_parts(L, w, h, self._colour(shapes.CAR_COLOURS), True, True,
                                      shirt, trousers, skin)
        raise ValueError(kind)

    def _person_colours(self):
        return (self._colour(shapes.CLOTH_COLOURS), self._colour(shapes.CLOTH_COLOURS),
                self._colour(shapes.SKIN_COLOURS))

    def _s_near_ego(self, before: float, after: float) -> float:
        return float(self.rng.uniform(self.s_lo - before, self.s_hi + after))

    # ---------------------------------------------------------------- the street
    def _ego(self) -> None:
        rng, t = self.rng, self.t
        kind = rng.choice(["constant", "wavy", "stop", "go", "still"],
                          p=[0.35, 0.25, 0.15, 0.15, 0.10])
        v0 = float(rng.uniform(5.0, 11.0))
        v = speed_profile(rng, kind, v0, t, self.horizon)
        self.ego_kind = str(kind)
        self.ego_v = v
        s = integrate(v, self.dt, self.i0, 0.0)
        self.ego_lane = int(rng.integers(0, self.road.lanes))
        self.ego_s = s
        i_end = self.i0 + round(self.horizon / self.dt)
        self.s_lo, self.s_hi = float(s[self.i0]), float(s[i_end])
        self.features.append({"constant": "cruising", "wavy": "moderate traffic",
                              "stop": "ego stops", "go": "ego pulls away",
                              "still": "ego waiting"}[self.ego_kind])

    def _place_road_in_map(self) -> None:
        """Put s = 0 of the road somewhere in the log's map (positive coordinates, as nuScenes)
        with a random heading, then finish the ego track in global coordinates."""
        rng = self.rng
        self.s_min, self.s_max = self.s_lo - 160.0, self.s_hi + 200.0
        heading = float(rng.uniform(-np.pi, np.pi))
        probe = Road(0.0, 0.0, heading, self.road.kappa, **self.road_params)
        s = np.linspace(self.s_min, self.s_max, 200)
        reach = probe.building_line + 30.0
        xs, ys = [], []
        for d in (-reach, reach):
            x, y, _ = probe.to_world(s, np.full_like(s, d))
            xs.append(x)
            ys.append(y)
        xs, ys = np.concatenate(xs), np.concatenate(ys)
        margin = 60.0
        self.road = Road(float(margin - xs.min()), float(margin - ys.min()), heading,
                         self.road.kappa, crosswalks=(), **self.road_params)
        self.map_extent = (float(xs.max() - xs.min() + 2 * margin),
                           float(ys.max() - ys.min() + 2 * margin))
        rng_phase = rng.uniform(0, 2 * np.pi, 4)
        t = self.t
        d_lane = self.road.lane_center(self.ego_lane, forward=True)
        # lane keeping: a slow weave along the road (none while standing still)
        d = d_lane + 0.12 * np.sin(2 * np.pi * self.ego_s / 60.0 + rng_phase[0])
        x, y, th = self.road.to_world(self.ego_s, d)
        dd = np.gradient(d, self.dt)
        ds = np.maximum(np.gradient(self.ego_s, self.dt), 0.5)
        # the ego frame origin is the rear axle: the box centre sits EGO_CENTRE_AHEAD in front
        self.ego_x, self.ego_y = x, y
        self.ego_yaw = np.unwrap(th + np.arctan2(dd, ds) * (np.gradient(self.ego_s) > 1e-4))
        acc = np.gradient(self.ego_v, self.dt)
        agitation = 0.2 + 0.8 * np.clip(self.ego_v / 6.0, 0, 1)
        self.ego_pitch = np.radians(0.25 * agitation * np.sin(2 * np.pi * t / 2.7 + rng_phase[1])
                                    - 0.35 * np.clip(acc, -3, 3) / 3.0)
        self.ego_roll = np.radians(0.2 * agitation * np.sin(2 * np.pi * t / 3.3 + rng_phase[2]))
        cx = x + EGO_CENTRE_AHEAD * np.cos(self.ego_yaw)
        cy = y + EGO_CENTRE_AHEAD * np.sin(self.ego_yaw)
        self.occ.add(cx, cy, self.ego_yaw, EGO_SIZE[0] + 1.0, EGO_SIZE[1] + 0.4)
        self.ego_d = d

    def _structure(self) -> None:
        """Buildings, street lights, signs and trees along both sides (not annotated)."""
        rng, road = self.rng, self.road
        for side in (-1.0, 1.0):
            s = self.s_min
            while s < self.s_max:
                s += rng.uniform(0, 10) if rng.random() < 0.75 else rng.uniform(12, 30)
                length, depth = rng.uniform(10, 40), rng.uniform(10, 25)
                height = rng.uniform(5, 30) if rng.random() < 0.7 else rng.uniform(3.5, 8)
                size = np.array([length, depth, height])
                sc = s + length / 2
                x, y, th = road.to_world(sc, side * (road.building_line + depth / 2))
                self._add("building", size, shapes.building_parts(
                    length, depth, height, self._colour(shapes.FACADE_COLOURS)), x, y, th, -1,
                    annotated=False, check=False)
                s += length
            s = self.s_min + rng.uniform(0, 20)
            while s < self.s_max:
                parts, lamp = shapes.light_pole_parts(arm_sign=-1.0)
                size = parts.size
                # the arm reaches over the road: the object's local -y faces the road and the
                # pole (at local y = +w/2 - 0.2) stands on the sidewalk at |d| = edge + 0.35
                y_pole = size[1] / 2 - 0.2
                d = side * (road.edge + 0.35 - y_pole)
                x, y, th = road.to_world(s, d)
                yaw = th if side > 0 else th + np.pi
                if not any(abs(s - c) < 4 for c in road.crosswalks):
                    self._add("pole", size, parts, x, y, yaw, -1, annotated=False, lamp=lamp,
                              margin=0.05, footprint=(0.0, y_pole, 0.3, 0.3))
                s += rng.uniform(25, 38)
            s = self.s_min + rng.uniform(0, 40)
            while s < self.s_max:
                parts = shapes.sign_parts()
                forward = (side * road.forward_sign) > 0
                x, y, th = road.to_world(s, side * (road.edge + 0.6))
                yaw = th + np.pi if forward else th  # the plate faces approaching traffic
                self._add("sign", parts.size, parts, x, y, yaw, -1, annotated=False, margin=0.1)
                s += rng.uniform(45, 90)
            if road.verge >= 2.5:
                s = self.s_min + rng.uniform(0, 10)
                while s < self.s_max:
                    if rng.random() < 0.55:
                        crown = rng.uniform(2.0, min(4.0, road.verge + 1.0))
                        height = rng.uniform(4, 9)
                        parts = shapes.tree_parts(crown, height)
                        x, y, th = road.to_world(s, side * (road.sidewalk_outer + road.verge / 2))
                        self._add("tree", parts.size, parts, x, y, th, -1, annotated=False,
                                  margin=0.05)
                    s += rng.uniform(8, 18)

    def _model(self, loc_name, left_hand) -> SceneModel:
        rng = self.rng
        elevation = np.radians(rng.uniform(25, 65))
        azimuth = rng.uniform(-np.pi, np.pi)
        sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                        np.sin(elevation)])
        if self.condition == "night":
            self.features.insert(0, "Night")
        elif self.condition == "rain":
            self.features.insert(0, "Rain")
        road = self.road
        self.features.append(f"{road.lanes} lane{'s' if road.lanes > 1 else ''} each way")
        if abs(road.kappa) > 0:
            self.features.append("curve " + ("left" if road.kappa > 0 else "right"))
        keyframes = np.arange(self.cfg.samples_per_scene) * KEYFRAME_INTERVAL
        model = SceneModel(
            index=self.index, name=self.name, condition=self.condition, location=loc_name,
            left_hand_traffic=left_hand, road=road, t0=self.t0, dt=self.dt, n_steps=self.n,
            keyframe_times=keyframes, ego_x=self.ego_x, ego_y=self.ego_y, ego_yaw=self.ego_yaw,
            ego_pitch=self.ego_pitch, ego_roll=self.ego_roll, ego_s=self.ego_s,
            actors=self.actors, sun=sun, description=", ".join(self.features),
            s_range=(self.s_min, self.s_max), map_extent=self.map_extent)
        model.pack()
        return model


__all__ = ["ATTR", "CLASS_SPECS", "EGO_CENTRE_AHEAD", "EGO_SIZE", "STATIC_RCS", "ClassSpec",
           "SceneLayout", "integrate", "sized", "speed_profile"]
