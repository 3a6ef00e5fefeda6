"""`imkd-score`: any detector's Detection3DArray output -> the devkit's metrics. Ground truth
published as detections over real DDS scores perfectly (velocity through the arrow markers);
the detector node's output recorded into a bag scores as the offline evaluation of the same
checkpoint; a bag of another detector (arrays only, a class the devkit does not know) scores
with velocity 0 and says so; bad input fails naming it, with nothing written."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_world import make_tiny_world

from imkd_core.data.bag_writer import BagWriter
from imkd_core.data.nuscenes import NuScenesReader, dataroot_version
from imkd_core.data.options import ReaderOptions
from imkd_core.evaluation.metrics import evaluate_detections, ground_truth_submission
from imkd_core.preprocess import evaluated_boxes
from imkd_core.sample import CLASSES, Boxes
from imkd_core.wire.cdr import detections_cdr, markers_cdr
from imkd_core.wire.detections import decode_detections, decode_velocities
from imkd_core.wire.keyframe import KeyframeRecord
from imkd_core.wire.messages import header_msg, string_msg
from imkd_core.wire.names import DETECTIONS_TYPE, KEYFRAMES_TOPIC
from imkd_core.wire.typestore import typestore
from imkd_ros import score as scorer

TP = ("mATE", "mASE", "mAOE", "mAVE", "mAAE")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_tiny_world(tmp_path_factory.mktemp("score_world"))


@pytest.fixture(scope="module")
def val_records(world) -> list[KeyframeRecord]:
    """The val keyframes as /imkd/keyframes records, with their evaluated ground truth."""
    reader = NuScenesReader(world, dataroot_version(world), options=ReaderOptions(
        cameras=(), radars=(), load_lidar=False, load_images=False, load_radar=False))
    return [KeyframeRecord(token=s.token, scene=s.scene_name, scene_start=0,
                           timestamp=s.timestamp, gt=evaluated_boxes(s.gt))
            for s in reader.samples(reader.sample_tokens(split="val"))]


@pytest.fixture(scope="module")
def perfect(world, tmp_path_factory) -> dict:
    """The devkit's scores of its own ground truth: the best any detector gets here (a class
    without ground truth in range, trailer on this world, has AP 0 and TP errors 1)."""
    from nuscenes import NuScenes

    nusc = NuScenes(dataroot_version(world), str(world), verbose=False)
    return evaluate_detections(world, nusc.version, "val", ground_truth_submission(nusc, "val"),
                               tmp_path_factory.mktemp("perfect"), nusc=nusc)


def assert_perfect(metrics: dict, perfect: dict, velocity: bool = True) -> None:
    """The ground truth's AP, and no translation, scale, orientation (or velocity) error, on
    every class the ground truth scores on."""
    assert metrics["mAP"] == pytest.approx(perfect["mAP"], abs=1e-9)
    errors = ("trans_err", "scale_err", "orient_err", *(("vel_err",) if velocity else ()))
    scored = [name for name, c in perfect["per_class"].items() if c["AP"] > 0.99]
    assert len(scored) >= 8
    for name in scored:
        got = metrics["per_class"][name]
        assert got["AP"] == pytest.approx(1.0), name
        for error in errors:  # NaN where the devkit does not define it (a cone's heading)
            if np.isnan(perfect["per_class"][name][error]):
                assert np.isnan(got[error]), (name, error)
            else:
                assert got[error] < 1e-3, (name, error, got[error])


def moving(n: int) -> Boxes:
    rng = np.random.default_rng(3)
    params = np.zeros((n, 9))
    params[:, :3] = rng.uniform(-40, 40, (n, 3))
    params[:, 3:6] = rng.uniform(0.5, 5, (n, 3))
    params[:, 6] = rng.uniform(-np.pi, np.pi, n)
    params[:, 7:9] = rng.uniform(-10, 10, (n, 2))
    params[0, 7:9] = [0.05, 0.0]  # slower than min_speed: a transparent arrow, still exact
    return Boxes(params=params, labels=np.arange(n) % len(CLASSES),
                 scores=rng.uniform(0, 1, n).astype(np.float32))


# ---------------------------------------------------------------------------- the decoders
def test_decoders_invert_the_node_bytes_velocity_included():
    boxes = moving(25)
    stamp = 1_700_000_000_123_456_789
    array = decode_detections(detections_cdr(boxes, stamp))
    assert array.stamp == stamp and array.frame_id == "base_link" and not array.skipped
    marker_stamp, velocities = decode_velocities(markers_cdr(boxes, stamp))
    assert marker_stamp == stamp and sorted(velocities) == list(range(25))
    got, found = array.with_velocities(velocities)
    assert found == 25
    np.testing.assert_array_equal(got.labels, boxes.labels)
    np.testing.assert_array_equal(got.scores, boxes.scores)
    np.testing.assert_array_equal(got.params[:, :6], boxes.params[:, :6])
    np.testing.assert_allclose(np.cos(got.params[:, 6] - boxes.params[:, 6]), 1.0, atol=1e-12)
    np.testing.assert_allclose(got.params[:, 7:9], boxes.params[:, 7:9], atol=1e-12)


def test_non_finite_velocity_has_no_arrow_and_foreign_stamps_are_ignored():
    boxes = moving(3)
    boxes.params[1, 7] = np.nan
    _, velocities = decode_velocities(markers_cdr(boxes, 5))
    assert sorted(velocities) == [0, 2]
    empty_stamp, none = decode_velocities(markers_cdr(Boxes.empty(), 9))
    assert (empty_stamp, none) == (9, {})


def foreign_detections(boxes: Boxes, stamp: int, frame_id: str = "base_link",
                       extra_class: str | None = None) -> bytes:
    """A Detection3DArray as another detector builds it (rosbags' types, field by field):
    class names as ids, an `id` per detection, optionally one detection of a class the devkit
    does not score."""
    t = typestore().types
    pose = t["geometry_msgs/msg/Pose"]
    point, quat = t["geometry_msgs/msg/Point"], t["geometry_msgs/msg/Quaternion"]
    header = header_msg(stamp, frame_id)

    def detection(k, params, name, score):
        center = pose(position=point(x=params[0], y=params[1], z=params[2]),
                      orientation=quat(x=0.0, y=0.0, z=float(np.sin(params[6] / 2)),
                                       w=float(np.cos(params[6] / 2))))
        hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=name, score=score),
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=center,
                                                           covariance=np.zeros(36)))
        return t["vision_msgs/msg/Detection3D"](
            header=header, results=[hypothesis], id=f"track-{k}",
            bbox=t["vision_msgs/msg/BoundingBox3D"](center=center, size=t[
                "geometry_msgs/msg/Vector3"](x=params[3], y=params[4], z=params[5])))

    detections = [detection(k, p, CLASSES[label], 0.9)
                  for k, (p, label) in enumerate(zip(boxes.params, boxes.labels))]
    if extra_class:
        detections.append(detection(len(detections), boxes.params[0], extra_class, 0.5))
    msg = t[DETECTIONS_TYPE](header=header, detections=detections)
    return bytes(typestore().serialize_cdr(msg, DETECTIONS_TYPE))


def write_bag(path: Path, messages: list[tuple[str, str, bytes]]) -> Path:
    """The messages into a rosbag2 bag, in order (log times 1, 2, ... ns)."""
    with BagWriter(path) as writer:
        for log_ns, (topic, msgtype, raw) in enumerate(messages, start=1):
            writer.write_raw(topic, msgtype, log_ns, raw)
    return path


def keyframes_bag(path: Path, records: list[KeyframeRecord]) -> Path:
    with BagWriter(path) as writer:
        for record in records:
            writer.write(KEYFRAMES_TOPIC, record.timestamp, string_msg(record.to_json()))
    return path


# -------------------------------------------------------------------- another detector's bag
def test_bag_of_another_detector_scores_with_velocity_zero(world, val_records, perfect,
                                                           tmp_path, capsys):
    topic = "/other_detector/objects"
    bag = write_bag(tmp_path / "other.bag", [
        (topic, DETECTIONS_TYPE, foreign_detections(r.gt, r.timestamp, extra_class="sign"))
        for r in val_records])
    kf_bag = keyframes_bag(tmp_path / "keyframes.bag", val_records)
    out = tmp_path / "out"
    code = scorer.main(["--dataroot", str(world), "--bag", str(bag), "--topic", topic,
                        "--keyframes-bag", str(kf_bag), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    assert_perfect(metrics, perfect, velocity=False)
    assert metrics["mAVE"] > 0.1  # the ground truth moves; the arrays carry no velocity
    assert metrics["report"]["skipped"] == {"class 'sign' is not a nuScenes class": 3}
    assert "velocity: no markers topic, every box scored with velocity 0" in text
    assert "skipped 3: class 'sign' is not a nuScenes class" in text
    assert (out / "results_val.json").is_file() and (out / "metrics_summary.json").is_file()
    assert f"results: {out / 'results_val.json'}" in text


def test_another_frame_is_refused_unless_named_the_ego_frame(world, val_records, tmp_path,
                                                             capsys):
    topic = "/other_detector/objects"
    bag = write_bag(tmp_path / "other.bag", [
        (topic, DETECTIONS_TYPE, foreign_detections(r.gt, r.timestamp, frame_id="ego"))
        for r in val_records])
    kf_bag = keyframes_bag(tmp_path / "keyframes.bag", val_records)
    args = ["--dataroot", str(world), "--bag", str(bag), "--topic", topic,
            "--keyframes-bag", str(kf_bag), "--out", str(tmp_path / "out")]
    assert scorer.main(args) == 1
    err = capsys.readouterr().err
    assert "imkd-score: error: detections in frame 'ego' (3 of 3 arrays)" in err
    assert "the keyframe's ego frame is 'base_link'" in err
    assert not (tmp_path / "out").exists()
    assert scorer.main([*args, "--base-frame", "ego"]) == 0
    assert (tmp_path / "out" / "metrics.json").is_file()


# ------------------------------------------------------------------------------- bad input
def test_bad_input_fails_naming_it_and_writes_nothing(world, val_records, tmp_path, capsys):
    out = tmp_path / "out"
    kf_bag = keyframes_bag(tmp_path / "keyframes.bag", val_records)
    topic = "/imkd_detector/output/detections"
    good = write_bag(tmp_path / "good.bag", [
        (topic, DETECTIONS_TYPE, detections_cdr(r.gt, r.timestamp)) for r in val_records])
    late = write_bag(tmp_path / "late.bag", [
        (topic, DETECTIONS_TYPE, detections_cdr(r.gt, r.timestamp + 1)) for r in val_records])
    base = ["--dataroot", str(world), "--out", str(out)]

    def error(*args: str) -> str:
        assert scorer.main([*base, *args]) == 1
        captured = capsys.readouterr()
        assert not out.exists() and not list(tmp_path.glob(".out.*"))
        return captured.err

    err = error("--bag", str(tmp_path / "missing.bag"))
    assert err.startswith("imkd-score: error: ") and "missing.bag: no such bag" in err
    err = error("--bag", str(kf_bag), "--topic", topic)
    assert f"no topic {topic}; the bag has: {KEYFRAMES_TOPIC} (std_msgs/msg/String)" in err
    err = error("--bag", str(good))  # no keyframe records in it, none given
    assert "no keyframe records" in err and "--keyframes-bag" in err
    err = error("--bag", str(late), "--keyframes-bag", str(kf_bag))
    assert "none of the 3 arrays has the stamp of one of the 3 keyframe records" in err
    err = error("--bag", str(good), "--keyframes-bag", str(kf_bag), "--eval-set", "train")
    assert "3 of the 3 matched keyframes are not in split 'train'" in err
    err = error("--bag", str(good), "--keyframes-bag", str(kf_bag), "--dataroot",
                str(tmp_path / "nowhere"))
    assert "--dataroot" in err and "no such directory" in err
    # the same inputs, right: scored, and an existing --out gets whole files
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert scorer.main([*base, "--bag", str(good), "--keyframes-bag", str(kf_bag)]) == 0
    assert (out / "keep.txt").read_text() == "mine" and (out / "metrics.json").is_file()


# ------------------------------------------------------------------------ live, over DDS
@pytest.mark.ros
@pytest.mark.slow
def test_ground_truth_published_live_scores_perfectly(world, val_records, perfect, tmp_path):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from vision_msgs.msg import Detection3DArray
    from visualization_msgs.msg import MarkerArray

    ns = f"/gt_peer_{time.monotonic_ns() % 10**6}"
    topics = (f"{ns}/output/detections", f"{ns}/output/markers", f"{ns}/keyframes")
    ready, result = threading.Event(), {}

    def record():
        result["rec"] = scorer.record_live(topics[0], markers_topic=topics[1],
                                           keyframes_topic=topics[2], idle_s=1.0,
                                           timeout_s=60.0, ready=ready)

    recorder = threading.Thread(target=record)
    recorder.start()
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("gt_peer", context=context)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)  # as the node's
        pub_det = node.create_publisher(Detection3DArray, topics[0], qos)
        pub_markers = node.create_publisher(MarkerArray, topics[1], qos)
        pub_keyframes = node.create_publisher(String, topics[2], QoSProfile(  # as a bag's
            depth=10, reliability=ReliabilityPolicy.RELIABLE))
        assert ready.wait(30)
        deadline = time.monotonic() + 30
        publishers = (pub_det, pub_markers, pub_keyframes)
        while min(p.get_subscription_count() for p in publishers) == 0:
            assert time.monotonic() < deadline, "the scorer never subscribed"
            time.sleep(0.05)
        time.sleep(0.5)  # the reader side of the match too (a sample before it is lost)
        for r in val_records:
            pub_keyframes.publish(String(data=r.to_json()))
            time.sleep(0.05)
        for r in val_records:
            pub_det.publish(detections_cdr(r.gt, r.timestamp))
            pub_markers.publish(markers_cdr(r.gt, r.timestamp))
            time.sleep(0.1)
        recorder.join(60)
        assert not recorder.is_alive()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    rec = result["rec"]
    assert sorted(rec.detections) == [r.timestamp for r in val_records]
    assert {r.token for r in rec.keyframes} == {r.token for r in val_records}
    assert rec.boxes_with_velocity == sum(len(r.gt) for r in val_records)
    # a volatile publisher refuses the scorer's transient-local request: it resubscribed
    assert sorted(n.split(":")[0] for n in rec.notes if "volatile publisher" in n) == sorted(
        topics[:2]), rec.notes
    metrics = scorer.score(rec, world, tmp_path / "live")
    assert_perfect(metrics, perfect)
    # NDS as the devkit defines it, with mAAE from the default attributes (Detection3D has
    # none) ...
    nds = (5 * metrics["mAP"] + sum(1 - min(1.0, metrics[k]) for k in TP)) / 10
    assert metrics["NDS"] == pytest.approx(nds, abs=1e-9)
    # ... equal to the offline evaluation of the same boxes with the default attributes
    offline = evaluate_detections(world, dataroot_version(world), "val", {
        r.token: Boxes(params=r.gt.params, labels=r.gt.labels) for r in val_records},
        tmp_path / "offline")
    assert metrics["NDS"] == pytest.approx(offline["NDS"], abs=1e-6)
    assert metrics["mAAE"] == pytest.approx(offline["mAAE"], abs=1e-6)
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["NDS"] == metrics["NDS"]


@pytest.mark.ros
def test_a_late_scorer_gets_what_the_detector_published_before(val_records):
    """The detector's results are transient local (QOS_RESULTS): a scorer that matched the
    publisher after the first arrays (slow discovery on a loaded machine) still records them."""
    import rclpy
    from vision_msgs.msg import Detection3DArray
    from visualization_msgs.msg import MarkerArray

    from imkd_core.wire.names import QOS_RESULTS
    from imkd_ros.qos import profile

    assert len(val_records) <= QOS_RESULTS.depth
    ns = f"/late_peer_{time.monotonic_ns() % 10**6}"
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("late_peer", context=context)
        pub_det = node.create_publisher(Detection3DArray, f"{ns}/detections",
                                        profile(QOS_RESULTS))
        pub_markers = node.create_publisher(MarkerArray, f"{ns}/markers", profile(QOS_RESULTS))
        for r in val_records:  # all of it before the scorer exists
            pub_det.publish(detections_cdr(r.gt, r.timestamp))
            pub_markers.publish(markers_cdr(r.gt, r.timestamp))
        rec = scorer.record_live(f"{ns}/detections", markers_topic=f"{ns}/markers",
                                 keyframes_topic=None, keyframes=val_records, idle_s=1.0,
                                 timeout_s=30.0)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert sorted(rec.detections) == [r.timestamp for r in val_records], rec.notes
    assert rec.boxes_with_velocity == sum(len(r.gt) for r in val_records)
    assert rec.notes == []


# ---------------------------------------------------- the detector node's output, via a bag
@pytest.mark.ros
@pytest.mark.slow
def test_node_output_bag_scores_as_the_offline_evaluation(tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from ros_rig import VENV_BIN, DetectorProcess, write_random_checkpoint
    from vision_msgs.msg import Detection3DArray
    from visualization_msgs.msg import MarkerArray

    from imkd_core.data.world import WorldConfig, generate_world
    from imkd_core.evaluation.runner import evaluate_checkpoint
    from imkd_core.sample import CAMERA_NAMES, RADAR_NAMES
    from imkd_core.wire.names import MARKERS_TYPE
    from imkd_ros.nuscenes2bag import convert

    world = generate_world(tmp_path / "world", WorldConfig(
        scenes=1, samples_per_scene=3, image_width=192, image_height=108,
        lidar_azimuth_steps=180, val_fraction=1.0), workers=1)
    source = tmp_path / "world.bag"
    convert(world, source, progress=False)
    checkpoint = write_random_checkpoint(tmp_path / "model.pt")
    name = f"det_score_{time.monotonic_ns() % 10**6}"
    remaps = {f"~/input/{c}/image": f"/{c}/image_raw" for c in CAMERA_NAMES}
    remaps |= {f"~/input/{c}/camera_info": f"/{c}/camera_info" for c in CAMERA_NAMES}
    remaps |= {f"~/input/{r}/points": f"/{r}" for r in RADAR_NAMES}
    remaps["~/input/keyframes"] = KEYFRAMES_TOPIC
    node = DetectorProcess(name, {"checkpoint": str(checkpoint), "device": "cpu",
                                  "trigger": "keyframes", "score_threshold": 0.0,
                                  "queue_size": 50, "use_sim_time": True}, tmp_path, remaps)
    topics = {f"/{name}/output/detections": DETECTIONS_TYPE,
              f"/{name}/output/markers": MARKERS_TYPE}
    received: list[tuple[str, bytes]] = []
    context = rclpy.Context()
    rclpy.init(context=context)
    replay = None
    try:
        recorder = rclpy.create_node("score_recorder", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(recorder)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls in zip(topics, (Detection3DArray, MarkerArray)):
            recorder.create_subscription(cls, topic, lambda raw, t=topic: received.append(
                (t, raw)), qos, raw=True)

        def spin_until(condition, timeout, what):
            deadline = time.monotonic() + timeout
            while not condition():
                assert node.proc.poll() is None, node.log()
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                executor.spin_once(timeout_sec=0.05)

        # the node is up (its outputs are matched) before the replay waits for its inputs
        spin_until(lambda: all(recorder.count_publishers(t) for t in topics), 60,
                   "the detector's outputs")
        executor.spin_once(timeout_sec=0.5)
        replay = subprocess.Popen([str(VENV_BIN / "imkd-replay"), str(source), "--rate", "0.5",
                                   "--clock", "--quiet", "--wait-for-subscribers", "--topics",
                                   *remaps.values(), "/tf", "/tf_static"])
        spin_until(lambda: replay.poll() is not None, 90, "the replay to finish")
        assert replay.returncode == 0
        spin_until(lambda: sum(t.endswith("markers") for t, _ in received) >= 3, 60,
                   "markers of the 3 keyframes")
    finally:
        print(node.log())  # shown when the test fails
        if replay is not None and replay.poll() is None:
            replay.kill()
        node.stop()
        rclpy.try_shutdown(context=context)
    recorded = write_bag(tmp_path / "detections.bag",
                         [(t, topics[t], bytes(raw)) for t, raw in received])
    out = tmp_path / "score"
    result = subprocess.run([str(VENV_BIN / "imkd-score"), "--dataroot", str(world), "--bag",
                             str(recorded), "--topic", f"/{name}/output/detections",
                             "--keyframes-bag", str(source), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "velocity: from the ARROW markers" in result.stdout, result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["report"]["matched"] == 3 and metrics["report"]["boxes"] == 3 * 40
    assert metrics["report"]["boxes_with_velocity"] == 3 * 40
    offline = evaluate_checkpoint(checkpoint, world, tmp_path / "offline", split="val",
                                  device="cpu", quiet=True)
    assert metrics["num_pred_boxes"] == offline["num_pred_boxes"]
    # the same submission, box for box, velocities (from the arrows) and attributes included
    # (an untrained model's metrics are near 0 whatever it detects)
    ours = json.loads((out / "results_val.json").read_text())["results"]
    theirs = json.loads((tmp_path / "offline" / "results_val.json").read_text())["results"]
    assert ours.keys() == theirs.keys()

    def table(entries):
        entries = sorted(entries, key=lambda e: (e["detection_name"],
                                                 *np.round(e["translation"], 2)))
        return ([e["detection_name"] + "/" + e["attribute_name"] for e in entries],
                np.array([[*e["translation"], *e["size"], *e["rotation"], *e["velocity"],
                           e["detection_score"]] for e in entries]))

    for token in theirs:
        (names, values), (expected_names, expected) = table(ours[token]), table(theirs[token])
        assert names == expected_names
        np.testing.assert_allclose(values, expected, atol=1e-4)
    assert metrics["NDS"] == pytest.approx(offline["NDS"], abs=1e-3)
    for key in ("mAP", *TP):
        assert metrics[key] == pytest.approx(offline[key], abs=1e-3), key


# ------------------------------------------------------------------------- the live command
@pytest.mark.ros
def test_live_command_without_a_publisher_names_what_it_saw(world, tmp_path):
    from ros_rig import VENV_BIN

    topic = f"/nobody_{time.monotonic_ns() % 10**6}/output/detections"
    result = subprocess.run([str(VENV_BIN / "imkd-score"), "--dataroot", str(world), "--topic",
                             topic, "--timeout", "2", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"imkd-score: error: no {DETECTIONS_TYPE} arrived on {topic}" in result.stderr
    assert "stopped at the timeout (2 s)" in result.stderr
    assert "topics seen:" in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.ros
@pytest.mark.slow
def test_live_command_scores_what_it_has_at_ctrl_c(world, val_records, perfect, tmp_path):
    import signal

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from ros_rig import VENV_BIN
    from vision_msgs.msg import Detection3DArray
    from visualization_msgs.msg import MarkerArray

    ns = f"/ctrl_c_{time.monotonic_ns() % 10**6}"
    out = tmp_path / "out"
    kf_bag = keyframes_bag(tmp_path / "keyframes.bag", val_records)
    proc = subprocess.Popen([str(VENV_BIN / "imkd-score"), "--dataroot", str(world),
                             "--topic", f"{ns}/detections", "--keyframes-bag", str(kf_bag),
                             "--idle", "600", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as a background job starts: SIGINT ignored, Ctrl-C must still work
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("ctrl_c_peer", context=context)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        pub_det = node.create_publisher(Detection3DArray, f"{ns}/detections", qos)
        pub_markers = node.create_publisher(MarkerArray, f"{ns}/markers", qos)
        deadline = time.monotonic() + 30
        while min(pub_det.get_subscription_count(), pub_markers.get_subscription_count()) == 0:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)
        for r in val_records[:2]:  # the third keyframe never comes
            pub_det.publish(detections_cdr(r.gt, r.timestamp))
            pub_markers.publish(markers_cdr(r.gt, r.timestamp))
        time.sleep(1.5)
        assert proc.poll() is None  # waiting for the third keyframe
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        node.destroy_node()
    finally:
        if proc.poll() is None:
            proc.kill()
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 0, stderr
    assert "interrupted (Ctrl-C): scoring what was recorded" in stdout
    assert "1 keyframes have no array: scored as no detections" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["report"]["matched"] == 2 and metrics["mAP"] < perfect["mAP"]
