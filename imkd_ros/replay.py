"""`imkd-replay`: play a rosbag2 onto live ROS 2 topics, for machines without `ros2 bag play`.

    imkd-replay BAG [--rate R] [--start-offset S] [--loop] [--clock [--clock-hz HZ]]
                    [--topics T [T ...]] [--delay D] [--wait-for-subscribers]
                    [--wait-for T [T ...] [--wait-timeout S]] [--quiet] [--ros-args ...]

Reads the bag (a rosbag2 directory, or one `.mcap` / `.db3` file as other tools write them:
`imkd_core.data.bag_reader.open_reader`) and publishes each
message's recorded CDR bytes as they are (rclpy publishers take serialized `bytes`), so no
message is deserialised or rebuilt and every type whose Python package is importable can be
played. Timing follows the recorded (log) time divided by `--rate` (`--rate inf`: as fast as
possible). Per topic, the recorded offered QoS is used the way `ros2 bag play` adapts it:
reliable unless every recording publisher was best-effort, transient-local ("latched", e.g.
`/tf_static`) when every recording publisher was. With `--start-offset`, the latest messages of
latched topics before the start are published first, so late joiners still get the
calibration. `--clock` publishes `rosgraph_msgs/Clock` on `/clock` with the bag time (before
each message and at `--clock-hz` while waiting), for nodes with `use_sim_time:=true`.

A bag is short and a node slow to start (the detector loads its model first), so playback can
wait for its audience: `--wait-for T ...` starts once each named topic has a matched
subscriber, plus `DISCOVERY_SETTLE` (the launch file names exactly the detector's remapped
inputs, not every bag topic: nothing subscribes to `/LIDAR_TOP` or `/gt/*`), and fails after
`--wait-timeout` seconds naming the topics nobody subscribed to; `--wait-for-subscribers`
waits for every non-latched topic.

It runs as a ROS node (`ros2 run`, launch_ros's `Node`): ROS arguments after `--ros-args`
(`-r __node:=...`, `-p use_sim_time:=...`) go to rclpy, the rest to the argument parser.

Ctrl-C (or SIGTERM) stops playback cleanly: no traceback, publishers destroyed, exit status 0,
also when the signal comes twice (a terminal's Ctrl-C under `ros2 launch`).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.interfaces import QosDurability, QosHistory, QosReliability

from imkd_core.data.bag_reader import open_reader
from imkd_core.data.bag_writer import BagError
from imkd_core.interrupts import interrupt_once
from imkd_core.wire.names import QOS_DATA, QOS_LATCHED, TF_STATIC_TOPIC

CLOCK_TOPIC = "/clock"
LATCHED_ACK_WAIT = 1.0  # s: the longest playback waits for a latched message's acknowledgements
# s: after the publishers saw their subscribers, for the subscribers' side of the match (DDS
# discovers per side): until then what they are sent can be lost.
DISCOVERY_SETTLE = 0.5


class ReplayError(RuntimeError):
    """The bag cannot be played as asked (missing topic, bad option)."""


@dataclass
class ReplayStats:
    messages: int = 0
    bytes: int = 0
    bag_seconds: float = 0.0  # bag time covered
    wall_seconds: float = 0.0  # time spent playing (waits for subscribers excluded)
    loops: int = 0
    interrupted: bool = False
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> why
    per_topic: dict[str, int] = field(default_factory=dict)

    @property
    def rate_factor(self) -> float:
        """Bag seconds played per wall second (2.0 = twice real time)."""
        return self.bag_seconds / self.wall_seconds if self.wall_seconds > 0 else math.inf

    def line(self) -> str:
        text = (f"played {self.messages} messages ({self.bytes / 1e6:.1f} MB) on "
                f"{len(self.per_topic)} topics: {self.bag_seconds:.2f} s of bag in "
                f"{self.wall_seconds:.2f} s ({self.rate_factor:.2f}x real time)")
        if self.loops > 1:
            text += f", {self.loops} loops"
        if self.interrupted:
            text += ", stopped by Ctrl-C"
        return text


def message_class(msgtype: str):
    """'pkg/msg/Name' -> the rclpy message class, or raise ImportError with the reason."""
    package, kind, name = msgtype.split("/")
    module = importlib.import_module(f"{package}.{kind}")
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f"{package}.{kind} has no {name}") from None


def qos_profile(topic: str, offered: Sequence) -> object:
    """The rclpy QoSProfile to publish `topic` with, adapted from its recorded offers."""
    from rclpy.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
    )

    from imkd_ros.qos import profile

    offered = list(offered or [])
    if not offered:  # bags recorded without QoS: what ours record, tf_static kept latched
        return profile(QOS_LATCHED if topic == TF_STATIC_TOPIC else QOS_DATA)
    best_effort = all(q.reliability == QosReliability.BEST_EFFORT for q in offered)
    latched = all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
    keep_all = any(q.history == QosHistory.KEEP_ALL for q in offered)
    depth = max([int(q.depth) for q in offered] + [1])
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST,
        depth=depth if depth > 0 else 10,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort
        else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class _Progress:
    def __init__(self, enabled: bool, total_s: float):
        self.enabled = enabled
        self.total_s = total_s
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, bag_s: float, stats: ReplayStats, rate: float, force: bool = False):
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.25 if self.tty else 2.0):
            return
        self.last = now
        pct = 100.0 * bag_s / self.total_s if self.total_s > 0 else 100.0
        text = (f"imkd-replay: {bag_s:7.2f} / {self.total_s:.2f} s ({pct:5.1f}%)  "
                f"{stats.messages} msgs  rate x{rate:g}")
        print(("\r" + text) if self.tty else text, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def done(self):
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)


def play(bag: str | Path, rate: float = 1.0, start_offset: float = 0.0, loop: bool = False,
         clock: bool = False, clock_hz: float = 40.0, topics: Sequence[str] | None = None,
         delay: float = 0.0, wait_for_subscribers: bool = False,
         wait_for: Sequence[str] = (), wait_timeout: float = math.inf, progress: bool = True,
         node=None, max_loops: int | None = None,
         ros_args: Sequence[str] | None = None) -> ReplayStats:
    """Play `bag` through rclpy (see the module doc); returns what was played.

    `wait_for`: start once each of these played topics has a subscriber (`wait_for_subscribers`:
    every non-latched one); ReplayError after `wait_timeout` seconds.
    `node`: an rclpy node to publish from; by default a node `imkd_replay` is created (and
    rclpy initialised with `ros_args`, a command line with `--ros-args ...`, unless it already
    is) and torn down at the end.
    `max_loops` bounds `loop` (tests, benchmarks). Ctrl-C ends playback and returns normally.
    """
    if not rate > 0:
        raise ReplayError(f"--rate must be > 0 (inf: as fast as possible), got {rate}")
    if start_offset < 0:
        raise ReplayError(f"--start-offset must be >= 0, got {start_offset}")
    import rclpy
    from rclpy.duration import Duration

    own = node is None
    own_context = own and not rclpy.ok()
    if own_context:
        from rclpy.signals import SignalHandlerOptions

        # no rclpy signal handlers: Ctrl-C is a KeyboardInterrupt that ends playback cleanly
        rclpy.init(args=list(ros_args) if ros_args is not None else None,
                   signal_handler_options=SignalHandlerOptions.NO)
    if own:
        node = rclpy.create_node("imkd_replay")
    stats = ReplayStats()
    publishers: dict[str, object] = {}
    try:
        with open_reader(bag) as reader:
            conns = list(reader.connections)
            stats.skipped_topics.update(reader.skipped_topics)
            present = {c.topic for c in conns}
            if topics:
                missing = [t for t in topics if t not in present]
                if missing:
                    raise ReplayError(f"topics {missing} not in {bag}; it has {sorted(present)}")
                conns = [c for c in conns if c.topic in set(topics)]
            by_topic: dict[str, list] = {}
            for conn in conns:
                by_topic.setdefault(conn.topic, []).append(conn)
            latched: set[str] = set()
            for topic, group in sorted(by_topic.items()):
                types = {c.msgtype for c in group}
                if len(types) > 1:
                    stats.skipped_topics[topic] = f"several types {sorted(types)}"
                    continue
                try:
                    cls = message_class(group[0].msgtype)
                except (ImportError, ValueError) as exc:
                    stats.skipped_topics[topic] = f"type {group[0].msgtype} unavailable ({exc})"
                    continue
                offered = [q for c in group for q in getattr(c.ext, "offered_qos_profiles", [])]
                profile = qos_profile(topic, offered)
                publishers[topic] = node.create_publisher(cls, topic, profile)
                if profile.durability.name == "TRANSIENT_LOCAL":
                    latched.add(topic)
            for topic, why in stats.skipped_topics.items():
                node.get_logger().warning(f"{topic}: not played: {why}")
            play_conns = [c for c in conns if c.topic in publishers]
            if not play_conns:
                raise ReplayError(f"{bag}: nothing to play")
            clock_pub = None
            if clock:
                from rclpy.qos import QoSProfile, ReliabilityPolicy
                from rosgraph_msgs.msg import Clock

                clock_pub = node.create_publisher(
                    Clock, CLOCK_TOPIC, QoSProfile(depth=1,
                                                   reliability=ReliabilityPolicy.RELIABLE))
            waited = [t for t in publishers if t not in latched] if wait_for_subscribers else []
            waited += [t for t in wait_for if t not in waited]
            if waited:
                _wait_for_subscribers(node, publishers, waited, wait_timeout)
            if delay > 0:
                time.sleep(delay)

            begin = reader.start_time + round(start_offset * 1e9)
            end = reader.end_time
            if begin > end:
                raise ReplayError(f"--start-offset {start_offset} s is past the bag's end "
                                  f"({(end - reader.start_time) / 1e9:.3f} s)")
            total_s = (end - begin) / 1e9
            bar = _Progress(progress, total_s)
            # latched topics: their last messages before `begin`, so late joiners still get them
            if begin > reader.start_time:
                _publish_latched_history(reader, play_conns, latched, publishers, begin, stats)
            while True:
                stats.loops += 1
                played_s = _play_once(reader, play_conns, publishers, latched, clock_pub, begin,
                                      rate, clock_hz, stats, bar)
                stats.bag_seconds += played_s
                if not loop or (max_loops is not None and stats.loops >= max_loops):
                    break
            bar.update(total_s, stats, rate, force=True)
            bar.done()
            for pub in publishers.values():
                pub.wait_for_all_acked(Duration(seconds=2))
    except KeyboardInterrupt:
        stats.interrupted = True
        print(file=sys.stderr)
    finally:
        for pub in publishers.values():
            node.destroy_publisher(pub)
        if own:
            node.destroy_node()
        if own_context and rclpy.ok():
            rclpy.shutdown()
    return stats


def _wait_for_subscribers(node, publishers: dict, topics: Sequence[str],
                          timeout: float) -> None:
    """Block until each of `topics` (played ones) has at least one matched subscriber, then
    `DISCOVERY_SETTLE` seconds more."""
    unplayed = [t for t in topics if t not in publishers]
    if unplayed:
        raise ReplayError(f"cannot wait for subscribers on {unplayed}: not played (not in the "
                          f"bag, left out by --topics, or of an unavailable type); played: "
                          f"{sorted(publishers)}")
    logger = node.get_logger()
    logger.info(f"waiting for subscribers on {len(topics)} topics")
    start = time.monotonic()
    pending = list(topics)
    while pending:
        pending = [t for t in pending if publishers[t].get_subscription_count() == 0]
        waited = time.monotonic() - start
        if pending and waited > timeout:
            raise ReplayError(f"no subscriber after {timeout:g} s (--wait-timeout) on "
                              f"{', '.join(pending)}: is the node up, and subscribed under "
                              f"these names (remappings)?")
        if pending:
            time.sleep(0.02)
    logger.info(f"all {len(topics)} topics subscribed after {time.monotonic() - start:.1f} s")
    time.sleep(DISCOVERY_SETTLE)


def _publish_latched_history(reader, conns, latched, publishers, begin, stats) -> None:
    history: dict[str, list[bytes]] = {}
    depth = {t: max(1, publishers[t].qos_profile.depth) for t in latched}
    for conn, _, raw in reader.messages(connections=[c for c in conns if c.topic in latched],
                                        stop=begin):
        history.setdefault(conn.topic, []).append(raw)
        del history[conn.topic][:-depth[conn.topic]]
    for topic, raws in history.items():
        for raw in raws:
            publishers[topic].publish(bytes(raw))
            stats.messages += 1


def _play_once(reader, conns, publishers, latched: set[str], clock_pub, begin: int,
               rate: float, clock_hz: float, stats: ReplayStats, bar: _Progress) -> float:
    """One pass from `begin`; returns the bag seconds covered. A latched message (`/tf_static`)
    is what the messages after it need, and DDS keeps no order across topics: playback goes
    on once the subscribers have acknowledged it (at most `LATCHED_ACK_WAIT`)."""
    from rclpy.duration import Duration

    clock_msg = None
    if clock_pub is not None:
        from rosgraph_msgs.msg import Clock

        clock_msg = Clock()
    clock_period = 1.0 / clock_hz if clock_hz > 0 else math.inf
    wall0 = time.monotonic()
    last_log = begin
    next_clock = wall0

    def publish_clock(log_ns: int):
        clock_msg.clock.sec, clock_msg.clock.nanosec = divmod(int(log_ns), 1_000_000_000)
        clock_pub.publish(clock_msg)

    for conn, log_ns, raw in reader.messages(connections=conns, start=begin):
        target = wall0 + (log_ns - begin) / 1e9 / rate
        while True:
            now = time.monotonic()
            if now >= target:
                break
            if clock_msg is not None and now >= next_clock:
                publish_clock(begin + int((now - wall0) * rate * 1e9))
                next_clock = now + clock_period
            wait = target - now
            if clock_msg is not None:
                wait = min(wait, max(0.0, next_clock - now))
            time.sleep(min(wait, 0.1))
            bar.update((time.monotonic() - wall0) * rate, stats, rate)
        if clock_msg is not None:
            publish_clock(log_ns)
        data = raw if isinstance(raw, bytes) else bytes(raw)
        publishers[conn.topic].publish(data)
        if conn.topic in latched:
            publishers[conn.topic].wait_for_all_acked(Duration(seconds=LATCHED_ACK_WAIT))
        stats.messages += 1
        stats.bytes += len(data)
        stats.per_topic[conn.topic] = stats.per_topic.get(conn.topic, 0) + 1
        last_log = log_ns
        bar.update((log_ns - begin) / 1e9, stats, rate)
    stats.wall_seconds += time.monotonic() - wall0
    return (last_log - begin) / 1e9


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imkd-replay",
        description="Play a rosbag2 (MCAP or sqlite3) onto live ROS 2 topics with the recorded "
                    "timing and QoS, without `ros2 bag play`.")
    parser.add_argument("bag", type=Path,
                        help="rosbag2 directory, or a single .mcap / .db3 storage file")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback speed factor (default 1.0; inf: as fast as possible)")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="S",
                        help="start S seconds into the bag")
    parser.add_argument("--loop", action="store_true", help="play again from the start")
    parser.add_argument("--clock", action="store_true",
                        help="publish the bag time on /clock (rosgraph_msgs/Clock)")
    parser.add_argument("--clock-hz", type=float, default=40.0,
                        help="/clock rate while waiting between messages (default 40)")
    parser.add_argument("--topics", nargs="+", default=None, metavar="TOPIC",
                        help="play only these topics")
    parser.add_argument("--delay", type=float, default=0.0, metavar="D",
                        help="wait D seconds after creating the publishers (discovery)")
    parser.add_argument("--wait-for-subscribers", action="store_true",
                        help="start only once every non-latched topic has a subscriber")
    parser.add_argument("--wait-for", nargs="+", default=[], metavar="TOPIC",
                        help="start only once each of these topics has a subscriber (e.g. "
                             "the inputs of the node the bag is for)")
    parser.add_argument("--wait-timeout", type=float, default=60.0, metavar="S",
                        help="give up waiting for subscribers after S seconds (default 60)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`argv`: the arguments without the program name (default: sys.argv[1:])."""
    from rclpy.utilities import remove_ros_args

    command_line = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    args = build_parser().parse_args(remove_ros_args(command_line)[1:])
    interrupt_once()  # Ctrl-C or SIGTERM: the first ends playback, later ones are ignored
    try:
        stats = play(args.bag, rate=args.rate, start_offset=args.start_offset, loop=args.loop,
                     clock=args.clock, clock_hz=args.clock_hz, topics=args.topics,
                     delay=args.delay, wait_for_subscribers=args.wait_for_subscribers,
                     wait_for=args.wait_for, wait_timeout=args.wait_timeout,
                     progress=not args.quiet, ros_args=command_line)
    except KeyboardInterrupt:  # before playback started (e.g. while opening)
        print("imkd-replay: interrupted", file=sys.stderr)
        return 0
    except (ReplayError, BagError) as exc:
        print(f"imkd-replay: error: {exc}", file=sys.stderr)
        return 1
    print(f"imkd-replay: {stats.line()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
