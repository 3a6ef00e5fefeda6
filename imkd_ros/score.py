"""`imkd-score`: the nuScenes metrics of any detector's ROS output, live or from a bag.

    imkd-score --dataroot D                      # subscribe to /imkd_detector/output/detections
    imkd-score --dataroot D --bag detections.bag [--keyframes-bag world.bag]

The `vision_msgs/Detection3DArray`s (boxes in their header frame, which must be the keyframe's
ego frame `base_link`) are matched to nuScenes sample tokens by stamp: an array stamped with a
`/imkd/keyframes` record's `timestamp` holds that keyframe's detections (records from the live
topic, from the scored bag, or from `--keyframes-bag`, the bag the detector ran on). Velocity
comes from the MarkerArray's ARROW markers (docs/ARCHITECTURE.md §Conventions, Messages: id
3i+2 <-> detection i, same stamp), 0 without them; attributes are the devkit default by speed,
as for our model (`evaluation.metrics.default_attribute`). The official results JSON and the
devkit's metrics (`evaluation.metrics.evaluate_detections`) go to `--out`, all files written
aside and moved in only when complete.

`read_bag` needs no rclpy; `record_live` runs its own rclpy context and node (`imkd_score`),
taking the messages as raw CDR so that both paths decode with `imkd_core.wire.detections`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from imkd_core.data.bag_reader import open_reader, read_keyframe_records
from imkd_core.data.bag_writer import BagError
from imkd_core.interrupts import stop_signals_as_keyboard_interrupt
from imkd_core.sample import CLASSES, Boxes
from imkd_core.wire.detections import DetectionArray, decode_detections, decode_velocities
from imkd_core.wire.fields import WireError
from imkd_core.wire.keyframe import KeyframeRecord
from imkd_core.wire.names import (
    BASE_FRAME,
    DETECTIONS_TYPE,
    KEYFRAMES_TOPIC,
    MARKERS_TYPE,
    STRING_TYPE,
    QosSpec,
)
from imkd_core.wire.typestore import typestore

DEFAULT_TOPIC = "/imkd_detector/output/detections"
# reliable keep-last (as the node publishes its outputs): room for a burst of arrays while the
# scorer is busy
LIVE_QOS = QosSpec(100)
TP_METRICS = ("mATE", "mASE", "mAOE", "mAVE", "mAAE")


class ScoreError(RuntimeError):
    """Input that cannot be scored; the message names the input and what is wrong."""


@dataclass
class Recording:
    """What was recorded from a detector: per header stamp (ns) its boxes in the array's frame
    (velocities from the arrows), the keyframe records, and extra Float64 topics. The other
    fields say how it was read (the report prints them)."""

    detections: dict[int, Boxes]
    keyframes: list[KeyframeRecord]
    timings: dict[str, list[float]]
    frames: Counter = field(default_factory=Counter)  # header frame_id -> arrays
    duplicates: int = 0  # arrays whose stamp came again (the last one is kept)
    skipped: Counter = field(default_factory=Counter)  # why -> detections or messages left out
    markers_topic: str | None = None
    boxes_with_velocity: int = 0  # boxes whose arrow marker was found
    notes: list[str] = field(default_factory=list)


class _Collector:
    """Decodes detections, markers and keyframe records as they come (bag or live)."""

    def __init__(self, markers_topic: str | None) -> None:
        self.markers_topic = markers_topic
        self.arrays: dict[int, DetectionArray] = {}
        self.velocities: dict[int, dict[int, tuple[float, float]]] = {}
        self.keyframes: dict[str, KeyframeRecord] = {}
        self.timings: dict[str, list[float]] = {}
        self.duplicates = 0
        self.skipped: Counter = Counter()
        self.last_message = time.monotonic()

    def detections(self, raw: bytes) -> None:
        self.last_message = time.monotonic()
        try:
            array = decode_detections(raw)
        except WireError as exc:
            self.skipped[f"undecodable {DETECTIONS_TYPE} ({exc})"] += 1
            return
        if array.stamp in self.arrays:
            self.duplicates += 1
        self.arrays[array.stamp] = array

    def markers(self, raw: bytes) -> None:
        self.last_message = time.monotonic()
        try:
            stamp, velocities = decode_velocities(raw)
        except WireError as exc:
            self.skipped[f"undecodable {MARKERS_TYPE} ({exc})"] += 1
            return
        self.velocities[stamp] = velocities

    def keyframe(self, raw: bytes) -> None:
        self.last_message = time.monotonic()
        try:
            record = KeyframeRecord.from_json(typestore().deserialize_cdr(raw, STRING_TYPE).data)
        except (WireError, ValueError, TypeError) as exc:
            self.skipped[f"{KEYFRAMES_TOPIC} message that is no keyframe record ({exc})"] += 1
            return
        self.keyframes[record.token] = record  # a looped replay repeats them

    def value(self, topic: str, value: float) -> None:
        self.timings.setdefault(topic, []).append(float(value))

    def recording(self) -> Recording:
        detections, with_velocity = {}, 0
        skipped = Counter(self.skipped)
        frames: Counter = Counter()
        for stamp, array in sorted(self.arrays.items()):
            boxes, found = array.with_velocities(self.velocities.get(stamp, {}))
            detections[stamp] = boxes
            with_velocity += found
            skipped.update(array.skipped)
            frames[array.frame_id] += 1
        return Recording(detections=detections, keyframes=list(self.keyframes.values()),
                         timings=self.timings, frames=frames, duplicates=self.duplicates,
                         skipped=skipped, markers_topic=self.markers_topic,
                         boxes_with_velocity=with_velocity)


# ------------------------------------------------------------------------------------- bags
def read_bag(bag: str | os.PathLike, detections_topic: str, *, markers_topic: str | None = None,
             keyframes_topic: str | None = KEYFRAMES_TOPIC) -> Recording:
    """The detector output recorded in a bag (rosbag2 directory, .mcap or .db3). A missing
    detections or markers topic, or no arrays on it, raises ScoreError listing the bag's
    topics; a missing keyframes topic gives no records (pass them from the source bag)."""
    collector = _Collector(markers_topic)
    with open_reader(bag) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        listing = ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(by_topic.items()))
        for topic, msgtype in ((detections_topic, DETECTIONS_TYPE),
                               (markers_topic, MARKERS_TYPE)):
            if topic is None:
                continue
            if topic not in by_topic:
                raise ScoreError(f"{bag}: no topic {topic}; the bag has: {listing or 'none'}")
            if by_topic[topic].msgtype != msgtype:
                raise ScoreError(f"{bag}: {topic} is {by_topic[topic].msgtype}, not {msgtype}")
        handlers = {detections_topic: collector.detections}
        if markers_topic is not None:
            handlers[markers_topic] = collector.markers
        if keyframes_topic is not None and keyframes_topic in by_topic:
            handlers[keyframes_topic] = collector.keyframe
        conns = [c for c in reader.connections if c.topic in handlers]
        for conn, _, raw in reader.messages(connections=conns):
            handlers[conn.topic](raw)
    if not collector.arrays:
        raise ScoreError(f"{bag}: no {DETECTIONS_TYPE} on {detections_topic}; the bag has: "
                         f"{listing}")
    return collector.recording()


# ------------------------------------------------------------------------------------- live
class _ResultSubscriptions:
    """Detections and markers, subscribed transient local first: the detector publishes them
    transient local (`QOS_RESULTS`), so what it sent before discovery matched it with this
    recorder (seconds, on a loaded machine) still arrives. A transient-local request does not
    match a volatile publisher (another detector's): its incompatible-QoS event makes
    `fall_back` subscribe that topic again, volatile, and say so in the notes."""

    def __init__(self, node) -> None:
        self.node = node
        self.subscriptions: dict[str, tuple] = {}  # topic -> (subscription, type, callback)
        self.incompatible: set[str] = set()

    def add(self, msg_type, topic: str, callback) -> None:
        from rclpy.event_handler import SubscriptionEventCallbacks

        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info, t=topic: self.incompatible.add(t))
        subscription = self.node.create_subscription(
            msg_type, topic, callback, _live_qos(transient_local=True), raw=True,
            event_callbacks=events)
        self.subscriptions[topic] = (subscription, msg_type, callback)

    def fall_back(self, notes: list[str]) -> None:
        """Resubscribe, volatile, each topic whose transient-local request was refused."""
        for topic in sorted(self.incompatible & self.subscriptions.keys()):
            subscription, msg_type, callback = self.subscriptions.pop(topic)
            self.node.destroy_subscription(subscription)
            self.node.create_subscription(msg_type, topic, callback, _live_qos(), raw=True)
            notes.append(f"{topic}: a volatile publisher, subscribed volatile: what it "
                         "published before the match was not received")
        self.incompatible.clear()


def _live_qos(transient_local: bool = False):
    """The recorder's rclpy profile: `LIVE_QOS`, transient local on request."""
    from imkd_ros.qos import profile

    return profile(replace(LIVE_QOS, transient_local=transient_local))


def record_live(detections_topic: str, *, markers_topic: str | None,
                keyframes_topic: str | None, keyframes: list[KeyframeRecord] | None = None,
                float_topics: Sequence[str] = (), idle_s: float = 10.0,
                timeout_s: float = 600.0, ready: threading.Event | None = None) -> Recording:
    """Subscribe (own rclpy context, node `imkd_score`, `_live_qos`; detections and markers
    transient local where their publisher is, `_ResultSubscriptions`) and record until every
    expected keyframe (`keyframes` and those seen on `keyframes_topic`) has an array and
    nothing new came for `idle_s`; with no keyframe known, until `idle_s` after the last
    message (once any array came); at the latest after `timeout_s`, or at Ctrl-C
    (KeyboardInterrupt): what was recorded is kept and the notes say what is missing. `ready`
    is set once the subscriptions exist. `float_topics`: std_msgs/Float64 topics (e.g. the
    detector's ~/debug/<stage>_ms) into `timings`."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from std_msgs.msg import Float64, String
    from vision_msgs.msg import Detection3DArray
    from visualization_msgs.msg import MarkerArray

    collector = _Collector(markers_topic)
    expected = {r.timestamp for r in keyframes or ()}
    qos = _live_qos()
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    notes = []
    try:
        node = rclpy.create_node("imkd_score", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        results = _ResultSubscriptions(node)
        results.add(Detection3DArray, detections_topic, collector.detections)
        if markers_topic is not None:
            results.add(MarkerArray, markers_topic, collector.markers)
        if keyframes_topic is not None:
            node.create_subscription(String, keyframes_topic, collector.keyframe, qos, raw=True)
        for topic in float_topics:
            node.create_subscription(Float64, topic,
                                     lambda msg, t=topic: collector.value(t, msg.data), qos)
        if ready is not None:
            ready.set()
        start = time.monotonic()
        try:
            while True:
                executor.spin_once(timeout_sec=0.05)
                results.fall_back(notes)
                now = time.monotonic()
                want = expected | {r.timestamp for r in collector.keyframes.values()}
                idle = now - collector.last_message >= idle_s
                if collector.arrays and idle and want <= collector.arrays.keys():
                    break
                if now - start >= timeout_s:
                    notes.append(f"stopped at the timeout ({timeout_s:g} s)")
                    break
        except KeyboardInterrupt:
            notes.append("interrupted (Ctrl-C): scoring what was recorded")
        if not collector.arrays:
            found = sorted(t for t, types in node.get_topic_names_and_types()
                           if DETECTIONS_TYPE in types)
            notes.append(f"{DETECTIONS_TYPE} topics seen: {', '.join(found) or 'none'}")
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    recording = collector.recording()
    if keyframes:
        seen = {r.token for r in recording.keyframes}
        recording.keyframes += [r for r in keyframes if r.token not in seen]
    recording.notes += notes
    return recording


# --------------------------------------------------------------------------------- matching
@dataclass
class Match:
    samples: dict[str, Boxes]  # sample token -> boxes
    unmatched: list[int]  # array stamps that are no keyframe's
    missing: list[str]  # tokens of keyframe records without an array


def match(rec: Recording, *, base_frame: str = BASE_FRAME) -> Match:
    """Arrays to sample tokens by stamp (array stamp == the record's `timestamp`). Raises
    ScoreError for arrays in a frame other than `base_frame`, no keyframe records, or no array
    that matches one."""
    foreign = {f: n for f, n in rec.frames.items() if f != base_frame}
    if foreign:
        raise ScoreError(
            f"detections in frame {', '.join(repr(f) for f in sorted(foreign))} "
            f"({sum(foreign.values())} of {sum(rec.frames.values())} arrays), but the "
            f"keyframe's ego frame is {base_frame!r}: publish them in {base_frame} (a frame of "
            f"another name that is the ego frame: --base-frame NAME)")
    if not rec.keyframes:
        raise ScoreError(f"no keyframe records ({KEYFRAMES_TOPIC}) to match the arrays to "
                         "sample tokens: give --keyframes-bag (the bag the detector ran on)")
    by_stamp = {r.timestamp: r.token for r in rec.keyframes}
    samples = {by_stamp[s]: b for s, b in rec.detections.items() if s in by_stamp}
    unmatched = sorted(s for s in rec.detections if s not in by_stamp)
    if not samples:
        stamps = sorted(rec.detections)
        span = f"{stamps[0]} .. {stamps[-1]}" if stamps else "none"
        raise ScoreError(
            f"none of the {len(stamps)} arrays has the stamp of one of the {len(by_stamp)} "
            f"keyframe records (arrays: {span} ns; keyframes: {min(by_stamp)} .. "
            f"{max(by_stamp)} ns): other keyframes, or a detector not stamping with the "
            "keyframe's stamp (sim time: use_sim_time with the replay's --clock)")
    missing = [r.token for r in rec.keyframes if r.token not in samples]
    return Match(samples=samples, unmatched=unmatched, missing=missing)


def match_samples(rec: Recording, *, base_frame: str = BASE_FRAME) -> dict[str, Boxes]:
    """Sample token -> boxes (see `match`)."""
    return match(rec, base_frame=base_frame).samples


# ---------------------------------------------------------------------------------- scoring
def score(rec: Recording, dataroot: str | os.PathLike, out_dir: str | os.PathLike, *,
          version: str | None = None, eval_set: str = "val",
          base_frame: str = BASE_FRAME) -> dict:
    """Match, evaluate with nuscenes-devkit and write `out_dir/results_<eval_set>.json`,
    `metrics_summary.json` (the devkit's) and `metrics.json` (our metrics dict with a `report`
    of how the recording was read and matched); each file appears whole or not at all.
    Returns the metrics dict. Keyframes without an array, and samples of the split without a
    keyframe record, count as no detections (the devkit scores the whole split)."""
    from imkd_core.data.nuscenes import NuScenesDataError, NuScenesReader, dataroot_version
    from imkd_core.data.options import ReaderOptions
    from imkd_core.evaluation.metrics import evaluate_detections, split_sample_tokens

    found = match(rec, base_frame=base_frame)
    dataroot, out_dir = Path(dataroot), Path(out_dir)
    try:
        version = version or dataroot_version(dataroot)
        nusc = NuScenesReader(dataroot, version, options=ReaderOptions(
            cameras=(), radars=(), load_lidar=False, load_images=False,
            load_radar=False)).nusc
    except (NuScenesDataError, OSError) as exc:
        raise ScoreError(f"--dataroot {dataroot}: {exc}") from None
    try:
        split = set(split_sample_tokens(nusc, eval_set))
    except KeyError:
        raise ScoreError(f"--eval-set {eval_set!r}: not a nuScenes split") from None
    outside = [t for t in found.samples if t not in split]
    if outside:
        raise ScoreError(f"{len(outside)} of the {len(found.samples)} matched keyframes are not "
                         f"in split {eval_set!r} of {dataroot} ({version}), e.g. {outside[0]}: "
                         "another dataroot, or another --eval-set")
    recorded = {r.token for r in rec.keyframes}
    report = {
        "arrays": len(rec.detections), "matched": len(found.samples),
        "unmatched_arrays": len(found.unmatched), "unmatched_stamps": found.unmatched[:20],
        "keyframes_without_array": len(found.missing),
        "split_samples": len(split), "split_samples_without_record": len(split - recorded),
        "duplicate_stamps": rec.duplicates, "frames": dict(rec.frames),
        "skipped": dict(rec.skipped), "markers_topic": rec.markers_topic,
        "boxes": int(sum(len(b) for b in rec.detections.values())),
        "boxes_with_velocity": rec.boxes_with_velocity, "notes": list(rec.notes),
        "attributes": "devkit default by speed (Detection3D carries none)",
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial",
                                    dir=out_dir.parent))
    try:
        metrics = evaluate_detections(dataroot, version, eval_set, found.samples, staging,
                                      nusc=nusc)
        metrics.pop("summary")  # metrics_summary.json holds it
        metrics.update(dataroot=str(dataroot), version=version, report=report)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _move_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics


def _move_in(staging: Path, out_dir: Path) -> None:
    """The finished files into `out_dir`: the whole folder renamed when it is new, else file by
    file (each rename replaces one file whole)."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    for path in sorted(staging.iterdir()):
        os.replace(path, out_dir / path.name)


def report_lines(metrics: dict) -> list[str]:
    """The metrics table (headline, TP errors, per-class AP) and what the report says."""
    r = metrics["report"]
    lines = [f"NDS  {metrics['NDS']:.4f}    mAP  {metrics['mAP']:.4f}",
             "  ".join(f"{name} {metrics[name]:.4f}" for name in TP_METRICS),
             f"{'class':<22}{'AP':>8}{'ATE':>8}{'ASE':>8}{'AOE':>8}{'AVE':>8}{'AAE':>8}"]
    for name in CLASSES:
        c = metrics["per_class"].get(name)
        if c is not None:
            lines.append(f"{name:<22}{c['AP']:8.3f}" + "".join(
                f"{c[k]:8.3f}" for k in ("trans_err", "scale_err", "orient_err", "vel_err",
                                         "attr_err")))
    lines.append(f"{r['matched']} keyframes scored ({r['boxes']} boxes in {r['arrays']} arrays)")
    if r["unmatched_arrays"]:
        lines.append(f"{r['unmatched_arrays']} arrays match no keyframe record (ignored)")
    if r["keyframes_without_array"]:
        lines.append(f"{r['keyframes_without_array']} keyframes have no array: scored as no "
                     "detections")
    if r["split_samples_without_record"]:
        lines.append(f"{r['split_samples_without_record']} of the {r['split_samples']} samples "
                     "of the split have no keyframe record: scored as no detections")
    if r["duplicate_stamps"]:
        lines.append(f"{r['duplicate_stamps']} arrays repeated a stamp: the last one counts")
    for why, count in sorted(r["skipped"].items()):
        lines.append(f"skipped {count}: {why}")
    if r["markers_topic"] is None:
        lines.append("velocity: no markers topic, every box scored with velocity 0 (mAVE says "
                     "nothing about this detector)")
    else:
        lines.append(f"velocity: from the ARROW markers of {r['markers_topic']} for "
                     f"{r['boxes_with_velocity']} of {r['boxes']} boxes, the others 0")
    lines.append(f"attributes: {r['attributes']}")
    lines += r["notes"]
    return lines


# -------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imkd-score",
        description="Score a detector's vision_msgs/Detection3DArray output (live or from a "
                    "bag) with the nuScenes devkit, matched to sample tokens by the "
                    f"{KEYFRAMES_TOPIC} records.")
    p.add_argument("--dataroot", required=True, type=Path, help="nuScenes (or world) dataroot")
    p.add_argument("--version", default=None, help="table folder (default: the one v1.0-*)")
    p.add_argument("--eval-set", default="val", help="nuScenes split to score (default: val)")
    p.add_argument("--bag", type=Path, default=None,
                   help="read the detections from this bag (rosbag2 dir, .mcap, .db3) instead "
                        "of subscribing")
    p.add_argument("--topic", default=DEFAULT_TOPIC, help=f"Detection3DArray topic "
                                                          f"(default: {DEFAULT_TOPIC})")
    p.add_argument("--markers", default=None, metavar="TOPIC",
                   help="MarkerArray with the velocity arrows, or 'none' (default: the topic "
                        "beside --topic, .../markers, where it exists)")
    p.add_argument("--keyframes-topic", default=KEYFRAMES_TOPIC,
                   help=f"keyframe records topic, or 'none' (default: {KEYFRAMES_TOPIC})")
    p.add_argument("--keyframes-bag", type=Path, default=None,
                   help="read the keyframe records from this bag (the one the detector ran on)")
    p.add_argument("--base-frame", default=BASE_FRAME,
                   help="the detector's name of the ego frame (default: base_link)")
    p.add_argument("--out", type=Path, default=Path("imkd_score"),
                   help="folder for the results JSON and metrics (default: ./imkd_score)")
    p.add_argument("--idle", type=float, default=10.0, metavar="S",
                   help="live: stop once every keyframe has an array and nothing came for S s")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="live: stop after S s at the latest")
    return p


def _none(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value


def _sibling_markers(topic: str) -> str | None:
    head, _, tail = topic.rpartition("/")
    return f"{head}/markers" if tail == "detections" else None


def _bag_topics(bag: Path) -> set[str]:
    with open_reader(bag) as reader:
        return {c.topic for c in reader.connections}


def run(args: argparse.Namespace) -> dict:
    if not args.dataroot.is_dir():  # before a recording that may take minutes
        raise ScoreError(f"--dataroot {args.dataroot}: no such directory")
    keyframes_topic = _none(args.keyframes_topic)
    keyframes = None
    if args.keyframes_bag is not None:
        keyframes = read_keyframe_records(args.keyframes_bag)
        if not keyframes:
            raise ScoreError(f"--keyframes-bag {args.keyframes_bag}: no keyframe records")
    markers = _none(args.markers)
    if args.bag is not None:
        if args.markers is None and markers is None:
            sibling = _sibling_markers(args.topic)
            markers = sibling if sibling in _bag_topics(args.bag) else None
        rec = read_bag(args.bag, args.topic, markers_topic=markers,
                       keyframes_topic=keyframes_topic)
        if keyframes is not None:
            rec.keyframes = keyframes
    else:
        if args.markers is None:
            markers = _sibling_markers(args.topic)
        print(f"imkd-score: recording {args.topic}" + (f" and {markers}" if markers else "")
              + " (Ctrl-C to stop and score)", file=sys.stderr)
        rec = record_live(args.topic, markers_topic=markers, keyframes_topic=keyframes_topic,
                          keyframes=keyframes, idle_s=args.idle, timeout_s=args.timeout)
        if not rec.detections:
            raise ScoreError(f"no {DETECTIONS_TYPE} arrived on {args.topic}"
                             + (f" ({'; '.join(rec.notes)})" if rec.notes else ""))
    return score(rec, args.dataroot, args.out, version=args.version, eval_set=args.eval_set,
                 base_frame=args.base_frame)


def main(argv: list[str] | None = None) -> int:
    """`argv`: the arguments without the program name (default: sys.argv[1:])."""
    args = build_parser().parse_args(argv)
    try:
        with stop_signals_as_keyboard_interrupt():
            metrics = run(args)
    except KeyboardInterrupt:
        print("imkd-score: interrupted; nothing written", file=sys.stderr)
        return 130
    except (ScoreError, BagError, WireError) as exc:
        print(f"imkd-score: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report_lines(metrics)))
    out = args.out
    print(f"results: {out / f'results_{args.eval_set}.json'}\nmetrics: {out / 'metrics.json'} "
          f"(devkit summary: {out / 'metrics_summary.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
