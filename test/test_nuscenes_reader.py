"""NuScenesReader on a small hand-written nuScenes-format dataset, and on broken copies of it.

`write_mini_nuscenes` writes all 13 tables, PNG/JPEG images, LiDAR `.pcd.bin` and radar PCDs
(our codec) for 2 scenes with keyframes and sweeps, an ego that drives and turns, and static
landmarks that every sweep sees from its own pose. So the tests know the exact answer: every
sighting of a landmark must land at one keyframe-ego position, time offsets are the stamp
differences, annotated velocities are displacement / time. nuscenes-devkit loads the same
folder and gives a second opinion (multi-sweep aggregation, projection, box velocity).
(The real keyframe's tests, cameras + LiDAR with trimmed tables, are in test_real_keyframe.py.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imkd_core.data.nuscenes import NuScenesDataError, NuScenesReader, read_lidar_bin
from imkd_core.data.options import ReaderOptions
from imkd_core.data.radar_pcd import encode_radar_pcd
from imkd_core.data.sweeps import RadarFilter
from imkd_core.geometry import (
    invert_transform,
    make_transform,
    matrix_to_quaternion,
    points_in_boxes,
    project_to_image,
    transform_points,
    yaw_to_quaternion,
)
from imkd_core.sample import CLASS_INDEX, NUSCENES_RADAR_FIELDS, RADAR_COLUMN

VERSION = "v1.0-trainval"
T0 = 1_600_000_000_000_000  # µs
KEY_GAP = 500_000  # µs between keyframes
LANDMARKS = np.array([[115.0, 52.0, 1.0], [110.0, 58.0, 0.5], [95.0, 45.0, 2.0]])  # map frame
CAR_VELOCITY = np.array([4.0, 1.0])  # map frame, m/s
IMAGE_SIZE = (64, 48)
K = [[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]]
# optical frame (z forward, x right, y down) of a camera looking along ego +x: columns in ego
OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def ego_pose(t_us: int) -> np.ndarray:
    """The ego drives and turns (and pitches a little): T_map_ego at absolute time t_us."""
    t = (t_us - T0) / 1e6
    rot = make_transform(yaw_to_quaternion(0.3 + 0.4 * t), [0, 0, 0])[:3, :3]
    pitch = make_transform([np.cos(0.005), 0, np.sin(0.005), 0], [0, 0, 0])[:3, :3]
    return make_transform(rot @ pitch, [100.0 + 8.0 * t, 50.0 + 2.0 * t * t, 0.1 * t])


def rz(yaw):
    return make_transform(yaw_to_quaternion(yaw), [0, 0, 0])[:3, :3]


SENSORS = {  # channel: (modality, T_ego_sensor)
    "LIDAR_TOP": ("lidar", make_transform(rz(-np.pi / 2), [0.94, 0.0, 1.84])),
    "RADAR_FRONT": ("radar", make_transform(rz(0.0), [3.41, 0.0, 0.5])),
    "RADAR_BACK_LEFT": ("radar", make_transform(rz(np.pi - 0.3), [-0.5, 0.9, 0.5])),
    "CAM_FRONT": ("camera", make_transform(OPTICAL, [1.7, 0.0, 1.5])),
    "CAM_BACK": ("camera", make_transform(rz(np.pi) @ OPTICAL, [0.0, 0.0, 1.6])),
}
# per channel: stamp offsets (µs) after a keyframe time for its keyframe record and its sweeps
CAMERA_OFFSET = {"CAM_FRONT": -30_000, "CAM_BACK": 20_000}
RADAR_OFFSET = {"RADAR_FRONT": 12_000, "RADAR_BACK_LEFT": -8_000}
SCENES = [("scene-0001", 2), ("scene-0003", 1)]  # official train / val names, samples each


def raw_radar_sweep(T_map_sensor: np.ndarray) -> np.ndarray:
    """Landmarks seen from this radar pose, plus a copy of landmark 0 flagged invalid."""
    seen = transform_points(invert_transform(T_map_sensor), LANDMARKS)
    raw = np.zeros((4, len(NUSCENES_RADAR_FIELDS)), dtype=np.float32)
    field = {name: i for i, name in enumerate(NUSCENES_RADAR_FIELDS)}
    raw[:3, :3] = seen
    raw[3, :3] = seen[0]
    raw[:, field["rcs"]] = [5.0, 10.0, -5.0, 5.0]
    raw[:, field["vx_comp"]] = 0.0
    raw[:, field["vx"]] = -1.0
    raw[:, field["dyn_prop"]] = 1
    raw[:, field["ambig_state"]] = 3
    raw[:, field["invalid_state"]] = [0, 0, 0, 1]
    raw[:, field["id"]] = [0, 1, 2, 3]
    return raw


def raw_lidar_sweep(T_map_sensor: np.ndarray) -> np.ndarray:
    """Landmarks (intensity 10, 20, 30) plus one hit on the ego roof 0.3 m from the sensor."""
    seen = transform_points(invert_transform(T_map_sensor), LANDMARKS)
    raw = np.zeros((4, 5), dtype=np.float32)
    raw[:3, :3] = seen
    raw[:3, 3] = [10, 20, 30]
    raw[:3, 4] = [0, 1, 2]
    raw[3] = [0.3, 0.2, -0.1, 1, 3]
    return raw


def write_mini_nuscenes(root: Path) -> dict:
    """Write the dataset; returns facts the tests check against."""
    tables: dict[str, list] = {name: [] for name in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
        "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    categories = ["vehicle.car", "human.pedestrian.adult", "animal", "movable_object.barrier"]
    tables["category"] = [{"token": f"cat-{c}", "name": c, "description": ""} for c in categories]
    attributes = ["vehicle.moving", "vehicle.parked", "pedestrian.standing"]
    tables["attribute"] = [{"token": f"attr-{a}", "name": a, "description": ""}
                           for a in attributes]
    tables["visibility"] = [{"token": str(i), "level": lvl, "description": ""}
                            for i, lvl in enumerate(["v0-40", "v40-60", "v60-80", "v80-100"], 1)]
    for channel, (modality, T) in SENSORS.items():
        tables["sensor"].append({"token": f"sensor-{channel}", "channel": channel,
                                 "modality": modality})
        tables["calibrated_sensor"].append({
            "token": f"cs-{channel}", "sensor_token": f"sensor-{channel}",
            "translation": T[:3, 3].tolist(), "rotation": matrix_to_quaternion(T[:3, :3]).tolist(),
            "camera_intrinsic": K if modality == "camera" else []})
    tables["log"] = [{"token": "log-0", "logfile": "synthetic", "vehicle": "n000",
                      "date_captured": "2020-09-13", "location": "singapore-onenorth"}]
    tables["map"] = [{"category": "semantic_prior", "token": "map-0",
                      "filename": "maps/map-0.png", "log_tokens": ["log-0"]}]
    (root / "maps").mkdir(parents=True)
    Image.new("L", (16, 16)).save(root / "maps" / "map-0.png")
    facts: dict = {"samples": {}, "images": {}}

    def add_sd(channel, sample_token, stamp, key, chain):
        token = f"sd-{channel}-{stamp}"
        modality = SENSORS[channel][0]
        folder = "samples" if key else "sweeps"
        ext = {"lidar": "pcd.bin", "radar": "pcd", "camera": "png" if channel == "CAM_FRONT"
               else "jpg"}[modality]
        filename = f"{folder}/{channel}/synthetic__{channel}__{stamp}.{ext}"
        path = root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        T_map_sensor = ego_pose(stamp) @ SENSORS[channel][1]
        if modality == "lidar":
            raw_lidar_sweep(T_map_sensor).tofile(path)
        elif modality == "radar":
            path.write_bytes(encode_radar_pcd(raw_radar_sweep(T_map_sensor)))
        else:
            rng = np.random.default_rng(stamp % 2**32)
            pixels = rng.integers(0, 255, size=(IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
            facts["images"][token] = pixels
        tables["ego_pose"].append({
            "token": token, "timestamp": stamp, "translation": ego_pose(stamp)[:3, 3].tolist(),
            "rotation": matrix_to_quaternion(ego_pose(stamp)[:3, :3]).tolist()})
        record = {"token": token, "sample_token": sample_token, "ego_pose_token": token,
                  "calibrated_sensor_token": f"cs-{channel}", "timestamp": stamp,
                  "fileformat": ext.split(".")[0], "is_key_frame": key,
                  "height": IMAGE_SIZE[1] if modality == "camera" else 0,
                  "width": IMAGE_SIZE[0] if modality == "camera" else 0,
                  "filename": filename, "prev": chain[-1]["token"] if chain else "", "next": ""}
        if chain:
            chain[-1]["next"] = token
        chain.append(record)
        tables["sample_data"].append(record)

    annotations: dict[str, list] = {}
    for scene_index, (name, n_samples) in enumerate(SCENES):
        scene_t0 = T0 + scene_index * 20_000_000
        sample_tokens = [f"sample-{name}-{i}" for i in range(n_samples)]
        chains: dict[str, list] = {channel: [] for channel in SENSORS}
        for i, token in enumerate(sample_tokens):
            t_key = scene_t0 + i * KEY_GAP
            tables["sample"].append({
                "token": token, "timestamp": t_key, "scene_token": f"scene-{name}",
                "prev": sample_tokens[i - 1] if i else "",
                "next": sample_tokens[i + 1] if i + 1 < n_samples else ""})
            facts["samples"][token] = t_key
            # LiDAR at 20 Hz: sweeps between the previous keyframe and this one
            if i:
                for k in range(1, 10):
                    add_sd("LIDAR_TOP", token, t_key - KEY_GAP + k * 50_000, False,
                           chains["LIDAR_TOP"])
            add_sd("LIDAR_TOP", token, t_key, True, chains["LIDAR_TOP"])
            for channel, offset in RADAR_OFFSET.items():
                if i:
                    for k in range(1, 6):
                        add_sd(channel, token, t_key - KEY_GAP + offset + k * 75_000, False,
                               chains[channel])
                add_sd(channel, token, t_key + offset, True, chains[channel])
            for channel, offset in CAMERA_OFFSET.items():
                add_sd(channel, token, t_key + offset, True, chains[channel])
        tables["scene"].append({
            "token": f"scene-{name}", "log_token": "log-0", "nbr_samples": n_samples,
            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
            "name": name, "description": "synthetic"})
        if scene_index == 0:  # annotations in the first (train) scene only
            for i, token in enumerate(sample_tokens):
                t = i * KEY_GAP / 1e6
                car = [112.0 + CAR_VELOCITY[0] * t, 55.0 + CAR_VELOCITY[1] * t, 0.8]
                annotations.setdefault("car", []).append(dict(
                    sample_token=token, translation=car, size=[1.9, 4.5, 1.6],
                    rotation=yaw_to_quaternion(np.arctan2(1, 4)).tolist(),
                    attribute_tokens=["attr-vehicle.moving"], visibility_token="4",
                    num_lidar_pts=12 + i, num_radar_pts=2, category="vehicle.car"))
                annotations.setdefault("ped", []).append(dict(
                    sample_token=token, translation=[105.0, 47.0, 0.9], size=[0.6, 0.7, 1.8],
                    rotation=yaw_to_quaternion(1.0).tolist(),
                    attribute_tokens=["attr-pedestrian.standing"], visibility_token="2",
                    num_lidar_pts=5, num_radar_pts=0, category="human.pedestrian.adult"))
                annotations.setdefault("dog", []).append(dict(
                    sample_token=token, translation=[104.0, 46.0, 0.3], size=[0.3, 0.8, 0.5],
                    rotation=[1, 0, 0, 0], attribute_tokens=[], visibility_token="1",
                    num_lidar_pts=1, num_radar_pts=0, category="animal"))
            annotations["barrier"] = [dict(
                sample_token=sample_tokens[0], translation=[108.0, 49.0, 0.5],
                size=[2.0, 0.5, 1.0], rotation=[1, 0, 0, 0], attribute_tokens=[],
                visibility_token="", num_lidar_pts=0, num_radar_pts=0,
                category="movable_object.barrier", trimmed=True)]
    for instance, records in annotations.items():
        tokens = [f"ann-{instance}-{i}" for i in range(len(records))]
        for i, (token, rec) in enumerate(zip(tokens, records)):
            category = rec.pop("category")
            trimmed = rec.pop("trimmed", False)
            rec.update(token=token, instance_token=f"inst-{instance}")
            if not trimmed:  # the barrier's record lacks prev/next, as trimmed tables do
                rec.update(prev=tokens[i - 1] if i else "",
                           next=tokens[i + 1] if i + 1 < len(tokens) else "")
            tables["sample_annotation"].append(rec)
        tables["instance"].append({
            "token": f"inst-{instance}", "category_token": f"cat-{category}",
            "nbr_annotations": len(tokens), "first_annotation_token": tokens[0],
            "last_annotation_token": tokens[-1]})
    (root / VERSION).mkdir(parents=True)
    for name, records in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(records, indent=1))
    return facts


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mini_nuscenes")
    return root, write_mini_nuscenes(root)


@pytest.fixture(scope="module")
def reader(mini) -> NuScenesReader:
    return NuScenesReader(mini[0], VERSION)


@pytest.fixture
def broken(mini, tmp_path) -> Path:
    """A private copy of the dataset for a test to damage."""
    shutil.copytree(mini[0], tmp_path / "nuscenes")
    return tmp_path / "nuscenes"


SECOND = "sample-scene-0001-1"  # the sample with sweeps behind it


def landmarks_in_key_ego(sample) -> np.ndarray:
    return transform_points(invert_transform(sample.T_map_ego), LANDMARKS)


# --------------------------------------------------------------------------------- listing
def test_sample_tokens_by_scene_and_split(reader):
    everything = ["sample-scene-0001-0", SECOND, "sample-scene-0003-0"]
    assert reader.sample_tokens() == everything
    assert len(reader) == 3
    assert reader.scene_names == ["scene-0001", "scene-0003"]
    assert reader.sample_tokens(scenes="scene-0003") == ["sample-scene-0003-0"]
    assert reader.sample_tokens(split="train") == everything[:2]
    assert reader.sample_tokens(split="val") == everything[2:]
    assert reader.sample_tokens(scenes=["scene-0001"], split="val") == []
    with pytest.raises(KeyError, match="unknown nuScenes split"):
        reader.sample_tokens(split="validation")
    with pytest.raises(KeyError, match="scene-9999"):
        reader.sample_tokens(scenes="scene-9999")


# ----------------------------------------------------------------------------------- sample
def test_sample_pose_stamps_and_cameras(reader, mini):
    _, facts = mini
    sample = reader.get_sample(SECOND)
    t_key = facts["samples"][SECOND]
    assert sample.token == SECOND and sample.scene_name == "scene-0001"
    assert sample.timestamp == t_key * 1000 and isinstance(sample.timestamp, int)
    np.testing.assert_allclose(sample.T_map_ego, ego_pose(t_key), atol=1e-9)
    assert set(sample.cameras) == {"CAM_FRONT", "CAM_BACK"}  # channels absent are skipped
    front = sample.cameras["CAM_FRONT"]
    assert front.stamp == (t_key + CAMERA_OFFSET["CAM_FRONT"]) * 1000
    np.testing.assert_array_equal(front.image,
                                  facts["images"][f"sd-CAM_FRONT-{front.stamp // 1000}"])
    back = sample.cameras["CAM_BACK"]
    assert back.image.shape == (48, 64, 3) and back.image.dtype == np.uint8  # a JPEG
    np.testing.assert_allclose(front.K, K)
    # T_ego_cam: where the camera was at the image's time, in the keyframe ego frame
    expected = (invert_transform(ego_pose(t_key)) @ ego_pose(t_key + CAMERA_OFFSET["CAM_FRONT"])
                @ SENSORS["CAM_FRONT"][1])
    np.testing.assert_allclose(front.T_ego_cam, expected, atol=1e-9)
    static = NuScenesReader(mini[0], VERSION, options=ReaderOptions(
        camera_ego_motion=False, load_images=False, load_lidar=False,
        load_radar=False)).get_sample(SECOND)
    np.testing.assert_allclose(static.cameras["CAM_FRONT"].T_ego_cam, SENSORS["CAM_FRONT"][1],
                               atol=1e-9)
    assert static.cameras["CAM_FRONT"].image.shape == (48, 64, 3)
    assert static.lidar is None and static.radars == {}


def test_radar_sweeps_are_compensated_to_the_keyframe(reader, mini):
    _, facts = mini
    sample = reader.get_sample(SECOND)
    t_key = facts["samples"][SECOND]
    expected = landmarks_in_key_ego(sample)
    assert set(sample.radars) == {"RADAR_FRONT", "RADAR_BACK_LEFT"}
    for channel, radar in sample.radars.items():
        points = radar.points
        assert points.dtype == np.float32 and points.shape == (6 * 3, len(RADAR_COLUMN))
        # 6 sweeps x 3 valid landmarks (the invalid duplicate is filtered): each at one place
        np.testing.assert_allclose(points[:, :3], np.tile(expected, (6, 1)), atol=2e-3)
        stamps = [t_key + RADAR_OFFSET[channel]] + [
            t_key - KEY_GAP + RADAR_OFFSET[channel] + k * 75_000 for k in range(5, 0, -1)]
        np.testing.assert_allclose(points[:, RADAR_COLUMN["dt"]],
                                   np.repeat([(t_key - s) / 1e6 for s in stamps], 3), atol=1e-6)
        assert radar.stamp == stamps[0] * 1000
        np.testing.assert_allclose(radar.T_ego_radar, SENSORS[channel][1], atol=1e-9)
        np.testing.assert_array_equal(points[:3, RADAR_COLUMN["rcs"]], [5, 10, -5])
        # raw vx = -1 along the radar's x axis, rotated into the keyframe ego frame
        T = invert_transform(sample.T_map_ego) @ ego_pose(stamps[0]) @ SENSORS[channel][1]
        np.testing.assert_allclose(points[0, [RADAR_COLUMN["vx"], RADAR_COLUMN["vy"]]],
                                   -T[:2, 0], atol=1e-5)
    # RADAR_FRONT's keyframe is 12 ms after the LiDAR: a small negative dt
    assert sample.radars["RADAR_FRONT"].points[0, RADAR_COLUMN["dt"]] == pytest.approx(-0.012)


def test_radar_sweep_count_filter_and_scene_start(mini):
    unfiltered = NuScenesReader(mini[0], VERSION, options=ReaderOptions(
        radar_sweeps=10, radar_filter="all", load_images=False, load_lidar=False))
    # the walk back stops at the scene's first sweep: 7 sweeps exist, 4 returns each
    assert len(unfiltered.get_sample(SECOND).radars["RADAR_FRONT"].points) == 7 * 4
    first = unfiltered.get_sample("sample-scene-0001-0")
    assert len(first.radars["RADAR_FRONT"].points) == 4
    moving_only = NuScenesReader(mini[0], VERSION, options=ReaderOptions(
        radar_sweeps=2, load_images=False, radar_filter=RadarFilter(dyn_prop=[0, 2, 6])))
    assert len(moving_only.get_sample(SECOND).radars["RADAR_FRONT"].points) == 0
    with pytest.raises(ValueError, match="count the keyframe"):
        NuScenesReader(mini[0], VERSION, options=ReaderOptions(radar_sweeps=0))


def test_lidar_sweeps_are_compensated_to_the_keyframe(reader, mini):
    _, facts = mini
    sample = reader.get_sample(SECOND)
    t_key = facts["samples"][SECOND]
    points = sample.lidar.points
    # 10 sweeps x 3 landmarks; the roof hit 0.3 m from the sensor is dropped (min distance 1 m)
    assert points.shape == (30, 5) and points.dtype == np.float32
    np.testing.assert_allclose(points[:, :3], np.tile(landmarks_in_key_ego(sample), (10, 1)),
                               atol=2e-3)
    np.testing.assert_array_equal(points[:, 3], np.tile([10, 20, 30], 10))
    np.testing.assert_allclose(points[:, 4], np.repeat(np.arange(10) * 0.05, 3), atol=1e-6)
    assert sample.lidar.stamp == t_key * 1000
    every = NuScenesReader(mini[0], VERSION, options=ReaderOptions(
        lidar_sweeps=3, lidar_min_distance=0.0, load_images=False)).get_sample(SECOND)
    assert every.lidar.points.shape == (3 * 4, 5)


def assert_multisweep_matches_devkit(reader, token: str, atol: float):
    """nuscenes-devkit's from_file_multisweep (into the LiDAR frame) gives the points of our
    radar (6 sweeps, devkit filters) and LiDAR (10 sweeps, min distance 1 m) aggregation."""
    from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud

    nusc = reader.nusc
    record = nusc.get("sample", token)
    sample = reader.get_sample(token)
    T_lidar_ego = invert_transform(sample.lidar.T_ego_lidar)
    RadarPointCloud.default_filters()
    for channel, radar in sample.radars.items():
        cloud, times = RadarPointCloud.from_file_multisweep(nusc, record, channel, "LIDAR_TOP",
                                                            nsweeps=6, min_distance=0.0)
        ours = transform_points(T_lidar_ego, radar.points[:, :3].astype(np.float64))
        np.testing.assert_allclose(ours, cloud.points[:3].T, atol=atol)
        np.testing.assert_allclose(radar.points[:, RADAR_COLUMN["dt"]], times[0], atol=1e-6)
        np.testing.assert_array_equal(radar.points[:, RADAR_COLUMN["rcs"]], cloud.points[5])
    cloud, times = LidarPointCloud.from_file_multisweep(nusc, record, "LIDAR_TOP", "LIDAR_TOP",
                                                        nsweeps=10, min_distance=1.0)
    ours = transform_points(T_lidar_ego, sample.lidar.points[:, :3].astype(np.float64))
    np.testing.assert_allclose(ours, cloud.points[:3].T, atol=atol)
    np.testing.assert_allclose(sample.lidar.points[:, 4], times[0], atol=1e-6)


def test_aggregation_matches_devkit_multisweep(reader):
    assert_multisweep_matches_devkit(reader, SECOND, atol=1e-4)


def test_projection_matches_devkit_with_ego_motion(reader):
    nusc = reader.nusc
    record = nusc.get("sample", SECOND)
    sample = reader.get_sample(SECOND)
    keyframe_only = NuScenesReader(reader.dataroot, VERSION, options=ReaderOptions(
        lidar_sweeps=1, lidar_min_distance=0.0, load_images=False,
        load_radar=False)).get_sample(SECOND)
    expected, _, _ = nusc.explorer.map_pointcloud_to_image(record["data"]["LIDAR_TOP"],
                                                           record["data"]["CAM_FRONT"])
    cam = sample.cameras["CAM_FRONT"]
    uv, depth = project_to_image(keyframe_only.lidar.points, cam.T_ego_cam, cam.K)
    keep = (depth > 1) & (uv[:, 0] > 1) & (uv[:, 0] < 63) & (uv[:, 1] > 1) & (uv[:, 1] < 47)
    assert keep.sum() == expected.shape[1] >= 1
    np.testing.assert_allclose(uv[keep], expected[:2].T, atol=1e-3)


def test_ground_truth_boxes(reader, mini):
    _, facts = mini
    sample = reader.get_sample(SECOND)
    gt = sample.gt
    assert gt.class_names == ["car", "pedestrian"]  # the animal maps to no detection class
    assert gt.labels.dtype == np.int64 and list(gt.labels) == [CLASS_INDEX["car"],
                                                              CLASS_INDEX["pedestrian"]]
    assert gt.attributes == ["vehicle.moving", "pedestrian.standing"]
    assert list(gt.visibility) == [4, 2]
    assert list(gt.num_lidar_pts) == [13, 5] and list(gt.num_radar_pts) == [2, 0]
    assert gt.instance_tokens == ["inst-car", "inst-ped"]
    assert gt.scores is None
    T_ego_map = invert_transform(ego_pose(facts["samples"][SECOND]))
    car_map = [112.0 + CAR_VELOCITY[0] * 0.5, 55.0 + CAR_VELOCITY[1] * 0.5, 0.8]
    np.testing.assert_allclose(gt.params[0, :3],
                               transform_points(T_ego_map, np.array([car_map]))[0], atol=1e-9)
    np.testing.assert_allclose(gt.params[0, 3:6], [4.5, 1.9, 1.6])  # l, w, h from w, l, h
    yaw = np.arctan2(1, 4) - np.arctan2(ego_pose(facts["samples"][SECOND])[1, 0],
                                        ego_pose(facts["samples"][SECOND])[0, 0])
    assert gt.params[0, 6] == pytest.approx(yaw, abs=2e-4)  # the ego's pitch tilts it a hair
    # velocity: devkit box_velocity (displacement / time) rotated into the ego frame
    np.testing.assert_allclose(gt.params[0, 7:9], (T_ego_map[:3, :3] @ [*CAR_VELOCITY, 0])[:2],
                               atol=1e-6)
    np.testing.assert_allclose(gt.params[1, 7:9], 0.0, atol=1e-9)  # the pedestrian stands


def test_annotation_without_prev_next_and_empty_scene(reader):
    first = reader.get_sample("sample-scene-0001-0")
    barrier = first.gt.class_names.index("barrier")
    np.testing.assert_array_equal(first.gt.params[barrier, 7:9], 0.0)  # no velocity estimate
    assert first.gt.visibility[barrier] == 0 and first.gt.attributes[barrier] == ""
    empty = reader.get_sample("sample-scene-0003-0")
    assert len(empty.gt) == 0 and empty.gt.params.shape == (0, 9)
    assert empty.gt.num_lidar_pts.shape == (0,)
    assert len(empty.lidar.points) == 3  # a scene's first sample has no earlier sweep


def test_samples_iterates_in_order(reader):
    assert [s.token for s in reader.samples()] == reader.sample_tokens()


# -------------------------------------------------------------------------------- bad data
def test_missing_table_names_the_file(broken):
    (broken / VERSION / "sample_annotation.json").unlink()
    with pytest.raises(NuScenesDataError,
                       match=r"sample_annotation\.json: nuScenes table missing"):
        NuScenesReader(broken, VERSION)


def test_missing_version_folder(broken):
    with pytest.raises(NuScenesDataError, match=r"v1\.0-mini: nuScenes table folder missing"):
        NuScenesReader(broken, "v1.0-mini")


@pytest.mark.parametrize(("table", "damage", "message"), [
    ("ego_pose", lambda text: text[:-200].encode(), "corrupt JSON"),  # truncated
    ("category", lambda text: b"\xff\xfe\x00garbage", "corrupt JSON"),  # not even UTF-8
    ("sample_data", lambda text: b'{"token": "x"}', "not a nuScenes table"),
])
def test_corrupt_json_table_names_the_file(broken, table, damage, message):
    path = broken / VERSION / f"{table}.json"
    path.write_bytes(damage(path.read_text()))
    with pytest.raises(NuScenesDataError, match=re.escape(f"{path}: {message}")):
        NuScenesReader(broken, VERSION)


def test_missing_map_png_names_the_file(broken):
    (broken / "maps" / "map-0.png").unlink()
    with pytest.raises(NuScenesDataError, match=r"map-0\.png"):
        NuScenesReader(broken, VERSION)


def test_dangling_token_names_the_table(broken):
    path = broken / VERSION / "ego_pose.json"
    poses = json.loads(path.read_text())
    path.write_text(json.dumps([p for p in poses if not p["token"].startswith("sd-CAM_BACK")]))
    reader = NuScenesReader(broken, VERSION)
    with pytest.raises(NuScenesDataError, match=r"ego_pose\.json: no record with token"):
        reader.get_sample(SECOND)


def test_missing_image_names_the_file(broken, mini):
    reader = NuScenesReader(broken, VERSION)
    image = next((broken / "samples" / "CAM_BACK").glob("*.jpg"))
    image.unlink()
    token = reader.nusc.get("sample_data", f"sd-CAM_BACK-{image.name.split('__')[-1][:-4]}")[
        "sample_token"]
    with pytest.raises(NuScenesDataError, match=re.escape(f"{image.name}: image file missing")):
        reader.get_sample(token)
    # without images the sample still reads
    assert NuScenesReader(broken, VERSION, options=ReaderOptions(
        load_images=False)).get_sample(token).cameras


def test_corrupt_image_names_the_file(broken):
    reader = NuScenesReader(broken, VERSION)
    image = broken / reader.nusc.get("sample_data", reader.nusc.get("sample", SECOND)["data"][
        "CAM_FRONT"])["filename"]
    image.write_bytes(image.read_bytes()[:40])
    with pytest.raises(NuScenesDataError, match=re.escape(f"{image.name}: cannot read image")):
        reader.get_sample(SECOND)


def test_truncated_radar_pcd_names_the_file(broken):
    reader = NuScenesReader(broken, VERSION, options=ReaderOptions(load_images=False))
    # damage a sweep, not the keyframe: the walk back must read it too
    sweep = sorted((broken / "sweeps" / "RADAR_BACK_LEFT").glob("*.pcd"))[-1]
    sweep.write_bytes(sweep.read_bytes()[:-30])
    with pytest.raises(NuScenesDataError, match=re.escape(f"{sweep.name}: truncated")):
        reader.get_sample(SECOND)


def test_missing_radar_pcd_names_the_file(broken):
    reader = NuScenesReader(broken, VERSION, options=ReaderOptions(load_images=False))
    key = broken / reader.nusc.get("sample_data", reader.nusc.get("sample", SECOND)["data"][
        "RADAR_FRONT"])["filename"]
    key.unlink()
    with pytest.raises(NuScenesDataError, match=re.escape(f"{key.name}: cannot read radar PCD")):
        reader.get_sample(SECOND)


def test_truncated_lidar_bin_names_the_file(broken):
    reader = NuScenesReader(broken, VERSION, options=ReaderOptions(load_images=False))
    sweep = sorted((broken / "sweeps" / "LIDAR_TOP").glob("*.pcd.bin"))[0]
    sweep.write_bytes(sweep.read_bytes()[:-6])
    with pytest.raises(NuScenesDataError, match=re.escape(f"{sweep.name}: truncated LiDAR file")):
        reader.get_sample(SECOND)
    assert read_lidar_bin(sorted((broken / "samples" / "LIDAR_TOP").glob("*.bin"))[0]).shape == (
        4, 5)
    missing = broken / "samples" / "LIDAR_TOP" / "nope.pcd.bin"
    with pytest.raises(NuScenesDataError, match=r"nope\.pcd\.bin: cannot read LiDAR file"):
        read_lidar_bin(missing)


# ------------------------------------------------------------------- the synthetic world
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> NuScenesReader:
    """A tiny world from our generator (2 scenes x 2 samples, small images, coarse LiDAR)."""
    from imkd_core.data.world import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("world") / "nuscenes"
    config = WorldConfig(scenes=2, samples_per_scene=2, seed=3, image_width=128,
                         image_height=72, lidar_azimuth_steps=180)
    generate_world(root, config, workers=1)
    return NuScenesReader(root, config.version)


def test_world_reads_completely(world):
    from nuscenes.utils.splits import create_splits_scenes

    official = create_splits_scenes(verbose=False)
    train, val = world.sample_tokens(split="train"), world.sample_tokens(split="val")
    assert train and val and not set(train) & set(val)
    assert sorted(train + val) == sorted(world.sample_tokens())
    assert all(name in official["train"] + official["val"] for name in world.scene_names)
    for token in world.sample_tokens():
        sample = world.get_sample(token)
        assert len(sample.cameras) == 6 and len(sample.radars) == 5
        for cam in sample.cameras.values():
            assert cam.image.shape == (72, 128, 3) and cam.image.dtype == np.uint8
            assert cam.image.std() > 5
            assert abs(cam.stamp - sample.timestamp) < 100_000_000  # within 0.1 s
        radar = sample.radar_points()
        assert len(radar) > 0 and np.isfinite(radar).all()
        assert radar[:, RADAR_COLUMN["dt"]].min() > -0.1
        assert radar[:, RADAR_COLUMN["dt"]].max() < 0.6
        lidar = sample.lidar.points
        assert len(np.unique(lidar[:, 4])) == 10  # the keyframe and 9 sweeps
        assert np.isfinite(lidar).all() and lidar[:, 3].max() > 0
        gt = sample.gt
        assert len(gt) > 0 and np.isfinite(gt.params).all()
        assert set(np.unique(gt.visibility)) <= {1, 2, 3, 4}
        assert len(gt.attributes) == len(gt.instance_tokens) == len(gt)
        # a box with points in the annotation holds points of the keyframe scan
        keyframe = lidar[lidar[:, 4] == 0]
        inside = points_in_boxes(keyframe, gt.params).sum(axis=1)
        assert np.all(inside[gt.num_lidar_pts >= 5] > 0)


def test_world_aggregation_matches_devkit(world):
    nusc = world.nusc
    token = world.sample_tokens()[-1]
    assert_multisweep_matches_devkit(world, token, atol=1e-3)
    record = nusc.get("sample", token)
    sample = world.get_sample(token)
    keyframe = NuScenesReader(world.dataroot, world.version, options=ReaderOptions(
        lidar_sweeps=1, lidar_min_distance=0.0, load_images=False,
        load_radar=False)).get_sample(token)
    for channel, cam in sample.cameras.items():
        expected, _, image = nusc.explorer.map_pointcloud_to_image(record["data"]["LIDAR_TOP"],
                                                                   record["data"][channel])
        uv, depth = project_to_image(keyframe.lidar.points, cam.T_ego_cam, cam.K)
        width, height = image.size
        keep = ((depth > 1) & (uv[:, 0] > 1) & (uv[:, 0] < width - 1) & (uv[:, 1] > 1)
                & (uv[:, 1] < height - 1))
        assert keep.sum() == expected.shape[1] > 0
        np.testing.assert_allclose(uv[keep], expected[:2].T, atol=0.5)


def test_world_static_objects_stay_put_across_sweeps(world):
    """Ego-motion compensation, end to end: LiDAR returns near a static annotated object land in
    its box in every sweep (without compensation, about 40 % miss after 0.45 s)."""
    inside_by_dt: dict[float, list[int]] = {}
    for token in world.sample_tokens():
        sample = world.get_sample(token)
        points, gt = sample.lidar.points, sample.gt
        static = (np.hypot(gt.params[:, 7], gt.params[:, 8]) < 0.05) & (gt.num_lidar_pts >= 5)
        in_box = points_in_boxes(points, gt.params)
        in_boxes = in_box.sum(axis=0)
        for k in np.flatnonzero(static):
            near_box, tight = gt.params[k].copy(), gt.params[k].copy()
            near_box[3:5] += 2.0
            tight[3:6] += 0.1
            near = points_in_boxes(points, near_box[None])[0] & (points[:, 2] > 0.2)
            near &= in_boxes - in_box[k] == 0  # not in another object's box
            inside = near & points_in_boxes(points, tight[None])[0]
            for dt in np.unique(points[near, 4]):
                counts = inside_by_dt.setdefault(round(float(dt), 2), [0, 0])
                counts[0] += int((inside & (points[:, 4] == dt)).sum())
                counts[1] += int((near & (points[:, 4] == dt)).sum())
    assert len(inside_by_dt) >= 9
    for dt, (inside, near) in inside_by_dt.items():
        assert near >= 50 and inside / near > 0.9, (dt, inside, near)
