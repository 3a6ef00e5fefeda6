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

`open_reader`, the one way in (also `imkd-replay`'s), reads a rosbag2 directory or a single
`.mcap` / `.db3` file, the MCAP of another tool too (any profile, ROS 2 CDR channels).
"""

from __future__ import annotations

import heapq
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mcap.exceptions import McapError
from mcap.reader import make_reader
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinition,
    MessageDefinitionFormat,
)
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

BAG_FILE_SUFFIXES = (".mcap", ".db3")  # a storage file read without its directory
MCAP_MAGIC = b"\x89MCAP0\r\n"


def open_reader(bag_path: str | Path) -> BagReader:
    """A reader for a finished bag (use it with `with`): a rosbag2 directory with its
    `metadata.yaml`, or a single `.mcap` / `.db3` storage file as other tools write them (an
    MCAP whose profile is not `ros2` is read when its channels are ROS 2 CDR). Refuses a
    directory without `metadata.yaml`, such as an interrupted conversion's `.partial`. Every
    failure, the storage library's included, is a `BagError` naming the path."""
    return BagReader(Path(bag_path))


class BagReader:
    """rosbags' `Reader` interface (`connections`, `start_time`, `end_time`, `messages`) over
    whichever reader fits the path; library errors become one `BagError` naming the bag.

    `skipped_topics`: topic -> why, for channels of a foreign MCAP that are not ROS 2 CDR."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped_topics: dict[str, str] = {}
        self._reader = None

    def __enter__(self) -> BagReader:
        self._reader = self._open()
        return self

    def __exit__(self, *exc_info) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _open(self):
        path = self.path
        if not path.exists():
            raise BagError(f"{path}: no such bag (a rosbag2 directory or a "
                           f"{' / '.join(BAG_FILE_SUFFIXES)} file)")
        if path.is_dir():
            if not (path / "metadata.yaml").is_file():
                hint = " (an interrupted conversion?)" if path.name.endswith(".partial") else ""
                files = sorted(p.name for p in path.iterdir() if p.suffix in BAG_FILE_SUFFIXES)
                if files:
                    hint += f"; to read a storage file on its own, give its path ({files[0]})"
                raise BagError(f"{path}: not a finished rosbag2 directory, no "
                               f"metadata.yaml{hint}")
            foreign = sorted(p for p in path.glob("*.mcap") if not _ros2_profile(p))
            if foreign:  # rosbags refuses them ("Profile is not ros2")
                return self._foreign(foreign)
        elif path.suffix not in BAG_FILE_SUFFIXES:
            raise BagError(f"{path}: not a bag: give a rosbag2 directory or a "
                           f"{' / '.join(BAG_FILE_SUFFIXES)} file")
        elif path.suffix == ".mcap" and not _ros2_profile(path):
            return self._foreign([path])
        reader = Reader(path)
        try:
            reader.open()
        except Exception as exc:  # rosbags' errors (ReaderError, sqlite3, yaml, OSError, ...)
            raise BagError(f"{path}: cannot read the bag: {type(exc).__name__}: {exc}") from exc
        return reader

    def _foreign(self, files: list[Path]) -> _CdrMcapReader:
        try:
            reader = _CdrMcapReader(files)
        except (McapError, OSError, ValueError, struct.error) as exc:
            raise BagError(f"{self.path}: cannot read the MCAP: {type(exc).__name__}: {exc}"
                           ) from exc
        self.skipped_topics = reader.skipped
        if not reader.connections:
            raise BagError(f"{self.path}: no ROS 2 (CDR) channels to read: "
                           + "; ".join(f"{t}: {why}" for t, why in sorted(reader.skipped.items())))
        return reader

    def _open_reader(self):
        if self._reader is None:
            raise BagError(f"{self.path}: the reader is not open (use `with open_reader(...)`)")
        return self._reader

    @property
    def connections(self) -> list[Connection]:
        return list(self._open_reader().connections)

    @property
    def start_time(self) -> int:
        """Log time of the first message (ns)."""
        return self._open_reader().start_time

    @property
    def end_time(self) -> int:
        """Log time after the last message (ns), as rosbags counts it."""
        return self._open_reader().end_time

    def messages(self, connections=(), start: int | None = None, stop: int | None = None
                 ) -> Iterator[tuple[Connection, int, bytes]]:
        """(connection, log time ns, CDR bytes) in log-time order, `start <= t < stop`."""
        reader = self._open_reader()
        try:
            yield from reader.messages(connections=connections, start=start, stop=stop)
        except BagError:
            raise
        except Exception as exc:  # a corrupt chunk or record, found while reading on
            raise BagError(f"{self.path}: cannot read the bag: {type(exc).__name__}: {exc}"
                           ) from exc


def _ros2_profile(path: Path) -> bool:
    """Whether an MCAP file's header says profile `ros2` (what rosbags requires); a file that
    is no MCAP at all counts as ros2, so that rosbags' own error names what is wrong."""
    try:
        with path.open("rb") as stream:
            if stream.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
                return True
            stream.seek(0)
            return make_reader(stream).get_header().profile == "ros2"
    except (McapError, OSError, ValueError, struct.error):
        return True


def _ros2_msgtype(name: str) -> str:
    """'pkg/msg/Name' as it is, 'pkg/Name' (ROS 1 spelling, some converters) -> 'pkg/msg/Name'."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


class _CdrMcapReader:
    """MCAP files of another tool (any profile) whose channels carry ROS 2 CDR messages with
    `ros2msg` / `ros2idl` schemas, read with the `mcap` package; other channels are skipped
    (`skipped`). No QoS is recorded in them: players use their defaults."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.skipped: dict[str, str] = {}
        self.connections: list[Connection] = []
        self._by_channel: dict[tuple[int, int], Connection] = {}  # (file, channel id) -> conn
        self._streams = []
        try:
            for path in files:
                self._streams.append(path.open("rb"))
            self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        """Connections (one per topic and type across the files), counts, the time span."""
        self._readers = [make_reader(stream) for stream in self._streams]
        by_topic: dict[tuple[str, str], Connection] = {}
        counts: dict[tuple[str, str], int] = {}
        start, end = None, None
        for index, reader in enumerate(self._readers):
            summary = reader.get_summary()
            if summary is None or summary.statistics is None:  # unindexed: one scan
                channels, schemas, message_counts = {}, {}, {}
                for schema, channel, message in reader.iter_messages(log_time_order=False):
                    channels[channel.id] = channel
                    if schema is not None:
                        schemas[schema.id] = schema
                    message_counts[channel.id] = message_counts.get(channel.id, 0) + 1
                    start = message.log_time if start is None else min(start, message.log_time)
                    end = message.log_time if end is None else max(end, message.log_time)
            else:
                channels, schemas = summary.channels, summary.schemas
                message_counts = summary.statistics.channel_message_counts
                if summary.statistics.message_count:
                    first = summary.statistics.message_start_time
                    last = summary.statistics.message_end_time
                    start = first if start is None else min(start, first)
                    end = last if end is None else max(end, last)
            for channel in channels.values():
                schema = schemas.get(channel.schema_id)
                why = self._unreadable(channel, schema)
                if why:
                    self.skipped[channel.topic] = why
                    continue
                msgtype = _ros2_msgtype(schema.name)
                key = (channel.topic, msgtype)
                if key not in by_topic:
                    fmt = (MessageDefinitionFormat.MSG if schema.encoding == "ros2msg"
                           else MessageDefinitionFormat.IDL)
                    by_topic[key] = Connection(
                        id=len(by_topic) + 1, topic=channel.topic, msgtype=msgtype,
                        msgdef=MessageDefinition(fmt, schema.data.decode()), digest="",
                        msgcount=0, ext=ConnectionExtRosbag2("cdr", []), owner=self)
                counts[key] = counts.get(key, 0) + message_counts.get(channel.id, 0)
                self._by_channel[(index, channel.id)] = by_topic[key]
        self.connections = [c._replace(msgcount=counts[k]) for k, c in by_topic.items()]
        self._by_channel = {k: self.connections[c.id - 1] for k, c in self._by_channel.items()}
        self.start_time = start if start is not None else 2**63 - 1
        self.end_time = end + 1 if end is not None else 0

    @staticmethod
    def _unreadable(channel, schema) -> str:
        if channel.message_encoding != "cdr":
            return f"message encoding {channel.message_encoding!r}, not ROS 2 'cdr'"
        if schema is None or schema.encoding not in ("ros2msg", "ros2idl"):
            encoding = "no schema" if schema is None else f"schema encoding {schema.encoding!r}"
            return f"{encoding}, not a ROS 2 message definition"
        return ""

    def messages(self, connections=(), start: int | None = None, stop: int | None = None
                 ) -> Iterator[tuple[Connection, int, bytes]]:
        wanted = {c.id for c in connections} if connections else None
        topics = sorted({c.topic for c in connections}) if connections else None

        def stream(index: int):
            for _, channel, message in self._readers[index].iter_messages(
                    topics=topics, starting_at=start, ending_before=stop):
                conn = self._by_channel.get((index, channel.id))
                if conn is not None and (wanted is None or conn.id in wanted):
                    yield message.log_time, index, conn, message.data

        # split files are each in log-time order; merged, so are the messages
        for log_time, _, conn, data in heapq.merge(*(stream(i) for i in range(len(self.files))),
                                                   key=lambda item: (item[0], item[1])):
            yield conn, log_time, data

    def close(self) -> None:
        for stream in self._streams:
            stream.close()


def read_keyframe_records(bag_path: str | Path) -> list[KeyframeRecord]:
    """The `/imkd/keyframes` records of a bag, in log-time order."""
    with open_reader(bag_path) as reader:
        return _keyframe_records(reader)


def _keyframe_records(reader: BagReader) -> list[KeyframeRecord]:
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
    """The ego poses (`map -> base_link`) of a /tf message, and the calibrations
    (`base_link -> <sensor>`) of /tf_static, or of /tf where a bag has no /tf_static for the
    sensor (other converters republish the mounts on /tf), into the scene state."""
    for tr in msg.transforms:
        try:
            if tr.header.frame_id == BASE_FRAME and (static
                                                     or tr.child_frame_id not in state.static):
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
