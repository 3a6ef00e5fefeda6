"""imkd-replay over real DDS: a subscriber in another process receives every message of a bag,
per topic in recorded order, byte-identical up to DDS's zero padding to 4 bytes (hence with
the recorded stamps), plus the latched /tf_static when it subscribes late, and /clock; with
`--wait-for` nothing is played before the named topics have subscribers, and it gives up with
a message naming them; ROS arguments (as launch_ros's `Node` passes them) reach rclpy; Ctrl-C
ends playback cleanly, also when it comes again during the clean-up."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from nuscenes_minimal import write_minimal_nuscenes
from ros_rig import interrupt_until_exit

VENV_BIN = Path(sys.executable).parent

SUBSCRIBER = r'''
import hashlib, json, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy, HistoryPolicy
from rclpy.serialization import deserialize_message
import importlib

spec = json.loads(sys.argv[1])
expected = spec["expected"]          # topic -> count (tf_static excluded)
types = spec["types"]                # topic -> 'pkg/msg/Name'
late_after = spec["late_after"]      # subscribe to /tf_static after this many messages
timeout = spec["timeout"]

def cls(t):
    p, k, n = t.split("/")
    return getattr(importlib.import_module(f"{p}.{k}"), n)

rclpy.init()
node = rclpy.create_node("replay_test_subscriber")
got = {t: [] for t in types}
order = []
def stamp_of(msg):
    h = getattr(msg, "header", None)
    if h is None and hasattr(msg, "transforms") and msg.transforms:
        h = msg.transforms[0].header
    return None if h is None else h.stamp.sec * 1_000_000_000 + h.stamp.nanosec

def callback(topic):
    def cb(raw):
        msg = deserialize_message(raw, cls(types[topic]))
        got[topic].append([hashlib.sha1(raw).hexdigest(), stamp_of(msg)])
        order.append(topic)
    return cb

data_qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
subs = [node.create_subscription(cls(types[t]), t, callback(t), data_qos, raw=True)
        for t in expected]
clock = []
from rosgraph_msgs.msg import Clock
subs.append(node.create_subscription(
    Clock, "/clock", lambda m: clock.append(m.clock.sec * 1_000_000_000 + m.clock.nanosec),
    QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)))
print("READY", flush=True)
late = None
late_at = None
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.05)
    if late is None and len(order) >= late_after:
        late_at = len(order)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        late = node.create_subscription(cls(types["/tf_static"]), "/tf_static",
                                        callback("/tf_static"), latched, raw=True)
    if (all(len(got[t]) >= n for t, n in expected.items()) and got["/tf_static"]):
        break
for _ in range(10):  # anything still in flight
    rclpy.spin_once(node, timeout_sec=0.05)
print(json.dumps({"got": got, "late_at": late_at, "clock": clock}), flush=True)
node.destroy_node()
rclpy.shutdown()
'''


@pytest.fixture(scope="module")
def one_scene_bag(tmp_path_factory) -> Path:
    from imkd_ros.nuscenes2bag import convert

    root = write_minimal_nuscenes(tmp_path_factory.mktemp("nusc"))
    out = tmp_path_factory.mktemp("bags") / "scene1"
    convert(root, out, scenes=["scene-0001"], progress=False)
    return out


def _bag_contents(bag: Path) -> tuple[dict[str, list[str]], dict[str, str], int, int]:
    from rosbags.rosbag2 import Reader

    hashes: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            # DDS pads a serialized payload with zeros to a multiple of 4 bytes
            padded = bytes(raw) + b"\0" * (-len(raw) % 4)
            hashes.setdefault(conn.topic, []).append(hashlib.sha1(padded).hexdigest())
            types[conn.topic] = conn.msgtype
        return hashes, types, reader.start_time, reader.end_time


def _bag_stamps(bag: Path) -> dict[str, list[int]]:
    from rosbags.rosbag2 import Reader

    from imkd_core.wire.fields import stamp_ns
    from imkd_core.wire.typestore import typestore

    store = typestore()
    stamps: dict[str, list[int]] = {}
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            header = getattr(msg, "header", None)
            if header is None and getattr(msg, "transforms", None):
                header = msg.transforms[0].header
            if header is None and getattr(msg, "markers", None):
                continue  # the subscriber reads no stamp from a MarkerArray
            if header is not None:
                stamps.setdefault(conn.topic, []).append(stamp_ns(header.stamp))
    return stamps


@pytest.mark.ros
def test_subscriber_process_receives_every_message_in_order(one_scene_bag):
    hashes, types, start, end = _bag_contents(one_scene_bag)
    assert len(hashes["/tf_static"]) == 1
    expected = {t: len(h) for t, h in hashes.items() if t != "/tf_static"}
    total = sum(expected.values())
    spec = {"expected": expected, "types": types, "late_after": total // 2, "timeout": 60}
    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, json.dumps(spec)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sub.stdout.readline().strip() == "READY", sub.stderr.read()
        replay = subprocess.run(
            [str(VENV_BIN / "imkd-replay"), str(one_scene_bag), "--rate", "0.5", "--clock",
             "--wait-for-subscribers", "--delay", "0.5"],
            capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stderr
        assert "Traceback" not in replay.stderr
        assert f"played {total + 1} messages" in replay.stderr
        out, err = sub.communicate(timeout=90)
    finally:
        if sub.poll() is None:
            sub.kill()
    assert sub.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    got = result["got"]
    for topic, recorded in hashes.items():
        received = [h for h, _ in got[topic]]
        assert received == recorded, f"{topic}: {len(received)} of {len(recorded)} messages"
    # stamps: what the subscriber decoded equals the bag's header stamps, in time order
    for topic, stamps in _bag_stamps(one_scene_bag).items():
        received = [s for _, s in got[topic]]
        assert received == stamps, topic
        if topic not in ("/tf_static", "/gt/markers"):
            assert received == sorted(received)
    # /tf_static was published once, at the start, and still reached a subscriber that joined
    # half-way through: transient-local (latched) QoS taken from the bag's metadata
    assert result["late_at"] >= total // 2
    assert len(got["/tf_static"]) == 1
    # /clock ran with the bag time, never backwards, up to the last message
    clock = result["clock"]
    assert clock and clock == sorted(clock)
    assert start <= clock[0] and clock[-1] == end - 1  # rosbags: end_time = last + 1 ns


@pytest.mark.ros
def test_ctrl_c_stops_playback_cleanly(one_scene_bag):
    proc = subprocess.Popen(
        [str(VENV_BIN / "imkd-replay"), str(one_scene_bag), "--loop", "--rate", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().startswith("imkd-replay: ")  # playing: first progress line
    time.sleep(1.0)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped by Ctrl-C" in err


@pytest.mark.ros
def test_repeated_sigint_is_a_clean_exit(one_scene_bag):
    proc = subprocess.Popen(
        [str(VENV_BIN / "imkd-replay"), str(one_scene_bag), "--loop", "--rate", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().startswith("imkd-replay: ")
    assert interrupt_until_exit(proc, period=0.0) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


@pytest.mark.ros
def test_ros_arguments_reach_rclpy_and_wait_for_times_out_naming_topics(one_scene_bag):
    """launch_ros's `Node` appends `--ros-args -r __node:=NAME`; `--wait-for` on a topic
    nobody subscribes to gives up after --wait-timeout with exit status 1, naming it."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("replay_graph_watcher", context=context)
    name = f"renamed_replay_{os.getpid()}"
    proc = subprocess.Popen(
        [str(VENV_BIN / "imkd-replay"), str(one_scene_bag), "--quiet", "--wait-for",
         "/RADAR_FRONT", "/LIDAR_TOP", "--wait-timeout", "3", "--ros-args", "-r",
         f"__node:={name}", "-p", "use_sim_time:=true"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = False
        deadline = time.monotonic() + 20
        while not seen and proc.poll() is None and time.monotonic() < deadline:
            seen = name in node.get_node_names()
            time.sleep(0.05)
        _, err = proc.communicate(timeout=30)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert seen, f"no node {name} in the graph: {err}"
    assert proc.returncode == 1, err
    assert "unrecognized arguments" not in err and "Traceback" not in err, err
    assert ("imkd-replay: error: no subscriber after 3 s (--wait-timeout) on /RADAR_FRONT, "
            "/LIDAR_TOP") in err, err


@pytest.mark.ros
def test_wait_for_plays_nothing_before_the_subscriber_exists(one_scene_bag):
    hashes, types, _, _ = _bag_contents(one_scene_bag)
    replay = subprocess.Popen(
        [str(VENV_BIN / "imkd-replay"), str(one_scene_bag), "--rate", "inf", "--quiet",
         "--wait-for", "/RADAR_FRONT", "/tf_static"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)  # the replay is up and waiting: nothing may be lost meanwhile
        assert replay.poll() is None, replay.communicate()
        spec = {"expected": {"/RADAR_FRONT": len(hashes["/RADAR_FRONT"])}, "types": types,
                "late_after": 0, "timeout": 60}
        sub = subprocess.run([sys.executable, "-c", SUBSCRIBER, json.dumps(spec)],
                             capture_output=True, text=True, timeout=90)
        _, err = replay.communicate(timeout=60)
    finally:
        if replay.poll() is None:
            replay.kill()
    assert replay.returncode == 0, err
    assert sub.returncode == 0, sub.stderr
    got = json.loads(sub.stdout.strip().splitlines()[-1])["got"]
    assert [h for h, _ in got["/RADAR_FRONT"]] == hashes["/RADAR_FRONT"]
    assert [h for h, _ in got["/tf_static"]] == hashes["/tf_static"]


@pytest.mark.ros
def test_sigterm_stops_playback_cleanly(one_scene_bag):
    proc = subprocess.Popen(
        [str(VENV_BIN / "imkd-replay"), str(one_scene_bag), "--loop"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().startswith("imkd-replay: ")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err, err


@pytest.mark.ros
def test_replay_api_rate_topics_offset_and_loop(one_scene_bag):
    from imkd_ros.replay import ReplayError, play

    hashes, _, start, end = _bag_contents(one_scene_bag)
    stats = play(one_scene_bag, rate=float("inf"), topics=["/LIDAR_TOP", "/tf_static"],
                 loop=True, max_loops=2, progress=False)
    assert stats.loops == 2
    assert stats.per_topic == {"/LIDAR_TOP": 2 * len(hashes["/LIDAR_TOP"]), "/tf_static": 2}
    assert stats.rate_factor > 2.0
    # --start-offset: later messages only, but the latched /tf_static is re-published first
    offset = (end - start) / 2e9
    stats = play(one_scene_bag, rate=float("inf"), start_offset=offset,
                 topics=["/LIDAR_TOP", "/tf_static"], progress=False)
    assert 0 < stats.per_topic["/LIDAR_TOP"] < len(hashes["/LIDAR_TOP"])
    assert stats.messages == stats.per_topic["/LIDAR_TOP"] + 1
    with pytest.raises(ReplayError, match="not in"):
        play(one_scene_bag, topics=["/nope"], progress=False)
    with pytest.raises(ReplayError, match="rate"):
        play(one_scene_bag, rate=0, progress=False)


def test_recorded_qos_is_adapted_like_ros2_bag_play():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from imkd_core.data.bag_writer import bag_qos
    from imkd_core.wire.names import QOS_DATA, QOS_LATCHED
    from imkd_ros.replay import qos_profile

    data_offer, latched_offer = bag_qos(QOS_DATA), bag_qos(QOS_LATCHED)  # as bags record them
    latched = qos_profile("/tf_static", [latched_offer])
    assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert latched.reliability == ReliabilityPolicy.RELIABLE and latched.depth == 1
    data = qos_profile("/LIDAR_TOP", [data_offer])
    assert data.durability == DurabilityPolicy.VOLATILE and data.depth == 10
    mixed = qos_profile("/x", [data_offer, latched_offer])  # not every offer latched -> volatile
    assert mixed.durability == DurabilityPolicy.VOLATILE
    assert qos_profile("/tf_static", []).durability == DurabilityPolicy.TRANSIENT_LOCAL


def test_environment_is_local_only():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
