"""The one `Sample` assembler: per-sensor records -> `Sample`.

The nuScenes reader (tables and files), the rosbag2 reader (bag messages) and the ROS node
(live messages) each collect what they have into the records below and call `assemble_sample`,
so the camera poses, the radar and LiDAR aggregation and the `Sample` layout are written once
and the three paths agree bit for bit. Every output is in the keyframe's ego frame
(`T_map_ego`, the ego pose of the LiDAR keyframe in nuScenes); the maths is
`imkd_core.data.sweeps`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from imkd_core.data.options import ReaderOptions
from imkd_core.data.sweeps import (
    RawSweep,
    aggregate_lidar_sweeps,
    aggregate_radar_sweeps,
    sensor_to_keyframe,
)
from imkd_core.sample import Boxes, CameraData, LidarData, RadarData, Sample


@dataclass
class CameraRecord:
    """One camera image as recorded, before it is brought to the keyframe."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    K: np.ndarray  # (3, 3) float64 intrinsics
    T_ego_cam: np.ndarray  # (4, 4) calibration, camera -> ego
    T_map_ego: np.ndarray | None  # (4, 4) ego pose at `stamp`; None only without ego motion
    stamp: int  # ns


def assemble_sample(
    token: str,
    timestamp: int,
    T_map_ego: np.ndarray,
    cameras: Mapping[str, CameraRecord],
    radars: Mapping[str, Sequence[RawSweep]],
    lidar: Sequence[RawSweep] | None,
    options: ReaderOptions,
    gt: Boxes | None = None,
    scene_name: str = "",
) -> Sample:
    """The `Sample` of one keyframe at `timestamp` (ns) with ego pose `T_map_ego` (4, 4).

    cameras: in the order they should appear; with `options.camera_ego_motion` each camera's
    pose is where it was at its image's time, in the keyframe ego frame (`sensor_to_keyframe`),
    otherwise its calibration. radars: per radar its sweeps newest first (the keyframe's sweep
    first), aggregated with `options.radar_filter`; a radar without sweeps is left out. lidar:
    the LiDAR sweeps newest first, aggregated with `options.lidar_min_distance`, or None for
    no LiDAR.
    """
    sample = Sample(token=token, timestamp=timestamp, T_map_ego=T_map_ego,
                    scene_name=scene_name)
    for name, cam in cameras.items():
        T_ego_cam = cam.T_ego_cam
        if options.camera_ego_motion:
            if cam.T_map_ego is None:
                raise ValueError(f"{name}: camera ego motion needs the ego pose at {cam.stamp}")
            T_ego_cam = sensor_to_keyframe(T_ego_cam, cam.T_map_ego, T_map_ego)
        sample.cameras[name] = CameraData(image=cam.image, K=cam.K, T_ego_cam=T_ego_cam,
                                          stamp=cam.stamp)
    for name, sweeps in radars.items():
        if not sweeps:
            continue
        points = aggregate_radar_sweeps(sweeps, T_map_ego, timestamp, options.radar_filter)
        sample.radars[name] = RadarData(points=points, T_ego_radar=sweeps[0].T_ego_sensor,
                                        stamp=sweeps[0].stamp)
    if lidar is not None:
        points = aggregate_lidar_sweeps(lidar, T_map_ego, timestamp, options.lidar_min_distance)
        sample.lidar = LidarData(points=points, T_ego_lidar=lidar[0].T_ego_sensor,
                                 stamp=lidar[0].stamp)
    sample.gt = gt
    return sample
