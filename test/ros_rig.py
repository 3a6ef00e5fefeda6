"""Test helpers for the detector node over real DDS: start the `detector` executable as its own
process, and a peer node that publishes sensor messages to it and records its outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy
import torch
from geometry_msgs.msg import TransformStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Float64, String
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from imkd_core.checkpoint import save_checkpoint
from imkd_core.config import apply_overrides, load_model_config
from imkd_core.geometry import make_transform, matrix_to_quaternion
from imkd_core.pipeline import DetectorPipeline
from imkd_core.sample import NUSCENES_RADAR_FIELDS
from imkd_core.wire.pointcloud2 import encode_pointcloud2
from imkd_ros.detector_node import TIMINGS

VENV_BIN = Path(sys.executable).parent
NS = 1_000_000_000
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def write_random_checkpoint(path: Path, max_detections: int = 40) -> Path:
    """A freshly initialised tiny student (deterministic), scoring every cell: near-random
    but reproducible detections, enough to prove the plumbing."""
    config = apply_overrides(load_model_config("tiny"), [
        "head.score_threshold=0.0", f"head.max_detections={max_detections}"])
    pipeline = DetectorPipeline.from_config(config, device="cpu", seed=0)
    save_checkpoint(path, pipeline.model, config)
    return path


def ros_value(value) -> str:
    """A Python value as a `-p name:=value` YAML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def interrupt_until_exit(proc: subprocess.Popen, period: float = 0.01,
                         timeout: float = 30.0) -> int:
    """SIGINT to `proc` every `period` s until it exits, as a terminal's Ctrl-C under
    `ros2 launch` arrives twice (process group, then forwarded): later signals land in the
    clean-up the first one started. Returns the exit status."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGINT)
        time.sleep(period)
    return proc.wait(timeout=5)


class DetectorProcess:
    """`detector` in its own process; its log (stderr + stdout) goes to a file."""

    def __init__(self, name: str, params: dict, log_dir: Path,
                 remaps: dict[str, str] | None = None) -> None:
        self.name = name
        cmd = [str(VENV_BIN / "detector"), "--ros-args", "-r", f"__node:={name}"]
        for key, value in params.items():
            cmd += ["-p", f"{key}:={ros_value(value)}"]
        for source, target in (remaps or {}).items():
            cmd += ["-r", f"{source}:={target}"]
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")
        # The node's torch uses as many threads as this process's: the same reductions in the
        # same order, so its eager outputs equal the offline pipeline's bit for bit (the
        # near-tied scores of an untrained model included; ONNX Runtime needs one thread).
        env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0",
                   RCUTILS_COLORIZED_OUTPUT="0", OMP_NUM_THREADS=str(torch.get_num_threads()))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Rig:
    """A peer node: publishers into the detector's private inputs, recorders of its outputs."""

    def __init__(self, context, detector: str, cameras, radars) -> None:
        self.node = rclpy.create_node(f"rig_{detector}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        ns = f"/{detector}"
        self.ns = ns
        self.cameras, self.radars = tuple(cameras), tuple(radars)
        pub = self.node.create_publisher
        self.images = {c: pub(Image, f"{ns}/input/{c}/image", RELIABLE) for c in cameras}
        self.infos = {c: pub(CameraInfo, f"{ns}/input/{c}/camera_info", RELIABLE)
                      for c in cameras}
        self.clouds = {r: pub(PointCloud2, f"{ns}/input/{r}/points", RELIABLE) for r in radars}
        self.tf = pub(TFMessage, "/tf", RELIABLE)
        self.tf_static = pub(TFMessage, "/tf_static", LATCHED)
        self.detections: list[Detection3DArray] = []
        self.markers: list[MarkerArray] = []
        self.status: list[dict] = []
        self.labels: list[LabelInfo] = []
        self.timings: dict[str, list[float]] = {}
        sub = self.node.create_subscription
        sub(Detection3DArray, f"{ns}/output/detections", self.detections.append, RELIABLE)
        sub(MarkerArray, f"{ns}/output/markers", self.markers.append, RELIABLE)
        sub(String, f"{ns}/debug/status", lambda m: self.status.append(json.loads(m.data)),
            RELIABLE)
        sub(LabelInfo, f"{ns}/output/label_info", self.labels.append, LATCHED)
        for stage in TIMINGS:
            values = self.timings.setdefault(stage, [])
            sub(Float64, f"{ns}/debug/{stage}_ms", lambda m, v=values: v.append(m.data),
                RELIABLE)
        self.rng = np.random.default_rng(0)

    def spin_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def spin(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def wait_ready(self, process: DetectorProcess, timeout: float = 60.0) -> None:
        """The node is up (latched label info arrived) and subscribed to every input."""
        def ready():
            if process.proc.poll() is not None:
                raise AssertionError(f"detector exited early:\n{process.log()}")
            subscribed = all(p.get_subscription_count() > 0 for p in
                             [*self.images.values(), *self.clouds.values()])
            return bool(self.labels) and subscribed
        self.spin_until(ready, timeout, "the detector to start")

    # ------------------------------------------------------------------------------ messages
    @staticmethod
    def transform(parent: str, child: str, stamp: int, T: np.ndarray) -> TransformStamped:
        ts = TransformStamped()
        ts.header.frame_id, ts.child_frame_id = parent, child
        ts.header.stamp.sec, ts.header.stamp.nanosec = stamp // NS, stamp % NS
        w, x, y, z = matrix_to_quaternion(T[:3, :3])
        r = ts.transform.rotation
        r.w, r.x, r.y, r.z = float(w), float(x), float(y), float(z)
        t = ts.transform.translation
        t.x, t.y, t.z = (float(v) for v in T[:3, 3])
        return ts

    def publish_static(self) -> None:
        optical = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # z forward, x right, y down
        transforms = []
        for k, cam in enumerate(self.cameras):
            yaw = make_transform([np.cos(k * 1.5), 0, 0, np.sin(k * 1.5)], [1.5, 0, 1.6])
            transforms.append(self.transform("base_link", cam, 0, yaw @ make_transform(
                optical, [0, 0, 0])))
        for k, radar in enumerate(self.radars):
            transforms.append(self.transform("base_link", radar, 0, make_transform(
                [np.cos(k * 0.8), 0, 0, np.sin(k * 0.8)], [2.0, 0, 0.5])))
        self.tf_static.publish(TFMessage(transforms=transforms))

    def ego_pose(self, stamp: int) -> None:
        """map -> base_link at `stamp`: driving along x at 10 m/s."""
        T = make_transform([1, 0, 0, 0], [10.0 * stamp / NS, 0.0, 0.0])
        self.tf.publish(TFMessage(transforms=[self.transform("map", "base_link", stamp, T)]))

    def image(self, cam: str, stamp: int, height: int = 48, width: int = 64,
              encoding: str = "rgb8") -> Image:
        msg = Image(height=height, width=width, encoding=encoding, step=width * 3)
        msg.header.frame_id = cam
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp // NS, stamp % NS
        msg.data = self.rng.integers(0, 255, height * width * 3, dtype=np.uint8).tobytes()
        return msg

    def camera_info(self, cam: str, stamp: int, width: int = 64) -> CameraInfo:
        """Pinhole, for `image`'s 4:3 images `width` wide (D all zero, P unset)."""
        f = 0.8 * width
        msg = CameraInfo(k=[f, 0.0, width / 2, 0.0, f, 0.375 * width, 0.0, 0.0, 1.0],
                         width=width, height=width * 3 // 4, distortion_model="plumb_bob",
                         d=[0.0] * 5)
        msg.header.frame_id = cam
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp // NS, stamp % NS
        return msg

    def cloud(self, radar: str, stamp: int, points: np.ndarray | None = None) -> PointCloud2:
        if points is None:
            points = np.zeros((30, len(NUSCENES_RADAR_FIELDS)), np.float32)
            points[:, :2] = self.rng.uniform(-40, 40, (30, 2))
            points[:, 5] = self.rng.uniform(-5, 20, 30)  # rcs
            points[:, 13] = 3  # ambig_state: kept by the nuScenes filter
        fields, data, step = encode_pointcloud2(points, NUSCENES_RADAR_FIELDS)
        msg = PointCloud2(height=1, width=len(points), point_step=step,
                          row_step=step * len(points), is_dense=True, data=data)
        msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
        msg.header.frame_id = radar
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp // NS, stamp % NS
        return msg

    def publish_frame(self, stamp: int, cameras=None, tf: bool = True) -> None:
        """Ego poses, a radar sweep per radar (20 ms earlier), intrinsics, then the images."""
        cameras = self.cameras if cameras is None else cameras
        if tf:
            for s in (stamp - 20_000_000, stamp, stamp + 10_000_000):
                self.ego_pose(s)
        for radar in self.radars:
            self.clouds[radar].publish(self.cloud(radar, stamp - 20_000_000))
        for cam in cameras:
            self.infos[cam].publish(self.camera_info(cam, stamp))
        self.spin(0.05)  # let poses, sweeps and intrinsics land before the set completes
        for k, cam in enumerate(cameras):
            self.images[cam].publish(self.image(cam, stamp + k * 5_000_000))
