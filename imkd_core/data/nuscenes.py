"""nuScenes (real, or our nuScenes-format world) -> `Sample` records, through nuscenes-devkit.

The devkit's `NuScenes` loads and indexes the tables; sensor files are read here (the radar PCDs
with our own codec, unfiltered, so every field and every return is available) into per-sensor
records, which the one Sample assembler (`imkd_core.data.assemble`, shared with the rosbag2
reader and the ROS node) brings to the keyframe. Everything in a `Sample` is in the keyframe's
ego frame (the ego pose of the LIDAR_TOP keyframe), with integer nanosecond stamps (nuScenes
stores microseconds).

Cameras: `CameraData.T_ego_cam` is the camera's pose at the *image's* time expressed in the
keyframe ego frame (calibration composed with the ego motion between image and keyframe), so
`geometry.project_to_image(points_in_keyframe_ego, cam.T_ego_cam, cam.K)` lands where
nuscenes-devkit's `map_pointcloud_to_image` does. `ReaderOptions(camera_ego_motion=False)` gives
the bare calibration.

Records without `prev`/`next` keys (trimmed tables, like the real keyframe in test/data) are
read as "no earlier sweep"; missing or unreadable files and tables raise `NuScenesDataError`
naming the file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from imkd_core.data.assemble import CameraRecord, assemble_sample
from imkd_core.data.image_codec import ImageDecodeError, decode_compressed_image
from imkd_core.data.options import ReaderOptions
from imkd_core.data.radar_pcd import RadarPcdError, read_radar_pcd
from imkd_core.data.sweeps import RawSweep
from imkd_core.geometry import make_transform, nuscenes_to_ego_boxes
from imkd_core.sample import CLASS_INDEX, LIDAR_NAME, Boxes, Sample

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

    `options` (default `ReaderOptions()`): sweep counts, radar filter, which sensors and
    modalities; sweeps are walked back through `prev`.
    """

    def __init__(self, dataroot: str | Path, version: str = "v1.0-trainval",
                 options: ReaderOptions | None = None, verbose: bool = False):
        self.dataroot = Path(dataroot)
        self.version = version
        self.options = options or ReaderOptions()
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
        scene = self._get("scene", sample["scene_token"])
        options = self.options
        cameras = {ch: self._camera(data[ch]) for ch in options.cameras if ch in data}
        radars = {}
        if options.load_radar:
            radars = {ch: [self._raw_sweep(sd, self._read_radar(sd))
                           for sd in self._walk_back(data[ch], options.radar_sweeps)]
                      for ch in options.radars if ch in data}
        lidar = None
        if options.load_lidar:
            lidar = [self._raw_sweep(sd, read_lidar_bin(self._path(sd)))
                     for sd in self._walk_back(lidar_sd["token"], options.lidar_sweeps)]
        return assemble_sample(token, us_to_ns(sample["timestamp"]), T_map_ego, cameras, radars,
                               lidar, options, gt=self._boxes(sample, T_map_ego),
                               scene_name=scene["name"])

    def _camera(self, sd_token: str) -> CameraRecord:
        sd = self._get("sample_data", sd_token)
        cs = self._calibration(sd)
        K = np.asarray(cs.get("camera_intrinsic") or [], dtype=np.float64)
        if K.shape != (3, 3):
            raise NuScenesDataError(
                f"{self.dataroot / self.version / 'calibrated_sensor.json'}: record "
                f"{cs['token']} has no 3x3 camera_intrinsic")
        T_ego_cam = make_transform(cs["rotation"], cs["translation"])
        T_map_ego = self._ego_pose(sd) if self.options.camera_ego_motion else None
        if self.options.load_images:
            image = read_image(self._path(sd))
        else:
            image = np.zeros((int(sd.get("height") or 0), int(sd.get("width") or 0), 3), np.uint8)
        return CameraRecord(image=image, K=K, T_ego_cam=T_ego_cam, T_map_ego=T_map_ego,
                            stamp=us_to_ns(sd["timestamp"]))

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
    "dataroot_version",
    "read_image",
    "read_lidar_bin",
    "us_to_ns",
]
