"""One scene of the world: a street, the ego's drive along it, and everything else on it.

Objects of the 10 detection classes get class-typical sizes (nuScenes means, per-instance
variation), speeds and behaviour: cars, trucks, buses, motorcycles and truck+trailer combinations
drive in lanes (some slow to a stop or pull away), cars, trucks and trailers park, cyclists ride
the bike lane, pedestrians walk the sidewalks, wait at and cross zebra crossings, a construction
zone closes the parking lane with barriers, cones, a construction vehicle and workers in hi-vis.
Unannotated structure (buildings, street lights, signs, trees) gives the sensors background and
clutter. Every trajectory is checked against everything already placed (oriented-box overlap
over time), so nothing drives through anything else.

All motion is sampled on a fine time grid (10 ms) once; sensors interpolate it at their own
timestamps, so every sensor, annotation and velocity sees the same world.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from imkd_core.data.world import shapes
from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.materials import ALBEDO
from imkd_core.data.world.road import Road

ATTRIBUTES: tuple[str, ...] = (
    "vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider",
    "cycle.without_rider", "pedestrian.sitting_lying_down", "pedestrian.standing",
    "pedestrian.moving",
)
ATTR = {name: i for i, name in enumerate(ATTRIBUTES)}

# (name, drives on the left, UTC offset of the log name)
LOCATIONS: tuple[tuple[str, bool, str], ...] = (
    ("singapore-onenorth", True, "+0800"),
    ("boston-seaport", False, "-0400"),
    ("singapore-queenstown", True, "+0800"),
    ("singapore-hollandvillage", True, "+0800"),
)

KEYFRAME_INTERVAL = 0.5  # s, nuScenes keyframes at 2 Hz
EGO_SIZE = (4.08, 1.73, 1.56)  # Renault Zoe
EGO_CENTRE_AHEAD = 1.35  # box centre ahead of the ego frame origin (rear axle), m
ANNOTATION_RANGE = 70.0  # m from the ego (xy): objects further out are not annotated


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


@dataclass
class Actor:
    """Anything with a shape: annotated objects and unannotated structure."""

    kind: str  # detection class, "bin", or a structure kind ("building", "pole", ...)
    category: str  # nuScenes category name; "" for unannotated structure
    size: np.ndarray  # (3,) l, w, h
    parts: np.ndarray  # (K, 6) centre (object frame, z about the box centre) + half extents
    mats: np.ndarray  # (K,) material ids
    colours: np.ndarray  # (K, 3)
    x: np.ndarray  # (T,) box centre on the scene time grid
    y: np.ndarray
    yaw: np.ndarray
    attr: np.ndarray  # (T,) index into ATTRIBUTES, -1 none
    annotated: bool
    rcs_db: float
    radar_points: int
    lamp: np.ndarray | None = None  # street-light head position in the object frame


@dataclass
class Snapshot:
    """Everything at one instant: object poses/velocities and the world-frame cuboid parts."""

    t: float
    x: np.ndarray  # (N,)
    y: np.ndarray
    yaw: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    centre: np.ndarray  # (N, 3) box centres
    size: np.ndarray  # (N, 3)
    part_centre: np.ndarray  # (P, 3) world
    part_yaw: np.ndarray  # (P,)
    part_half: np.ndarray  # (P, 3)
    part_mat: np.ndarray  # (P,)
    part_colour: np.ndarray  # (P, 3)
    part_owner: np.ndarray  # (P,)
    part_start: np.ndarray  # (N + 1,) parts of owner i are part_start[i]:part_start[i+1]


@dataclass
class SceneModel:
    index: int
    name: str
    condition: str
    location: str
    left_hand_traffic: bool
    road: Road
    t0: float
    dt: float
    n_steps: int
    keyframe_times: np.ndarray
    ego_x: np.ndarray
    ego_y: np.ndarray
    ego_yaw: np.ndarray
    ego_pitch: np.ndarray
    ego_roll: np.ndarray
    ego_s: np.ndarray
    actors: list[Actor]
    sun: np.ndarray  # unit vector toward the sun (world)
    description: str
    s_range: tuple[float, float]  # road span the world covers
    # packed arrays, built by `pack()`
    X: np.ndarray = field(default=None, repr=False)
    Y: np.ndarray = field(default=None, repr=False)
    YAW: np.ndarray = field(default=None, repr=False)
    VX: np.ndarray = field(default=None, repr=False)
    VY: np.ndarray = field(default=None, repr=False)
    size: np.ndarray = field(default=None, repr=False)
    annotated: np.ndarray = field(default=None, repr=False)
    part_local: np.ndarray = field(default=None, repr=False)
    part_mat: np.ndarray = field(default=None, repr=False)
    part_colour: np.ndarray = field(default=None, repr=False)
    part_owner: np.ndarray = field(default=None, repr=False)
    part_start: np.ndarray = field(default=None, repr=False)
    lamps: np.ndarray = field(default=None, repr=False)  # (L, 3) world street-light heads

    # ------------------------------------------------------------------ packing / sampling
    def pack(self) -> None:
        a = self.actors
        self.X = np.stack([o.x for o in a])
        self.Y = np.stack([o.y for o in a])
        self.YAW = np.stack([o.yaw for o in a])
        self.VX = np.gradient(self.X, self.dt, axis=1)
        self.VY = np.gradient(self.Y, self.dt, axis=1)
        static = np.ptp(self.X, axis=1) + np.ptp(self.Y, axis=1) == 0
        self.VX[static] = 0.0
        self.VY[static] = 0.0
        self.size = np.stack([o.size for o in a])
        self.annotated = np.array([o.annotated for o in a])
        counts = np.array([len(o.parts) for o in a])
        self.part_start = np.concatenate([[0], np.cumsum(counts)])
        self.part_local = np.concatenate([o.parts for o in a])
        self.part_mat = np.concatenate([o.mats for o in a]).astype(np.int64)
        self.part_colour = np.concatenate([o.colours for o in a]).astype(np.float32)
        self.part_owner = np.repeat(np.arange(len(a)), counts)
        lamps = []
        for o in a:
            if o.lamp is not None:
                c, s = np.cos(o.yaw[0]), np.sin(o.yaw[0])
                lx, ly, lz = o.lamp
                lamps.append((o.x[0] + c * lx - s * ly, o.y[0] + s * lx + c * ly,
                              lz + o.size[2] / 2))
        self.lamps = np.array(lamps, dtype=np.float64).reshape(-1, 3)

    def _interp(self, t: float) -> tuple[int, float]:
        pos = (t - self.t0) / self.dt
        i = int(np.clip(np.floor(pos), 0, self.n_steps - 2))
        return i, float(np.clip(pos - i, 0.0, 1.0))

    def snapshot(self, t: float) -> Snapshot:
        i, f = self._interp(t)

        def lerp(a):
            return a[:, i] * (1 - f) + a[:, i + 1] * f

        x, y, yaw = lerp(self.X), lerp(self.Y), lerp(self.YAW)
        vx, vy = lerp(self.VX), lerp(self.VY)
        owner = self.part_owner
        c, s = np.cos(yaw)[owner], np.sin(yaw)[owner]
        loc = self.part_local
        pc = np.empty((len(loc), 3))
        pc[:, 0] = x[owner] + c * loc[:, 0] - s * loc[:, 1]
        pc[:, 1] = y[owner] + s * loc[:, 0] + c * loc[:, 1]
        pc[:, 2] = loc[:, 2] + self.size[owner, 2] / 2
        centre = np.stack([x, y, self.size[:, 2] / 2], axis=1)
        return Snapshot(t, x, y, yaw, vx, vy, centre, self.size, pc, yaw[owner], loc[:, 3:6],
                        self.part_mat, self.part_colour, owner, self.part_start)

    def ego_pose(self, t: float) -> np.ndarray:
        """T_world_ego (4x4) at time t: flat-ground position (z = 0, as nuScenes), yaw, and the
        small pitch/roll of the body."""
        i, f = self._interp(t)

        def lerp(a):
            return a[i] * (1 - f) + a[i + 1] * f

        yaw, pitch, roll = lerp(self.ego_yaw), lerp(self.ego_pitch), lerp(self.ego_roll)
        cy, sy, cp, sp, cr, sr = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                                  np.cos(roll), np.sin(roll))
        R = np.array([
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ])
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = (lerp(self.ego_x), lerp(self.ego_y), 0.0)
        return T

    def ego_speed(self, t: float) -> float:
        i, _ = self._interp(t)
        return float(abs(self.ego_s[i + 1] - self.ego_s[i]) / self.dt)


# ================================================================================ building
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


def _speed_profile(rng, kind: str, v0: float, t: np.ndarray, horizon: float) -> np.ndarray:
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


def _integrate(v: np.ndarray, dt: float, i_ref: int, s_ref: float) -> np.ndarray:
    s = np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) * 0.5 * dt)])
    return s - s[i_ref] + s_ref


def _sized(rng, spec: ClassSpec, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    common = np.clip(rng.normal(0, spec.size_std), -2 * spec.size_std, 2 * spec.size_std)
    own = np.clip(rng.normal(0, spec.size_std * 0.5, 3), -spec.size_std, spec.size_std)
    return np.array(spec.size) * np.array(scale) * (1 + common + own)


class SceneBuilder:
    """Places the ego and every object of one scene (deterministic given the rng)."""

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

    # ---------------------------------------------------------------- scene parts
    def build(self) -> SceneModel:
        rng, cfg = self.rng, self.cfg
        loc_name, left_hand, _ = LOCATIONS[self.index % len(LOCATIONS)]
        self.condition = cfg.conditions[self.index % len(cfg.conditions)]
        lanes = int(rng.choice([1, 2, 2, 3]))
        parking = 2.5 if rng.random() < 0.85 else 0.0
        bike = 1.6 if rng.random() < 0.6 else 0.0
        kappa = 0.0 if rng.random() < 0.4 else float(rng.choice([-1, 1]) * rng.uniform(1 / 600,
                                                                                         1 / 160))
        self.road_params = dict(lanes=lanes, lane_width=float(rng.uniform(3.2, 3.7)),
                                bike_lane=bike, parking=parking,
                                sidewalk=float(rng.uniform(2.5, 4.0)),
                                verge=float(rng.uniform(2.5, 6.0)), left_hand_traffic=left_hand,
                                yellow_centre=not left_hand)
        # the road's start is placed after the ego track is known (needs the s-span)
        self.road = Road(0.0, 0.0, 0.0, kappa, crosswalks=(), **self.road_params)
        self._ego()
        self._place_road_in_map()
        self._construction_zone()
        self._crosswalks()
        self._structure()
        self._ensure_all_classes()  # the rarer classes first, then the fill
        self._parked()
        self._traffic()
        self._cyclists()
        self._crossers()  # pedestrians cross where the traffic leaves a gap
        self._sidewalk_people()
        return self._model(loc_name, left_hand)

    def _ego(self) -> None:
        rng, t = self.rng, self.t
        kind = rng.choice(["constant", "wavy", "stop", "go", "still"],
                          p=[0.35, 0.25, 0.15, 0.15, 0.10])
        v0 = float(rng.uniform(5.0, 11.0))
        v = _speed_profile(rng, kind, v0, t, self.horizon)
        self.ego_kind = str(kind)
        self.ego_v = v
        s = _integrate(v, self.dt, self.i0, 0.0)
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

    def _construction_zone(self) -> None:
        """Barriers close the parking lane (or, without one, an oncoming lane) and the sidewalk
        behind it; cones taper in at both ends; a construction vehicle and workers inside."""
        rng, road = self.rng, self.road
        # without a parking lane the zone closes a driving lane: never the ego's side
        forward_side = bool(rng.random() < 0.5) and road.parking > 0
        sgn = road.forward_sign if forward_side else -road.forward_sign
        length = float(rng.uniform(14, 24))
        if self.s_hi - self.s_lo > 10:
            s0 = self._s_near_ego(-5.0, 20.0)
        else:
            s0 = self.s_lo + float(rng.uniform(8, 25)) * float(rng.choice([-1, 1]))
        self.zone = (s0 - 3.0, s0 + length + 3.0, sgn)
        if road.parking > 0:
            d_in = road.lanes_edge + road.bike_lane + 0.35
        else:
            d_in = road.lanes_edge - road.lane_width + 0.35
        d_out = road.sidewalk_outer - 0.3
        self.zone_lateral = (d_in, d_out)
        self.features.append("construction zone")
        bar = CLASS_SPECS["barrier"]
        s = s0
        while s < s0 + length:
            size = _sized(rng, bar)
            x, y, th = road.to_world(s + size[1] / 2, sgn * (d_in + 0.1))
            self._add("barrier", size, shapes.barrier_parts(*size), x, y, th + np.pi / 2, -1,
                      margin=0.02)
            s += size[1] + float(rng.uniform(0.1, 0.4))
        cone = CLASS_SPECS["traffic_cone"]
        for end, direction in ((s0, -1.0), (s0 + length, 1.0)):
            n_c = int(rng.integers(3, 6))
            for k in range(n_c):
                frac = (k + 1) / n_c
                s_c = end + direction * (1.2 + 1.6 * k)
                d_c = sgn * (d_in - 0.1 + (d_out - d_in) * frac * 0.7)
                size = _sized(rng, cone)
                x, y, th = road.to_world(s_c, d_c)
                self._add("traffic_cone", size, shapes.cone_parts(*size), x, y,
                          th + rng.uniform(0, 6.3), -1, margin=0.05)
        self._zone_vehicle()
        for _ in range(int(rng.integers(1, 4))):
            size = _sized(rng, cone)
            x, y, th = road.to_world(rng.uniform(s0 + 1, s0 + length - 1),
                                     sgn * rng.uniform(d_in + 0.6, d_out - 0.3))
            self._add("traffic_cone", size, shapes.cone_parts(*size), x, y, th, -1, margin=0.1)
        self._zone_workers()

    def _zone_vehicle(self, tries: int = 8) -> bool:
        """The construction vehicle: parked in the zone, or creeping along it."""
        rng, road = self.rng, self.road
        lo, hi, sgn = self.zone
        s0, length = lo + 3.0, hi - lo - 6.0
        d_in, d_out = self.zone_lateral
        cv = CLASS_SPECS["construction_vehicle"]
        for _ in range(tries):
            size = _sized(rng, cv)
            d_cv = sgn * min(d_in + 0.5 + size[1] / 2, d_out - size[1] / 2)
            lo_c, hi_c = s0 + size[0] / 2 + 0.3, max(s0 + length - size[0] / 2 - 0.3,
                                                    s0 + size[0] / 2 + 0.4)
            s_c = rng.uniform(lo_c, hi_c)
            if rng.random() < 0.35:
                v = _speed_profile(rng, "wavy", rng.uniform(*cv.speed), self.t, 1)
                v = np.where(self.t < rng.uniform(0, self.horizon), 0.0, v)
                ss = np.clip(_integrate(v, self.dt, self.i0, s_c), lo_c, hi_c)
            else:
                ss = np.full(self.n, s_c)
            x, y, th = road.to_world(ss, np.full(self.n, d_cv))
            heading = 0.0 if rng.random() < 0.5 else np.pi
            speed = np.abs(np.gradient(ss, self.dt))
            attr = (self._vehicle_attr(speed, parked=False) if speed.max() > 0.1
                    else np.full(self.n, ATTR["vehicle.parked"], np.int8))
            if self._add("construction_vehicle", size, self._vehicle_shape(
                    "construction_vehicle", size), x, y, np.unwrap(th + heading), attr,
                    margin=0.1):
                return True
        return False

    def _zone_workers(self) -> None:
        rng, road = self.rng, self.road
        lo, hi, sgn = self.zone
        s0, length = lo + 3.0, hi - lo - 6.0
        d_in, d_out = self.zone_lateral
        ped = CLASS_SPECS["pedestrian"]
        for _ in range(int(rng.integers(1, 4))):
            for _try in range(6):
                size = _sized(rng, ped)
                shirt, trousers, skin = self._person_colours()
                s_w = rng.uniform(s0 + 0.5, s0 + length - 0.5)
                d_w = sgn * rng.uniform(d_in + 0.5, d_out - 0.3)
                moving = rng.random() < 0.4
                v = rng.uniform(0.3, 0.8) * rng.choice([-1, 1])
                if moving:
                    ss = np.clip(s_w + v * self.t, s0 + 0.3, s0 + length - 0.3)
                else:
                    ss = np.full(self.n, s_w)
                x, y, th = road.to_world(ss, np.full(self.n, d_w))
                speed = np.abs(np.gradient(ss, self.dt))
                yaw = th + ((0.0 if v > 0 else np.pi) if moving else rng.uniform(-np.pi, np.pi))
                attr = np.where(speed > 0.2, ATTR["pedestrian.moving"],
                                ATTR["pedestrian.standing"])
                if self._add("pedestrian", size, shapes.pedestrian_parts(
                        *size, shirt, trousers, skin, moving, hivis=True), x, y, yaw, attr,
                        margin=0.1, category="human.pedestrian.construction_worker"):
                    break

    def _crosswalks(self) -> None:
        rng, road = self.rng, self.road
        zone_lo, zone_hi, _ = self.zone
        candidates = []
        if self.ego_kind == "stop":  # the ego stops in front of a zebra crossing
            i_stop = int(np.argmax(self.ego_v < 0.05)) if (self.ego_v < 0.05).any() else None
            if i_stop is not None:
                candidates.append(float(self.ego_s[i_stop]) + EGO_CENTRE_AHEAD + 6.0)
        n_extra = int(rng.integers(1, 3))
        for _ in range(n_extra):
            candidates.append(self._s_near_ego(-15.0, 35.0))
        crosswalks = []
        for sc in candidates:
            if zone_lo - 4 < sc < zone_hi + 4 or any(abs(sc - c) < 15 for c in crosswalks):
                continue
            crosswalks.append(sc)
        self.road = Road(road.x0, road.y0, road.heading0, road.kappa,
                         crosswalks=tuple(crosswalks), **self.road_params)
        if crosswalks:
            self.features.append("zebra crossing")

    def _crossers(self) -> None:
        rng, road = self.rng, self.road
        ped = CLASS_SPECS["pedestrian"]
        for sc in road.crosswalks:
            for _ in range(int(rng.integers(2, 5))):
                for attempt in range(10):
                    size = _sized(rng, ped, (1.0, 1.0, 0.7) if rng.random() < 0.1 else (1, 1, 1))
                    v = rng.uniform(*ped.speed)
                    direction = float(rng.choice([-1.0, 1.0]))
                    d_start = -direction * (road.edge + rng.uniform(0.4, 1.2))
                    t_go = rng.uniform(-1.0, self.horizon)
                    if attempt >= 7:  # no gap in the traffic: wait at the kerb
                        t_go = self.horizon + 10.0
                    tt = np.clip(self.t - t_go, 0, None)
                    d = d_start + direction * v * tt
                    d_end = direction * (road.edge + rng.uniform(0.6, 1.4))
                    crossing_done = direction * (d - d_end) > 0
                    walk_dir = float(rng.choice([-1.0, 1.0]))
                    t_done = t_go + abs(d_end - d_start) / v
                    s_off = rng.uniform(-1.5, 1.5)
                    s = sc + s_off + np.where(crossing_done, walk_dir * v * (self.t - t_done), 0)
                    d = np.where(crossing_done, d_end, d)
                    _, _, th = road.to_world(s, d)
                    yaw = np.where(crossing_done, th + (0 if walk_dir > 0 else np.pi),
                                   th + direction * np.pi / 2)
                    x, y, _ = road.to_world(s, d)
                    speed = np.hypot(np.gradient(x, self.dt), np.gradient(y, self.dt))
                    attr = np.where(speed > 0.2, ATTR["pedestrian.moving"],
                                    ATTR["pedestrian.standing"])
                    shirt, trousers, skin = self._person_colours()
                    category = ("human.pedestrian.child" if size[2] < 1.4
                                else "human.pedestrian.adult")
                    if self._add("pedestrian", size, shapes.pedestrian_parts(
                            *size, shirt, trousers, skin, True, False), x, y, np.unwrap(yaw),
                            attr, margin=0.35, category=category):
                        break

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

    def _parked(self) -> None:
        rng, road = self.rng, self.road
        if road.parking <= 0:
            return
        self.features.append("parked cars")
        for forward in (True, False):
            d = road.side_offset(forward, road.lanes_edge + road.bike_lane + road.parking / 2)
            heading = 0.0 if forward else np.pi
            s = self.s_lo - 70 + rng.uniform(0, 8)
            while s < self.s_hi + 90:
                kind = rng.choice(["car", "truck", "trailer", "bus"], p=[0.86, 0.08, 0.04, 0.02])
                size = _sized(rng, CLASS_SPECS[kind])
                if rng.random() < 0.3:  # empty slot
                    s += rng.uniform(4, 12)
                    continue
                sc = s + size[0] / 2
                x, y, th = road.to_world(sc, d + rng.uniform(-0.15, 0.15))
                yaw = th + heading + rng.uniform(-0.04, 0.04)
                self._add(kind, size, self._vehicle_shape(kind, size), x, y, yaw,
                          self._vehicle_attr(None, parked=True), margin=0.2)
                s += size[0] + rng.uniform(0.8, 4.0)

    def _parked_vehicle(self, kind: str) -> bool:
        """One parked vehicle near the ego's path (parking lane only)."""
        rng, road = self.rng, self.road
        if road.parking <= 0:
            return False
        forward = bool(rng.random() < 0.5)
        size = _sized(rng, CLASS_SPECS[kind])
        d = road.side_offset(forward, road.lanes_edge + road.bike_lane + road.parking / 2)
        x, y, th = road.to_world(self._s_near_ego(25.0, 40.0), d)
        return self._add(kind, size, self._vehicle_shape(kind, size), x, y,
                         th + (0.0 if forward else np.pi),
                         self._vehicle_attr(None, parked=True), margin=0.2)

    def _lane_vehicle(self, kind: str, forward: bool, lane: int, platoon_gap: float | None = None,
                      tow_trailer: bool = False) -> bool:
        rng, road = self.rng, self.road
        spec = CLASS_SPECS[kind]
        size = _sized(rng, spec)
        direction = 1.0 if forward else -1.0
        d = road.lane_center(lane, forward) + rng.uniform(-0.2, 0.2)
        if platoon_gap is not None:
            s = self.ego_s + EGO_CENTRE_AHEAD + platoon_gap
        else:
            v0 = rng.uniform(*spec.speed)
            kind_v = rng.choice(["constant", "wavy", "stop", "go"], p=[0.5, 0.3, 0.1, 0.1])
            v = _speed_profile(rng, kind_v, v0, self.t, self.horizon)
            i_ref = self.i0 + int(rng.integers(0, int(self.horizon / self.dt) + 1))
            s_ref = float(self.ego_s[i_ref]) + rng.uniform(-70, 70)
            s = _integrate(direction * v, self.dt, i_ref, s_ref)
        x, y, th = road.to_world(s, np.full(self.n, d))
        yaw = np.unwrap(th + (0.0 if forward else np.pi))
        speed = np.abs(np.gradient(s, self.dt))
        trailer = None
        if tow_trailer:
            tspec = CLASS_SPECS["trailer"]
            tsize = _sized(rng, tspec)
            st = s - direction * (size[0] / 2 + 0.8 + tsize[0] / 2)
            tx, ty, tth = road.to_world(st, np.full(self.n, d))
            trailer = (tsize, tx, ty, np.unwrap(tth + (0.0 if forward else np.pi)))
            if not self.occ.free(tx, ty, trailer[3], tsize[0], tsize[1], 0.6):
                return False
        attr = (np.full(self.n, ATTR["cycle.with_rider"], np.int8) if kind == "motorcycle"
                else self._vehicle_attr(speed, parked=False))
        if not self._add(kind, size, self._vehicle_shape(kind, size), x, y, yaw, attr,
                         margin=0.6):
            return False
        if trailer is not None:
            tsize, tx, ty, tyaw = trailer
            self._add("trailer", tsize, self._vehicle_shape("trailer", tsize), tx, ty, tyaw,
                      self._vehicle_attr(speed, parked=False), check=False)
        return True

    def _traffic(self) -> None:
        rng, road, cfg = self.rng, self.road, self.cfg
        span = self.s_hi - self.s_lo + 140.0
        mix = (["car", "truck", "bus", "motorcycle", "truck+trailer"],
               [0.76, 0.09, 0.05, 0.06, 0.04])
        # the ego's own lane: a platoon in front of and behind the ego
        for gap in sorted(rng.uniform(9, 60, int(rng.integers(0, 3)))):
            self._lane_vehicle("car", True, self.ego_lane, platoon_gap=float(gap))
        if rng.random() < 0.5:
            self._lane_vehicle("car", True, self.ego_lane, platoon_gap=-float(rng.uniform(9, 25)))
        for forward in (True, False):
            for lane in range(road.lanes):
                n = rng.poisson(cfg.density * span / 45.0)
                for _ in range(n):
                    kind = rng.choice(mix[0], p=mix[1])
                    for _try in range(4):
                        if kind == "truck+trailer":
                            ok = self._lane_vehicle("truck", forward, lane, tow_trailer=True)
                        else:
                            ok = self._lane_vehicle(str(kind), forward, lane)
                        if ok:
                            break

    def _cyclists(self) -> None:
        rng, road = self.rng, self.road
        bike = CLASS_SPECS["bicycle"]
        n = rng.poisson(self.cfg.density * 2.5) + 1
        for _ in range(n):
            for _try in range(6):
                forward = bool(rng.random() < 0.6)
                if road.bike_lane > 0:
                    d = road.side_offset(forward, road.lanes_edge + road.bike_lane / 2)
                else:
                    d = road.side_offset(forward, road.lanes_edge - 0.55)
                size = _sized(rng, bike)
                v = _speed_profile(rng, "wavy", rng.uniform(*bike.speed), self.t, self.horizon)
                i_ref = self.i0 + int(rng.integers(0, int(self.horizon / self.dt) + 1))
                direction = 1.0 if forward else -1.0
                s = _integrate(direction * v, self.dt, i_ref,
                               float(self.ego_s[i_ref]) + rng.uniform(-40, 50))
                x, y, th = road.to_world(s, np.full(self.n, d + rng.uniform(-0.1, 0.1)))
                shirt, trousers, skin = self._person_colours()
                parts = shapes.cycle_parts(*size, self._colour(shapes.CAR_COLOURS), True, False,
                                           shirt, trousers, skin)
                if self._add("bicycle", size, parts, x, y, np.unwrap(th + (1 - direction) *
                                                                      np.pi / 2),
                             ATTR["cycle.with_rider"], margin=0.4):
                    break

    def _parked_cycle(self, kind: str) -> bool:
        rng, road = self.rng, self.road
        spec = CLASS_SPECS[kind]
        size = _sized(rng, spec, (1.0, 1.0, 0.68 if kind == "bicycle" else 0.8))
        s = self._s_near_ego(30.0, 45.0)
        side = float(rng.choice([-1.0, 1.0]))
        d = side * (road.edge + 0.5 + size[1])
        x, y, th = road.to_world(s, d)
        yaw = th + (rng.uniform(-0.2, 0.2) if rng.random() < 0.6 else np.pi / 2 * side)
        parts = shapes.cycle_parts(*size, self._colour(shapes.CAR_COLOURS), False,
                                   kind == "motorcycle", None, None, None)
        return self._add(kind, size, parts, x, y, yaw, ATTR["cycle.without_rider"], margin=0.15)

    def _sidewalk_people(self) -> None:
        rng, road, cfg = self.rng, self.road, self.cfg
        ped = CLASS_SPECS["pedestrian"]
        span = self.s_hi - self.s_lo + 110.0
        n = rng.poisson(cfg.density * span / 9.0)
        for _ in range(n):
            for _try in range(5):
                side = float(rng.choice([-1.0, 1.0]))
                d = side * rng.uniform(road.edge + 0.8, road.sidewalk_outer - 0.4)
                kind = rng.choice(["walk", "stand", "sit"], p=[0.7, 0.25, 0.05])
                size = _sized(rng, ped, (1.0, 1.0, 0.7) if rng.random() < 0.08 else (1, 1, 1))
                if kind == "sit":
                    size[2] = rng.uniform(1.15, 1.35)
                shirt, trousers, skin = self._person_colours()
                s0 = self._s_near_ego(50.0, 60.0)
                if kind == "walk":
                    v = rng.uniform(*ped.speed) * rng.choice([-1.0, 1.0])
                    s = s0 + v * self.t
                    x, y, th = road.to_world(s, np.full(self.n, d))
                    yaw = th + (0.0 if v > 0 else np.pi)
                    attr = ATTR["pedestrian.moving"]
                else:
                    x, y, th = road.to_world(s0, d)
                    yaw = th + rng.uniform(-np.pi, np.pi)
                    attr = ATTR["pedestrian.standing" if kind == "stand"
                                else "pedestrian.sitting_lying_down"]
                category = "human.pedestrian.child" if size[2] < 1.3 and kind != "sit" else (
                    "human.pedestrian.police_officer" if rng.random() < 0.02
                    else "human.pedestrian.adult")
                if self._add("pedestrian", size, shapes.pedestrian_parts(
                        *size, shirt, trousers, skin, kind == "walk", False, kind == "sit"),
                        x, y, yaw, attr, margin=0.25, category=category):
                    break
        for _ in range(int(rng.integers(1, 3))):
            self._parked_cycle("bicycle")
        for _ in range(int(rng.integers(1, 3))):
            self._parked_cycle("motorcycle")
        binspec = CLASS_SPECS["bin"]
        for _ in range(rng.poisson(cfg.density * span / 40.0)):
            size = _sized(rng, binspec)
            side = float(rng.choice([-1.0, 1.0]))
            x, y, th = road.to_world(self._s_near_ego(40, 60), side * (road.edge + 0.6))
            self._add("bin", size, shapes.bin_parts(*size), x, y, th, -1, margin=0.1)

    def _ensure_all_classes(self) -> None:
        """Every scene gets every detection class near the ego's path, so any val split can
        be evaluated on all 10 classes."""
        def count(kind):
            return sum(1 for a in self.actors if a.kind == kind)

        def lane():
            return int(self.rng.integers(0, self.road.lanes))

        def vehicle(kind, tow=False):
            if self.rng.random() < 0.5 and self._parked_vehicle("trailer" if tow else kind):
                return True
            return self._lane_vehicle(kind, bool(self.rng.random() < 0.5), lane(),
                                      tow_trailer=tow)

        fallbacks = {
            "car": lambda: vehicle("car"),
            "truck": lambda: vehicle("truck"),
            "bus": lambda: vehicle("bus"),
            "trailer": lambda: vehicle("truck", tow=True),
            "motorcycle": lambda: (self._lane_vehicle("motorcycle", bool(self.rng.random() < 0.5),
                                                      0) if self.rng.random() < 0.5
                                   else self._parked_cycle("motorcycle")),
            "bicycle": lambda: self._parked_cycle("bicycle"),
        }
        fallbacks["construction_vehicle"] = lambda: self._zone_vehicle(tries=1)
        for kind, fn in fallbacks.items():
            tries = 0
            while count(kind) == 0 and tries < 25:
                fn()
                tries += 1

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
            s_range=(self.s_min, self.s_max))
        model.map_extent = self.map_extent
        model.pack()
        return model


def build_scene(cfg: WorldConfig, index: int, name: str, rng: np.random.Generator) -> SceneModel:
    return SceneBuilder(cfg, index, name, rng).build()


__all__ = ["ALBEDO", "ATTRIBUTES", "CLASS_SPECS", "LOCATIONS", "Actor", "SceneModel", "Snapshot",
           "build_scene"]
