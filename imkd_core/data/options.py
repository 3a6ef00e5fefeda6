"""What a `Sample` is built from: one options record for every source that builds one.

The nuScenes reader, the rosbag2 reader and the ROS node's parameters used to spell these out
each; with one frozen record their defaults and their validation cannot drift apart, and "the
same options give the same Sample" is checkable by comparing two records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imkd_core.data.sweeps import RadarFilter
from imkd_core.sample import CAMERA_NAMES, RADAR_NAMES


@dataclass(frozen=True)
class ReaderOptions:
    """How to read and assemble a `Sample`.

    radar_sweeps / lidar_sweeps: sweeps per sensor *including* the keyframe (devkit `nsweeps`
    semantics). radar_filter: a `RadarFilter`, "nuscenes" (the devkit default), "all", or a
    dict of its fields; normalised to a `RadarFilter`. lidar_min_distance: drop LiDAR returns
    within this square half-width of the sensor (devkit `remove_close`; 0 keeps all).
    camera_ego_motion: camera poses at the image's time (False: the bare calibration).
    load_*: read that modality at all (without images, cameras get a zero image of the
    recorded size). cameras / radars: the sensors to read.
    """

    radar_sweeps: int = 6
    lidar_sweeps: int = 10
    radar_filter: RadarFilter | str | dict | None = "nuscenes"  # a RadarFilter once built
    load_lidar: bool = True
    load_images: bool = True
    load_radar: bool = True
    lidar_min_distance: float = 1.0
    camera_ego_motion: bool = True
    cameras: Sequence[str] = CAMERA_NAMES
    radars: Sequence[str] = RADAR_NAMES

    def __post_init__(self) -> None:
        if int(self.radar_sweeps) < 1 or int(self.lidar_sweeps) < 1:
            raise ValueError("radar_sweeps and lidar_sweeps count the keyframe: must be >= 1")
        normalised = {
            "radar_sweeps": int(self.radar_sweeps),
            "lidar_sweeps": int(self.lidar_sweeps),
            "radar_filter": RadarFilter.from_spec(self.radar_filter),
            "lidar_min_distance": float(self.lidar_min_distance),
            "cameras": tuple(self.cameras),
            "radars": tuple(self.radars),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)
