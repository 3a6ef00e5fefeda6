"""A minimal but complete nuScenes-format dataroot for bag tests: all 13 tables, sweeps with
prev/next chains, radar PCDs, LiDAR bins, small JPEGs, annotated boxes with instances.

Two scenes from two logs, with different calibrations; the second scene's clock starts
*before* the first one's (as two independently generated scenes may), so a converter must keep
log time monotonic on its own. Everything is seeded and small (a few hundred kB).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from imkd_core.data.radar_pcd import encode_radar_pcd
from imkd_core.geometry import matrix_to_quaternion, yaw_to_quaternion

CAMERAS = ("CAM_FRONT", "CAM_BACK")
RADARS = ("RADAR_FRONT", "RADAR_BACK_LEFT")
LIDAR = "LIDAR_TOP"
# period (us) and phase (us) of each sensor, relative to the LiDAR keyframe trigger
PERIOD = {"LIDAR_TOP": 100_000, "CAM_FRONT": 83_000, "CAM_BACK": 83_000,
          "RADAR_FRONT": 77_000, "RADAR_BACK_LEFT": 71_000}
PHASE = {"LIDAR_TOP": 0, "CAM_FRONT": 11_000, "CAM_BACK": 37_000, "RADAR_FRONT": 19_000,
         "RADAR_BACK_LEFT": -13_000}
KEY_PERIOD = 500_000
CATEGORIES = ("vehicle.car", "human.pedestrian.adult", "movable_object.barrier",
              "animal")  # the last one is no detection class: the reader drops it
IMAGE_SIZE = (64, 36)  # width, height


def _token(rng: np.random.Generator) -> str:
    return uuid.UUID(bytes=rng.bytes(16)).hex


def _write_json(root: Path, name: str, records) -> None:
    (root / f"{name}.json").write_text(json.dumps(records, indent=0))


def write_minimal_nuscenes(root: str | Path, version: str = "v1.0-mini", seed: int = 0,
                           keyframes_per_scene: int = 3) -> Path:
    """Write the dataset under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    tables = root / version
    tables.mkdir(parents=True, exist_ok=True)
    (root / "maps").mkdir(exist_ok=True)
    t: dict[str, list] = {name: [] for name in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
        "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    for name in CATEGORIES:
        t["category"].append({"token": _token(rng), "name": name, "description": name})
    cat_token = {c["name"]: c["token"] for c in t["category"]}
    for name in ("vehicle.moving", "vehicle.parked", "pedestrian.moving"):
        t["attribute"].append({"token": _token(rng), "name": name, "description": name})
    attr_token = {a["name"]: a["token"] for a in t["attribute"]}
    for level, token in enumerate(("1", "2", "3", "4")):
        t["visibility"].append({"token": token, "level": f"v{level * 20}-{level * 20 + 40}",
                                "description": ""})
    sensor_token = {}
    for channel in (*CAMERAS, *RADARS, LIDAR):
        modality = "camera" if channel.startswith("CAM") else (
            "radar" if channel.startswith("RADAR") else "lidar")
        sensor_token[channel] = _token(rng)
        t["sensor"].append({"token": sensor_token[channel], "channel": channel,
                            "modality": modality})
    map_token = _token(rng)
    t["map"].append({"token": map_token, "category": "semantic_prior",
                     "filename": f"maps/{map_token}.png", "log_tokens": []})
    Image.new("L", (4, 4)).save(root / f"maps/{map_token}.png")

    # scene 0 starts at 1.5e15 us, scene 1 (another log) 2 s *earlier*: stamps overlap.
    starts = (1_500_000_000_000_000, 1_499_999_998_000_000)
    for scene_index, t0 in enumerate(starts):
        log_token = _token(rng)
        logfile = f"n000-2020-01-0{scene_index + 1}-00-00-00+0000"
        t["log"].append({"token": log_token, "logfile": logfile, "vehicle": "n000",
                         "date_captured": f"2020-01-0{scene_index + 1}",
                         "location": "singapore-onenorth"})
        t["map"][0]["log_tokens"].append(log_token)
        calib = {}
        for channel in (*CAMERAS, *RADARS, LIDAR):
            yaw = {"CAM_FRONT": 0.0, "CAM_BACK": np.pi, "RADAR_FRONT": 0.0,
                   "RADAR_BACK_LEFT": 2.3, "LIDAR_TOP": -np.pi / 2}[channel]
            yaw += 0.01 * scene_index
            if channel.startswith("CAM"):
                # optical frame: z forward (= ego yaw direction), x right, y down
                c, s = np.cos(yaw), np.sin(yaw)
                R = np.array([[s, 0, c], [-c, 0, s], [0, -1, 0]], dtype=np.float64)
                rotation = matrix_to_quaternion(R).tolist()
                intrinsic = [[50.0 + scene_index, 0.0, 32.0], [0.0, 50.0, 18.0], [0, 0, 1.0]]
            else:
                rotation = yaw_to_quaternion(yaw).tolist()
                intrinsic = []
            token = _token(rng)
            calib[channel] = token
            t["calibrated_sensor"].append({
                "token": token, "sensor_token": sensor_token[channel],
                "translation": (rng.normal(size=3) * [1.5, 0.5, 0.3] + [0, 0, 1.5]).tolist(),
                "rotation": rotation, "camera_intrinsic": intrinsic})

        scene_token = _token(rng)
        n_key = keyframes_per_scene
        key_stamps = [t0 + k * KEY_PERIOD for k in range(n_key)]
        sample_tokens = [_token(rng) for _ in range(n_key)]
        for k, token in enumerate(sample_tokens):
            t["sample"].append({"token": token, "timestamp": key_stamps[k],
                                "scene_token": scene_token,
                                "prev": sample_tokens[k - 1] if k else "",
                                "next": sample_tokens[k + 1] if k + 1 < n_key else ""})
        sample_by_key = dict(zip(key_stamps, sample_tokens))

        def ego(stamp_us, t0=t0, scene_index=scene_index):
            s = (stamp_us - t0) / 1e6
            yaw = 0.3 + 0.05 * s + scene_index
            return ([1000.0 + 8.0 * s * np.cos(yaw) + scene_index * 500,
                     2000.0 + 8.0 * s * np.sin(yaw), 0.0],
                    yaw_to_quaternion(yaw).tolist())

        end = key_stamps[-1] + 60_000  # a few sweeps after the last keyframe
        for channel in (*CAMERAS, *RADARS, LIDAR):
            stamps = []
            s = t0 + PHASE[channel] - 3 * PERIOD[channel]  # sweeps before the first keyframe
            while s <= end:
                stamps.append(s)
                s += PERIOD[channel]
            # the keyframe of this channel: the stamp nearest each LiDAR keyframe
            key_of = {min(stamps, key=lambda x, kk=kk: abs(x - kk)): kk for kk in key_stamps}
            if channel == LIDAR:
                key_of = {kk: kk for kk in key_stamps}
                stamps = sorted(set(stamps) | set(key_stamps))
            tokens = [_token(rng) for _ in stamps]
            for i, (stamp, token) in enumerate(zip(stamps, tokens)):
                is_key = stamp in key_of
                nearest = min(key_stamps, key=lambda kk, st=stamp: abs(kk - st))
                sample_token = sample_by_key[key_of[stamp] if is_key else nearest]
                folder = "samples" if is_key else "sweeps"
                base = f"{logfile}__{channel}__{stamp}"
                if channel.startswith("CAM"):
                    filename = f"{folder}/{channel}/{base}.jpg"
                    (root / folder / channel).mkdir(parents=True, exist_ok=True)
                    pixels = rng.integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), np.uint8)
                    Image.fromarray(pixels).save(root / filename, quality=90)
                    width, height = IMAGE_SIZE
                elif channel.startswith("RADAR"):
                    filename = f"{folder}/{channel}/{base}.pcd"
                    (root / folder / channel).mkdir(parents=True, exist_ok=True)
                    (root / filename).write_bytes(encode_radar_pcd(_radar_points(rng)))
                    width = height = 0
                else:
                    filename = f"{folder}/{channel}/{base}.pcd.bin"
                    (root / folder / channel).mkdir(parents=True, exist_ok=True)
                    n = int(rng.integers(50, 120))
                    pts = np.empty((n, 5), np.float32)
                    pts[:, :3] = rng.normal(size=(n, 3)) * [20, 20, 1]
                    pts[:5, :2] = 0.3  # a few hits on the ego vehicle (remove_close drops them)
                    pts[:, 3] = rng.integers(0, 256, n)
                    pts[:, 4] = rng.integers(0, 32, n)
                    pts.tofile(root / filename)
                    width = height = 0
                translation, rotation = ego(stamp)
                t["ego_pose"].append({"token": token, "timestamp": stamp,
                                      "translation": translation, "rotation": rotation})
                t["sample_data"].append({
                    "token": token, "sample_token": sample_token, "ego_pose_token": token,
                    "calibrated_sensor_token": calib[channel], "timestamp": stamp,
                    "fileformat": filename.rsplit(".", 1)[-1], "is_key_frame": is_key,
                    "height": height, "width": width, "filename": filename,
                    "prev": tokens[i - 1] if i else "",
                    "next": tokens[i + 1] if i + 1 < len(tokens) else ""})

        # annotations: 4 instances tracked over every keyframe
        for j, category in enumerate((*CATEGORIES, "vehicle.car")):
            inst = _token(rng)
            ann_tokens = [_token(rng) for _ in range(n_key)]
            pos0 = np.array(ego(t0)[0]) + rng.normal(size=3) * [10, 10, 0.2]
            vel = rng.normal(size=3) * [2, 2, 0]
            for k, ann in enumerate(ann_tokens):
                s = (key_stamps[k] - t0) / 1e6
                attrs = [attr_token["vehicle.moving"]] if category == "vehicle.car" else []
                t["sample_annotation"].append({
                    "token": ann, "sample_token": sample_tokens[k], "instance_token": inst,
                    "visibility_token": str(1 + (j + k) % 4), "attribute_tokens": attrs,
                    "translation": (pos0 + vel * s).tolist(),
                    "size": [1.8, 4.4, 1.6] if "vehicle" in category else [0.6, 0.6, 1.7],
                    "rotation": yaw_to_quaternion(0.2 * j + 0.1 * k).tolist(),
                    "prev": ann_tokens[k - 1] if k else "",
                    "next": ann_tokens[k + 1] if k + 1 < n_key else "",
                    "num_lidar_pts": int(rng.integers(0, 50)),
                    "num_radar_pts": int(rng.integers(0, 5))})
            t["instance"].append({"token": inst, "category_token": cat_token[category],
                                  "nbr_annotations": n_key, "first_annotation_token":
                                  ann_tokens[0], "last_annotation_token": ann_tokens[-1]})
        t["scene"].append({"token": scene_token, "log_token": log_token,
                           "nbr_samples": n_key, "first_sample_token": sample_tokens[0],
                           "last_sample_token": sample_tokens[-1],
                           "name": f"scene-{scene_index + 1:04d}", "description": "fixture"})
    for name, records in t.items():
        _write_json(tables, name, records)
    return root


def _radar_points(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(5, 40))
    pts = np.zeros((n, 18), np.float32)
    pts[:, 0] = rng.uniform(1, 80, n)
    pts[:, 1] = rng.uniform(-20, 20, n)
    pts[:, 3] = rng.integers(0, 8, n)  # dyn_prop
    pts[:, 4] = np.arange(n)  # id
    pts[:, 5] = rng.normal(5, 5, n)  # rcs
    pts[:, 6:10] = rng.normal(0, 3, (n, 4))  # vx vy vx_comp vy_comp
    pts[:, 10] = 1
    pts[:, 11] = rng.choice([2, 3, 3, 3], n)  # ambig_state
    pts[:, 12:14] = rng.integers(0, 30, (n, 2))
    pts[:, 14] = rng.choice([0, 0, 0, 7], n)  # invalid_state
    pts[:, 15] = 1
    pts[:, 16:18] = rng.integers(0, 30, (n, 2))
    return pts


# The real keyframe in test/data lacks 4 of the 13 tables; its SOURCE.md gives these records.
REAL_LOG = {"token": "7e25a2c8ea1f41c5b0da1e69ecfa71a2",
            "logfile": "n015-2018-07-24-11-22-45+0800", "vehicle": "n015",
            "date_captured": "2018-07-24", "location": "singapore-onenorth"}
REAL_MAP = {"category": "semantic_prior", "token": "53992ee3023e5494b90c316c183be829",
            "filename": "maps/53992ee3023e5494b90c316c183be829.png",
            "log_tokens": [REAL_LOG["token"]]}


def loadable_real_copy(source: Path, dst: Path) -> Path:
    """Copy the real keyframe (test/data/nuscenes_real) to `dst` and add the tables
    nuscenes-devkit requires; the tracked copy is never written to."""
    import shutil

    shutil.copytree(source, dst)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # the source may be read-only (a CI checkout)
    tables = dst / "v1.0-test"
    for name, records in (("instance", []), ("sample_annotation", []), ("log", [REAL_LOG]),
                          ("map", [REAL_MAP])):
        (tables / f"{name}.json").write_text(json.dumps(records))
    (dst / REAL_MAP["filename"]).parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4)).save(dst / REAL_MAP["filename"])
    return dst
