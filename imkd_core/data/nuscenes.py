"""nuScenes (real, or our nuScenes-format world) -> `Sample` records, through nuscenes-devkit.

The devkit's `NuScenes` loads and indexes the tables; sensor files are read here (the radar PCDs
with our own codec, unfiltered, so every field and every return is available) and aggregated
with the pure functions of `imkd_core.data.sweeps`, which the rosbag2 reader and the ROS node
share. Everything in a `Sample` is in the keyframe's ego frame (the ego pose of the LIDAR_TOP
keyframe), with integer nanosecond stamps (nuScenes stores microseconds).

Cameras: `CameraData.T_ego_cam` is the camera's pose at the *image's* time expressed in the
keyframe ego frame (calibration composed with the ego motion between image and keyframe), so
`geometry.project_to_image(points_in_keyframe_ego, cam.T_ego_cam, cam.K)` lands where
nuscenes-devkit's `map_pointcloud_to_image` does. Pass `camera_ego_motion=False` for the bare
calibration.

Records without `prev`/`next` keys (trimmed tables, like the real keyframe in ../shared) are
read as "no earlier sweep"; missing or unreadable files and tables raise `NuScenesDataError`
naming the file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from imkd_core.data.image_codec import ImageDecodeError, decode_compressed_image
from imkd_core.data.radar_pcd import RadarPcdError, read_radar_pcd
from imkd_core.data.sweeps import (
    RadarFilter,
    RawSweep,
    aggregate_lidar_sweeps,
    aggregate_radar_sweeps,
    sensor_to_keyframe,
)
from imkd_core.geometry import make_transform, nuscenes_to_ego_boxes
from imkd_core.sample import (
    CAMERA_NAMES,
    CLASS_INDEX,
    LIDAR_NAME,
    RADAR_NAMES,
    Boxes,
    CameraData,
    LidarData,
    RadarData,
    Sample,
)

# The 13 tables nuscenes-devkit requires, in the order it loads them.
NUSCENES_TABLES: tuple[str, ...] = (
    "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
    "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map",
)
LIDAR_BIN_COLUMNS = 5  # nuScenes .pcd.bin: float32 x, y, z, intensity, ring


class NuScenesDataError(ValueError):
    """A nuScenes dataroot that cannot be read; the message names the file or table."""


def us_to_ns(stamp_us) -> int:
    """nuScenes microsecond timestamps -> integer nanoseconds."""
    return int(stamp_us) * 1000


def read_lidar_bin(path: str | Path, columns: int = LIDAR_BIN_COLUMNS) -> np.ndarray:
    """A nuScenes LiDAR `.pcd.bin` -> (N, columns) float32 (x, y, z, intensity, ring)."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype="<f4")
    except OSError as exc:
        raise NuScenesDataError(f"{path}: cannot read LiDAR file ({exc.strerror or exc})") from exc
    if data.size % columns:
        raise NuScenesDataError(
            f"{path}: truncated LiDAR file: {path.stat().st_size} bytes is not a whole number of "
            f"{columns * 4}-byte points")
    return data.reshape(-1, columns)


def read_image(path: str | Path) -> np.ndarray:
    """A camera image file -> (H, W, 3) uint8 RGB."""
    path = Path(path)
    try:
        return decode_compressed_image(path.read_bytes())
    except FileNotFoundError as exc:
        raise NuScenesDataError(f"{path}: image file missing") from exc
    except (OSError, ImageDecodeError) as exc:  # permissions; not an image, truncated
        raise NuScenesDataError(f"{path}: cannot read image ({exc})") from exc


def _load_devkit(dataroot: Path, version: str, verbose: bool):
    """`NuScenes(version, dataroot)` with every devkit failure turned into a NuScenesDataError
    that names the file at fault."""
    from nuscenes.nuscenes import NuScenes

    class _NuScenes(NuScenes):
        # The devkit loads every table through this method: parse it ourselves so a bad table
        # is reported by its path.
        def __load_table__(self, table_name):
            path = Path(self.table_root) / f"{table_name}.json"
            try:
                with open(path, encoding="utf-8") as f:
                    table = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise NuScenesDataError(f"{path}: corrupt JSON ({exc})") from exc
            except OSError as exc:
                raise NuScenesDataError(
                    f"{path}: cannot read nuScenes table ({exc.strerror or exc})") from exc
            if not isinstance(table, list) or not all(
                    isinstance(r, dict) and "token" in r for r in table):
                raise NuScenesDataError(f"{path}: not a nuScenes table (a JSON list of records "
                                        f"with a 'token' each)")
            return table

    table_root = dataroot / version
    if not table_root.is_dir():
        raise NuScenesDataError(f"{table_root}: nuScenes table folder missing "
                                f"(dataroot {dataroot}, version {version})")
    for table in NUSCENES_TABLES:
        if not (table_root / f"{table}.json").is_file():
            raise NuScenesDataError(f"{table_root / f'{table}.json'}: nuScenes table missing")
    try:
        return _NuScenes(version=version, dataroot=str(dataroot), verbose=verbose)
    except AssertionError as exc:  # the devkit asserts on e.g. a missing map mask PNG
        raise NuScenesDataError(
            f"{dataroot}: nuscenes-devkit rejected the dataset: {exc}") from exc
    except (KeyError, TypeError, IndexError) as exc:
        raise NuScenesDataError(
            f"{table_root}: inconsistent tables, a record lacks a field or refers to a missing "
            f"token ({type(exc).__name__}: {exc})") from exc


class NuScenesReader:
    """Read `Sample`s from a nuScenes dataroot (v1.0-mini / v1.0-trainval / our world).

    radar_sweeps / lidar_sweeps: sweeps per sensor *including* the keyframe (devkit `nsweeps`
    semantics), walked back through `prev`. radar_filter: a `RadarFilter`, or "nuscenes" (the
    devkit default) or "all". lidar_min_distance: drop LiDAR returns within this square
    half-width of the sensor (devkit `remove_close`; 0 keeps all).
    """

    def __init__(
        self,
        dataroot: str | Path,
        version: str = "v1.0-trainval",
        radar_sweeps: int = 6,
        lidar_sweeps: int = 10,
        radar_filter: RadarFilter | str | dict | None = "nuscenes",
        load_lidar: bool = True,
        load_images: bool = True,
        load_radar: bool = True,
        lidar_min_distance: float = 1.0,
        camera_ego_motion: bool = True,
        cameras: Sequence[str] = CAMERA_NAMES,
        radars: Sequence[str] = RADAR_NAMES,
        verbose: bool = False,
    ):
        if radar_sweeps < 1 or lidar_sweeps < 1:
            raise ValueError("radar_sweeps and lidar_sweeps count the keyframe: must be >= 1")
        self.dataroot = Path(dataroot)
        self.version = version
        self.radar_sweeps = int(radar_sweeps)
        self.lidar_sweeps = int(lidar_sweeps)
        self.radar_filter = RadarFilter.from_spec(radar_filter)
        self.load_lidar = load_lidar
        self.load_images = load_images
        self.load_radar = load_radar
        self.lidar_min_distance = float(lidar_min_distance)
        self.camera_ego_motion = camera_ego_motion
        self.cameras = tuple(cameras)
        self.radars = tuple(radars)
        self.nusc = _load_devkit(self.dataroot, version, verbose)
        self._samples_by_scene = self._index_scene_samples()

    # ------------------------------------------------------------------------------ listing
    def _index_scene_samples(self) -> dict[str, list[str]]:
        """scene token -> its sample tokens in time order (does not need first/next links)."""
        by_scene: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for record in self.nusc.sample:
            by_scene[record["scene_token"]].append((int(record["timestamp"]), record["token"]))
        return {scene: [token for _, token in sorted(items)] for scene, items in by_scene.items()}

    @property
    def scene_names(self) -> list[str]:
        return [scene["name"] for scene in self.nusc.scene]

    def sample_tokens(self, scenes: str | Iterable[str] | None = None,
                      split: str | None = None) -> list[str]:
        """Sample tokens in scene-table order, then time order. `scenes`: scene name(s) to keep;
        `split`: an official split of `nuscenes.utils.splits.create_splits_scenes()` ("train",
        "val", "mini_train", ...). Both given: the intersection."""
        wanted: set[str] | None = None
        if scenes is not None:
            wanted = {scenes} if isinstance(scenes, str) else set(scenes)
            unknown = wanted - set(self.scene_names)
            if unknown:
                raise KeyError(f"scenes not in {self.dataroot / self.version}: {sorted(unknown)}")
        if split is not None:
            from nuscenes.utils.splits import create_splits_scenes

            splits = create_splits_scenes(verbose=False)
            if split not in splits:
                raise KeyError(f"unknown nuScenes split {split!r}; known: {sorted(splits)}")
            in_split = set(splits[split])
            wanted = in_split if wanted is None else wanted & in_split
        tokens: list[str] = []
        for scene in self.nusc.scene:
            if wanted is None or scene["name"] in wanted:
                tokens.extend(self._samples_by_scene.get(scene["token"], []))
        return tokens

    def __len__(self) -> int:
        return len(self.nusc.sample)

    def samples(self, tokens: Iterable[str] | None = None) -> Iterator[Sample]:
        for token in self.sample_tokens() if tokens is None else tokens:
            yield self.get_sample(token)

    # ------------------------------------------------------------------------------- helpers
    def _get(self, table: str, token: str) -> dict:
        try:
            return self.nusc.get(table, token)
        except KeyError as exc:
            raise NuScenesDataError(
                f"{self.dataroot / self.version / (table + '.json')}: no record with token "
                f"{token!r}") from exc

    def _path(self, sd: dict) -> Path:
        return self.dataroot / sd["filename"]

    def _calibration(self, sd: dict) -> dict:
        return self._get("calibrated_sensor", sd["calibrated_sensor_token"])

    def _ego_pose(self, sd: dict) -> np.ndarray:
        pose = self._get("ego_pose", sd["ego_pose_token"])
        return make_transform(pose["rotation"], pose["translation"])

    def _sensor_calibration(self, sd: dict) -> np.ndarray:
        cs = self._calibration(sd)
        return make_transform(cs["rotation"], cs["translation"])

    def _walk_back(self, sd_token: str, count: int) -> list[dict]:
        """The sample_data record and up to `count - 1` predecessors, newest first. A record
        without a `prev` key (trimmed tables) ends the walk like an empty `prev`."""
        records = [self._get("sample_data", sd_token)]
        while len(records) < count:
            prev = records[-1].get("prev", "")
            if not prev:
                break
            records.append(self._get("sample_data", prev))
        return records

    def _raw_sweep(self, sd: dict, points: np.ndarray) -> RawSweep:
        return RawSweep(points=points, T_ego_sensor=self._sensor_calibration(sd),
                        T_map_ego=self._ego_pose(sd), stamp=us_to_ns(sd["timestamp"]))

    def _read_radar(self, sd: dict) -> np.ndarray:
        try:
            return read_radar_pcd(self._path(sd))
        except RadarPcdError as exc:
            raise NuScenesDataError(str(exc)) from exc

    # ------------------------------------------------------------------------------ sample
    def get_sample(self, token: str) -> Sample:
        sample = self._get("sample", token)
        data = sample["data"]
        if LIDAR_NAME not in data:
            raise NuScenesDataError(
                f"{self.dataroot / self.version / 'sample_data.json'}: sample {token} has no "
                f"{LIDAR_NAME} keyframe, which defines the sample's ego pose")
        lidar_sd = self._get("sample_data", data[LIDAR_NAME])
        T_map_ego = self._ego_pose(lidar_sd)
        key_stamp = us_to_ns(sample["timestamp"])
        scene = self._get("scene", sample["scene_token"])
        result = Sample(token=token, timestamp=key_stamp, T_map_ego=T_map_ego,
                        scene_name=scene["name"])

        for channel in self.cameras:
            if channel in data:
                result.cameras[channel] = self._camera(data[channel], T_map_ego)
        if self.load_radar:
            for channel in self.radars:
                if channel in data:
                    result.radars[channel] = self._radar(data[channel], T_map_ego, key_stamp)
        if self.load_lidar:
            sweeps = [self._raw_sweep(sd, read_lidar_bin(self._path(sd)))
                      for sd in self._walk_back(lidar_sd["token"], self.lidar_sweeps)]
            points = aggregate_lidar_sweeps(sweeps, T_map_ego, key_stamp, self.lidar_min_distance)
            result.lidar = LidarData(points=points, T_ego_lidar=self._sensor_calibration(lidar_sd),
                                     stamp=us_to_ns(lidar_sd["timestamp"]))
        result.gt = self._boxes(sample, T_map_ego)
        return result

    def _camera(self, sd_token: str, T_map_ego_key: np.ndarray) -> CameraData:
        sd = self._get("sample_data", sd_token)
        cs = self._calibration(sd)
        K = np.asarray(cs.get("camera_intrinsic") or [], dtype=np.float64)
        if K.shape != (3, 3):
            raise NuScenesDataError(
                f"{self.dataroot / self.version / 'calibrated_sensor.json'}: record "
                f"{cs['token']} has no 3x3 camera_intrinsic")
        T_ego_cam = make_transform(cs["rotation"], cs["translation"])
        if self.camera_ego_motion:
            T_ego_cam = sensor_to_keyframe(T_ego_cam, self._ego_pose(sd), T_map_ego_key)
        if self.load_images:
            image = read_image(self._path(sd))
        else:
            image = np.zeros((int(sd.get("height") or 0), int(sd.get("width") or 0), 3), np.uint8)
        return CameraData(image=image, K=K, T_ego_cam=T_ego_cam, stamp=us_to_ns(sd["timestamp"]))

    def _radar(self, sd_token: str, T_map_ego_key: np.ndarray, key_stamp: int) -> RadarData:
        records = self._walk_back(sd_token, self.radar_sweeps)
        sweeps = [self._raw_sweep(sd, self._read_radar(sd)) for sd in records]
        points = aggregate_radar_sweeps(sweeps, T_map_ego_key, key_stamp, self.radar_filter)
        return RadarData(points=points, T_ego_radar=sweeps[0].T_ego_sensor, stamp=sweeps[0].stamp)

    def _box_velocity(self, ann: dict) -> np.ndarray:
        if "prev" not in ann or "next" not in ann:
            return np.full(3, np.nan)
        return self.nusc.box_velocity(ann["token"])

    def _boxes(self, sample: dict, T_map_ego: np.ndarray) -> Boxes:
        from nuscenes.eval.detection.utils import category_to_detection_name

        anns, labels = [], []
        for ann_token in sample["anns"]:
            ann = self._get("sample_annotation", ann_token)
            name = category_to_detection_name(ann["category_name"])
            if name is not None:
                anns.append(ann)
                labels.append(CLASS_INDEX[name])
        if not anns:
            boxes = Boxes.empty()
            boxes.visibility = np.zeros(0, np.int64)
            boxes.num_lidar_pts = np.zeros(0, np.int64)
            boxes.num_radar_pts = np.zeros(0, np.int64)
            return boxes
        params = nuscenes_to_ego_boxes(
            [a["translation"] for a in anns], [a["size"] for a in anns],
            [a["rotation"] for a in anns], [self._box_velocity(a)[:2] for a in anns], T_map_ego)
        attributes = []
        for ann in anns:
            tokens = ann.get("attribute_tokens") or []
            attributes.append(self._get("attribute", tokens[0])["name"] if tokens else "")
        return Boxes(
            params=params,
            labels=np.asarray(labels, dtype=np.int64),
            attributes=attributes,
            visibility=np.asarray([int(a.get("visibility_token") or 0) for a in anns], np.int64),
            num_lidar_pts=np.asarray([int(a.get("num_lidar_pts", 0)) for a in anns], np.int64),
            num_radar_pts=np.asarray([int(a.get("num_radar_pts", 0)) for a in anns], np.int64),
            instance_tokens=[a["instance_token"] for a in anns],
        )


def dataroot_version(dataroot: str | Path) -> str:
    """The one `v1.0-*` table folder in a dataroot (convenience for CLIs)."""
    found = sorted(p.name for p in Path(dataroot).iterdir()
                   if p.is_dir() and p.name.startswith("v1.0-"))
    if len(found) != 1:
        raise NuScenesDataError(f"{dataroot}: expected one v1.0-* table folder, found {found}")
    return found[0]


__all__ = [
    "NUSCENES_TABLES",
    "NuScenesDataError",
    "NuScenesReader",
    "RadarFilter",
    "dataroot_version",
    "read_image",
    "read_lidar_bin",
    "us_to_ns",
]
