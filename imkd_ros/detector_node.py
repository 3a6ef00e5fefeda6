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
                                      counters (see `imkd_ros.sync` for the degraded modes)

Threads: subscription callbacks convert, prepare each image's model input as it arrives (the
offline `Preprocessor.prepare_image`, so the tensors are the offline ones) and synchronise; a
complete set goes into a bounded queue (the oldest is dropped and counted when full) that one
worker thread drains through the model, so inference never blocks a callback. The worker
publishes the detections first, then the RViz markers, which are for people and need not delay
the detections. Bad messages are dropped with a warning (throttled per topic and reason) that
names the topic and what is wrong.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
import yaml
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float64, String
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from imkd_core.data.bag import KEYFRAME_FORMAT, detections_cdr, markers_cdr
from imkd_core.data.sweeps import RadarFilter, RawSweep, aggregate_radar_sweeps, sensor_to_keyframe
from imkd_core.geometry import make_transform
from imkd_core.pipeline import DetectorPipeline
from imkd_core.preprocess import PreparedImage
from imkd_core.sample import (
    CAMERA_NAMES,
    LIDAR_NAME,
    NUSCENES_RADAR_FIELDS,
    RADAR_NAMES,
    CameraData,
    RadarData,
    Sample,
)
from imkd_ros import convert
from imkd_ros.sync import TRIGGERS, FrameSet, SensorSync, SyncConfig
from imkd_ros.tf_buffer import TfCache, TfLookupError

NS = 1_000_000_000
# ~/debug/<name>_ms topics, one value per processed frame set.
TIMINGS = ("convert", "queue_wait", "pose_wait", "preprocess", "inference", "postprocess",
           "end_to_end", "markers")


class ParameterError(ValueError):
    """A parameter value the node cannot start with; the text names the parameter."""


@dataclass(frozen=True)
class Param:
    default: object
    description: str


PARAMETERS: dict[str, Param] = {
    "checkpoint": Param("", "Model checkpoint (.pt) written by imkd_core.pipeline.save_checkpoint;"
                            " required"),
    "device": Param("auto", "Torch device: auto (cuda if available), cpu or cuda"),
    "cameras": Param(list(CAMERA_NAMES), "Camera names; each gets ~/input/<name>/image and "
                                         "~/input/<name>/camera_info"),
    "radars": Param(list(RADAR_NAMES), "Radar names; each gets ~/input/<name>/points"),
    "compressed_images": Param(False, "Subscribe sensor_msgs/CompressedImage (JPEG/PNG) instead "
                                      "of sensor_msgs/Image"),
    "reliable_inputs": Param(False, "Subscribe the sensor inputs reliable instead of "
                                    "best-effort (keep-last either way): for large raw images "
                                    "on transports that lose fragments"),
    "trigger": Param("cameras", "cameras: run on every complete camera set (live); keyframes: "
                                "run on the records of ~/input/keyframes (nuscenes2bag's "
                                "/imkd/keyframes), exactly the offline keyframes"),
    "camera_tolerance": Param(0.06, "Max spread of the camera stamps in one set (s)"),
    "radar_sweeps": Param(6, "Radar sweeps per sensor fed to the model, newest included (as the "
                             "offline reader's radar_sweeps)"),
    "radar_max_age": Param(0.6, "Radar sweeps older than this before the trigger are unused (s)"),
    "radar_filter": Param("nuscenes", "Radar return filter: nuscenes (devkit default) or all"),
    "max_radar_points": Param(10000, "A PointCloud2 with more points is dropped as malformed"),
    "stale_timeout": Param(1.0, "A sensor silent this long (s, sensor time) is stale"),
    "missing_camera": Param("blank", "Stale camera: blank (run with a zero image) or skip (no "
                                     "detections until it is back)"),
    "score_threshold": Param(0.2, "Detections below this score are not published"),
    "map_frame": Param("map", "Fixed frame of the ego pose on /tf"),
    "base_frame": Param("base_link", "Ego frame; detections are published in it"),
    "tf_hold": Param(0.05, "Use the nearest /tf ego pose up to this far outside its span (s)"),
    "tf_wait": Param(0.1, "Wait this long (s, wall clock) for a /tf ego pose newer than a sensor "
                          "stamp before holding the last one"),
    "calibration_file": Param("", "Optional YAML of sensor extrinsics {frame: {translation: "
                                  "[x,y,z], rotation: [w,x,y,z]}} (base_frame <- frame); "
                                  "else /tf_static"),
    "queue_size": Param(1, "Frame sets waiting for the model; when full the oldest is dropped"),
    "marker_lifetime": Param(0.0, "Marker lifetime (s); 0: two periods of the detection rate"),
    "status_period": Param(1.0, "Seconds between ~/debug/status messages (wall clock)"),
    "warn_throttle": Param(5.0, "Seconds between repeated warnings of one topic and reason"),
}


@dataclass
class CameraFrame:
    """A converted camera message, as the synchroniser holds it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    prepared: PreparedImage  # the image's model input, made in the callback
    T_base_cam: np.ndarray  # calibration from /tf_static (or calibration_file)
    convert_s: float  # CPU time the callback spent converting and preparing it


def validate_parameters(values: dict) -> None:
    """Raise ParameterError naming the first bad parameter."""

    def bad(name: str, why: str):
        raise ParameterError(f"parameter '{name}' = {values[name]!r}: {why}")

    checkpoint = values["checkpoint"]
    if not checkpoint:
        bad("checkpoint", "required (a file written by imkd_core.pipeline.save_checkpoint)")
    if not Path(checkpoint).is_file():
        bad("checkpoint", "no such file")
    if values["device"] not in ("auto", "cpu", "cuda"):
        bad("device", "must be auto, cpu or cuda")
    for key in ("cameras", "radars"):
        names = values[key]
        if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
            bad(key, "names must be unique, non-empty and without '/'")
    if not values["cameras"]:
        bad("cameras", "at least one camera is needed to trigger detection")
    for key in ("camera_tolerance", "radar_max_age", "stale_timeout", "tf_hold", "tf_wait"):
        if not values[key] >= 0:
            bad(key, "must be >= 0")
    for key in ("status_period", "warn_throttle"):
        if not values[key] > 0:
            bad(key, "must be > 0")
    if not values["marker_lifetime"] >= 0:
        bad("marker_lifetime", "must be >= 0")
    for key in ("radar_sweeps", "queue_size", "max_radar_points"):
        if values[key] < 1:
            bad(key, "must be >= 1")
    if values["radar_filter"] not in ("nuscenes", "all"):
        bad("radar_filter", "must be nuscenes or all")
    if values["trigger"] not in TRIGGERS:
        bad("trigger", f"must be one of {', '.join(TRIGGERS)}")
    if values["missing_camera"] not in ("blank", "skip"):
        bad("missing_camera", "must be blank or skip")
    if not 0.0 <= values["score_threshold"] <= 1.0:
        bad("score_threshold", "must be in [0, 1]")
    if not values["map_frame"] or not values["base_frame"]:
        bad("map_frame" if not values["map_frame"] else "base_frame", "must not be empty")
    if values["calibration_file"] and not Path(values["calibration_file"]).is_file():
        bad("calibration_file", "no such file")


def load_calibration(path: str) -> dict[str, np.ndarray]:
    """Extrinsics YAML -> {frame: T_base_frame}; errors name the file and the entry."""
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"parameter 'calibration_file': {path} is not a mapping of frames")
    out = {}
    for frame, entry in data.items():
        try:
            out[str(frame)] = make_transform(np.asarray(entry["rotation"], dtype=np.float64),
                                             np.asarray(entry["translation"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"parameter 'calibration_file': {path}: entry {frame!r} needs "
                                 f"translation [x,y,z] and rotation [w,x,y,z] ({exc})") from exc
    return out


def sensor_qos(depth: int = 2, reliable: bool = False) -> QoSProfile:
    """Sensor-data QoS: keep-last `depth`, best-effort unless asked to be reliable."""
    reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST, depth=depth)


OUTPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                        depth=1)
LATCHED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
TF_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                    depth=100)
TF_STATIC_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                           history=HistoryPolicy.KEEP_LAST, depth=100,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


class DetectorNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__("imkd_detector", **kwargs)
        for name, param in PARAMETERS.items():
            self.declare_parameter(name, param.default,
                                   ParameterDescriptor(description=param.description))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        validate_parameters(p)
        self.p = p
        self.tf = TfCache(max_hold_ns=int(p["tf_hold"] * NS))
        if p["calibration_file"]:
            for frame, T in load_calibration(p["calibration_file"]).items():
                self.tf.set_static(p["base_frame"], frame, T)
        self.sync = SensorSync(SyncConfig(
            cameras=tuple(p["cameras"]), radars=tuple(p["radars"]),
            camera_tolerance_ns=int(p["camera_tolerance"] * NS), radar_sweeps=p["radar_sweeps"],
            radar_max_age_ns=int(p["radar_max_age"] * NS),
            stale_timeout_ns=int(p["stale_timeout"] * NS), missing_camera=p["missing_camera"],
            trigger=p["trigger"],
            radar_queue=max(16, p["radar_sweeps"] + 4)))
        self.radar_filter = RadarFilter.from_spec(p["radar_filter"])
        try:
            self.pipeline = DetectorPipeline.from_checkpoint(p["checkpoint"], device=p["device"])
        except Exception as exc:  # any load failure is a bad 'checkpoint'/'device' value
            raise ParameterError(f"parameter 'checkpoint' = {p['checkpoint']!r} (device "
                                 f"{p['device']!r}): cannot load: {exc}") from exc
        self.get_logger().info(f"model {self.pipeline.config.name} from {p['checkpoint']} on "
                               f"{self.pipeline.device}")

        self._lock = threading.Lock()  # sync state, intrinsics and TF: callbacks vs the worker
        self._tf_updated = threading.Condition(self._lock)  # /tf brought new ego poses
        self._tf_arrival = 0.0  # perf_counter() when the newest /tf message was taken
        self._camera_K: dict[str, np.ndarray] = {}
        self._dropped: dict[str, int] = defaultdict(int)  # per topic
        self._last_warn: dict[tuple[str, str], float] = {}
        self._ego_motion_missing = False
        self._frames_dropped_queue = 0
        self._frames_done = 0
        self._last_trigger: int | None = None
        self._period_ns: float | None = None
        self._queue: deque[tuple[FrameSet, float, float]] = deque()
        self._wake = threading.Condition()
        self._running = True

        self.pub_detections = self.create_publisher(Detection3DArray, "~/output/detections",
                                                    OUTPUT_QOS)
        self.pub_markers = self.create_publisher(MarkerArray, "~/output/markers", OUTPUT_QOS)
        self.pub_labels = self.create_publisher(LabelInfo, "~/output/label_info", LATCHED_QOS)
        self.pub_status = self.create_publisher(String, "~/debug/status", OUTPUT_QOS)
        self.pub_timing = {stage: self.create_publisher(Float64, f"~/debug/{stage}_ms", 10)
                           for stage in TIMINGS}
        self.pub_labels.publish(convert.label_info(
            p["base_frame"], self.get_clock().now().to_msg(), p["score_threshold"]))

        # Calibration, intrinsics and poses first: an executor serves ready subscriptions in
        # creation order, so these are taken before the sensor data that needs them.
        self.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True),
                                 TF_STATIC_QOS)
        self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS)
        reliable = p["reliable_inputs"]
        for cam in p["cameras"]:
            self.create_subscription(CameraInfo, f"~/input/{cam}/camera_info",
                                     lambda msg, cam=cam: self._on_camera_info(cam, msg),
                                     sensor_qos(reliable=reliable))
        image_type = CompressedImage if p["compressed_images"] else Image
        for cam in p["cameras"]:
            self.create_subscription(image_type, f"~/input/{cam}/image",
                                     lambda msg, cam=cam: self._on_image(cam, msg),
                                     sensor_qos(reliable=reliable))
        for radar in p["radars"]:
            self.create_subscription(PointCloud2, f"~/input/{radar}/points",
                                     lambda msg, radar=radar: self._on_radar(radar, msg),
                                     sensor_qos(depth=5, reliable=reliable))
        if p["trigger"] == "keyframes":
            self.create_subscription(String, "~/input/keyframes", self._on_keyframe, TF_QOS)
        self.create_timer(p["status_period"], self._publish_status,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._work, name="imkd_detector_worker",
                                        daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------- diagnostics
    def _topic(self, suffix: str) -> str:
        return self.resolve_topic_name(suffix)

    def _drop(self, suffix: str, reason: str) -> None:
        """Count a dropped message and warn about it (throttled per topic and reason)."""
        topic = self._topic(suffix)
        self._dropped[topic] += 1
        self._warn(topic, reason, f"{topic}: dropped message: {reason}")

    def _warn(self, topic: str, reason: str, text: str) -> None:
        """At most one warning per warn_throttle seconds for a topic and a reason; reasons
        that differ only in their numbers (sizes, stamps) count as the same reason."""
        key = (topic, re.sub(r"\d+(\.\d+)?", "#", reason))
        now = time.monotonic()
        last = self._last_warn.get(key)
        if last is None or now - last >= self.p["warn_throttle"]:
            self._last_warn[key] = now
            self.get_logger().warning(text)

    def status(self) -> dict:
        """What ~/debug/status carries: the synchroniser's mode and counters, plus the node's."""
        with self._lock:
            status = self.sync.status()
            status["dropped_messages"] = dict(self._dropped)
        status["frames_done"] = self._frames_done
        status["frames_dropped_queue"] = self._frames_dropped_queue
        status["device"] = str(self.pipeline.device)
        if self._ego_motion_missing:
            status["mode"] = "degraded" if status["mode"] == "ok" else status["mode"]
            status["ego_motion"] = "missing: no /tf ego pose, sensors treated as static"
        return status

    def _publish_status(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status(), sort_keys=True)))

    # --------------------------------------------------------------------------- callbacks
    def _on_camera_info(self, cam: str, msg: CameraInfo) -> None:
        try:
            K = convert.camera_info_intrinsics(msg)
        except convert.ConversionError as exc:
            self._drop(f"~/input/{cam}/camera_info", str(exc))
            return
        with self._lock:
            self._camera_K[cam] = K

    def _on_image(self, cam: str, msg) -> None:
        start, cpu_start = time.perf_counter(), time.thread_time()
        suffix = f"~/input/{cam}/image"
        stamp = convert.stamp_to_ns(msg.header.stamp)
        try:
            T_base_cam = self.tf.static_lookup(self.p["base_frame"],
                                               msg.header.frame_id.lstrip("/"))
        except TfLookupError as exc:
            self._drop(suffix, f"missing TF: {exc}")
            return
        try:
            image = (convert.compressed_to_rgb(msg) if isinstance(msg, CompressedImage)
                     else convert.image_to_rgb(msg))
        except convert.ConversionError as exc:
            self._drop(suffix, str(exc))
            return
        prepared = self.pipeline.prepare_image(image)
        frame = CameraFrame(image, prepared, T_base_cam, time.thread_time() - cpu_start)
        with self._lock:
            frame_set, reset = self.sync.add_camera(cam, stamp, frame)
        self._after_sync(suffix, frame_set, reset, start)

    def _on_keyframe(self, msg: String) -> None:
        """A nuscenes2bag keyframe record: which message of each sensor makes the keyframe."""
        try:
            record = json.loads(msg.data)
            if record.get("format") != KEYFRAME_FORMAT:
                raise ValueError(f"format {record.get('format')!r}, expected {KEYFRAME_FORMAT}")
            stamp = int(record["timestamp"])
            sensors = {str(k): int(v) for k, v in record["data"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._drop("~/input/keyframes", f"not a keyframe record: {exc}")
            return
        # The offline reader takes the keyframe's ego pose at its LiDAR stamp.
        with self._lock:
            frame_set, reset = self.sync.add_keyframe(stamp, sensors.get(LIDAR_NAME, stamp),
                                                      sensors)
        self._after_sync("~/input/keyframes", frame_set, reset, time.perf_counter())

    def _after_sync(self, suffix: str, frame_set: FrameSet | None, reset: bool,
                    start: float) -> None:
        if reset:
            self._warn(self._topic(suffix), "backwards",
                       f"{self._topic(suffix)}: stamp went backwards (bag loop?): state reset")
        if frame_set is not None:
            self._enqueue(frame_set, start)

    def _on_radar(self, radar: str, msg: PointCloud2) -> None:
        start = time.perf_counter()
        suffix = f"~/input/{radar}/points"
        stamp = convert.stamp_to_ns(msg.header.stamp)
        try:
            raw, non_finite = convert.pointcloud2_to_array(msg, NUSCENES_RADAR_FIELDS,
                                                           self.p["max_radar_points"])
            T_base_radar = self.tf.static_lookup(self.p["base_frame"],
                                                 msg.header.frame_id.lstrip("/"))
        except convert.ConversionError as exc:
            self._drop(suffix, str(exc))
            return
        except TfLookupError as exc:
            self._drop(suffix, f"missing TF: {exc}")
            return
        if non_finite:
            self._warn(self._topic(suffix), "non-finite points",
                       f"{self._topic(suffix)}: removed {non_finite} points with NaN/Inf")
        raw = raw[self.radar_filter.apply(raw)]  # per sweep, as the offline aggregation filters
        with self._lock:
            frame_set, reset = self.sync.add_radar(radar, stamp, (raw, T_base_radar))
        self._after_sync(suffix, frame_set, reset, start)

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        transforms, problems = convert.tf_message_to_list(msg)
        for problem in problems:
            self._drop("/tf_static" if static else "/tf", problem)
        looped = False
        with self._tf_updated:
            for parent, child, stamp, T in transforms:
                if static:
                    self.tf.set_static(parent, child, T)
                else:
                    looped |= self.tf.add(parent, child, stamp, T)
            if not static:
                self._tf_arrival = time.perf_counter()
                self._tf_updated.notify_all()
        if looped:
            self._warn("/tf", "backwards",
                       "/tf: stamp went backwards (bag loop?): ego poses reset")

    # ------------------------------------------------------------------------------ worker
    def _enqueue(self, frame_set: FrameSet, start: float) -> None:
        with self._wake:
            if len(self._queue) >= self.p["queue_size"]:
                self._queue.popleft()
                self._frames_dropped_queue += 1
            self._queue.append((frame_set, start, time.perf_counter()))
            self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._running and not self._queue:
                    self._wake.wait()
                if not self._running:
                    return
                frame_set, start, enqueued = self._queue.popleft()
            try:
                timings = self.process(frame_set, start, time.perf_counter() - enqueued)
                for stage, ms in timings.items():
                    self.pub_timing[stage].publish(Float64(data=ms))
            except Exception as exc:  # one bad frame must not end the node
                self.get_logger().error(f"frame at {frame_set.stamp * 1e-9:.3f} s failed: "
                                        f"{type(exc).__name__}: {exc}")

    def wait_for_ego_pose(self, stamp: int) -> float | None:
        """Block (in the worker) until /tf holds an ego pose at or after `stamp`, at most tf_wait
        seconds: /tf travels apart from the sensor data, and the pose at each sensor stamp is
        part of the frame's input. Returns when the input became complete (perf_counter): the
        covering /tf message was taken, or the wait gave up (then the last pose is held within
        tf_hold, or sensors are treated as static); None when there was nothing to wait for."""
        frames = (self.p["map_frame"], self.p["base_frame"])
        deadline = time.monotonic() + self.p["tf_wait"]
        waited = False
        with self._tf_updated:
            while True:
                newest = self.tf.newest(*frames)
                if newest is None:  # no /tf ego pose at all: nothing to wait for
                    return None
                if newest >= stamp:
                    return self._tf_arrival if waited else None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return time.perf_counter()
                self._tf_updated.wait(remaining)
                waited = True

    def _ego_pose(self, stamp: int) -> np.ndarray | None:
        """map -> base at `stamp` from the cache, or None (warned) when it is not there."""
        with self._lock:
            try:
                return self.tf.lookup(self.p["map_frame"], self.p["base_frame"], stamp)
            except TfLookupError as exc:
                self._warn("/tf", "missing ego pose", f"/tf: missing TF: {exc}; sensors are "
                           "treated as static for this frame")
                return None

    @staticmethod
    def frame_stamps(frame_set: FrameSet) -> list[int]:
        """Every stamp whose ego pose a frame set needs: its key pose, cameras, radar sweeps."""
        stamps = [frame_set.key_pose_stamp] + [f.stamp for f in frame_set.cameras.values()]
        return stamps + [s.stamp for sweeps in frame_set.radars.values() for s in sweeps]

    def build_sample(self, frame_set: FrameSet) -> Sample:
        """The `Sample` of one frame set, exactly as the offline readers build it."""
        key, key_pose = frame_set.stamp, frame_set.key_pose_stamp
        poses = {s: self._ego_pose(s) for s in sorted(set(self.frame_stamps(frame_set)))}
        self._ego_motion_missing = any(T is None for T in poses.values())
        if self._ego_motion_missing:  # no ego motion known: every sensor at the key pose
            poses = dict.fromkeys(poses, np.eye(4))
        T_key = poses[key_pose]
        sample = Sample(token=f"ros_{key}", timestamp=key, T_map_ego=T_key)
        with self._lock:  # the latest intrinsics: CameraInfo may trail its image a little
            intrinsics = dict(self._camera_K)
        for cam, frame in frame_set.cameras.items():
            cf: CameraFrame = frame.payload
            if cam not in intrinsics:
                self._warn(self._topic(f"~/input/{cam}/camera_info"), "no camera_info",
                           f"{self._topic(f'~/input/{cam}/camera_info')}: no valid CameraInfo "
                           f"yet; {cam} left out of this frame")
                continue
            sample.cameras[cam] = CameraData(
                image=cf.image, K=intrinsics[cam], stamp=frame.stamp,
                T_ego_cam=sensor_to_keyframe(cf.T_base_cam, poses[frame.stamp], T_key))
        for radar, sweeps in frame_set.radars.items():
            if not sweeps:
                continue  # missing radar: no points, the model sees an empty cloud
            raw = [RawSweep(points=s.payload[0], T_ego_sensor=s.payload[1],
                            T_map_ego=poses[s.stamp], stamp=s.stamp) for s in sweeps]
            points = aggregate_radar_sweeps(raw, T_key, key)  # filtered on arrival
            sample.radars[radar] = RadarData(points=points, T_ego_radar=raw[0].T_ego_sensor,
                                             stamp=raw[0].stamp)
        return sample

    def process(self, frame_set: FrameSet, start: float, queue_wait_s: float
                ) -> dict[str, float]:
        """Run one frame set through the model and publish its detections, then its markers.
        `start`: perf_counter() when the set's last message arrived. Returns the stage timings
        (ms, the ~/debug topics)."""
        waited_from = time.perf_counter()
        pose_arrival = self.wait_for_ego_pose(max(self.frame_stamps(frame_set)))
        # The frame's input is complete when its last message is in, the covering ego pose
        # included (or given up on): latency is counted from there.
        complete = max(start, pose_arrival or start)
        t0 = time.perf_counter()
        convert_s = sum(f.payload.convert_s for f in frame_set.cameras.values())
        sample = self.build_sample(frame_set)
        prepared = {cam: frame_set.cameras[cam].payload.prepared for cam in sample.cameras}
        batch = self.pipeline.preprocess(sample, prepared)
        t1 = time.perf_counter()
        outputs = self.pipeline.infer(batch)
        t2 = time.perf_counter()
        boxes = self.pipeline.postprocess(outputs)
        if len(boxes):
            boxes = boxes.select(np.asarray(boxes.scores) >= self.p["score_threshold"])
        frame_id = self.p["base_frame"]
        self.pub_detections.publish(detections_cdr(boxes, frame_set.stamp, frame_id))
        t3 = time.perf_counter()
        self.pub_markers.publish(markers_cdr(boxes, frame_set.stamp, frame_id,
                                             self._lifetime_ns(frame_set.stamp)))
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

    def _lifetime_ns(self, stamp: int) -> int:
        if self.p["marker_lifetime"] > 0:
            return int(self.p["marker_lifetime"] * NS)
        if self._last_trigger is not None and stamp > self._last_trigger:
            period = stamp - self._last_trigger
            self._period_ns = period if self._period_ns is None else (
                0.8 * self._period_ns + 0.2 * period)
        self._last_trigger = stamp
        return int(2 * (self._period_ns or 0.5 * NS))

    def stop(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify()
        self._worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    # The worker waits for the GIL whenever the executor thread runs Python (callbacks arrive
    # all the time); CPython's default 5 ms hand-over interval showed up as frame latency.
    sys.setswitchinterval(0.001)
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = DetectorNode()
        rclpy.spin(node)
    except (ParameterError, ParameterException) as exc:  # a wrong type names it too
        rclpy.logging.get_logger("imkd_detector").fatal(f"cannot start: {exc}")
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
