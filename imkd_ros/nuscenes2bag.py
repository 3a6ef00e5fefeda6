"""`nuscenes2bag`: nuScenes (real, or the project's nuScenes-format world) -> rosbag2.

    nuscenes2bag --dataroot D [--version V] [--scene NAME ...] --out BAG
                 [--storage mcap|sqlite3] [--images raw|compressed] [--skip-missing]

Writes one rosbag2 directory (MCAP by default, bag format version 8 so Humble plays it) with
every sweep and keyframe of the chosen scenes in time order; the topics, frames and the
`/imkd/keyframes` records are described in `imkd_core.wire.names` and `imkd_core.wire.keyframe`.
Needs no ROS: messages are built (`imkd_core.wire.messages`) and written
(`imkd_core.data.bag_writer`) with `rosbags`.

The bag is written to `<BAG>.partial` and renamed when complete; Ctrl-C or SIGTERM removes the
partial directory, and a SIGKILL leaves only `<BAG>.partial` without `metadata.yaml`, which no
player takes for a bag. A missing or corrupt sensor file stops the conversion with an error
naming the file; with `--skip-missing` the message is left out and counted in the summary.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imkd_core.data.bag_writer import STORAGES, BagError, BagWriter
from imkd_core.data.nuscenes import (
    NuScenesDataError,
    NuScenesReader,
    dataroot_version,
    read_image,
    read_lidar_bin,
    us_to_ns,
)
from imkd_core.data.options import ReaderOptions
from imkd_core.data.radar_pcd import RadarPcdError, read_radar_pcd
from imkd_core.interrupts import stop_signals_as_keyboard_interrupt
from imkd_core.sample import GT_COLOR, LIDAR_NAME, NUSCENES_RADAR_FIELDS
from imkd_core.wire.cdr import detections_cdr
from imkd_core.wire.keyframe import KeyframeRecord
from imkd_core.wire.messages import (
    camera_info_msg,
    compressed_image_msg,
    image_msg,
    markers_msg,
    pointcloud2_msg,
    string_msg,
    tf_msg,
    transform_msg,
)
from imkd_core.wire.names import (
    BASE_FRAME,
    DETECTIONS_TYPE,
    GT_DETECTIONS_TOPIC,
    GT_MARKERS_TOPIC,
    KEYFRAMES_TOPIC,
    LIDAR_DATATYPES,
    LIDAR_FIELDS,
    MAP_FRAME,
    RADAR_DATATYPES,
    TF_STATIC_TOPIC,
    TF_TOPIC,
    camera_info_topic,
    image_topic,
    pointcloud_topic,
)
from imkd_core.wire.pointcloud2 import PointCloud2Error

IMAGE_MODES = ("raw", "compressed")


class Nuscenes2BagError(RuntimeError):
    """The conversion cannot go on; the message says which file or record and why. A tool
    error, not a message error (a message that cannot be used is a
    `imkd_core.wire.fields.WireError`)."""


class SensorFileError(Nuscenes2BagError):
    """A sensor file that is missing or cannot be decoded."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class ConversionSummary:
    out: Path
    storage: str
    images: str
    scenes: int = 0
    keyframes: int = 0
    messages: int = 0
    payload_bytes: int = 0
    bag_bytes: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    pose_conflicts: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def keyframes_per_s(self) -> float:
        return self.keyframes / self.seconds if self.seconds > 0 else float("inf")

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / 1e6 / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        text = (f"wrote {self.out} ({self.storage}, bag v8, images {self.images}): "
                f"{self.scenes} scene(s), {self.keyframes} keyframes, {self.messages} messages, "
                f"{self.bag_bytes / 1e6:.1f} MB in {self.seconds:.1f} s "
                f"({self.keyframes_per_s:.2f} keyframes/s, {self.mb_per_s:.1f} MB/s); "
                f"skipped {len(self.skipped)} missing/corrupt sensor file(s)")
        if self.pose_conflicts:
            text += f"; {self.pose_conflicts} ego pose(s) sharing a stamp with a different pose"
        return text


# ------------------------------------------------------------------------------ sensor files
def _read_compressed(path: Path) -> tuple[bytes, str]:
    """The image file's bytes, unchanged, and its CompressedImage `format`; checks the
    container's start and end markers so a truncated file is caught without decoding."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SensorFileError(path, "image file missing") from None
    except OSError as exc:
        raise SensorFileError(path, f"cannot read image ({exc.strerror or exc})") from None
    if data[:3] == b"\xff\xd8\xff":
        if b"\xff\xd9" not in data[-64:]:
            raise SensorFileError(path, "corrupt JPEG: no end-of-image marker (truncated?)")
        return data, "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-64:]:
            raise SensorFileError(path, "corrupt PNG: no IEND chunk (truncated?)")
        return data, "png"
    raise SensorFileError(path, "not a JPEG or PNG file")


def _image_size(data: bytes, path: Path) -> tuple[int, int]:
    from io import BytesIO

    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as image:
            return image.size
    except OSError as exc:
        raise SensorFileError(path, f"cannot read image header ({exc})") from None


def _sensor_error(path: Path, exc: Exception) -> SensorFileError:
    text = str(exc)
    prefix = f"{path}: "
    return SensorFileError(path, text[len(prefix):] if text.startswith(prefix) else text)


# ------------------------------------------------------------------------------ conversion
@dataclass
class _Event:
    log_ns: int
    priority: int  # orders events that share a log time: tf_static, tf, sensors, gt, keyframe
    seq: int
    write: Callable[[], None]

    def key(self):
        return (self.log_ns, self.priority, self.seq)


def convert(
    dataroot: str | Path,
    out: str | Path,
    version: str | None = None,
    scenes: Sequence[str] | None = None,
    storage: str = "mcap",
    images: str = "raw",
    skip_missing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionSummary:
    """Convert scenes of a nuScenes dataroot to one rosbag2 at `out` (see the module doc).
    Ground truth comes from `NuScenesReader` (its boxes, in the LiDAR keyframe's ego frame)."""
    if storage not in STORAGES:
        raise Nuscenes2BagError(f"--storage must be one of {sorted(STORAGES)}, got {storage!r}")
    if images not in IMAGE_MODES:
        raise Nuscenes2BagError(f"--images must be one of {IMAGE_MODES}, got {images!r}")
    dataroot = Path(dataroot)
    start = time.perf_counter()
    version = version or dataroot_version(dataroot)
    reader = NuScenesReader(dataroot, version, options=ReaderOptions(
        cameras=(), radars=(), load_lidar=False, load_images=False, load_radar=False))
    nusc = reader.nusc
    scene_records = list(nusc.scene)
    if scenes:
        by_name = {s["name"]: s for s in scene_records}
        unknown = [name for name in scenes if name not in by_name]
        if unknown:
            raise Nuscenes2BagError(
                f"scene(s) {unknown} not in {dataroot / reader.version}; it has "
                f"{sorted(by_name)[:20]}{' ...' if len(by_name) > 20 else ''}")
        wanted = set(scenes)
        scene_records = [s for s in scene_records if s["name"] in wanted]

    sd_by_sample: dict[str, list[dict]] = defaultdict(list)
    for sd in nusc.sample_data:
        sd_by_sample[sd["sample_token"]].append(sd)
    plans = []
    for scene in scene_records:
        tokens = reader.sample_tokens(scenes=scene["name"])
        sds = [sd for token in tokens for sd in sd_by_sample.get(token, ())]
        if not sds:
            continue
        plans.append((scene, tokens, sds))

    summary = ConversionSummary(out=Path(out), storage=storage, images=images)
    total = sum(len(sds) for _, _, sds in plans)
    bar = _progress(total, progress)
    try:
        with BagWriter(out, storage=storage, overwrite=overwrite) as bag:
            last_log = -1
            for scene, tokens, sds in plans:
                last_log = _convert_scene(reader, bag, scene, tokens, sds, images, skip_missing,
                                          last_log, summary, bar)
                summary.scenes += 1
            summary.messages = bag.messages_written
            summary.payload_bytes = bag.bytes_written
            summary.counts = dict(bag.counts)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    summary.bag_bytes = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return summary


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", desc="nuscenes2bag", disable=not enabled,
                dynamic_ncols=True, mininterval=0.5)


def _channel_of(nusc, sd: dict) -> tuple[str, str, dict]:
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    sensor = nusc.get("sensor", cs["sensor_token"])
    return sensor["channel"], sensor["modality"], cs


def _convert_scene(reader: NuScenesReader, bag: BagWriter, scene: dict, tokens: list[str],
                   sds: list[dict], images: str, skip_missing: bool, last_log: int,
                   summary: ConversionSummary, bar) -> int:
    nusc, dataroot = reader.nusc, reader.dataroot
    calib: dict[str, dict] = {}
    modality: dict[str, str] = {}
    rows = []
    for sd in sds:
        channel, kind, cs = _channel_of(nusc, sd)
        if channel in calib and calib[channel]["token"] != cs["token"]:
            if (calib[channel]["translation"], calib[channel]["rotation"]) != (
                    cs["translation"], cs["rotation"]):
                raise Nuscenes2BagError(
                    f"{dataroot / reader.version / 'calibrated_sensor.json'}: scene "
                    f"{scene['name']} uses two calibrations for {channel} "
                    f"({calib[channel]['token']}, {cs['token']}); /tf_static cannot carry both")
        calib.setdefault(channel, cs)
        modality[channel] = kind
        rows.append((us_to_ns(sd["timestamp"]), channel, sd))
    order = {name: i for i, name in enumerate(sorted(calib))}
    rows.sort(key=lambda r: (r[0], order[r[1]]))
    first = rows[0][0]
    offset = max(0, last_log + 2 - first)  # later scenes never run backwards in log time
    events: list[_Event] = []

    def add(stamp: int, priority: int, write: Callable[[], None]):
        events.append(_Event(stamp + offset, priority, len(events), write))

    # /tf_static: every sensor of the scene, latched, one nanosecond before the scene's data.
    static = tf_msg([transform_msg(BASE_FRAME, ch, first, calib[ch]["translation"],
                                   calib[ch]["rotation"]) for ch in sorted(calib)])
    add(first - 1, 0, lambda: bag.write(TF_STATIC_TOPIC, first - 1 + offset, static))

    skipped_tokens: set[str] = set()
    poses_at: dict[int, tuple] = {}
    for stamp, channel, sd in rows:
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        key = (tuple(pose["translation"]), tuple(pose["rotation"]))
        if stamp in poses_at:
            if poses_at[stamp] != key:
                summary.pose_conflicts += 1
        if poses_at.get(stamp) != key:
            poses_at[stamp] = key
            msg = tf_msg([transform_msg(MAP_FRAME, BASE_FRAME, stamp, pose["translation"],
                                        pose["rotation"])])
            add(stamp, 1, lambda m=msg, t=stamp: bag.write(TF_TOPIC, t + offset, m))
        add(stamp, 2, lambda c=channel, s=sd, t=stamp: _write_sensor(
            bag, dataroot, c, modality[c], calib[c], s, t, t + offset, images, skip_missing,
            summary, skipped_tokens, bar))

    for token in tokens:
        sample = reader.get_sample(token)
        record = nusc.get("sample", token)
        key_stamp = sample.timestamp
        add(key_stamp, 3, lambda g=sample.gt, t=key_stamp: (
            bag.write_raw(GT_DETECTIONS_TOPIC, DETECTIONS_TYPE, t + offset,
                          detections_cdr(g, t)),
            bag.write(GT_MARKERS_TOPIC, t + offset, markers_msg(g, t, color=GT_COLOR))))
        data = {ch: nusc.get("sample_data", sd_token) for ch, sd_token in record["data"].items()}
        last = max([us_to_ns(sd["timestamp"]) for sd in data.values()] + [key_stamp])
        add(last + 1, 4, lambda s=sample, d=data, t=last + 1: _write_keyframe(
            bag, s, d, t + offset, first - 1 + offset, skipped_tokens, summary))

    events.sort(key=_Event.key)
    for event in events:
        event.write()
    return events[-1].log_ns


def _write_sensor(bag: BagWriter, dataroot: Path, channel: str, kind: str, cs: dict, sd: dict,
                  stamp: int, log_ns: int, images: str, skip_missing: bool,
                  summary: ConversionSummary, skipped_tokens: set[str], bar) -> None:
    path = dataroot / sd["filename"]
    try:
        if kind == "camera":
            K = np.asarray(cs.get("camera_intrinsic") or [], dtype=np.float64)
            if K.shape != (3, 3):
                raise Nuscenes2BagError(f"calibrated_sensor {cs['token']} ({channel}) has no 3x3 "
                                      "camera_intrinsic")
            if images == "raw":
                try:
                    pixels = read_image(path)
                except NuScenesDataError as exc:
                    raise _sensor_error(path, exc) from None
                height, width = pixels.shape[:2]
                msgs = [(image_topic(channel), image_msg(pixels, stamp, channel))]
            else:
                data, fmt = _read_compressed(path)
                width, height = (int(sd.get("width") or 0), int(sd.get("height") or 0))
                if not (width and height):
                    width, height = _image_size(data, path)
                msgs = [(image_topic(channel, compressed=True),
                         compressed_image_msg(data, fmt, stamp, channel))]
            msgs.append((camera_info_topic(channel),
                         camera_info_msg(K, width, height, stamp, channel)))
        elif kind == "radar":
            try:
                points = read_radar_pcd(path)
                msgs = [(pointcloud_topic(channel), pointcloud2_msg(
                    points, NUSCENES_RADAR_FIELDS, RADAR_DATATYPES, stamp, channel))]
            except (RadarPcdError, PointCloud2Error) as exc:
                raise _sensor_error(path, exc) from None
        elif kind == "lidar":
            try:
                points = read_lidar_bin(path)
                msgs = [(pointcloud_topic(channel), pointcloud2_msg(
                    points, LIDAR_FIELDS, LIDAR_DATATYPES, stamp, channel))]
            except FileNotFoundError:
                raise SensorFileError(path, "LiDAR file missing") from None
            except (NuScenesDataError, PointCloud2Error) as exc:
                raise _sensor_error(path, exc) from None
        else:
            raise Nuscenes2BagError(f"{channel}: unknown sensor modality {kind!r}")
    except SensorFileError as exc:
        if not skip_missing:
            raise
        summary.skipped.append((str(exc.path), exc.reason))
        skipped_tokens.add(sd["token"])
        bar.update(1)
        return
    for topic, msg in msgs:
        bag.write(topic, log_ns, msg)
    bar.update(1)


def _write_keyframe(bag: BagWriter, sample, data: dict[str, dict], log_ns: int, scene_start: int,
                    skipped_tokens: set[str], summary: ConversionSummary) -> None:
    present = {ch: us_to_ns(sd["timestamp"]) for ch, sd in data.items()
               if sd["token"] not in skipped_tokens}
    if LIDAR_NAME not in present:
        return  # a keyframe without its LiDAR has no ego frame: not a readable keyframe
    record = KeyframeRecord(token=sample.token, scene=sample.scene_name, scene_start=scene_start,
                            timestamp=sample.timestamp, data=present, gt=sample.gt)
    bag.write(KEYFRAMES_TOPIC, log_ns, string_msg(record.to_json()))
    summary.keyframes += 1


# ------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nuscenes2bag",
        description="Convert nuScenes (real or the synthetic world) to a rosbag2 directory "
                    "(MCAP by default, bag format version 8 for Humble) with cameras, camera "
                    "info, radar and LiDAR PointCloud2, /tf, /tf_static and ground truth.")
    parser.add_argument("--dataroot", required=True, type=Path,
                        help="nuScenes dataroot (holds samples/, sweeps/ and v1.0-*/)")
    parser.add_argument("--version", default=None,
                        help="table folder, e.g. v1.0-mini (default: the one v1.0-* folder)")
    parser.add_argument("--scene", nargs="+", action="extend", default=None, metavar="NAME",
                        help="scene name(s) to convert (default: all)")
    parser.add_argument("--out", required=True, type=Path, help="bag directory to create")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap")
    parser.add_argument("--images", choices=IMAGE_MODES, default="raw",
                        help="raw: sensor_msgs/Image rgb8 on /CAM_X/image_raw; compressed: the "
                             "original JPEG bytes on /CAM_X/image_raw/compressed")
    parser.add_argument("--skip-missing", action="store_true",
                        help="leave out messages whose sensor file is missing or corrupt "
                             "(counted in the summary) instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with stop_signals_as_keyboard_interrupt():
            summary = convert(args.dataroot, args.out, version=args.version, scenes=args.scene,
                              storage=args.storage, images=args.images,
                              skip_missing=args.skip_missing, overwrite=args.overwrite,
                              progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"nuscenes2bag: interrupted; nothing written to {args.out}", file=sys.stderr)
        return 130
    except (Nuscenes2BagError, BagError, NuScenesDataError, RadarPcdError) as exc:
        print(f"nuscenes2bag: error: {exc}", file=sys.stderr)
        return 1
    for path, reason in summary.skipped:
        print(f"nuscenes2bag: skipped {path}: {reason}", file=sys.stderr)
    print(f"nuscenes2bag: {summary.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
