"""The detector node over real DDS (its `detector` executable in its own process): it publishes
for valid input, survives every kind of malformed input with a warning that names the topic and
the reason, reports degraded modes, refuses bad parameters, and — replaying a nuscenes2bag bag
— gives exactly the offline pipeline's detections on the same keyframes."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest
import rclpy
import torch
from ros_rig import NS, VENV_BIN, DetectorProcess, Rig, write_random_checkpoint
from sensor_msgs.msg import CameraInfo
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker

from imkd_core.data.bag_reader import read_bag_samples
from imkd_core.data.options import ReaderOptions
from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.generate import generate_world
from imkd_core.export import export_checkpoint
from imkd_core.geometry import make_transform, quaternion_yaw
from imkd_core.pipeline import DetectorPipeline
from imkd_core.sample import CAMERA_NAMES, CLASSES, NUSCENES_RADAR_FIELDS, RADAR_NAMES
from imkd_ros.calibration import load_calibration
from imkd_ros.detector_node import DetectorNode
from imkd_ros.parameters import ParameterError

pytestmark = pytest.mark.ros

CAMS = ("CAM_FRONT", "CAM_BACK")
RADARS = ("RADAR_FRONT",)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_random.pt")


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{time.monotonic_ns() % 10**6}"


# ------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("override, message", [
    ({"device": "gpu"}, "parameter 'device' = 'gpu': must be auto, cpu or cuda"),
    ({"checkpoint": "/nonexistent/model.pt"}, "parameter 'checkpoint' = "
                                              "'/nonexistent/model.pt': no such file"),
    ({"missing_camera": "drop"}, "parameter 'missing_camera' = 'drop'"),
    ({"radar_sweeps": 0}, "parameter 'radar_sweeps' = 0: must be >= 1"),
    ({"trigger": "lidar"}, "parameter 'trigger' = 'lidar'"),
    ({"cameras": ["CAM_FRONT", "CAM_FRONT"]}, "parameter 'cameras'"),
    ({"cameras": ["CAM_FRONT", "CAM_SIDE"]}, "CAM_SIDE not among the model's cameras"),
])
def test_bad_parameter_stops_start_up_naming_it(checkpoint, context, override, message):
    params = {"checkpoint": str(checkpoint), **override}
    overrides = [rclpy.parameter.Parameter(k, value=v) for k, v in params.items()]
    with pytest.raises(ParameterError) as info:
        DetectorNode(context=context, parameter_overrides=overrides)
    assert message in str(info.value)


def test_calibration_file_gives_extrinsics_and_names_bad_entries(tmp_path):
    good = tmp_path / "calibration.yaml"
    good.write_text("CAM_FRONT: {translation: [1.7, 0.0, 1.5],\n"
                    "            rotation: [0.5, -0.5, 0.5, -0.5]}\n")
    T = load_calibration(str(good))["CAM_FRONT"]
    np.testing.assert_allclose(T, make_transform([0.5, -0.5, 0.5, -0.5], [1.7, 0.0, 1.5]))
    bad = tmp_path / "broken.yaml"
    bad.write_text("RADAR_FRONT: {translation: [1.0, 0.0]}\n")
    with pytest.raises(ParameterError, match=f"{bad}: entry 'RADAR_FRONT' needs translation"):
        load_calibration(str(bad))


def test_bad_parameter_exits_non_zero_with_message(checkpoint, tmp_path):
    proc = DetectorProcess(unique("det_badparam"), {"checkpoint": str(checkpoint),
                                                   "score_threshold": "high"}, tmp_path)
    code = proc.proc.wait(timeout=60)
    proc.stop()
    assert code != 0
    assert "score_threshold" in proc.log() and "cannot start" in proc.log()


# ------------------------------------------------------------------------------- bad input
def test_bad_input_never_stops_it(checkpoint, context, tmp_path):
    name = unique("det_bad")
    node = DetectorProcess(name, {
        "checkpoint": str(checkpoint), "device": "cpu", "cameras": list(CAMS),
        "radars": list(RADARS), "score_threshold": 0.0, "stale_timeout": 1.0,
        "max_radar_points": 1000, "status_period": 0.2, "queue_size": 4}, tmp_path)
    rig = Rig(context, name, CAMS, RADARS)
    try:
        rig.wait_ready(node)
        rig.publish_static()
        rig.spin(0.2)
        t = 100 * NS
        rig.publish_frame(t)
        rig.spin_until(lambda: len(rig.detections) >= 1, 60, "the first detections")
        first = rig.detections[0]
        assert first.header.frame_id == "base_link"
        assert first.header.stamp.sec * NS + first.header.stamp.nanosec == t + 5_000_000
        assert len(first.detections) > 0

        ns = rig.ns
        image_topic = f"{ns}/input/CAM_FRONT/image"
        cloud_topic = f"{ns}/input/RADAR_FRONT/points"
        expected = []  # substrings the node's log must show
        t += NS // 2

        def send(publisher, msg, needle=None):
            """One at a time: sensor inputs are best-effort keep-last 2, as on a car."""
            publisher.publish(msg)
            if needle:
                expected.append(needle)
            rig.spin(0.1)

        def send_image(msg, needle):
            send(rig.images["CAM_FRONT"], msg, needle)

        bad = rig.image("CAM_FRONT", t)
        bad.encoding = "yuv422"
        send_image(bad, f"{image_topic}: dropped message: unsupported encoding 'yuv422'")
        send(rig.images["CAM_FRONT"], bad)  # the same again: throttled, not repeated
        bad = rig.image("CAM_FRONT", t)
        bad.height = 40  # data no longer height x step
        send_image(bad, f"{image_topic}: dropped message: data has 9216 bytes, "
                        "step x height = 7680")
        bad = rig.image("CAM_FRONT", t)
        bad.step = 100  # < width x 3
        send_image(bad, f"{image_topic}: dropped message: step 100 < width 64 x 3")
        bad = rig.image("CAM_FRONT", t)
        bad.header.frame_id = "CAM_NOWHERE"
        send_image(bad, f"{image_topic}: dropped message: missing TF: no /tf_static chain "
                        "base_link -> CAM_NOWHERE")

        cloud = rig.cloud("RADAR_FRONT", t)
        cloud.data = bytes(cloud.data)[:-5]
        send(rig.clouds["RADAR_FRONT"], cloud, f"{cloud_topic}: dropped message: data truncated")
        cloud = rig.cloud("RADAR_FRONT", t)
        cloud.fields[4].offset = cloud.point_step - 1  # misaligned: sticks out of the point
        send(rig.clouds["RADAR_FRONT"], cloud, f"{cloud_topic}: dropped message: field 'id'")
        big = np.zeros((5000, len(NUSCENES_RADAR_FIELDS)), np.float32)
        send(rig.clouds["RADAR_FRONT"], rig.cloud("RADAR_FRONT", t, big),
             f"{cloud_topic}: dropped message: 5000 points exceed max_radar_points=1000")
        points = np.zeros((10, len(NUSCENES_RADAR_FIELDS)), np.float32)
        points[2, 0], points[7, 1] = np.nan, np.inf
        send(rig.clouds["RADAR_FRONT"], rig.cloud("RADAR_FRONT", t - 30_000_000, points),
             f"{cloud_topic}: removed 2 points with NaN/Inf")
        send(rig.infos["CAM_BACK"], CameraInfo(),  # all-zero K
             f"{ns}/input/CAM_BACK/camera_info: dropped message: K is not a pinhole matrix")
        broken = rig.transform("map", "base_link", t, np.eye(4))
        broken.transform.rotation.w = 0.0
        send(rig.tf, TFMessage(transforms=[broken]),
             "/tf: dropped message: map->base_link: invalid transform")

        # Valid after all that: an empty radar sweep, then a full frame -> detections.
        before = len(rig.detections)
        send(rig.clouds["RADAR_FRONT"], rig.cloud("RADAR_FRONT", t - 25_000_000, points[:0]))
        rig.publish_frame(t)
        rig.spin_until(lambda: len(rig.detections) > before, 60, "detections after bad input")
        for needle in expected:
            rig.spin_until(lambda n=needle: n in node.log(), 10, f"log line {needle!r}")
        assert node.log().count("unsupported encoding") == 1  # throttled per topic + reason

        # No ego pose for this frame: published anyway, degraded, and said so.
        t += 10 * NS
        before = len(rig.detections)
        rig.publish_frame(t, tf=False)
        rig.spin_until(lambda: len(rig.detections) > before, 60, "detections without /tf")
        rig.spin_until(lambda: "/tf: missing TF" in node.log(), 10, "missing ego pose warning")
        rig.spin_until(lambda: rig.status and "ego_motion" in rig.status[-1], 10,
                       "status reporting missing ego motion")

        # The bag loops: stamps jump back; state resets and detection goes on.
        t_loop = 50 * NS
        before = len(rig.detections)
        rig.publish_frame(t_loop)
        rig.spin_until(lambda: "stamp went backwards (bag loop?): state reset" in node.log(),
                       10, "the reset warning")
        rig.publish_frame(t_loop + NS // 2)
        rig.spin_until(lambda: any(d.header.stamp.sec == 50 for d in rig.detections[before:]),
                       60, "detections after the loop")

        # CAM_BACK goes silent: after stale_timeout (sensor time) the node runs with a blank
        # image for it and reports degraded mode.
        for k in range(1, 5):
            rig.publish_frame(t_loop + NS // 2 + k * NS // 2, cameras=("CAM_FRONT",))
            rig.spin(0.3)
        rig.spin_until(lambda: rig.status and rig.status[-1]["stale_cameras"] == ["CAM_BACK"],
                       30, "CAM_BACK reported stale")
        status = rig.status[-1]
        assert status["mode"] == "degraded"
        rig.spin_until(lambda: any(d.header.stamp.sec >= 52 for d in rig.detections), 60,
                       "detections with CAM_BACK blanked")
        dropped = rig.status[-1]["dropped_messages"]
        assert dropped[image_topic] >= 5 and dropped[cloud_topic] >= 3
        assert all(len(v) > 0 and min(v) > 0 for v in rig.timings.values())
        assert rig.markers and rig.markers[-1].markers[0].action == Marker.DELETEALL
        assert node.proc.poll() is None, node.log()
    finally:
        rig.node.destroy_node()
        code = node.stop()
        print(node.log())  # shown by pytest when the test fails
    assert code == 0


# ------------------------------------------------------------- real cameras, subsets and time
def test_camera_only_distorted_camera_sim_time_duplicates_and_clock_jump(checkpoint, context,
                                                                        tmp_path):
    """One camera and `-p radars:=[]` from the command line (a camera-only subset of the
    six-camera, five-radar model): detections, and the status says degraded and why. The
    camera is distorted and calibrated at twice the image size: its images are rectified and
    its K scaled; an image of another aspect is refused with both sizes named. The node runs on
    /clock (use_sim_time); an image delivered twice gives one output; a clock jump a day ahead
    and back recovers as a bag loop does."""
    from rosgraph_msgs.msg import Clock

    name = unique("det_subset")
    node = DetectorProcess(name, {
        "checkpoint": str(checkpoint), "device": "cpu", "cameras": ["CAM_FRONT"],
        "radars": [], "score_threshold": 0.0, "status_period": 0.2, "queue_size": 4,
        "use_sim_time": True}, tmp_path)
    rig = Rig(context, name, ("CAM_FRONT",), ())
    clock = rig.node.create_publisher(Clock, "/clock", 10)

    def distorted_info(cam, stamp, width=64):  # calibrated at 128 x 96, a wide-angle lens
        msg = CameraInfo(width=128, height=96, distortion_model="plumb_bob",
                         d=[-0.3, 0.08, 0.0, 0.0, 0.0],
                         k=[100.0, 0.0, 64.0, 0.0, 100.0, 48.0, 0.0, 0.0, 1.0],
                         p=[90.0, 0.0, 64.0, 0.0, 0.0, 90.0, 48.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        msg.header.frame_id = cam
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp // NS, stamp % NS
        return msg

    rig.camera_info = distorted_info

    def frame(stamp):
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = stamp // NS, stamp % NS
        clock.publish(msg)
        rig.publish_frame(stamp)

    def stamps():
        return [_stamp(d) for d in rig.detections]

    try:
        rig.wait_ready(node)
        rig.publish_static()
        rig.spin(0.2)
        t = 100 * NS
        frame(t)
        rig.spin_until(lambda: t in stamps(), 60, "the first detections")
        assert len(rig.detections[-1].detections) > 0
        rig.spin_until(lambda: rig.status and rig.status[-1].get("configured_without"), 10,
                       "the status")
        status = rig.status[-1]
        assert status["mode"] == "degraded"
        assert status["configured_without"] == (
            "configured without cameras CAM_FRONT_RIGHT, CAM_BACK_RIGHT, CAM_BACK, "
            "CAM_BACK_LEFT, CAM_FRONT_LEFT and radars RADAR_FRONT, RADAR_FRONT_RIGHT, "
            "RADAR_BACK_RIGHT, RADAR_BACK_LEFT, RADAR_FRONT_LEFT")
        assert "configured without cameras" in node.log()  # said at start-up too

        # The same image again (and once more): no second output for the frame.
        for _ in range(2):
            rig.images["CAM_FRONT"].publish(rig.image("CAM_FRONT", t))
            rig.spin(0.1)
        rig.spin_until(lambda: rig.status[-1]["duplicates"] >= 2, 10, "duplicates counted")
        rig.spin(0.5)
        assert stamps().count(t) == 1

        # An image of another aspect than the calibration's: refused, both sizes named.
        rig.images["CAM_FRONT"].publish(rig.image("CAM_FRONT", t + NS // 4, height=64))
        needle = "image is 64x64 but CameraInfo is calibrated for 128x96"
        rig.spin_until(lambda: needle in node.log(), 10, "the size refusal")

        # The clock jumps a day ahead (detections there), then comes back: both reset.
        day = 86_400 * NS
        for k in range(2):
            frame(t + day + k * NS // 2)
        rig.spin_until(lambda: t + day + NS // 2 in stamps(), 60, "detections a day ahead")
        for k in range(2):
            frame(t + (k + 1) * NS // 2)
            rig.spin(0.2)
        rig.spin_until(lambda: t + NS in stamps(), 60, "detections after the jump back")
        assert "stamp jumped 86400.0 s ahead (clock jump?): state reset" in node.log()
        rig.spin_until(lambda: rig.status[-1]["resets"] >= 2, 10, "the resets counted")
        assert node.proc.poll() is None, node.log()
    finally:
        rig.node.destroy_node()
        code = node.stop()
        print(node.log())  # shown by pytest when the test fails
    assert code == 0


# -------------------------------------------------------------------- same answer as offline
def _canonical_order(xy_label: list[tuple[float, float, int]]) -> np.ndarray:
    """Indices that sort boxes by position (cm) then label: boxes left after NMS are apart, so
    this order does not depend on how score ties were broken."""
    if not xy_label:
        return np.zeros(0, dtype=np.int64)
    x, y, label = (np.asarray(column) for column in zip(*xy_label))
    return np.lexsort((label, np.round(y, 2), np.round(x, 2)))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_replayed_bag_gives_the_offline_detections(checkpoint, context, tmp_path, backend,
                                                   request):
    world = generate_world(tmp_path / "world", WorldConfig(
        scenes=1, samples_per_scene=5, image_width=192, image_height=108,
        lidar_azimuth_steps=180, val_fraction=0.0), workers=1)
    bag = tmp_path / "world.bag"
    subprocess.run([str(VENV_BIN / "nuscenes2bag"), "--dataroot", str(world), "--out",
                    str(bag), "--quiet"], check=True, timeout=120)
    threshold = 0.05
    model = checkpoint
    if backend == "onnxruntime":  # the node and the offline path both run the ONNX export
        model = tmp_path / "student.onnx"
        export_checkpoint(checkpoint, "onnx", model)
        # ONNX Runtime's CPU ScatterND(add) (the BEV pooling) sums in thread-schedule order:
        # with two threads two runs of one process differ in the last bits, and the untrained
        # model's near-tied scores then keep other boxes. One thread (taken by the node from
        # OMP_NUM_THREADS, see DetectorProcess) makes both sides exact.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        request.addfinalizer(lambda: torch.set_num_threads(threads))
    offline = DetectorPipeline.from_file(model, device="cpu", backend=backend)
    expected = {}
    for sample in read_bag_samples(bag, ReaderOptions(load_lidar=False)):
        boxes = offline(sample)
        expected[sample.timestamp] = boxes.select(boxes.scores >= threshold)
    assert len(expected) == 5 and all(len(b) for b in expected.values())

    name = unique("det_replay")
    remaps = {f"~/input/{c}/image": f"/{c}/image_raw" for c in CAMERA_NAMES}
    remaps |= {f"~/input/{c}/camera_info": f"/{c}/camera_info" for c in CAMERA_NAMES}
    remaps |= {f"~/input/{r}/points": f"/{r}" for r in RADAR_NAMES}
    remaps["~/input/keyframes"] = "/imkd/keyframes"
    node = DetectorProcess(name, {
        "checkpoint": str(model), "backend": backend, "device": "cpu", "trigger": "keyframes",
        "score_threshold": threshold,
        "queue_size": 50, "use_sim_time": True}, tmp_path, remaps)  # sim time from --clock
    rig = Rig(context, name, (), ())
    replay = None
    try:
        rig.wait_ready(node)
        topics = [*remaps.values(), "/tf", "/tf_static"]
        replay = subprocess.Popen([str(VENV_BIN / "imkd-replay"), str(bag), "--rate", "0.5",
                                   "--clock", "--quiet", "--wait-for-subscribers",
                                   "--topics", *topics])
        rig.spin_until(lambda: replay.poll() is not None, 120, "the replay to finish")
        assert replay.returncode == 0
        rig.spin_until(lambda: len({_stamp(d) for d in rig.detections}) >= len(expected), 60,
                       f"detections for all {len(expected)} keyframes")
        rig.spin_until(lambda: len(rig.markers) >= len(expected), 30, "markers for them")
        rig.spin(0.5)  # nothing else may come
    finally:
        if replay is not None and replay.poll() is None:
            replay.kill()
        rig.node.destroy_node()
        node.stop()
        print(node.log())  # shown by pytest when the test fails
    got = {_stamp(d): d for d in rig.detections}
    assert set(got) == set(expected), node.log()
    markers = {_stamp(m.markers[0]): m.markers for m in rig.markers}
    for stamp, boxes in expected.items():  # published after the detections, one box each
        assert sum(m.type == Marker.LINE_LIST for m in markers[stamp]) == len(boxes)
    for stamp, boxes in expected.items():
        msg = got[stamp]
        assert msg.header.frame_id == "base_link"
        # The same boxes, compared in one canonical order: among equal scores the order is
        # arbitrary (an untrained model gives exact ties, and ONNX Runtime's threaded
        # reductions may break them differently in two processes).
        received = [(d.bbox.center.position.x, d.bbox.center.position.y,
                     CLASSES.index(d.results[0].hypothesis.class_id)) for d in msg.detections]
        detections = [msg.detections[i] for i in _canonical_order(received)]
        del msg.detections[:]
        msg.detections.extend(detections)
        boxes = boxes.select(_canonical_order(
            list(zip(boxes.params[:, 0], boxes.params[:, 1], boxes.labels))))
        assert [d.results[0].hypothesis.class_id for d in msg.detections] == [
            CLASSES[i] for i in boxes.labels]
        np.testing.assert_allclose([d.results[0].hypothesis.score for d in msg.detections],
                                   boxes.scores, atol=1e-6)
        params = np.array([[d.bbox.center.position.x, d.bbox.center.position.y,
                            d.bbox.center.position.z, d.bbox.size.x, d.bbox.size.y,
                            d.bbox.size.z] for d in msg.detections])
        np.testing.assert_allclose(params, boxes.params[:, :6], atol=1e-4)
        yaws = [quaternion_yaw([d.bbox.center.orientation.w, d.bbox.center.orientation.x,
                                d.bbox.center.orientation.y, d.bbox.center.orientation.z])
                for d in msg.detections]
        np.testing.assert_allclose(np.cos(yaws), np.cos(boxes.params[:, 6]), atol=1e-4)
        np.testing.assert_allclose(np.sin(yaws), np.sin(boxes.params[:, 6]), atol=1e-4)


def _stamp(msg) -> int:
    return msg.header.stamp.sec * NS + msg.header.stamp.nanosec

