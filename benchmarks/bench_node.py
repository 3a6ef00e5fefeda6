"""Detector node latency, its overhead beyond the model forward, and replay throughput, at
nuScenes sizes.

    .venv/bin/python benchmarks/bench_node.py [--samples 12] [--rates 1 2] [--repeat 3]
        [--images raw] [--reliable-inputs] [--transport SHM] [--detections 100] [--workdir DIR]

1. Generates a one-scene synthetic world with nuScenes-sized sensors (6 cameras at 1600x900,
   5 radars with sweeps; keyframes at 2 Hz) and converts it with `nuscenes2bag`.
2. Over real DDS, for each replay rate (`--repeat` times): starts the `detector` executable (a
   fresh tiny student, every cell scored and the top `--detections` kept, so publishing is
   exercised at a known load), plays the bag with `imkd-replay`, and records the node's
   `~/debug/*_ms` timings, its detections and its final status. Replay, DDS and the node share
   this machine's cores, as on a small vehicle computer.
3. Without DDS: the bag's messages (deserialised by rclpy) go straight into a `DetectorNode`'s
   subscription callbacks in this process, and each completed frame set is processed at once
   (`DetectorNode.process`): the node's own overhead on an otherwise quiet CPU.
4. Prints the tables: end-to-end latency p50/p95 (the frame's last input -- sensor message or
   the /tf ego pose covering it -- arrives -> its detections are published), the model
   forward, the share of end-to-end that is not the forward (the issue's target: last message's
   conversion, sync, queue hand-over, Sample and batch, decoding, serialising, publishing),
   the CPU share not in the forward (all the set's image conversions counted), waits for the
   worker and for /tf, the rate sustained and the frame sets dropped.
ROS traffic stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, own domain id).
`--transport` sets FASTDDS_BUILTIN_TRANSPORTS for every process (SHM by default: on one machine
Fast DDS's default transports lost or delayed many small messages -- /tf, CameraInfo -- behind
the 4 MB images in our runs; DEFAULT leaves Fast DDS's choice).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float64, String
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray, LabelInfo

from imkd_core.checkpoint import save_checkpoint
from imkd_core.config import apply_overrides, load_model_config
from imkd_core.data.bag_reader import open_reader
from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.generate import generate_world
from imkd_core.pipeline import DetectorPipeline
from imkd_core.sample import CAMERA_NAMES, RADAR_NAMES
from imkd_core.wire.names import (
    TF_STATIC_TOPIC,
    TF_TOPIC,
    camera_info_topic,
    image_topic,
    pointcloud_topic,
)
from imkd_ros.detector_node import TIMINGS, DetectorNode

BIN = Path(sys.executable).parent
STAGES = TIMINGS
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def prepare(workdir: Path, samples: int, images: str, detections: int) -> tuple[Path, Path]:
    world = workdir / "world"
    if not world.exists():
        print(f"generating a {samples}-keyframe world at 1600x900 ...", flush=True)
        generate_world(world, WorldConfig(scenes=1, samples_per_scene=samples, image_width=1600,
                                          image_height=900, lidar_azimuth_steps=180,
                                          val_fraction=0.0), workers=1)
    bag = workdir / f"world_{images}.bag"
    if not bag.exists():
        subprocess.run([str(BIN / "nuscenes2bag"), "--dataroot", str(world), "--out", str(bag),
                        "--images", images, "--quiet"], check=True)
    checkpoint = workdir / f"tiny_top{detections}.pt"
    config = apply_overrides(load_model_config("tiny"), [
        "head.score_threshold=0.0", f"head.max_detections={detections}"])
    save_checkpoint(checkpoint, DetectorPipeline.from_config(config, "cpu").model, config)
    return bag, checkpoint


def run_once(bag: Path, checkpoint: Path, rate: float, images: str, reliable: bool,
             log: Path) -> dict:
    compressed = images == "compressed"
    name = f"bench_detector_{os.getpid()}_{int(rate * 10)}"
    remaps = {f"~/input/{c}/image": image_topic(c, compressed) for c in CAMERA_NAMES}
    remaps |= {f"~/input/{c}/camera_info": camera_info_topic(c) for c in CAMERA_NAMES}
    remaps |= {f"~/input/{r}/points": pointcloud_topic(r) for r in RADAR_NAMES}
    cmd = [str(BIN / "detector"), "--ros-args", "-r", f"__node:={name}",
           "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu", "-p", "score_threshold:=0.0",
           "-p", f"compressed_images:={str(compressed).lower()}", "-p", "status_period:=0.5",
           "-p", f"reliable_inputs:={str(reliable).lower()}"]
    for source, target in remaps.items():
        cmd += ["-r", f"{source}:={target}"]
    context = rclpy.Context()
    rclpy.init(context=context)
    listener = rclpy.create_node(f"bench_listener_{int(rate * 10)}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    timings = {stage: [] for stage in STAGES}
    detections, status, labels = [], [], []
    for stage in STAGES:
        listener.create_subscription(Float64, f"/{name}/debug/{stage}_ms",
                                     lambda m, s=stage: timings[s].append(m.data), RELIABLE)
    listener.create_subscription(Detection3DArray, f"/{name}/output/detections",
                                 lambda m: detections.append((time.monotonic(),
                                                              len(m.detections))), RELIABLE)
    listener.create_subscription(String, f"/{name}/debug/status",
                                 lambda m: status.append(json.loads(m.data)), RELIABLE)
    listener.create_subscription(LabelInfo, f"/{name}/output/label_info", labels.append, LATCHED)

    def spin(seconds: float, until=lambda: False):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            executor.spin_once(timeout_sec=0.05)

    with open(log, "w") as log_file:
        node = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            spin(120, lambda: bool(labels))
            if not labels:
                raise RuntimeError(f"detector did not start; see {log}")
            topics = [*remaps.values(), TF_TOPIC, TF_STATIC_TOPIC]
            start = time.monotonic()
            replay = subprocess.Popen([str(BIN / "imkd-replay"), str(bag), "--rate", str(rate),
                                       "--quiet", "--wait-for-subscribers", "--topics", *topics])
            spin(600, lambda: replay.poll() is not None)
            played = time.monotonic() - start
            spin(10, lambda: bool(status) and status[-1]["triggered"] == (
                status[-1]["frames_done"] + status[-1]["frames_dropped_queue"]))
            spin(1.0)
        finally:
            node.send_signal(2)
            node.wait(timeout=30)
            listener.destroy_node()
            rclpy.try_shutdown(context=context)
    return {"rate": rate, "timings": timings, "detections": detections, "played_s": played,
            "status": status[-1] if status else {}}


def run_in_process(bag: Path, checkpoint: Path, passes: int = 2, warmup: int = 2) -> dict:
    """Step 3 of the module doc; the bag is played `passes` times (a loop resets the node's
    state, as a bag loop does), the first `warmup` frames are not counted."""
    types = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
             "sensor_msgs/msg/PointCloud2": PointCloud2, "tf2_msgs/msg/TFMessage": TFMessage}
    with open_reader(bag) as reader:
        connections = [c for c in reader.connections if c.msgtype in types]
        messages = [(c.topic, deserialize_message(bytes(raw), types[c.msgtype]))
                    for c, _, raw in reader.messages(connections=connections)]
    context = rclpy.Context()
    rclpy.init(context=context)
    node = DetectorNode(context=context, parameter_overrides=[
        Parameter("checkpoint", value=str(checkpoint)), Parameter("device", value="cpu"),
        Parameter("score_threshold", value=0.0)])
    node.stop()  # frame sets are processed here, synchronously, not by the worker thread
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    frames = []

    def process_now(frame_set, start):
        frames.append(node.process(frame_set, start, 0.0))

    # The node's subscription callbacks, driven directly; a completed set is processed at once.
    node._enqueue = process_now
    callbacks = {TF_TOPIC: lambda m: node._on_tf(m, False),
                 TF_STATIC_TOPIC: lambda m: node._on_tf(m, True)}
    for cam in CAMERA_NAMES:
        callbacks[image_topic(cam, False)] = lambda m, c=cam: node._on_image(c, m)
        callbacks[camera_info_topic(cam)] = lambda m, c=cam: node._on_camera_info(c, m)
    for radar in RADAR_NAMES:
        callbacks[pointcloud_topic(radar)] = lambda m, r=radar: node._on_radar(r, m)
    try:
        for _ in range(passes):
            for topic, msg in messages:
                if topic in callbacks:
                    callbacks[topic](msg)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    for frame in frames[warmup:]:
        for stage in STAGES:
            timings[stage].append(frame[stage])
    return {"frames": len(frames) - warmup, "timings": timings}


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def shares(timings: dict[str, list[float]]) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                       np.ndarray]:
    """Per frame: the share of end-to-end latency that is not the forward (the target), and
    the share of the CPU work that is not the forward (the conversion CPU of all the set's
    images counted, though most of it is spent before the set is complete)."""
    t = {k: np.asarray(v) for k, v in timings.items()}
    n = min(len(v) for v in t.values())
    t = {k: v[:n] for k, v in t.items()}
    latency_share = 1.0 - t["inference"] / t["end_to_end"]
    cost = t["convert"] + t["preprocess"] + t["inference"] + t["postprocess"]
    return t, latency_share, 1.0 - t["inference"] / cost


def report(results: list[dict], keyframes: int, quiet: dict | None) -> None:
    print()
    print("Over DDS, replay and node on this machine's cores:")
    print()
    print("| replay | sets in | published | dropped | sustained Hz | e2e p50 ms | e2e p95 ms "
          "| forward p50 ms | not-forward share of e2e, p50 | CPU share not forward, p50 "
          "| queue wait p50 ms | pose wait p50 ms | boxes/frame |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        t, latency_share, cost_share = shares(r["timings"])
        published = len(r["detections"])
        s = r["status"]
        dropped = s.get("frames_dropped_queue", 0) + s.get("sets_skipped", 0) + (
            keyframes - s.get("triggered", 0))
        boxes = np.mean([c for _, c in r["detections"]]) if published else 0
        print(f"| {r['rate']:g}x | {keyframes} | {published} | {dropped} | "
              f"{published / r['played_s']:.2f} | {percentile(t['end_to_end'], 50):.0f} | "
              f"{percentile(t['end_to_end'], 95):.0f} | {percentile(t['inference'], 50):.0f} | "
              f"{100 * percentile(latency_share, 50):.1f} % | "
              f"{100 * percentile(cost_share, 50):.1f} % | "
              f"{percentile(t['queue_wait'], 50):.0f} | {percentile(t['pose_wait'], 50):.0f} | "
              f"{boxes:.0f} |")
    if quiet is not None:
        t, latency_share, cost_share = shares(quiet["timings"])
        other = t["end_to_end"] - t["inference"]
        print()
        print("Without DDS (messages into the node's callbacks in-process, frames processed at "
              "once):")
        print()
        print("| frames | e2e p50 ms | forward p50 ms | not forward p50 ms "
              "| not-forward share of e2e, p50 | CPU share not forward, p50 |")
        print("|---|---|---|---|---|---|")
        print(f"| {quiet['frames']} | {percentile(t['end_to_end'], 50):.1f} | "
              f"{percentile(t['inference'], 50):.1f} | {percentile(other, 50):.1f} | "
              f"{100 * percentile(latency_share, 50):.1f} % | "
              f"{100 * percentile(cost_share, 50):.1f} % |")
    print()
    for r in [*results, *([{"rate": "no DDS", **quiet}] if quiet else [])]:
        t = r["timings"]
        label = r["rate"] if isinstance(r["rate"], str) else f"{r['rate']:g}x"
        parts = ", ".join(f"{k} {percentile(t[k], 50):.1f}/{np.mean(t[k]):.1f}" for k in STAGES)
        print(f"{label} stage p50/mean (ms): {parts}")
        if "status" in r:
            print(f"{label} final status: {json.dumps(r['status'], sort_keys=True)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=12, help="keyframes (2 Hz) in the bag")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--images", choices=("raw", "compressed"), default="raw")
    parser.add_argument("--reliable-inputs", action="store_true",
                        help="the node's reliable_inputs parameter (default: best-effort)")
    parser.add_argument("--detections", type=int, default=100,
                        help="boxes the model keeps per frame (published load)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the world, bag and logs here (reused when present)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per replay rate")
    parser.add_argument("--transport", default="SHM",
                        help="FASTDDS_BUILTIN_TRANSPORTS for all processes (DEFAULT: unset)")
    parser.add_argument("--no-in-process", action="store_true",
                        help="skip the measurement without DDS")
    args = parser.parse_args(argv)
    # Keep DDS on this machine, in a domain of our own; the node and player inherit both.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    if args.transport != "DEFAULT":
        os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = args.transport
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bag, checkpoint = prepare(workdir, args.samples, args.images, args.detections)
        results = []
        for rate in args.rates:
            for run in range(args.repeat):
                print(f"replaying at {rate:g}x (run {run + 1}/{args.repeat}) ...", flush=True)
                results.append(run_once(bag, checkpoint, rate, args.images,
                                        args.reliable_inputs,
                                        workdir / f"detector_{rate:g}x_{run}.log"))
        quiet = None
        if not args.no_in_process and args.images == "raw":
            print("processing the bag in-process, without DDS ...", flush=True)
            quiet = run_in_process(bag, checkpoint)
        report(results, args.samples, quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
