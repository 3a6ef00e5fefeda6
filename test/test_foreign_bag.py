"""Bags from other tools: a bare `.mcap` in the layout of another public nuScenes converter
(images on /CAM_X/image_rect_compressed, the sensor mounts on /tf at keyframe stamps and no
/tf_static, an MCAP profile that is not `ros2`, a protobuf channel beside the CDR ones) is read
by `open_reader`, played by `imkd-replay`, and the node gets detections from it; library
errors become one clear `BagError`.

The bag is made here from a tiny-world `nuscenes2bag` bag with the reference `mcap` writer:
the same message bytes, renamed and re-stamped as that converter lays them out."""

from __future__ import annotations

import dataclasses
import os
import runpy
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import Writer
from rosbags.rosbag2 import Reader, ReaderError
from tiny_world import TINY_WORLD

from imkd_core.data.bag_reader import open_reader, read_bag_samples, read_keyframe_records
from imkd_core.data.bag_writer import BagError
from imkd_core.data.options import ReaderOptions
from imkd_core.data.world import generate_world
from imkd_core.geometry import make_transform
from imkd_core.sample import CAMERA_NAMES, RADAR_NAMES
from imkd_core.wire.typestore import typestore
from imkd_ros.tf_buffer import TfCache, TfLookupError

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "detector.launch.py"
SUFFIX = "image_rect_compressed"
DROPPED = ("/tf_static", "/imkd/keyframes", "/gt/detections", "/gt/markers")
PROTOBUF_TOPIC = "/markers/annotations"


@pytest.fixture(scope="module")
def own_bag(tmp_path_factory) -> Path:
    """The tiny world's first scene alone, as nuscenes2bag writes it (MCAP, compressed
    images)."""
    from imkd_ros.nuscenes2bag import convert

    root = generate_world(tmp_path_factory.mktemp("world"), dataclasses.replace(
        TINY_WORLD, scenes=1, val_fraction=0.0), workers=1)
    out = tmp_path_factory.mktemp("bags") / "own"
    convert(root, out, scenes=["scene-0001"], images="compressed", progress=False)
    return out


def write_foreign_mcap(own_bag: Path, out: Path, profile: str = "") -> Path:
    """`own_bag` re-laid out as the other converter writes it (module doc)."""
    store = typestore()
    keyframes = sorted(r.timestamp for r in read_keyframe_records(own_bag))
    with open(next(own_bag.glob("*.mcap")), "rb") as source:
        messages = list(make_reader(source).iter_messages(log_time_order=True))
    mounts = []
    for schema, channel, message in messages:
        if channel.topic == "/tf_static":
            mounts = store.deserialize_cdr(message.data, schema.name).transforms
    assert mounts, "the source bag has no /tf_static"
    tf_schema = next(s for s, c, _ in messages if c.topic == "/tf")
    time_type = store.types["builtin_interfaces/msg/Time"]
    tf_type = store.types["tf2_msgs/msg/TFMessage"]

    def mounts_at(stamp: int) -> bytes:
        stamped = [dataclasses.replace(tr, header=dataclasses.replace(
            tr.header, stamp=time_type(sec=stamp // 10**9, nanosec=stamp % 10**9)))
                   for tr in mounts]
        return bytes(store.serialize_cdr(tf_type(transforms=stamped), "tf2_msgs/msg/TFMessage"))

    with open(out, "wb") as stream:
        writer = Writer(stream)
        writer.start(profile=profile, library="another-nuscenes-converter")
        schema_ids: dict[str, int] = {}
        channel_ids: dict[str, int] = {}

        def write(topic: str, schema, log_time: int, data: bytes) -> None:
            if schema.name not in schema_ids:
                schema_ids[schema.name] = writer.register_schema(schema.name, schema.encoding,
                                                                 schema.data)
            if topic not in channel_ids:
                channel_ids[topic] = writer.register_channel(topic, "cdr",
                                                             schema_ids[schema.name])
            writer.add_message(channel_ids[topic], log_time=log_time, data=data,
                               publish_time=log_time)

        pending = list(keyframes)
        for schema, channel, message in messages:
            while pending and pending[0] <= message.log_time:  # the mounts, per keyframe
                write("/tf", tf_schema, pending[0], mounts_at(pending.pop(0)))
            if channel.topic in DROPPED:
                continue
            write(channel.topic.replace("/image_raw/compressed", f"/{SUFFIX}"), schema,
                  message.log_time, message.data)
        # a channel this project cannot read, as such converters also write
        proto = writer.register_schema("foxglove.SceneUpdate", "protobuf", b"\x0a\x00")
        writer.add_message(writer.register_channel(PROTOBUF_TOPIC, "protobuf", proto),
                           log_time=keyframes[0], data=b"\x0a\x00", publish_time=keyframes[0])
        writer.finish()
    return out


@pytest.fixture(scope="module")
def foreign_mcap(own_bag, tmp_path_factory) -> Path:
    return write_foreign_mcap(own_bag, tmp_path_factory.mktemp("foreign") / "scene-0001.mcap")


# ---------------------------------------------------------------------------------- reading
def test_bare_foreign_mcap_is_read_with_its_cdr_channels(own_bag, foreign_mcap):
    with open_reader(own_bag) as reader:
        own = {c.topic: c for c in reader.connections}
    with open_reader(foreign_mcap) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert reader.skipped_topics == {
            PROTOBUF_TOPIC: "message encoding 'protobuf', not ROS 2 'cdr'"}
        for cam in CAMERA_NAMES:
            image = conns[f"/{cam}/{SUFFIX}"]
            assert image.msgtype == "sensor_msgs/msg/CompressedImage"
            assert image.msgcount == own[f"/{cam}/image_raw/compressed"].msgcount
        assert {f"/{r}" for r in RADAR_NAMES} <= set(conns)
        assert not set(DROPPED) & set(conns)
        keyframes = len(read_keyframe_records(own_bag))
        assert conns["/tf"].msgcount == own["/tf"].msgcount + keyframes
        log_times = [t for _, t, _ in reader.messages()]
        assert log_times == sorted(log_times)
        assert reader.start_time == log_times[0] and reader.end_time == log_times[-1] + 1
        # start/stop bound log time as rosbags does: start <= t < stop
        middle = log_times[len(log_times) // 2]
        assert [t for _, t, _ in reader.messages(start=middle)] == [
            t for t in log_times if t >= middle]
        tf_only = list(reader.messages(connections=[conns["/tf"]], stop=middle))
        assert tf_only and {c.topic for c, _, _ in tf_only} == {"/tf"}
        mounts = [typestore().deserialize_cdr(raw, "tf2_msgs/msg/TFMessage")
                  for c, _, raw in reader.messages(connections=[conns["/tf"]])]
    children = {tr.child_frame_id for m in mounts for tr in m.transforms
                if tr.header.frame_id == "base_link"}
    assert set(CAMERA_NAMES) | set(RADAR_NAMES) <= children


def test_foreign_mcap_with_metadata_yaml_is_read_too(own_bag, foreign_mcap, tmp_path):
    """Someone adds a metadata.yaml to make it 'a rosbag2 directory': rosbags then refuses
    the profile; the reader still reads it."""
    directory = tmp_path / "foreign_dir"
    directory.mkdir()
    shutil.copy(foreign_mcap, directory / "foreign_dir_0.mcap")
    metadata = (own_bag / "metadata.yaml").read_text().replace(
        f"{own_bag.name}.mcap", "foreign_dir_0.mcap")
    (directory / "metadata.yaml").write_text(metadata)
    with pytest.raises(ReaderError, match="Profile is not ros2"):  # rosbags alone
        Reader(directory).open()
    with open_reader(directory) as reader, open_reader(foreign_mcap) as bare:
        assert [c.topic for c in reader.connections] == [c.topic for c in bare.connections]
        assert sum(1 for _ in reader.messages()) == sum(1 for _ in bare.messages())


def test_bare_own_mcap_reads_the_same_samples_as_its_directory(own_bag):
    options = ReaderOptions(load_lidar=False)
    from_dir = list(read_bag_samples(own_bag, options))
    from_file = list(read_bag_samples(next(own_bag.glob("*.mcap")), options))
    assert len(from_dir) == len(from_file) == 3
    for a, b in zip(from_dir, from_file):
        assert a.token == b.token
        for cam in a.cameras:
            np.testing.assert_array_equal(a.cameras[cam].image, b.cameras[cam].image)
        for radar in a.radars:
            np.testing.assert_array_equal(a.radars[radar].points, b.radars[radar].points)


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "missing.mcap", "no such bag"),
    (lambda d: _write(d / "notes.txt", b"hello"), "not a bag: give a rosbag2 directory or a"),
    (lambda d: _write(d / "garbage.mcap", b"not an mcap at all"),
     "garbage.mcap: cannot read the bag: ReaderError: File magic is invalid"),
    (lambda d: _write(d / "empty.db3", b""), "empty.db3: cannot read the bag: "),
    (lambda d: _mkdir(d / "run.partial"), "not a finished rosbag2 directory"),
])
def test_unreadable_bags_are_one_clear_error(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(BagError, match=match) as info:
        with open_reader(path):
            pass
    assert str(path) in str(info.value)


def test_truncated_foreign_mcap_is_a_bag_error(foreign_mcap, tmp_path):
    broken = _write(tmp_path / "broken.mcap", foreign_mcap.read_bytes()[:200_000])
    with pytest.raises(BagError, match=f"{broken}: cannot read"):
        with open_reader(broken) as reader:
            for _ in reader.messages():
                pass


@pytest.mark.ros  # it starts a ROS node before opening the bag
def test_replay_cli_names_the_file_instead_of_a_traceback(tmp_path):
    from ros_rig import VENV_BIN

    bad = _write(tmp_path / "garbage.mcap", b"\x89MCAP0\r\n-broken-")
    result = subprocess.run([str(VENV_BIN / "imkd-replay"), str(bad), "--quiet"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"imkd-replay: error: {bad}: cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    (path / "run_0.mcap").write_bytes(b"")
    return path


# ------------------------------------------------------------------------- mounts from /tf
def test_a_mount_that_never_moves_on_tf_is_static():
    cache = TfCache()
    with pytest.raises(TfLookupError, match="waiting for base_link -> CAM_FRONT on "
                                            "/tf_static or /tf"):
        cache.static_lookup("base_link", "CAM_FRONT")
    mount = make_transform([0.5, -0.5, 0.5, -0.5], [1.7, 0.0, 1.5])
    for k in range(3):  # republished at every keyframe
        cache.add("base_link", "CAM_FRONT", k * 500_000_000, mount)
    np.testing.assert_array_equal(cache.static_lookup("base_link", "CAM_FRONT"), mount)
    # /tf_static wins over /tf
    cache.set_static("base_link", "CAM_FRONT", np.eye(4))
    np.testing.assert_array_equal(cache.static_lookup("base_link", "CAM_FRONT"), np.eye(4))
    # an edge that moves is no mount, and the error says so
    cache.add("base_link", "arm", 0, mount)
    cache.add("base_link", "arm", 10, make_transform([1, 0, 0, 0], [0.0, 0.0, 0.5]))
    with pytest.raises(TfLookupError, match="/tf base_link -> arm moves: not a fixed sensor"):
        cache.static_lookup("base_link", "arm")


# --------------------------------------------------------------------- replay + the node
@pytest.mark.ros
@pytest.mark.slow
def test_replayed_foreign_mcap_gives_detections(foreign_mcap, own_bag, tmp_path):
    """imkd-replay plays the bare file; the node, remapped as the launch file does with
    compressed:=true camera_suffix:=image_rect_compressed, takes the mounts from /tf and
    detects on every keyframe after the first mounts came (the first keyframe's images are
    older than its /tf mounts: dropped, with a warning saying what the node waits for)."""
    import rclpy
    from ros_rig import NS, VENV_BIN, DetectorProcess, Rig, write_random_checkpoint

    pytest.importorskip("launch_ros", reason="the launch file imports launch_ros")
    launch = runpy.run_path(str(LAUNCH_FILE))
    remaps = dict(launch["remappings"](True, SUFFIX))
    inputs = launch["detector_inputs"]({"trigger": "cameras"}, True, SUFFIX)
    assert f"/CAM_FRONT/{SUFFIX}" in inputs and "/tf_static" in inputs
    inputs.remove("/tf_static")  # not in this bag: nothing to wait for
    records = read_keyframe_records(own_bag)
    expected = {max(r.data[c] for c in CAMERA_NAMES) for r in records[1:]}  # trigger stamps

    checkpoint = write_random_checkpoint(tmp_path / "tiny_random.pt")
    context = rclpy.Context()
    rclpy.init(context=context)
    name = f"det_foreign_{os.getpid()}"
    node = DetectorProcess(name, {
        "checkpoint": str(checkpoint), "device": "cpu", "compressed_images": True,
        "trigger": "cameras", "score_threshold": 0.0, "queue_size": 10,
        "reliable_inputs": True, "use_sim_time": True, "status_period": 0.2}, tmp_path, remaps)
    rig = Rig(context, name, (), ())
    replay = None
    try:
        rig.wait_ready(node)
        replay = subprocess.Popen([str(VENV_BIN / "imkd-replay"), str(foreign_mcap), "--rate",
                                   "0.5", "--clock", "--quiet", "--wait-for", *inputs],
                                  stderr=subprocess.PIPE, text=True)
        rig.spin_until(lambda: replay.poll() is not None, 120, "the replay to finish")
        replay_log = replay.stderr.read()
        assert replay.returncode == 0, replay_log
        assert f"{PROTOBUF_TOPIC}: not played" in replay_log
        stamps = lambda: {d.header.stamp.sec * NS + d.header.stamp.nanosec  # noqa: E731
                          for d in rig.detections}
        rig.spin_until(lambda: expected <= stamps(), 60,
                       f"detections for keyframes at {sorted(expected)}")
        rig.spin(0.5)
    finally:
        if replay is not None and replay.poll() is None:
            replay.kill()
        rig.node.destroy_node()
        node.stop()
        rclpy.try_shutdown(context=context)
        print(node.log())  # shown by pytest when the test fails
    assert stamps() == expected
    assert all(d.header.frame_id == "base_link" and d.detections for d in rig.detections)
    log = node.log()
    assert "waiting for base_link -> CAM_FRONT on /tf_static or /tf" in log
    assert "Traceback" not in log
    # while everything was dropped the status said so; once detecting, it did not
    assert any(s["mode"] == "degraded" and "dropping_all" in s for s in rig.status), rig.status
    done = [s for s in rig.status if s["frames_done"] >= len(expected)]
    assert done and "dropping_all" not in done[-1]
