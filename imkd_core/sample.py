"""The one record every stage passes on: dataset -> bag -> node -> model -> evaluator.

All arrays are numpy, all times are integer nanoseconds, all geometry is in the ego frame of the
sample's keyframe (`base_link`) unless a field's name says otherwise. See docs/ARCHITECTURE.md
§Data flow and §Conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The 10 nuScenes detection classes, in the devkit's order; `class_id` strings on the wire.
CLASSES: tuple[str, ...] = (
    "car",
    "truck",
    "construction_vehicle",
    "bus",
    "trailer",
    "barrier",
    "motorcycle",
    "bicycle",
    "pedestrian",
    "traffic_cone",
)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
# The 8 nuScenes attribute names (`attribute.json`), in the order the world's table lists them.
ATTRIBUTES: tuple[str, ...] = (
    "vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider",
    "cycle.without_rider", "pedestrian.sitting_lying_down", "pedestrian.standing",
    "pedestrian.moving",
)
# RGB (0..1) per class, indexed like CLASSES: one palette, so ground truth and detections show a
# class in the same colour in RViz and in plots.
CLASS_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.12, 0.47, 0.71), (1.00, 0.50, 0.05), (0.55, 0.34, 0.29), (0.84, 0.15, 0.16),
    (0.58, 0.40, 0.74), (0.50, 0.50, 0.50), (0.89, 0.47, 0.76), (0.74, 0.74, 0.13),
    (0.17, 0.63, 0.17), (0.09, 0.75, 0.81),
)
# Ground-truth markers (nuscenes2bag's /gt/markers) in one colour, so RViz tells them apart from
# the class-coloured detections.
GT_COLOR: tuple[float, float, float] = (1.0, 1.0, 1.0)

CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
RADAR_NAMES: tuple[str, ...] = (
    "RADAR_FRONT",
    "RADAR_FRONT_RIGHT",
    "RADAR_BACK_RIGHT",
    "RADAR_BACK_LEFT",
    "RADAR_FRONT_LEFT",
)
LIDAR_NAME = "LIDAR_TOP"

# The 18 fields of a nuScenes radar PCD, in file order.
NUSCENES_RADAR_FIELDS: tuple[str, ...] = (
    "x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp",
    "is_quality_valid", "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0",
    "vx_rms", "vy_rms",
)
# The radar model's input columns (preprocessing keeps these, the radar branch reads them).
RADAR_MODEL_COLUMNS: tuple[str, ...] = ("x", "y", "z", "rcs", "vx_comp", "vy_comp", "dt")
# Columns of `RadarData.points`: the model's inputs first (docs/ARCHITECTURE.md §Conventions),
# then every other nuScenes field so nothing is lost. Positions and velocities are in the
# keyframe's ego frame; `dt` is (keyframe time - sweep time) in seconds: > 0 for older sweeps,
# slightly < 0 for a radar keyframe taken a few ms after the LiDAR keyframe (as
# nuscenes-devkit's time lag).
RADAR_POINT_COLUMNS: tuple[str, ...] = (
    *RADAR_MODEL_COLUMNS,
    "vx", "vy", "dyn_prop", "id", "is_quality_valid", "ambig_state", "x_rms", "y_rms",
    "invalid_state", "pdh0", "vx_rms", "vy_rms",
)
RADAR_COLUMN = {name: i for i, name in enumerate(RADAR_POINT_COLUMNS)}
# Columns of `LidarData.points`: keyframe ego frame, raw reflectance (0..255 in nuScenes),
# `dt` as for radar.
LIDAR_POINT_COLUMNS: tuple[str, ...] = ("x", "y", "z", "intensity", "dt")

# Box parameters inside the code (docs/ARCHITECTURE.md §Conventions): ego frame, z = geometric
# centre, yaw about +z.
BOX_COLUMNS: tuple[str, ...] = ("x", "y", "z", "l", "w", "h", "yaw", "vx", "vy")


@dataclass
class CameraData:
    """One camera image with its calibration. T_ego_cam maps optical-frame points to the
    keyframe's ego frame: the camera's pose at `stamp` (the reader composes the calibration with
    the ego motion between image and keyframe, `data.sweeps.sensor_to_keyframe`)."""

    image: np.ndarray  # (H, W, 3) uint8, RGB
    K: np.ndarray  # (3, 3) float64 intrinsics
    T_ego_cam: np.ndarray  # (4, 4) float64
    stamp: int  # ns


@dataclass
class RadarData:
    """Multi-sweep radar points of one sensor, ego-motion compensated to the keyframe."""

    points: np.ndarray  # (N, len(RADAR_POINT_COLUMNS)) float32
    T_ego_radar: np.ndarray  # (4, 4) float64
    stamp: int  # ns, of the newest sweep


@dataclass
class LidarData:
    """Multi-sweep LiDAR points, ego-motion compensated to the keyframe (training only)."""

    points: np.ndarray  # (N, 5) float32: x, y, z, intensity, dt
    T_ego_lidar: np.ndarray  # (4, 4) float64
    stamp: int  # ns


@dataclass
class Boxes:
    """A set of 3D boxes: ground truth (with annotation metadata) or detections (with scores)."""

    params: np.ndarray  # (N, 9) float64: BOX_COLUMNS
    labels: np.ndarray  # (N,) int64 index into CLASSES
    scores: np.ndarray | None = None  # (N,) float32 for detections
    attributes: list[str] = field(default_factory=list)  # nuScenes attribute name or ""
    visibility: np.ndarray | None = None  # (N,) int64, nuScenes visibility token 1..4
    num_lidar_pts: np.ndarray | None = None  # (N,) int64
    num_radar_pts: np.ndarray | None = None  # (N,) int64
    instance_tokens: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.params.shape[0])

    @property
    def class_names(self) -> list[str]:
        return [CLASSES[i] for i in self.labels]

    @classmethod
    def empty(cls) -> Boxes:
        return cls(params=np.zeros((0, 9)), labels=np.zeros((0,), dtype=np.int64))

    def select(self, mask: np.ndarray) -> Boxes:
        """The boxes where `mask` (bool or index array) holds, metadata kept aligned."""
        idx = np.arange(len(self))[mask]

        def pick(values):
            if values is None:
                return None
            if isinstance(values, list):
                return [values[i] for i in idx] if values else []
            return values[idx]

        return Boxes(
            params=self.params[idx],
            labels=self.labels[idx],
            scores=pick(self.scores),
            attributes=pick(self.attributes),
            visibility=pick(self.visibility),
            num_lidar_pts=pick(self.num_lidar_pts),
            num_radar_pts=pick(self.num_radar_pts),
            instance_tokens=pick(self.instance_tokens),
        )


@dataclass
class Sample:
    """Everything known about one keyframe. `cameras`/`radars` are keyed by sensor name."""

    token: str
    timestamp: int  # ns, the keyframe (LiDAR or trigger) time
    T_map_ego: np.ndarray  # (4, 4) float64 ego pose at `timestamp`
    cameras: dict[str, CameraData] = field(default_factory=dict)
    radars: dict[str, RadarData] = field(default_factory=dict)
    lidar: LidarData | None = None
    gt: Boxes | None = None
    scene_name: str = ""

    def radar_points(self) -> np.ndarray:
        """All radars' points stacked: (N, len(RADAR_POINT_COLUMNS)) float32."""
        clouds = [r.points for r in self.radars.values()]
        if not clouds:
            return np.zeros((0, len(RADAR_POINT_COLUMNS)), dtype=np.float32)
        return np.concatenate(clouds, axis=0)
