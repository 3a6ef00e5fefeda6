"""/diagnostics: one DiagnosticStatus per sensor (OK / WARN stale or partly dropped / ERROR
never received, all dropped or without CameraInfo; rate and counters) and one for the model
(device, latency, queue drops), named `<node>: <part>` as diagnostic_updater names them; and
~/debug/status says `degraded` while every message of an input is dropped."""

from __future__ import annotations

import os
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from imkd_ros.ros_diagnostics import ERROR, OK, WARN, NodeHealth, diagnostic_array

CAMS = ("CAM_FRONT",)
RADARS = ("RADAR_FRONT",)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def resolve(topic: str) -> str:
    return "/det" + topic[1:]


def health(clock: FakeClock) -> NodeHealth:
    return NodeHealth(CAMS, RADARS, resolve, stale_timeout_s=1.0, clock=clock)


def by_name(statuses) -> dict:
    return {s.name: s for s in statuses}


def test_never_received_is_an_error_and_the_model_waits():
    clock = FakeClock()
    h = health(clock)
    clock.now += 1.0
    h.tick({}, 0)
    parts = by_name(h.statuses("cpu", {}))
    assert set(parts) == {"CAM_FRONT", "RADAR_FRONT", "model"}
    assert parts["CAM_FRONT"].level == ERROR
    assert parts["CAM_FRONT"].message == "no message received on /det/input/CAM_FRONT/image"
    assert parts["RADAR_FRONT"].values["last_message_age_s"] == "never"
    assert parts["model"].level == OK and parts["model"].values["device"] == "cpu"
    assert parts["model"].message == "waiting for the first frame set"
    assert h.dropping_everything() == {}


def test_rates_counts_and_ok():
    clock = FakeClock()
    h = health(clock)
    h.received("CAM_FRONT", "camera_info")
    for _ in range(12):
        h.received("CAM_FRONT", "image")
    for _ in range(13):
        h.received("RADAR_FRONT", "points")
    h.frame_done(end_to_end_ms=40.0, inference_ms=30.0)
    h.frame_done(end_to_end_ms=60.0, inference_ms=35.0)
    clock.now += 0.5
    h.tick({}, 0)
    parts = by_name(h.statuses("cuda:0", {}))
    cam, radar, model = parts["CAM_FRONT"], parts["RADAR_FRONT"], parts["model"]
    assert (cam.level, cam.message, cam.hardware_id) == (OK, "ok", "CAM_FRONT")
    assert cam.values["rate_hz"] == "24.00" and cam.values["received"] == "12"
    assert cam.values["dropped"] == "0" and cam.values["camera_info_received"] == "1"
    assert radar.level == OK and radar.values["rate_hz"] == "26.00"
    assert radar.values["topic"] == "/det/input/RADAR_FRONT/points"
    assert model.level == OK and model.hardware_id == "cuda:0"
    assert model.values["latency_last_ms"] == "60.0"
    assert model.values["latency_p50_ms"] == "50.0"
    assert model.values["inference_p50_ms"] == "32.5"
    assert model.values["frames_done"] == "2"
    # the next window: nothing new, so rates drop to 0, and after stale_timeout it is stale
    clock.now += 1.5
    h.tick({}, 0)
    cam = by_name(h.statuses("cpu", {}))["CAM_FRONT"]
    assert cam.level == WARN and cam.message.startswith("stale: no message for 2.0 s")
    assert cam.values["rate_hz"] == "0.00"


def test_drops_all_or_some_and_missing_camera_info():
    clock = FakeClock()
    h = health(clock)
    image, points = "/det/input/CAM_FRONT/image", "/det/input/RADAR_FRONT/points"
    for _ in range(4):
        h.received("CAM_FRONT", "image")
        h.received("RADAR_FRONT", "points")
    h.received("CAM_FRONT", "camera_info")
    clock.now += 1.0
    h.tick({image: 4, points: 1}, 0)  # InputWarnings' counts
    parts = by_name(h.statuses("cpu", {}))
    assert parts["CAM_FRONT"].level == ERROR
    assert parts["CAM_FRONT"].message == ("all 4 messages of the last 1.0 s dropped (reasons "
                                          "in the log)")
    assert parts["RADAR_FRONT"].level == WARN
    assert parts["RADAR_FRONT"].message == "1 of 4 messages of the last 1.0 s dropped"
    assert set(h.dropping_everything()) == {image}
    # the drops stop: the window is clean again
    for _ in range(4):
        h.received("CAM_FRONT", "image")
    clock.now += 0.5
    h.tick({image: 4, points: 1, "/det/input/CAM_FRONT/camera_info": 1}, 0)
    assert h.dropping_everything() == {}
    cam = by_name(h.statuses("cpu", {}))["CAM_FRONT"]  # its only CameraInfo was dropped
    assert cam.level == ERROR and cam.message.startswith(
        "no valid CameraInfo on /det/input/CAM_FRONT/camera_info yet")


def test_synchroniser_view_and_model_queue_drops_and_failures():
    clock = FakeClock()
    h = health(clock)
    h.received("CAM_FRONT", "image")
    h.received("CAM_FRONT", "camera_info")
    h.received("RADAR_FRONT", "points")
    h.frame_done(10.0, 5.0)
    clock.now += 0.2
    h.tick({}, 3)
    parts = by_name(h.statuses("cpu", {"missing_radars": ["RADAR_FRONT"]}))
    assert parts["RADAR_FRONT"].level == WARN and "synchroniser" in parts["RADAR_FRONT"].message
    assert parts["model"].level == WARN
    assert parts["model"].message.startswith("3 frame sets dropped from the full queue")
    h.frame_failed()
    clock.now += 0.2
    h.tick({}, 3)
    model = by_name(h.statuses("cpu", {}))["model"]
    assert model.level == ERROR and model.values["frames_failed"] == "1"


def test_diagnostic_array_is_what_diagnostic_updater_publishes():
    clock = FakeClock()
    h = health(clock)
    h.received("CAM_FRONT", "image")
    clock.now += 1.0
    h.tick({}, 0)
    from builtin_interfaces.msg import Time

    msg = diagnostic_array(h.statuses("cpu", {}), "imkd_detector", Time(sec=5, nanosec=7))
    assert isinstance(msg, DiagnosticArray)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (5, 7)
    names = [s.name for s in msg.status]
    assert names == ["imkd_detector: CAM_FRONT", "imkd_detector: RADAR_FRONT",
                     "imkd_detector: model"]
    cam = msg.status[0]
    assert cam.level == DiagnosticStatus.ERROR and cam.hardware_id == "CAM_FRONT"
    assert "no valid CameraInfo" in cam.message or "no CameraInfo" in cam.message
    assert {kv.key for kv in cam.values} >= {"rate_hz", "received", "dropped",
                                             "last_message_age_s"}


# ---------------------------------------------------------------------------- over DDS
@pytest.mark.ros
def test_node_publishes_diagnostics_and_degrades_while_dropping_everything(tmp_path):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from ros_rig import NS, DetectorProcess, Rig, write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "tiny_random.pt")
    context = rclpy.Context()
    rclpy.init(context=context)
    name = f"det_diag_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    node = DetectorProcess(name, {
        "checkpoint": str(checkpoint), "device": "cpu", "cameras": list(CAMS),
        "radars": list(RADARS), "score_threshold": 0.0, "stale_timeout": 1.0,
        "status_period": 0.2}, tmp_path)
    rig = Rig(context, name, CAMS, RADARS)
    arrays: list[DiagnosticArray] = []
    rig.node.create_subscription(DiagnosticArray, "/diagnostics", arrays.append,
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def latest(part: str) -> DiagnosticStatus | None:
        for array in reversed(arrays):
            for status in array.status:
                if status.name == f"{name}: {part}":
                    return status
        return None

    try:
        rig.wait_ready(node)
        rig.spin_until(lambda: latest("CAM_FRONT") is not None and rig.status, 20,
                       "a first /diagnostics and ~/debug/status")
        assert latest("CAM_FRONT").level == DiagnosticStatus.ERROR
        assert latest("CAM_FRONT").message.startswith("no message received on ")
        assert "dropping_all" not in rig.status[-1]
        # no /tf_static yet: every image and sweep is dropped -> ERROR, and status degraded
        t = 100 * NS
        rig.publish_frame(t)
        rig.spin_until(lambda: rig.status and "dropping_all" in rig.status[-1], 20,
                       "status reporting that everything is dropped")
        assert rig.status[-1]["mode"] == "degraded"
        assert f"/{name}/input/CAM_FRONT/image" in rig.status[-1]["dropping_all"]
        rig.spin_until(lambda: "dropped (reasons in the log)" in latest("CAM_FRONT").message,
                       10, "CAM_FRONT ERROR: all dropped")
        assert latest("CAM_FRONT").level == DiagnosticStatus.ERROR
        rig.spin_until(lambda: "waiting for base_link -> CAM_FRONT on /tf_static or /tf"
                       in node.log(), 10, "the warning saying what the node waits for")
        # calibrated: frames go through, every part OK
        rig.publish_static()
        rig.spin(0.3)
        for k in range(1, 6):
            rig.publish_frame(t + k * NS // 10)
            rig.spin(0.1)
        rig.spin_until(lambda: rig.detections, 60, "detections")
        rig.publish_frame(t + 6 * NS // 10)
        rig.spin_until(lambda: latest("CAM_FRONT").level == DiagnosticStatus.OK
                       and latest("model").level == DiagnosticStatus.OK
                       and int(_values(latest("model"))["frames_done"]) >= 1
                       and int(_values(latest("CAM_FRONT"))["received"]) >= 7, 20,
                       "every part OK, the last frame counted")
        cam, model = _values(latest("CAM_FRONT")), _values(latest("model"))
        assert int(cam["received"]) >= 7 and int(cam["dropped"]) == 1
        assert model["device"] == "cpu" and float(model["latency_last_ms"]) > 0
        assert latest("RADAR_FRONT").hardware_id == "RADAR_FRONT"
        assert "dropping_all" not in rig.status[-1]
        assert rig.status[-1]["health"]["CAM_FRONT"]["level"] == "ok"
        # silence: after stale_timeout every sensor is WARN stale
        rig.spin_until(lambda: latest("CAM_FRONT").level == DiagnosticStatus.WARN
                       and latest("CAM_FRONT").message.startswith("stale"), 10,
                       "CAM_FRONT stale")
        assert node.proc.poll() is None, node.log()
    finally:
        rig.node.destroy_node()
        code = node.stop()
        rclpy.try_shutdown(context=context)
        print(node.log())  # shown by pytest when the test fails
    assert code == 0


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}
