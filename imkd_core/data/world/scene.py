"""The scene model: what the sensors, annotations and tables read of one scene.

A `SceneModel` holds the road, the ego's drive and every `Actor` (annotated objects and
unannotated structure) as trajectories on one fine time grid (10 ms), packed into arrays;
`snapshot(t)`, `ego_pose(t)` and `ego_speed(t)` interpolate it at any sensor's timestamp, so
every sensor, annotation and velocity sees the same world. How a scene gets populated is
`population`'s job; the camera, LiDAR and radar models (`render`, `lidar`, `radar`) only read
what is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from imkd_core.data.world.road import Road

# (name, drives on the left, UTC offset of the log name)
LOCATIONS: tuple[tuple[str, bool, str], ...] = (
    ("singapore-onenorth", True, "+0800"),
    ("boston-seaport", False, "-0400"),
    ("singapore-queenstown", True, "+0800"),
    ("singapore-hollandvillage", True, "+0800"),
)

KEYFRAME_INTERVAL = 0.5  # s, nuScenes keyframes at 2 Hz
ANNOTATION_RANGE = 70.0  # m from the ego (xy): objects further out are not annotated


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
    attr: np.ndarray  # (T,) index into imkd_core.sample.ATTRIBUTES, -1 none
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
    map_extent: tuple[float, float]  # (x, y) size of the log's map, m
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


__all__ = ["ANNOTATION_RANGE", "KEYFRAME_INTERVAL", "LOCATIONS", "Actor", "SceneModel",
           "Snapshot"]
