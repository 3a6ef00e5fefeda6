"""The camera + radar 3D detector node (`ros2 run imkd_ros detector`).

Messages -> `Sample` -> the offline `DetectorPipeline` -> `vision_msgs/Detection3DArray` and RViz
markers. The node converts and synchronises; every computation on the data (ego-motion
compensation of radar sweeps and camera poses, pre-processing, the model, decoding) is the
`imkd_core` code the offline evaluation runs, so both give the same boxes for the same data.

Topics (private, remap them; `launch/detector.launch.py` maps them to `nuscenes2bag` names):
  in   ~/input/<camera>/image         sensor_msgs/Image (or CompressedImage: compressed_images)
       ~/input/<camera>/camera_info   sensor_msgs/CameraInfo
       ~/input/<radar>/points         sensor_msgs/PointCloud2 with the 18 nuScenes radar fields
       ~/input/keyframes              std_msgs/String, nuscenes2bag keyframe records (only
                                      with trigger: keyframes)
       /tf, /tf_static                ego pose (map_frame -> base_frame), sensor extrinsics
                                      (from /tf too for a mount that never moves on it)
  out  ~/output/detections            vision_msgs/Detection3DArray, base_frame, trigger stamp
       ~/output/markers               visualization_msgs/MarkerArray (after the detections)
       ~/output/label_info            vision_msgs/LabelInfo (latched)
       ~/debug/<stage>_ms             std_msgs/Float64 per frame: convert (the set's image
                                      callbacks' CPU: decode + model-input preparation),
                                      queue_wait, pose_wait (for the /tf ego pose covering the
                                      set, at most tf_wait), preprocess (Sample + batch),
                                      inference (forward), postprocess (decode + detections
                                      published), end_to_end (the set's last input, sensor
                                      message or covering /tf, arrives -> detections published),
                                      markers (built and published after the detections)
       ~/debug/status                 std_msgs/String, JSON: mode ok|degraded|skipping, why,
                                      counters (see `imkd_ros.sync` for the degraded modes;
                                      degraded too while every message of an input is dropped)
       /diagnostics                   diagnostic_msgs/DiagnosticArray: one status per sensor
                                      and one for the model (`imkd_ros.ros_diagnostics`)

Parameters: `imkd_ros.parameters`. Subscription callbacks convert (`imkd_ros.inputs`), prepare
each image's model input as it arrives (the offline `Preprocessor.prepare_image`) and
synchronise (`imkd_ros.sync`); a complete set goes to the model worker (`imkd_ros.worker`), so
inference never blocks a callback. The worker publishes the detections first, then the RViz
markers, which are for people and need not delay the detections. Bad messages are dropped with
a throttled warning naming the topic and what is wrong (`imkd_ros.diagnostics`).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float64, String
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from imkd_core.interrupts import interrupt_once
from imkd_core.pipeline import DetectorPipeline
from imkd_core.sample import LIDAR_NAME
from imkd_core.wire.camera_model import CameraModel
from imkd_core.wire.cdr import detections_cdr, markers_cdr
from imkd_core.wire.fields import WireError, stamp_ns, tf_message_to_list
from imkd_core.wire.keyframe import KeyframeRecord
from imkd_core.wire.names import (
    QOS_DATA,
    QOS_LATCHED,
    QOS_OUTPUT,
    QOS_RESULTS,
    QOS_TF,
    QOS_TF_STATIC_IN,
)
from imkd_ros import convert, parameters
from imkd_ros.calibration import load_calibration
from imkd_ros.diagnostics import InputWarnings
from imkd_ros.inputs import SampleBuilder, camera_frame, frame_stamps, radar_sweep
from imkd_ros.markers import MarkerLifetime
from imkd_ros.parameters import ParameterError
from imkd_ros.qos import RADAR_DEPTH, profile, sensor_profile
from imkd_ros.ros_diagnostics import DIAGNOSTICS_TOPIC, NodeHealth, diagnostic_array
from imkd_ros.sync import BACKWARDS, FrameSet, SensorSync
from imkd_ros.tf_buffer import TfCache
from imkd_ros.tf_listener import TfListener
from imkd_ros.worker import FrameWorker

NS = 1_000_000_000
# ~/debug/<name>_ms topics, one value per processed frame set.
TIMINGS = ("convert", "queue_wait", "pose_wait", "preprocess", "inference", "postprocess",
           "end_to_end", "markers")


class DetectorNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(parameters.NODE_NAME, **kwargs)
        self.p = p = parameters.declare(self)
        self.tf = TfListener(TfCache(max_hold_ns=int(p.tf_hold * NS)), p.map_frame, p.base_frame)
        if p.calibration_file:
            self.tf.add([(p.base_frame, frame, 0, T)
                         for frame, T in load_calibration(p.calibration_file).items()], True)
        self.sync = SensorSync(p.sync_config())
        self._sync_lock = threading.Lock()  # SensorSync is not thread-safe
        try:
            self.pipeline = DetectorPipeline.from_file(p.checkpoint, device=p.device,
                                                       backend=p.backend, cameras=p.cameras)
        except Exception as exc:  # any load failure is a bad 'checkpoint'/'device' value
            raise ParameterError(f"parameter 'checkpoint' = {p.checkpoint!r} (device "
                                 f"{p.device!r}, backend {p.backend!r}): cannot load: "
                                 f"{exc}") from exc
        self.get_logger().info(f"model {self.pipeline.config.name} from {p.checkpoint}: "
                               f"{self.pipeline.backend.label}")
        # a sensor subset of what the model was trained with: absent inputs, mode degraded
        self.configured_without = p.configured_without(self.pipeline.config.image.cameras)
        if self.configured_without:
            self.get_logger().warning(f"{self.configured_without}: they are absent inputs")
        self.warnings = InputWarnings(self.get_logger(), self.resolve_topic_name,
                                      p.warn_throttle)
        self.samples = SampleBuilder(self.tf, p.reader_options(), self.warnings)
        self.health = NodeHealth(p.cameras, p.radars, self.resolve_topic_name, p.stale_timeout)
        self.marker_lifetime = MarkerLifetime(p.marker_lifetime)
        self._frames_done = 0

        pub = self.create_publisher
        self.pub_detections = pub(Detection3DArray, "~/output/detections", profile(QOS_RESULTS))
        self.pub_markers = pub(MarkerArray, "~/output/markers", profile(QOS_RESULTS))
        self.pub_labels = pub(LabelInfo, "~/output/label_info", profile(QOS_LATCHED))
        self.pub_status = pub(String, "~/debug/status", profile(QOS_OUTPUT))
        self.pub_diagnostics = pub(DiagnosticArray, DIAGNOSTICS_TOPIC, profile(QOS_OUTPUT))
        self.pub_timing = {stage: pub(Float64, f"~/debug/{stage}_ms", profile(QOS_DATA))
                           for stage in TIMINGS}
        self.pub_labels.publish(convert.label_info(
            p.base_frame, self.get_clock().now().to_msg(), p.score_threshold))

        # Calibration, intrinsics and poses first: an executor serves ready subscriptions in
        # creation order, so these are taken before the sensor data that needs them.
        # Every callback is guarded: any exception from one message drops and counts it.
        def sub(msg_type, topic, callback, qos):
            self.create_subscription(msg_type, topic, self.warnings.guard(topic, callback), qos)
        sensor_qos = sensor_profile(p.reliable_inputs)
        sub(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), profile(QOS_TF_STATIC_IN))
        sub(TFMessage, "/tf", lambda m: self._on_tf(m, False), profile(QOS_TF))
        for cam in p.cameras:
            sub(CameraInfo, f"~/input/{cam}/camera_info",
                lambda msg, cam=cam: self._on_camera_info(cam, msg), sensor_qos)
        for cam in p.cameras:
            sub(CompressedImage if p.compressed_images else Image, f"~/input/{cam}/image",
                lambda msg, cam=cam: self._on_image(cam, msg), sensor_qos)
        for radar in p.radars:
            sub(PointCloud2, f"~/input/{radar}/points",
                lambda msg, radar=radar: self._on_radar(radar, msg),
                sensor_profile(p.reliable_inputs, RADAR_DEPTH))
        if p.trigger == "keyframes":
            sub(String, "~/input/keyframes", self._on_keyframe, profile(QOS_TF))
        self.create_timer(p.status_period, self._publish_status,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.worker = FrameWorker(p.queue_size, self._run, self._failed,
                                  name="imkd_detector_worker")

    def status(self) -> dict:
        """What ~/debug/status carries: the synchroniser's mode and counters, plus the node's."""
        with self._sync_lock:
            status = self.sync.status()
        status["dropped_messages"] = self.warnings.dropped()
        status["frames_done"] = self._frames_done
        status["frames_dropped_queue"] = self.worker.dropped
        status["device"] = str(self.pipeline.device)
        if self.samples.ego_motion_missing:
            status["mode"] = "degraded" if status["mode"] == "ok" else status["mode"]
            status["ego_motion"] = "missing: no /tf ego pose, sensors treated as static"
        if self.configured_without:
            status["mode"] = "degraded" if status["mode"] == "ok" else status["mode"]
            status["configured_without"] = self.configured_without
        dropping = self.health.dropping_everything()  # as of the last status period
        if dropping:
            status["mode"] = "degraded" if status["mode"] == "ok" else status["mode"]
            status["dropping_all"] = dropping
        return status

    def _publish_status(self) -> None:
        """The status timer: closes the diagnostics window, then ~/debug/status and
        /diagnostics."""
        self.health.tick(self.warnings.dropped(), self.worker.dropped)
        status = self.status()
        health = self.health.statuses(status["device"], status)
        status["health"] = {part.name: part.as_dict() for part in health}
        self.pub_status.publish(String(data=json.dumps(status, sort_keys=True)))
        self.pub_diagnostics.publish(diagnostic_array(health, self.get_name(),
                                                      self.get_clock().now().to_msg()))

    # --------------------------------------------------------------------------- callbacks
    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        transforms, problems = tf_message_to_list(msg)
        for problem in problems:
            self.warnings.drop("/tf_static" if static else "/tf", problem)
        if self.tf.add(transforms, static):
            self.warnings.warn("/tf", "backwards",
                               "stamp went backwards (bag loop?): ego poses reset")

    def _on_camera_info(self, cam: str, msg: CameraInfo) -> None:
        self.health.received(cam, "camera_info")
        try:
            self.samples.set_camera_model(cam, CameraModel.from_msg(msg,
                                                                    self.p.rectified_images))
        except WireError as exc:
            self.warnings.drop(f"~/input/{cam}/camera_info", str(exc))

    def _on_image(self, cam: str, msg: Image | CompressedImage) -> None:
        start, topic = time.perf_counter(), f"~/input/{cam}/image"
        self.health.received(cam, "image")
        if self._duplicate(cam, msg):
            return
        try:
            frame = camera_frame(msg, self.tf, self.pipeline.prepare_image,
                                 self.samples.camera_model(cam), self.p.max_image_pixels)
        except WireError as exc:
            self.warnings.drop(topic, str(exc))
            return
        with self._sync_lock:
            result = self.sync.add_camera(cam, stamp_ns(msg.header.stamp), frame)
        self._after_sync(topic, *result, start)

    def _on_radar(self, radar: str, msg: PointCloud2) -> None:
        start, topic = time.perf_counter(), f"~/input/{radar}/points"
        self.health.received(radar, "points")
        if self._duplicate(radar, msg):
            return
        try:
            sweep, non_finite = radar_sweep(msg, self.tf, self.p.max_radar_points)
        except WireError as exc:
            self.warnings.drop(topic, str(exc))
            return
        if non_finite:
            self.warnings.warn(topic, "non-finite points",
                               f"removed {non_finite} points with NaN/Inf")
        with self._sync_lock:
            result = self.sync.add_radar(radar, stamp_ns(msg.header.stamp), sweep)
        self._after_sync(topic, *result, start)

    def _on_keyframe(self, msg: String) -> None:
        """A nuscenes2bag keyframe record: which message of each sensor makes the keyframe."""
        try:
            record = KeyframeRecord.from_json(msg.data)
        except WireError as exc:
            self.warnings.drop("~/input/keyframes", f"not a keyframe record: {exc}")
            return
        # The offline reader takes the keyframe's ego pose at its LiDAR stamp.
        pose_stamp = record.data.get(LIDAR_NAME, record.timestamp)
        with self._sync_lock:
            result = self.sync.add_keyframe(record.timestamp, pose_stamp, record.data)
        self._after_sync("~/input/keyframes", *result, time.perf_counter())

    def _duplicate(self, sensor: str, msg) -> bool:
        """A repeat of the sensor's previous message: skipped before any conversion work
        (`SensorSync` would drop it and count it)."""
        with self._sync_lock:
            return self.sync.drop_duplicate(sensor, stamp_ns(msg.header.stamp))

    def _after_sync(self, topic: str, frame_set: FrameSet | None, reset: str,
                    start: float) -> None:
        if reset:  # why the synchroniser started over (a bag loop, a clock jump)
            self.warnings.warn(topic, "backwards" if reset == BACKWARDS else "jump", reset)
        if frame_set is not None:
            self._enqueue(frame_set, start)

    def _enqueue(self, frame_set: FrameSet, start: float) -> None:
        self.worker.put(frame_set, start)

    # ------------------------------------------------------------------------------ worker
    def _run(self, frame_set: FrameSet, start: float, queue_wait_s: float) -> None:
        timings = self.process(frame_set, start, queue_wait_s)
        self.health.frame_done(timings["end_to_end"], timings["inference"])
        for stage, ms in timings.items():
            self.pub_timing[stage].publish(Float64(data=ms))

    def _failed(self, frame_set: FrameSet, exc: Exception) -> None:
        self.health.frame_failed()
        self.warnings.failed(f"frame at {frame_set.stamp * 1e-9:.3f} s", exc)

    def process(self, frame_set: FrameSet, start: float, queue_wait_s: float
                ) -> dict[str, float]:
        """Run one frame set through the model and publish its detections, then its markers.
        `start`: perf_counter() when the set's last message arrived. Returns the stage timings
        (ms, the ~/debug topics)."""
        waited_from = time.perf_counter()
        pose_arrival = self.tf.wait_for_ego_pose(max(frame_stamps(frame_set)), self.p.tf_wait)
        # The frame's input is complete when its last message is in, the covering ego pose
        # included (or given up on): latency is counted from there.
        complete = max(start, pose_arrival or start)
        t0 = time.perf_counter()
        convert_s = sum(f.payload.convert_s for f in frame_set.cameras.values())
        sample = self.samples.build(frame_set)
        prepared = {cam: frame_set.cameras[cam].payload.prepared for cam in sample.cameras}
        batch = self.pipeline.preprocess(sample, prepared)
        t1 = time.perf_counter()
        outputs = self.pipeline.infer(batch)
        t2 = time.perf_counter()
        boxes = self.pipeline.postprocess(outputs)
        if len(boxes):
            boxes = boxes.select(np.asarray(boxes.scores) >= self.p.score_threshold)
        self.pub_detections.publish(detections_cdr(boxes, frame_set.stamp, self.p.base_frame))
        t3 = time.perf_counter()
        self.pub_markers.publish(markers_cdr(boxes, frame_set.stamp, self.p.base_frame,
                                             self.marker_lifetime(frame_set.stamp)))
        t4 = time.perf_counter()
        # end_to_end: the frame's last input (sensor message or covering /tf) arrived -> its
        # detections are out (wall time). convert: CPU time the set's image callbacks spent
        # (earlier images were converted while the set was incomplete: cost, not all latency).
        timings = {"convert": convert_s * 1e3, "queue_wait": queue_wait_s * 1e3,
                   "pose_wait": (t0 - waited_from) * 1e3, "preprocess": (t1 - t0) * 1e3,
                   "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3,
                   "end_to_end": (t3 - complete) * 1e3, "markers": (t4 - t3) * 1e3}
        self._frames_done += 1
        return timings

    def stop(self) -> None:
        self.worker.stop()


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C / SIGTERM; 0 then, 2 for a parameter it cannot start with.

    Ctrl-C is always a clean exit 0, also when it arrives twice (`ros2 launch` forwards the
    terminal's SIGINT that the node already got from the process group): only the first
    interrupt raises, later ones are ignored (`interrupt_once`)."""
    # The worker waits for the GIL whenever the executor thread runs Python (callbacks arrive
    # all the time); CPython's default 5 ms hand-over interval showed up as frame latency.
    sys.setswitchinterval(0.001)
    interrupt_once()
    code = 0
    try:
        rclpy.init(args=args)
        node = None
        try:
            node = DetectorNode()
            rclpy.spin(node)
        except (ParameterError, ParameterException) as exc:  # a wrong type names it too
            rclpy.logging.get_logger(parameters.NODE_NAME).fatal(f"cannot start: {exc}")
            code = 2
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            if node is not None:
                node.stop()
                node.destroy_node()
            # keep interrupt_once's handlers: uninstalling rclpy's would put back the ones
            # from before rclpy.init. rclpy.utilities' try_shutdown never uninstalls them, on
            # Jazzy too (its rclpy.try_shutdown has no uninstall_handlers; Kilted's does).
            rclpy.utilities.try_shutdown()
    except KeyboardInterrupt:  # the first interrupt came during start-up or the clean-up
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
