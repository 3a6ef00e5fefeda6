"""The sensor rig: nuScenes calibration of the 6 cameras, 5 radars and LIDAR_TOP, the cameras'
trigger offsets relative to the LiDAR, the HDL-32E beam elevations and the radar field of view.

Extrinsics and intrinsics are the values of nuScenes scene-0061 (log n015-2018-07-24-11-22-45;
cameras and LiDAR from its calibrated_sensor table, radars as published in the schema docs).
Intrinsics are scaled to the generated image size; each log gets a few millimetres and
hundredths of a degree of calibration jitter, as real logs differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imkd_core.geometry import make_transform, matrix_to_quaternion, quaternion_to_matrix
from imkd_core.sample import CAMERA_NAMES, LIDAR_NAME, RADAR_NAMES

NUSCENES_IMAGE_SIZE = (1600, 900)

# name: (translation, rotation [w, x, y, z], (fx, cx, cy))
CAMERAS: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    "CAM_FRONT": ((1.70079118954, 0.0159456324149, 1.51095763913),
                  (0.4998015430569128, -0.5030316162024876, 0.4997798114386805,
                   -0.49737083824542755), (1266.417203046554, 816.2670197447984,
                                           491.50706579294757)),
    "CAM_FRONT_RIGHT": ((1.5508477543, -0.493404796419, 1.49574800619),
                        (0.2060347966337182, -0.2026940577919598, 0.6824507824531167,
                         -0.6713610884174485), (1260.8474446004698, 807.968244525554,
                                                495.3344268742088)),
    "CAM_BACK_RIGHT": ((1.0148780988, -0.480568219723, 1.56239545128),
                       (0.12280980120078765, -0.132400842670559, -0.7004305821388234,
                        0.690496031265798), (1259.5137405846733, 807.2529053838625,
                                             501.19579884916527)),
    "CAM_BACK": ((0.0283260309358, 0.00345136761476, 1.57910346144),
                 (0.5037872666382278, -0.49740249788611096, -0.4941850223835201,
                  0.5045496097725578), (809.2209905677063, 829.2196003259838,
                                        481.77842384512485)),
    "CAM_BACK_LEFT": ((1.03569100218, 0.484795032713, 1.59097014818),
                      (0.6924185592174665, -0.7031619420114925, -0.11648342771943819,
                       0.11203317912370753), (1256.7414812095406, 792.1125740759628,
                                              492.7757465151356)),
    "CAM_FRONT_LEFT": ((1.52387798135, 0.494631336551, 1.50932822144),
                       (0.6757265034669446, -0.6736266522251881, 0.21214015046209478,
                        -0.21122827103904068), (1272.5979470598488, 826.6154927353808,
                                                479.75165386361925)),
}
LIDAR = ((0.943713, 0.0, 1.84023),
         (0.7077955119163518, -0.006492242056004365, 0.010646214713995808,
          -0.7063073142877817))
RADARS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "RADAR_FRONT": ((3.412, 0.0, 0.5), (0.9999984769132877, 0.0, 0.0, 0.0017453283658983088)),
    "RADAR_FRONT_LEFT": ((2.422, 0.8, 0.78), (0.7171539204983457, 0.0, 0.0,
                                               0.6969148113750004)),
    "RADAR_FRONT_RIGHT": ((2.422, -0.8, 0.77), (0.7087093341000862, 0.0, 0.0,
                                                 -0.7055005880645404)),
    "RADAR_BACK_LEFT": ((-0.562, 0.628, 0.53), (0.0458860416542946, 0.0, 0.0,
                                                 0.9989466808500344)),
    "RADAR_BACK_RIGHT": ((-0.562, -0.618, 0.53), (0.04361938736533623, 0.0, 0.0,
                                                   -0.9990482215818578)),
}
# Camera exposure time minus the keyframe LiDAR time (µs): each camera fires as the spinning
# LiDAR sweeps across its field of view (values of the scene-0061 keyframe).
CAMERA_OFFSET_US = {
    "CAM_FRONT": -35491, "CAM_FRONT_RIGHT": -27612, "CAM_BACK_RIGHT": -20058,
    "CAM_BACK": -10426, "CAM_BACK_LEFT": -528, "CAM_FRONT_LEFT": -43107,
}
# Velodyne HDL-32E: 32 beams from -30.67 deg to +10.67 deg.
LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)
# Continental ARS 408: azimuth field of view and maximum range by |azimuth|.
RADAR_FOV_DEG = 60.0
RADAR_RANGE_BY_AZIMUTH = ((9.0, 100.0), (40.0, 70.0), (60.0, 35.0))  # (|az| <= deg, max range)
RADAR_ELEVATIONS_DEG = (-2.0, 0.0, 2.0)
RADAR_AZIMUTH_STEP_DEG = 0.5


@dataclass
class Rig:
    """One log's calibration: T_ego_sensor for every sensor, K for the cameras."""

    T_ego: dict[str, np.ndarray]
    K: dict[str, np.ndarray]
    width: int
    height: int

    def translation(self, name: str) -> list[float]:
        return [round(float(v), 6) for v in self.T_ego[name][:3, 3]]

    def rotation(self, name: str) -> list[float]:
        return [round(float(v), 10) for v in matrix_to_quaternion(self.T_ego[name][:3, :3])]


def scaled_intrinsics(fx: float, cx: float, cy: float, width: int, height: int) -> np.ndarray:
    """nuScenes 1600x900 intrinsics resized to width x height (a plain image resize)."""
    sx, sy = width / NUSCENES_IMAGE_SIZE[0], height / NUSCENES_IMAGE_SIZE[1]
    return np.array([[fx * sx, 0.0, cx * sx], [0.0, fx * sy, cy * sy], [0.0, 0.0, 1.0]])


def _jitter(T: np.ndarray, rng: np.random.Generator, trans_m: float, rot_deg: float):
    angles = np.radians(rng.normal(0.0, rot_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    out = T.copy()
    out[:3, :3] = Rz @ Ry @ Rx @ T[:3, :3]
    out[:3, 3] = T[:3, 3] + rng.normal(0.0, trans_m, 3)
    return out


def make_rig(width: int, height: int, rng: np.random.Generator | None = None) -> Rig:
    T_ego, K = {}, {}
    for name in CAMERA_NAMES:
        t, q, (fx, cx, cy) = CAMERAS[name]
        T_ego[name] = make_transform(quaternion_to_matrix(q), t)
        K[name] = scaled_intrinsics(fx, cx, cy, width, height)
    T_ego[LIDAR_NAME] = make_transform(quaternion_to_matrix(LIDAR[1]), LIDAR[0])
    for name in RADAR_NAMES:
        t, q = RADARS[name]
        T_ego[name] = make_transform(quaternion_to_matrix(q), t)
    if rng is not None:
        for name in T_ego:
            T_ego[name] = _jitter(T_ego[name], rng, 0.004, 0.05)
    # store exactly what the calibrated_sensor table will say (rounded quaternion/translation)
    rig = Rig(T_ego, K, width, height)
    for name in list(T_ego):
        T_ego[name] = make_transform(quaternion_to_matrix(rig.rotation(name)),
                                     rig.translation(name))
    return rig


def radar_max_range(azimuth_rad: np.ndarray) -> np.ndarray:
    a = np.degrees(np.abs(azimuth_rad))
    out = np.zeros_like(a)
    for limit, rng_m in reversed(RADAR_RANGE_BY_AZIMUTH):
        out[a <= limit] = rng_m
    return out
