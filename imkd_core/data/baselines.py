"""A naive radar-only detector, the floor every learned model must beat.

Per keyframe: the 5 radars' keyframe returns (nuscenes-devkit's default radar filters) in the
global frame, clustered in bird's-eye view (single linkage, `eps` metres); every cluster is
reported as a car of the mean nuScenes car size at the cluster centroid, heading along its
compensated velocity when it moves and along the ego otherwise, scored by its number of returns.
Radar knows where something reflects and how fast it closes in; it cannot tell a pedestrian from
a pole or a bus's length: this baseline shows that (low but non-zero mAP on cars only).
"""

from __future__ import annotations

import numpy as np

from imkd_core.geometry import quaternion_to_matrix, quaternion_yaw, yaw_to_quaternion
from imkd_core.sample import RADAR_NAMES

CAR_SIZE_WLH = (1.95, 4.61, 1.72)


def sample_radar_global(nusc, sample_token: str) -> np.ndarray:
    """(N, 5) x, y (global), rcs, vx, vy (compensated, global) of a keyframe's 5 radars."""
    from nuscenes.utils.data_classes import RadarPointCloud

    sample = nusc.get("sample", sample_token)
    out = []
    for channel in RADAR_NAMES:
        if channel not in sample["data"]:
            continue
        sd = nusc.get("sample_data", sample["data"][channel])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        pc = RadarPointCloud.from_file(nusc.get_sample_data_path(sd["token"]))
        pts = pc.points  # (18, N), radar frame
        R_pose = quaternion_to_matrix(pose["rotation"])
        R = R_pose @ quaternion_to_matrix(cs["rotation"])
        t = R_pose @ np.asarray(cs["translation"]) + np.asarray(pose["translation"])
        xyz = (R @ pts[:3]).T + t
        vel = np.zeros((pts.shape[1], 3))
        vel[:, 0], vel[:, 1] = pts[8], pts[9]
        vel = vel @ R.T
        out.append(np.column_stack([xyz[:, :2], pts[5], vel[:, :2]]))
    return np.concatenate(out) if out else np.zeros((0, 5))


def cluster_bev(xy: np.ndarray, eps: float) -> np.ndarray:
    """Single-linkage cluster labels (0..K-1) of (N, 2) points."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(xy)
    if n == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(xy).query_pairs(eps, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def radar_cluster_detections(nusc, sample_token: str, eps: float = 2.5) -> list[dict]:
    """Submission dicts (global frame) for one keyframe."""
    pts = sample_radar_global(nusc, sample_token)
    labels = cluster_bev(pts[:, :2], eps)
    sample = nusc.get("sample", sample_token)
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    ego_yaw = float(quaternion_yaw(nusc.get("ego_pose", lidar_sd["ego_pose_token"])["rotation"]))
    out = []
    for k in range(labels.max() + 1 if len(labels) else 0):
        members = pts[labels == k]
        centre = members[:, :2].mean(0)
        velocity = members[:, 3:5].mean(0)
        speed = float(np.hypot(*velocity))
        yaw = float(np.arctan2(velocity[1], velocity[0])) if speed > 1.0 else ego_yaw
        score = float(1.0 - np.exp(-len(members) / 2.0))
        out.append({
            "sample_token": sample_token,
            "translation": [float(centre[0]), float(centre[1]), CAR_SIZE_WLH[2] / 2],
            "size": list(CAR_SIZE_WLH),
            "rotation": [float(v) for v in yaw_to_quaternion(yaw)],
            "velocity": [float(velocity[0]), float(velocity[1])],
            "detection_name": "car", "detection_score": score,
            "attribute_name": "vehicle.moving" if speed > 0.5 else "vehicle.parked",
        })
    out.sort(key=lambda d: -d["detection_score"])
    return out[:500]


def radar_cluster_baseline(nusc, eval_set: str, eps: float = 2.5) -> dict[str, list[dict]]:
    """Detections for every keyframe of an official split."""
    from imkd_core.evaluation.metrics import split_sample_tokens

    return {token: radar_cluster_detections(nusc, token, eps)
            for token in split_sample_tokens(nusc, eval_set)}
