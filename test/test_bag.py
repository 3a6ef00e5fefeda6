"""nuscenes2bag and the bag reader: the real keyframe converts (cameras + LiDAR), MCAP and
sqlite3 bags read back into Samples equal to NuScenesReader's, the bag layout (topics, frames,
stamps, QoS, metadata version 8, ground truth), and failure handling (missing/corrupt files,
interrupted conversions never leave a finished-looking bag)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from nuscenes_minimal import CAMERAS, RADARS, loadable_real_copy, write_minimal_nuscenes

from imkd_core.data.bag_reader import read_bag_samples, read_keyframe_records
from imkd_core.data.bag_writer import BagError
from imkd_core.data.nuscenes import NuScenesReader, read_image
from imkd_core.data.options import ReaderOptions
from imkd_core.sample import CAMERA_NAMES, CLASSES, GT_COLOR, LIDAR_NAME, RADAR_NAMES
from imkd_core.wire.fields import stamp_ns
from imkd_core.wire.typestore import typestore
from imkd_ros.nuscenes2bag import Nuscenes2BagError, convert

VENV_BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------ helpers
def assert_samples_equal(a, b, path="sample"):
    """Exact equality of two Samples (arrays: dtype, shape and every value)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            assert_samples_equal(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (path, sorted(a), sorted(b))
        for key in a:
            assert_samples_equal(a[key], b[key], f"{path}[{key}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert (a.dtype, a.shape) == (b.dtype, b.shape), (path, a.dtype, b.dtype, a.shape,
                                                          b.shape)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    else:
        assert a == b, (path, a, b)


def bag_messages(bag: Path):
    """[(topic, log_ns, message)] in log order, deserialised with the shared store."""
    from rosbags.rosbag2 import Reader

    store = typestore()
    with Reader(bag) as reader:
        return [(c.topic, t, store.deserialize_cdr(raw, c.msgtype))
                for c, t, raw in reader.messages()]


def sample_data_by_channel(root: Path, version: str) -> dict[str, list[dict]]:
    tables = root / version
    sensors = {s["token"]: s["channel"] for s in json.loads((tables / "sensor.json").read_text())}
    calib = {c["token"]: sensors[c["sensor_token"]]
             for c in json.loads((tables / "calibrated_sensor.json").read_text())}
    out: dict[str, list[dict]] = {}
    for sd in json.loads((tables / "sample_data.json").read_text()):
        out.setdefault(calib[sd["calibrated_sensor_token"]], []).append(sd)
    return {ch: sorted(sds, key=lambda s: s["timestamp"]) for ch, sds in out.items()}


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def real_root(real_nuscenes_dir, tmp_path_factory) -> Path:
    return loadable_real_copy(real_nuscenes_dir, tmp_path_factory.mktemp("real") / "nuscenes")


@pytest.fixture(scope="module")
def real_reader(real_root) -> NuScenesReader:
    return NuScenesReader(real_root, "v1.0-test")


@pytest.fixture(scope="module")
def real_bag(real_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real_bag") / "real"
    summary = convert(real_root, out, progress=False)
    assert summary.keyframes == 1 and summary.scenes == 1 and not summary.skipped
    return out


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    return write_minimal_nuscenes(tmp_path_factory.mktemp("mini") / "nuscenes")


@pytest.fixture(scope="module")
def mini_reader(mini_root) -> NuScenesReader:
    return NuScenesReader(mini_root, "v1.0-mini", options=ReaderOptions(cameras=CAMERAS,
                                                                        radars=RADARS))


@pytest.fixture(scope="module")
def mini_bag(mini_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini_bag") / "mini"
    convert(mini_root, out, progress=False)
    return out


# -------------------------------------------------------------------------- the real keyframe
def test_real_keyframe_converts_with_cameras_and_lidar(real_bag, real_root):
    topics = {t for t, _, _ in bag_messages(real_bag)}
    expected = {f"/{c}/image_raw" for c in CAMERA_NAMES} | {
        f"/{c}/camera_info" for c in CAMERA_NAMES} | {
        "/LIDAR_TOP", "/tf", "/tf_static", "/gt/detections", "/gt/markers", "/imkd/keyframes"}
    assert topics == expected  # no radar in this keyframe, so no radar topic
    assert (real_bag / "metadata.yaml").is_file()
    assert not real_bag.with_name(real_bag.name + ".partial").exists()
    lidar = [m for t, _, m in bag_messages(real_bag) if t == "/LIDAR_TOP"]
    assert len(lidar) == 1 and lidar[0].width == 34688
    assert [f.name for f in lidar[0].fields] == ["x", "y", "z", "intensity", "ring"]


def test_real_keyframe_reads_back_equal_to_the_reader(real_bag, real_reader):
    expected = list(real_reader.samples())
    got = list(read_bag_samples(real_bag))
    assert len(got) == len(expected) == 1
    assert_samples_equal(got[0], expected[0])
    assert set(got[0].cameras) == set(CAMERA_NAMES) and not got[0].radars
    assert got[0].lidar.points.shape[1] == 5


def test_real_keyframe_topics_frames_stamps_and_calibration(real_bag, real_root):
    sds = sample_data_by_channel(real_root, "v1.0-test")
    calib = {c["token"]: c for c in json.loads(
        (real_root / "v1.0-test/calibrated_sensor.json").read_text())}
    msgs = bag_messages(real_bag)
    for cam in CAMERA_NAMES:
        (sd,) = sds[cam]
        cs = calib[sd["calibrated_sensor_token"]]
        (image,) = [m for t, _, m in msgs if t == f"/{cam}/image_raw"]
        (info,) = [m for t, _, m in msgs if t == f"/{cam}/camera_info"]
        for msg in (image, info):
            assert msg.header.frame_id == cam  # nuScenes camera frames are optical frames
            assert stamp_ns(msg.header.stamp) == sd["timestamp"] * 1000
        assert (image.encoding, image.width, image.height, image.step) == (
            "rgb8", 1600, 900, 4800)
        pixels = image.data.reshape(900, 1600, 3)
        np.testing.assert_array_equal(pixels, read_image(real_root / sd["filename"]))
        K = np.asarray(cs["camera_intrinsic"])
        assert info.distortion_model == "plumb_bob" and (info.width, info.height) == (1600, 900)
        np.testing.assert_array_equal(info.k.reshape(3, 3), K)
        np.testing.assert_array_equal(info.r.reshape(3, 3), np.eye(3))
        np.testing.assert_array_equal(info.p.reshape(3, 4), np.hstack([K, np.zeros((3, 1))]))
        np.testing.assert_array_equal(info.d, np.zeros(5))
    (static,) = [m for t, _, m in msgs if t == "/tf_static"]
    frames = {tr.child_frame_id: tr for tr in static.transforms}
    assert set(frames) == {*CAMERA_NAMES, LIDAR_NAME}
    for channel, tr in frames.items():
        cs = calib[sds[channel][0]["calibrated_sensor_token"]]
        assert tr.header.frame_id == "base_link"
        t, q = tr.transform.translation, tr.transform.rotation
        assert [t.x, t.y, t.z] == cs["translation"]
        assert [q.w, q.x, q.y, q.z] == cs["rotation"]
    poses = json.loads((real_root / "v1.0-test/ego_pose.json").read_text())
    tf_stamps = sorted(stamp_ns(m.transforms[0].header.stamp) for t, _, m in msgs if t == "/tf")
    assert tf_stamps == sorted(p["timestamp"] * 1000 for p in poses)
    for t, _, m in msgs:
        if t == "/tf":
            assert (m.transforms[0].header.frame_id, m.transforms[0].child_frame_id) == (
                "map", "base_link")


def test_real_keyframe_compressed_sqlite3_keeps_the_jpeg_bytes(real_root, real_reader,
                                                               tmp_path):
    out = tmp_path / "real_sqlite"
    convert(real_root, out, storage="sqlite3", images="compressed", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["metadata.yaml", "real_sqlite.db3"]
    sds = sample_data_by_channel(real_root, "v1.0-test")
    msgs = bag_messages(out)
    for cam in CAMERA_NAMES:
        (msg,) = [m for t, _, m in msgs if t == f"/{cam}/image_raw/compressed"]
        assert msg.format == "jpeg"
        assert msg.data.tobytes() == (real_root / sds[cam][0]["filename"]).read_bytes()
    (sample,) = read_bag_samples(out)
    assert_samples_equal(sample, next(real_reader.samples()))


def test_metadata_is_version_8_with_latched_tf_static(real_bag, tmp_path, real_root):
    sqlite = tmp_path / "sq"
    convert(real_root, sqlite, storage="sqlite3", progress=False)
    for bag, storage in ((real_bag, "mcap"), (sqlite, "sqlite3")):
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert info["version"] == 8
        assert info["storage_identifier"] == storage
        assert all((bag / p).is_file() for p in info["relative_file_paths"])
        assert info["relative_file_paths"][0].startswith(bag.name)
        for topic in info["topics_with_message_count"]:
            meta = topic["topic_metadata"]
            assert meta["serialization_format"] == "cdr"
            (qos,) = yaml.safe_load(meta["offered_qos_profiles"])
            assert qos["reliability"] == 1  # reliable: matches reliable and best-effort readers
            if meta["name"] == "/tf_static":
                assert (qos["durability"], qos["depth"]) == (1, 1)  # transient local: latched
            else:
                assert qos["durability"] == 2  # volatile
        types = {t["topic_metadata"]["name"]: t["topic_metadata"]["type"]
                 for t in info["topics_with_message_count"]}
        assert types["/gt/detections"] == "vision_msgs/msg/Detection3DArray"
        assert types["/tf_static"] == "tf2_msgs/msg/TFMessage"


def test_bag_schemas_carry_our_interface_definitions(real_bag):
    from rosbags.rosbag2 import Reader

    with Reader(real_bag) as reader:
        conn = next(c for c in reader.connections if c.topic == "/gt/detections")
        text = conn.msgdef.data
    assert "vision_msgs/Detection3D[] detections" in text
    assert "MSG: vision_msgs/ObjectHypothesisWithPose" in text


# ------------------------------------------------------------------------- the minimal dataset
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("images", ["raw", "compressed"])
def test_bags_read_back_equal_to_the_reader(mini_root, mini_reader, tmp_path, storage, images):
    out = tmp_path / f"bag_{storage}_{images}"
    summary = convert(mini_root, out, storage=storage, images=images, progress=False)
    assert (summary.scenes, summary.keyframes) == (2, 6)
    expected = list(mini_reader.samples())
    got = list(read_bag_samples(out, ReaderOptions(cameras=CAMERAS, radars=RADARS)))
    assert [s.token for s in got] == [s.token for s in expected]
    for a, b in zip(got, expected):
        assert_samples_equal(a, b)
    # the fixture is not trivial: multi-sweep radar and LiDAR, moving boxes
    assert all(len(s.radars) == 2 and len(s.gt) == 4 for s in got)
    assert len(np.unique(got[-1].lidar.points[:, 4])) == 10
    assert len(np.unique(got[-1].radars["RADAR_FRONT"].points[:, 6])) > 1


@pytest.mark.parametrize("kwargs", [
    dict(radar_sweeps=1, lidar_sweeps=1, radar_filter="all", lidar_min_distance=0.0),
    dict(radar_sweeps=3, camera_ego_motion=False, load_images=False, load_lidar=False),
    dict(load_radar=False, radar_filter={"dyn_prop": [0, 1]}),
])
def test_reader_options_give_equal_samples(mini_bag, mini_root, kwargs):
    options = ReaderOptions(cameras=CAMERAS, radars=RADARS, **kwargs)
    reader = NuScenesReader(mini_root, "v1.0-mini", options=options)
    got = list(read_bag_samples(mini_bag, options))
    for a, b in zip(got, reader.samples(), strict=True):
        assert_samples_equal(a, b)


def test_every_sweep_and_keyframe_in_time_order(mini_bag, mini_root):
    sds = sample_data_by_channel(mini_root, "v1.0-mini")
    msgs = bag_messages(mini_bag)
    logs = [t for _, t, _ in msgs]
    assert logs == sorted(logs)
    records = read_keyframe_records(mini_bag)
    assert len(records) == 6
    topic = {**{c: f"/{c}/image_raw" for c in CAMERAS}, **{r: f"/{r}" for r in RADARS},
             LIDAR_NAME: "/LIDAR_TOP"}
    for channel, records_of_channel in sds.items():
        stamps = [stamp_ns(m.header.stamp) for t, _, m in msgs if t == topic[channel]]
        # both scenes, each in time order; header stamps are the sensor's own stamps
        assert sorted(stamps) == sorted(sd["timestamp"] * 1000 for sd in records_of_channel)
        assert len(stamps) == len(records_of_channel)
    # scene 2's clock starts before scene 1's: its log times are shifted, its stamps are not
    scene2 = [(t, m) for topic_, t, m in msgs if topic_ == "/LIDAR_TOP"][-1]
    assert scene2[0] > stamp_ns(scene2[1].header.stamp)
    assert sum(1 for t, _, _ in msgs if t == "/tf_static") == 2


def test_ground_truth_detections_and_markers(mini_bag, mini_reader):
    msgs = bag_messages(mini_bag)
    detections = [m for t, _, m in msgs if t == "/gt/detections"]
    markers = [m for t, _, m in msgs if t == "/gt/markers"]
    samples = list(mini_reader.samples())
    assert len(detections) == len(markers) == len(samples)
    for det, arr, sample in zip(detections, markers, samples):
        assert det.header.frame_id == "base_link"
        assert stamp_ns(det.header.stamp) == sample.timestamp
        gt = sample.gt
        assert len(det.detections) == len(gt)
        for d, params, label in zip(det.detections, gt.params, gt.labels):
            (hyp,) = d.results
            assert hyp.hypothesis.class_id == CLASSES[label]
            assert hyp.hypothesis.score == 1.0 and d.id == ""
            c, s = d.bbox.center, d.bbox.size
            assert [c.position.x, c.position.y, c.position.z] == list(params[:3])
            assert [s.x, s.y, s.z] == list(params[3:6])
            yaw = 2 * np.arctan2(c.orientation.z, c.orientation.w)
            assert np.isclose(np.cos(yaw - params[6]), 1.0)
        first, *rest = arr.markers
        assert first.action == 3  # DELETEALL
        boxes = [m for m in rest if m.type == 5]
        labels = [m for m in rest if m.type == 9]
        assert len(boxes) == len(labels) == len(gt)
        assert all(len(m.points) == 24 and m.header.frame_id == "base_link" for m in boxes)
        assert [m.text for m in labels] == gt.class_names
        assert [m.ns for m in boxes] == gt.class_names
        assert {(m.color.r, m.color.g, m.color.b) for m in rest} <= {GT_COLOR}  # not per class
        ids = [(m.ns, m.id) for m in rest]
        assert len(ids) == len(set(ids))


def test_scene_selection(mini_root, tmp_path):
    out = tmp_path / "one"
    summary = convert(mini_root, out, scenes=["scene-0002"], progress=False)
    assert (summary.scenes, summary.keyframes) == (1, 3)
    assert {r.scene for r in read_keyframe_records(out)} == {"scene-0002"}
    with pytest.raises(Nuscenes2BagError, match=r"scene\(s\) \['scene-9999'\] not in"):
        convert(mini_root, tmp_path / "none", scenes=["scene-9999"], progress=False)
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------------ the synthetic world
@pytest.fixture(scope="module")
def world_root(tmp_path_factory) -> Path:
    world = pytest.importorskip("imkd_core.data.world")
    root = tmp_path_factory.mktemp("world") / "world"
    config = world.WorldConfig(scenes=2, samples_per_scene=3, image_width=160, image_height=90,
                               lidar_azimuth_steps=180)
    return world.generate_world(root, config, workers=1)


@pytest.mark.parametrize("storage, images", [("mcap", "raw"), ("sqlite3", "compressed")])
def test_synthetic_world_round_trips(world_root, tmp_path, storage, images):
    from imkd_core.data.nuscenes import dataroot_version

    version = dataroot_version(world_root)
    out = tmp_path / "world_bag"
    summary = convert(world_root, out, storage=storage, images=images, progress=False)
    reader = NuScenesReader(world_root, version)
    expected = list(reader.samples())
    assert summary.keyframes == len(expected) == 6 and summary.pose_conflicts == 0
    got = list(read_bag_samples(out))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert_samples_equal(a, b)
    assert all(len(s.radars) == 5 and len(s.cameras) == 6 and len(s.gt) for s in got)
    topics = {t for t, _, _ in bag_messages(out)}
    assert {f"/{r}" for r in RADAR_NAMES} <= topics


# ------------------------------------------------------------------------- failure handling
@pytest.fixture
def broken_root(mini_root, tmp_path) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(mini_root, root)
    return root


def _sweep_file(root: Path, channel: str, keyframe: bool = False) -> Path:
    sds = sample_data_by_channel(root, "v1.0-mini")[channel]
    sd = next(s for s in sds if s["is_key_frame"] == keyframe)
    return root / sd["filename"]


def _no_bag_left(out: Path) -> None:
    assert not out.exists()
    assert not out.with_name(out.name + ".partial").exists()


def test_missing_sensor_file_is_an_error_naming_it(broken_root, tmp_path):
    missing = _sweep_file(broken_root, "RADAR_FRONT")
    missing.unlink()
    out = tmp_path / "out"
    with pytest.raises(Nuscenes2BagError, match=re.escape(str(missing))):
        convert(broken_root, out, progress=False)
    _no_bag_left(out)
    cli = subprocess.run([str(VENV_BIN / "nuscenes2bag"), "--dataroot", str(broken_root),
                          "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert cli.returncode == 1
    assert str(missing) in cli.stderr and "Traceback" not in cli.stderr
    _no_bag_left(out)


def test_skip_missing_counts_the_skipped_messages(broken_root, tmp_path):
    missing = _sweep_file(broken_root, "RADAR_FRONT", keyframe=True)
    missing.unlink()
    corrupt = _sweep_file(broken_root, LIDAR_NAME)
    corrupt.write_bytes(corrupt.read_bytes()[:-3])
    out = tmp_path / "out"
    cli = subprocess.run([str(VENV_BIN / "nuscenes2bag"), "--dataroot", str(broken_root),
                          "--out", str(out), "--skip-missing", "--quiet"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert "skipped 2 missing/corrupt sensor file(s)" in cli.stdout
    assert str(missing) in cli.stderr and str(corrupt) in cli.stderr
    counts = {}
    for topic, _, _ in bag_messages(out):
        counts[topic] = counts.get(topic, 0) + 1
    sds = sample_data_by_channel(broken_root, "v1.0-mini")
    assert counts["/RADAR_FRONT"] == len(sds["RADAR_FRONT"]) - 1
    assert counts["/LIDAR_TOP"] == len(sds[LIDAR_NAME]) - 1
    samples = list(read_bag_samples(out, ReaderOptions(cameras=CAMERAS, radars=RADARS)))
    assert len(samples) == 6
    assert sum("RADAR_FRONT" not in s.radars for s in samples) == 1  # its keyframe file


@pytest.mark.parametrize("what, images, match", [
    ("lidar", "raw", "truncated LiDAR file"),
    ("jpeg", "compressed", "no end-of-image marker"),
    ("jpeg", "raw", "cannot read image"),
    ("radar", "raw", "truncated"),
])
def test_corrupt_sensor_file_is_an_error_naming_it(broken_root, tmp_path, what, images, match):
    channel = {"lidar": LIDAR_NAME, "jpeg": "CAM_BACK", "radar": "RADAR_BACK_LEFT"}[what]
    path = _sweep_file(broken_root, channel)
    path.write_bytes(path.read_bytes()[: {"lidar": -3, "radar": -20, "jpeg": 200}[what]])
    out = tmp_path / "out"
    with pytest.raises(Nuscenes2BagError, match=f"{re.escape(str(path))}: .*{match}"):
        convert(broken_root, out, images=images, progress=False)
    _no_bag_left(out)


def test_existing_output_is_refused_unless_overwrite(mini_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(BagError, match="exists"):
        convert(mini_root, out, scenes=["scene-0001"], progress=False)
    assert (out / "keep").exists()
    convert(mini_root, out, scenes=["scene-0001"], overwrite=True, progress=False)
    assert (out / "metadata.yaml").exists() and not (out / "keep").exists()


def test_interrupted_conversion_leaves_nothing(mini_root, tmp_path, monkeypatch):
    import imkd_ros.nuscenes2bag as n2b

    calls = {"n": 0}
    original = n2b._write_sensor

    def interrupt_later(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(n2b, "_write_sensor", interrupt_later)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert(mini_root, out, progress=False)
    _no_bag_left(out)


SLOW_CONVERTER = """
import sys, time
import imkd_ros.nuscenes2bag as n2b
original = n2b._write_sensor
def slow(*args, **kwargs):
    time.sleep(0.02)
    return original(*args, **kwargs)
n2b._write_sensor = slow
sys.exit(n2b.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_signalled_conversion_never_looks_finished(mini_root, tmp_path, sig):
    out = tmp_path / "out"
    partial = out.with_name("out.partial")
    # started as a shell starts a background job, with SIGINT ignored: the converter's own
    # handler must still turn a SIGINT into the clean-up
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CONVERTER, "--dataroot", str(mini_root),
                             "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.5)  # well inside the ~8 s the slowed conversion takes
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert not out.exists()
    if sig == signal.SIGKILL:
        # only the aside directory is left, without metadata: no reader takes it for a bag
        assert not list(partial.rglob("metadata.yaml"))
        with pytest.raises(BagError, match="not a finished rosbag2"):
            list(read_bag_samples(partial / "out"))
        # the next run clears the leftover and completes
        convert(mini_root, out, scenes=["scene-0001"], progress=False)
        assert (out / "metadata.yaml").is_file() and not partial.exists()
    else:
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert not partial.exists()


def test_reading_a_bag_without_keyframe_records_is_a_clear_error(tmp_path):
    from imkd_core.data.bag_writer import BagWriter
    from imkd_core.wire.messages import string_msg

    with BagWriter(tmp_path / "plain") as bag:
        bag.write("/chatter", 1, string_msg("hello"))
    with pytest.raises(BagError, match="no /imkd/keyframes topic"):
        list(read_bag_samples(tmp_path / "plain"))


def test_console_scripts_are_installed():
    for name in ("nuscenes2bag", "imkd-replay"):
        result = subprocess.run([str(VENV_BIN / name), "--help"], capture_output=True,
                                text=True, env={**os.environ})
        assert result.returncode == 0, result.stderr
        assert "usage" in result.stdout


def test_interface_definitions_are_found():
    from imkd_core.wire.typestore import find_msg_dir

    assert (find_msg_dir("vision_msgs") / "Detection3DArray.msg").is_file()
    store = typestore()
    assert "vision_msgs/msg/Detection3DArray" in store.fielddefs
    assert "tf2_msgs/msg/TFMessage" in store.fielddefs
    assert set(RADAR_NAMES) >= set(RADARS)
