"""Multi-sweep aggregation maths: sensor sweeps -> the keyframe's ego frame, as pure numpy.

The one Sample assembler (`imkd_core.data.assemble`), which the nuScenes reader, the rosbag2
reader and the ROS node all call, brings sweeps to the keyframe with these functions, so the
three paths give the same points to the last bit. Nothing here knows about nuscenes-devkit,
files or messages: inputs are raw sensor arrays, 4x4 transforms and integer nanosecond stamps.

Frames (docs/ARCHITECTURE.md §Conventions): a sweep's points are in its sensor frame;
`T_ego_sensor` is the sensor's calibration; `T_map_ego_sweep` the ego pose at the sweep's stamp;
`T_map_ego_key` the ego pose at the keyframe (the LiDAR keyframe in nuScenes). A point
p_sensor lands at

    p_key = inv(T_map_ego_key) @ T_map_ego_sweep @ T_ego_sensor @ p_sensor

i.e. radar/LiDAR -> ego(sweep) -> map -> ego(key): ego motion between sweep and keyframe is
compensated, object motion is not (that is what `dt` and the radar velocities are for).
The composite transform is formed in float64 before any point is touched, so the large map
coordinates never meet float32 points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imkd_core.geometry import invert_transform
from imkd_core.sample import (
    LIDAR_POINT_COLUMNS,
    NUSCENES_RADAR_FIELDS,
    RADAR_POINT_COLUMNS,
)

_RAW = {name: i for i, name in enumerate(NUSCENES_RADAR_FIELDS)}
# The output columns of RADAR_POINT_COLUMNS copied from raw radar columns (dt is computed).
_RADAR_COPIED = [c for c, name in enumerate(RADAR_POINT_COLUMNS) if name in _RAW]
_RADAR_SOURCE = [_RAW[RADAR_POINT_COLUMNS[c]] for c in _RADAR_COPIED]


def sensor_to_keyframe(T_ego_sensor, T_map_ego_sweep, T_map_ego_key) -> np.ndarray:
    """4x4 float64 transform sensor(at the sweep's time) -> keyframe ego frame.

    Also the camera pose to use with keyframe-ego points: for an image taken at another time than
    the keyframe, `sensor_to_keyframe(T_ego_cam_calib, T_map_ego_image, T_map_ego_key)` is where
    the camera really was, expressed in the keyframe's ego frame.
    """
    return (invert_transform(np.asarray(T_map_ego_key, dtype=np.float64))
            @ np.asarray(T_map_ego_sweep, dtype=np.float64)
            @ np.asarray(T_ego_sensor, dtype=np.float64))


def time_offset_s(sweep_stamp_ns: int, key_stamp_ns: int) -> float:
    """`dt` of a sweep: (keyframe stamp - sweep stamp) in seconds, positive for older sweeps.

    A sweep taken just after the keyframe (a radar keyframe a few ms after the LiDAR trigger)
    gets a small negative dt, as nuscenes-devkit's `from_file_multisweep` gives it.
    """
    return (int(key_stamp_ns) - int(sweep_stamp_ns)) / 1e9


def _apply(T: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    return np.asarray(xyz, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def radar_to_keyframe(raw, T_ego_radar, T_map_ego_sweep, T_map_ego_key, sweep_stamp_ns: int,
                      key_stamp_ns: int) -> np.ndarray:
    """One radar sweep -> (N, len(RADAR_POINT_COLUMNS)) float32 in the keyframe ego frame.

    raw: (N, 18) in `NUSCENES_RADAR_FIELDS` order, radar frame (as `read_radar_pcd` gives it).
    Positions go radar -> ego(sweep) -> map -> ego(key); (vx, vy) and (vx_comp, vy_comp) are
    rotated by the same rotation as 2D vectors (z = 0, then the x, y part is kept); `dt` is
    `time_offset_s(sweep, key)`. All other fields are copied unchanged.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] != len(NUSCENES_RADAR_FIELDS):
        raise ValueError(f"radar sweep must be (N, {len(NUSCENES_RADAR_FIELDS)}), got {raw.shape}")
    T = sensor_to_keyframe(T_ego_radar, T_map_ego_sweep, T_map_ego_key)
    out = np.empty((raw.shape[0], len(RADAR_POINT_COLUMNS)), dtype=np.float32)
    out[:, _RADAR_COPIED] = raw[:, _RADAR_SOURCE]
    out[:, [0, 1, 2]] = _apply(T, raw[:, [_RAW["x"], _RAW["y"], _RAW["z"]]])
    rot2 = T[:2, :2]  # rotating (vx, vy, 0) and keeping x, y uses only the top-left block
    for vx, vy in (("vx", "vy"), ("vx_comp", "vy_comp")):
        vel = raw[:, [_RAW[vx], _RAW[vy]]].astype(np.float64) @ rot2.T
        out[:, RADAR_POINT_COLUMNS.index(vx)] = vel[:, 0]
        out[:, RADAR_POINT_COLUMNS.index(vy)] = vel[:, 1]
    out[:, RADAR_POINT_COLUMNS.index("dt")] = time_offset_s(sweep_stamp_ns, key_stamp_ns)
    return out


def lidar_to_keyframe(raw, T_ego_lidar, T_map_ego_sweep, T_map_ego_key, sweep_stamp_ns: int,
                      key_stamp_ns: int) -> np.ndarray:
    """One LiDAR sweep (N, 4|5: x, y, z, intensity[, ring], LiDAR frame) -> (N, 5) float32
    `LIDAR_POINT_COLUMNS` (x, y, z, intensity, dt) in the keyframe ego frame."""
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] not in (4, 5):
        raise ValueError(f"LiDAR sweep must be (N, 4) or (N, 5), got {raw.shape}")
    T = sensor_to_keyframe(T_ego_lidar, T_map_ego_sweep, T_map_ego_key)
    out = np.empty((raw.shape[0], len(LIDAR_POINT_COLUMNS)), dtype=np.float32)
    out[:, :3] = _apply(T, raw[:, :3])
    out[:, 3] = raw[:, 3]
    out[:, 4] = time_offset_s(sweep_stamp_ns, key_stamp_ns)
    return out


def far_from_sensor_mask(raw, min_distance: float) -> np.ndarray:
    """(N,) bool: keep points NOT inside the square |x| < d and |y| < d around the sensor (its
    own frame) — nuscenes-devkit's `remove_close`, which drops hits on the ego vehicle itself.
    `min_distance <= 0` keeps everything."""
    raw = np.asarray(raw)
    if min_distance <= 0:
        return np.ones(raw.shape[0], dtype=bool)
    return ~((np.abs(raw[:, 0]) < min_distance) & (np.abs(raw[:, 1]) < min_distance))


def _as_set(values) -> frozenset[int] | None:
    return None if values is None else frozenset(int(v) for v in values)


@dataclass(frozen=True)
class RadarFilter:
    """Which radar returns to keep, by the ARS 408 state fields; `None` means "any value".

    `RadarFilter.nuscenes()` is nuscenes-devkit's `RadarPointCloud` default (invalid_state 0,
    dyn_prop 0-6, ambig_state 3); `RadarFilter.all()` keeps every return (the devkit's
    `disable_filters()`, which CRN-style radar branches use).
    """

    dyn_prop: frozenset[int] | None = frozenset(range(7))
    ambig_state: frozenset[int] | None = frozenset({3})
    invalid_state: frozenset[int] | None = frozenset({0})

    def __post_init__(self):
        for name in ("dyn_prop", "ambig_state", "invalid_state"):
            object.__setattr__(self, name, _as_set(getattr(self, name)))

    @classmethod
    def nuscenes(cls) -> RadarFilter:
        return cls()

    @classmethod
    def all(cls) -> RadarFilter:
        return cls(dyn_prop=None, ambig_state=None, invalid_state=None)

    @property
    def keeps_all(self) -> bool:
        """True when no field is constrained (`RadarFilter.all()`): nothing to filter."""
        return self.dyn_prop is None and self.ambig_state is None and self.invalid_state is None

    @classmethod
    def from_spec(cls, spec) -> RadarFilter:
        """A filter from `"nuscenes"`, `"all"`, a dict of the three fields, or a RadarFilter."""
        if isinstance(spec, RadarFilter):
            return spec
        if spec is None or spec == "all":
            return cls.all()
        if spec == "nuscenes":
            return cls.nuscenes()
        if isinstance(spec, dict):
            unknown = set(spec) - {"dyn_prop", "ambig_state", "invalid_state"}
            if unknown:
                raise ValueError(f"unknown radar filter fields {sorted(unknown)}")
            return cls(**spec)
        raise ValueError(f"radar filter must be 'nuscenes', 'all' or a dict, got {spec!r}")

    def apply(self, raw) -> np.ndarray:
        """(N, 18) raw radar (`NUSCENES_RADAR_FIELDS`) -> (N,) bool mask of returns to keep."""
        raw = np.asarray(raw)
        keep = np.ones(raw.shape[0], dtype=bool)
        for name in ("dyn_prop", "ambig_state", "invalid_state"):
            allowed = getattr(self, name)
            if allowed is not None:
                keep &= np.isin(np.rint(raw[:, _RAW[name]]).astype(np.int64), list(allowed))
        return keep


@dataclass
class RawSweep:
    """One sensor sweep as recorded: raw points in the sensor frame and where/when it was taken."""

    points: np.ndarray  # radar (N, 18) NUSCENES_RADAR_FIELDS, or LiDAR (N, 4|5)
    T_ego_sensor: np.ndarray  # (4, 4) sensor calibration
    T_map_ego: np.ndarray  # (4, 4) ego pose at `stamp`
    stamp: int  # ns


def aggregate_radar_sweeps(sweeps, T_map_ego_key, key_stamp_ns: int,
                           radar_filter: RadarFilter | None = None) -> np.ndarray:
    """Radar sweeps (newest first, as walked back via `prev`) -> one (N, 19) float32 cloud in the
    keyframe ego frame: each sweep filtered by `radar_filter` (default: keep all), then
    `radar_to_keyframe`, concatenated in the given order. A filter that keeps all
    (`RadarFilter.all()`) costs nothing: no mask is built, no sweep copied."""
    clouds = [empty_radar_points()]
    for sweep in sweeps:
        raw = np.asarray(sweep.points)
        if radar_filter is not None and not radar_filter.keeps_all:
            raw = raw[radar_filter.apply(raw)]
        clouds.append(radar_to_keyframe(raw, sweep.T_ego_sensor, sweep.T_map_ego, T_map_ego_key,
                                        sweep.stamp, key_stamp_ns))
    return np.concatenate(clouds, axis=0)


def aggregate_lidar_sweeps(sweeps, T_map_ego_key, key_stamp_ns: int,
                           min_distance: float = 0.0) -> np.ndarray:
    """LiDAR sweeps (newest first) -> one (N, 5) float32 cloud in the keyframe ego frame: points
    within `min_distance` of the sensor dropped (`far_from_sensor_mask`), then
    `lidar_to_keyframe`, concatenated in the given order."""
    clouds = [empty_lidar_points()]
    for sweep in sweeps:
        raw = np.asarray(sweep.points)
        raw = raw[far_from_sensor_mask(raw, min_distance)]
        clouds.append(lidar_to_keyframe(raw, sweep.T_ego_sensor, sweep.T_map_ego, T_map_ego_key,
                                        sweep.stamp, key_stamp_ns))
    return np.concatenate(clouds, axis=0)


def empty_radar_points() -> np.ndarray:
    return np.zeros((0, len(RADAR_POINT_COLUMNS)), dtype=np.float32)


def empty_lidar_points() -> np.ndarray:
    return np.zeros((0, len(LIDAR_POINT_COLUMNS)), dtype=np.float32)
