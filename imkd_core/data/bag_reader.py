"""rosbag2 -> `Sample`: the keyframes of a `nuscenes2bag` bag, equal to `NuScenesReader`'s.

Each `/imkd/keyframes` record (`imkd_core.wire.keyframe`) names, per sensor, the stamp of the
keyframe's message; `read_bag_samples` collects those messages, the sweeps before them within
the scene, the ego poses (`/tf`) and calibrations (`/tf_static`) into per-sensor records and
hands them to the one Sample assembler (`imkd_core.data.assemble`), with the nuScenes
reader's options and defaults (`ReaderOptions`). So the two agree exactly: points,
intrinsics and transforms bit for bit, raw images pixel for pixel (compressed images are
decoded by the same PIL call as the reader's).

Header stamps are the sensors' own timestamps; the bag's log time equals the stamp, except
that a later scene whose stamps overlap an earlier one is shifted as a whole so that log time
never runs backwards. Scenes are told apart by the records' `scene_start` (log time).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader

from imkd_core.data.assemble import CameraRecord, assemble_sample
from imkd_core.data.bag_writer import BagError
from imkd_core.data.options import ReaderOptions
from imkd_core.data.sweeps import RawSweep
from imkd_core.sample import LIDAR_NAME, NUSCENES_RADAR_FIELDS, Sample
from imkd_core.wire.cdr import header_stamp
from imkd_core.wire.fields import (
    WireError,
    image_from_msg,
    pointcloud2_array,
    stamp_ns,
    transform_matrix,
)
from imkd_core.wire.keyframe import KeyframeRecord
from imkd_core.wire.names import (
    BASE_FRAME,
    CAMERA_INFO_TYPE,
    IMAGE_TYPE,
    KEYFRAMES_TOPIC,
    LIDAR_FIELDS,
    MAP_FRAME,
    POINTCLOUD2_TYPE,
    TF_STATIC_TOPIC,
    TF_TOPIC,
    camera_info_topic,
    image_topic,
    pointcloud_topic,
)
from imkd_core.wire.typestore import typestore


def open_reader(bag_path: str | Path) -> Reader:
    """A rosbags `Reader` for a finished bag (use it with `with`); refuses a directory
    without `metadata.yaml`, such as an interrupted conversion's `.partial`."""
    path = Path(bag_path)
    if not (path / "metadata.yaml").is_file():
        hint = " (an interrupted conversion?)" if path.name.endswith(".partial") else ""
        raise BagError(f"{path}: not a finished rosbag2 directory, no metadata.yaml{hint}")
    return Reader(path)


def read_keyframe_records(bag_path: str | Path) -> list[KeyframeRecord]:
    """The `/imkd/keyframes` records of a bag, in log-time order."""
    with open_reader(bag_path) as reader:
        return _keyframe_records(reader)


def _keyframe_records(reader: Reader) -> list[KeyframeRecord]:
    conns = [c for c in reader.connections if c.topic == KEYFRAMES_TOPIC]
    if not conns:
        raise BagError(f"{reader.path}: no {KEYFRAMES_TOPIC} topic; only bags written by "
                       "nuscenes2bag can be read back into Samples")
    store = typestore()
    records = []
    for conn, _, raw in reader.messages(connections=conns):
        try:
            records.append(KeyframeRecord.from_json(store.deserialize_cdr(raw, conn.msgtype).data))
        except WireError as exc:
            raise BagError(f"{reader.path}: {KEYFRAMES_TOPIC}: not a keyframe record: {exc}"
                           ) from None
    return records


@dataclass
class _SceneState:
    """What the reader keeps while walking one scene."""

    poses: dict[int, np.ndarray] = field(default_factory=dict)  # stamp -> T_map_ego
    static: dict[str, np.ndarray] = field(default_factory=dict)  # frame -> T_ego_sensor
    sweeps: dict[str, deque] = field(default_factory=dict)  # sensor -> (stamp, raw bytes)
    images: dict[tuple[str, int], tuple[str, bytes]] = field(default_factory=dict)
    infos: dict[tuple[str, int], bytes] = field(default_factory=dict)


def read_bag_samples(bag_path: str | Path, options: ReaderOptions | None = None
                     ) -> Iterator[Sample]:
    """The keyframes of a `nuscenes2bag` bag as `Sample`s, in time order.

    `options` (default `ReaderOptions()`) mean what they mean to `NuScenesReader` (sweep
    counts include the keyframe; sweeps are the sensor's previous messages within the scene),
    and with equal options the Samples are equal to the reader's for the same keyframes.
    Memory stays bounded: one scene's ego poses, the last sweeps per sensor and the keyframe
    images not yet used.
    """
    options = options or ReaderOptions()
    store = typestore()
    with open_reader(bag_path) as reader:
        records = _keyframe_records(reader)
        if not records:
            return
        scene_starts = sorted({r.scene_start for r in records})
        wanted_images = {(ch, r.data[ch]) for r in records for ch in options.cameras
                         if ch in r.data}
        topics: dict[str, tuple[str, str]] = {}  # topic -> (kind, sensor)
        for ch in options.cameras:
            topics[image_topic(ch)] = ("image", ch)
            topics[image_topic(ch, compressed=True)] = ("image", ch)
            topics[camera_info_topic(ch)] = ("info", ch)
        if options.load_radar:
            for ch in options.radars:
                topics[pointcloud_topic(ch)] = ("sweep", ch)
        topics[pointcloud_topic(LIDAR_NAME)] = ("sweep", LIDAR_NAME)
        topics[TF_TOPIC] = ("tf", "")
        topics[TF_STATIC_TOPIC] = ("tf_static", "")
        topics[KEYFRAMES_TOPIC] = ("keyframe", "")
        conns = [c for c in reader.connections if c.topic in topics]
        depth = {ch: options.radar_sweeps + 32 for ch in options.radars}
        depth[LIDAR_NAME] = (options.lidar_sweeps if options.load_lidar else 1) + 32

        state = _SceneState()
        next_start = iter([*scene_starts[1:], None])
        boundary = next(next_start)
        record_index = 0
        for conn, log_ns, raw in reader.messages(connections=conns):
            while boundary is not None and log_ns >= boundary:
                state = _SceneState()
                boundary = next(next_start)
            kind, sensor = topics[conn.topic]
            if kind == "sweep":
                state.sweeps.setdefault(sensor, deque(maxlen=depth[sensor])).append(
                    (header_stamp(raw), raw))
            elif kind == "image":
                key = (sensor, header_stamp(raw))
                if key in wanted_images and (key not in state.images
                                             or conn.msgtype == IMAGE_TYPE):
                    state.images[key] = (conn.msgtype, raw)
            elif kind == "info":
                key = (sensor, header_stamp(raw))
                if key in wanted_images:
                    state.infos[key] = raw
            elif kind in ("tf", "tf_static"):
                _read_tf(store.deserialize_cdr(raw, conn.msgtype), kind == "tf_static", state,
                         reader.path)
            else:
                record = records[record_index]
                record_index += 1
                yield _Keyframe(record, state, store, options, reader.path).sample()


def _read_tf(msg, static: bool, state: _SceneState, path) -> None:
    """The ego poses (`map -> base_link`) of a /tf message, or the calibrations
    (`base_link -> <sensor>`) of a /tf_static one, into the scene state."""
    for tr in msg.transforms:
        try:
            if static and tr.header.frame_id == BASE_FRAME:
                state.static[tr.child_frame_id] = transform_matrix(tr.transform)
            elif (not static and tr.header.frame_id == MAP_FRAME
                  and tr.child_frame_id == BASE_FRAME):
                state.poses[stamp_ns(tr.header.stamp)] = transform_matrix(tr.transform)
        except WireError as exc:
            raise BagError(f"{path}: {tr.header.frame_id} -> {tr.child_frame_id}: {exc}"
                           ) from None


class _Keyframe:
    """Collects one keyframe's records from the scene state; every missing message raises a
    `BagError` naming the keyframe and what it needs."""

    def __init__(self, record: KeyframeRecord, state: _SceneState, store, options, path):
        self.record, self.state, self.store = record, state, store
        self.options, self.path = options, path

    def missing(self, what: str) -> BagError:
        return BagError(f"{self.path}: keyframe {self.record.token} (scene "
                        f"{self.record.scene}) needs {what}, which the bag does not have")

    def need(self, table: dict, key, what: str):
        try:
            return table[key]
        except KeyError:
            raise self.missing(what) from None

    def sample(self) -> Sample:
        record, options, state = self.record, self.options, self.state
        data = record.data
        if LIDAR_NAME not in data:
            raise BagError(f"{self.path}: keyframe {record.token} has no {LIDAR_NAME} stamp")
        lidar_stamp = data[LIDAR_NAME]
        T_map_ego = self.need(state.poses, lidar_stamp, f"the ego pose at {lidar_stamp}")
        cameras = {ch: self.camera(ch, data[ch]) for ch in options.cameras if ch in data}
        radars = {}
        if options.load_radar:
            radars = {ch: self.sweeps(ch, data[ch], options.radar_sweeps,
                                      NUSCENES_RADAR_FIELDS)
                      for ch in options.radars if ch in data}
        lidar = None
        if options.load_lidar:
            lidar = self.sweeps(LIDAR_NAME, lidar_stamp, options.lidar_sweeps, LIDAR_FIELDS[:4])
        return assemble_sample(record.token, record.timestamp, T_map_ego, cameras, radars,
                               lidar, options, gt=record.gt, scene_name=record.scene)

    def camera(self, ch: str, stamp: int) -> CameraRecord:
        state, key = self.state, (ch, stamp)
        info = self.store.deserialize_cdr(
            self.need(state.infos, key, f"{ch} camera_info at {stamp}"), CAMERA_INFO_TYPE)
        T_ego_cam = self.need(state.static, ch, f"the {ch} calibration (/tf_static)")
        pose = (self.need(state.poses, stamp, f"the ego pose at {stamp}")
                if self.options.camera_ego_motion else None)
        if self.options.load_images:
            msgtype, raw = self.need(state.images, key, f"the {ch} image at {stamp}")
            try:
                image = image_from_msg(self.store.deserialize_cdr(raw, msgtype))
            except WireError as exc:
                raise BagError(f"{msgtype}: {exc}") from exc
            if msgtype == IMAGE_TYPE:
                image = image.copy()  # not a view of the message buffer
        else:
            image = np.zeros((int(info.height), int(info.width), 3), np.uint8)
        state.images.pop(key, None)
        state.infos.pop(key, None)
        return CameraRecord(image=image, K=info.k.reshape(3, 3).astype(np.float64),
                            T_ego_cam=T_ego_cam, T_map_ego=pose, stamp=stamp)

    def sweeps(self, sensor: str, key_stamp: int, count: int, names) -> list[RawSweep]:
        """The sensor's message at `key_stamp` and up to `count - 1` earlier ones, newest
        first."""
        buffer = list(self.state.sweeps.get(sensor, ()))
        index = next((i for i, (stamp, _) in enumerate(buffer) if stamp == key_stamp), None)
        if index is None:
            raise self.missing(f"the {sensor} sweep at {key_stamp}")
        T_ego_sensor = self.need(self.state.static, sensor,
                                 f"the {sensor} calibration (/tf_static)")
        sweeps = []
        for stamp, raw in reversed(buffer[max(0, index - count + 1): index + 1]):
            msg = self.store.deserialize_cdr(raw, POINTCLOUD2_TYPE)
            sweeps.append(RawSweep(
                points=pointcloud2_array(msg, names), T_ego_sensor=T_ego_sensor,
                T_map_ego=self.need(self.state.poses, stamp, f"the ego pose at {stamp}"),
                stamp=stamp))
        return sweeps
