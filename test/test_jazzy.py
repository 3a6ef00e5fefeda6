"""Across ROS 2 distros: the detector node runs in a ROS 2 Jazzy venv (the PyPI Jazzy wheels,
`make setup-jazzy`), fed by the main (Kilted) venv's imkd-replay, and this Kilted process
receives one Detection3DArray per keyframe of the bag, with the keyframe stamps, in base_link.

The Jazzy venv lives outside the clone (scripts/setup.sh: ${XDG_CACHE_HOME:-~/.cache}/imkd_ros/
venv-jazzy, or $IMKD_JAZZY_VENV), so a machine that keeps it reuses it from one CI clone to the
next: setup.sh returns at once when nothing changed, refreshes it when its inputs changed, and
builds it from nothing where there is none (a few minutes, hence the timeout)."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from ros_rig import NS, write_random_checkpoint
from std_msgs.msg import String
from vision_msgs.msg import Detection3DArray

from imkd_core.data.bag_reader import read_keyframe_records
from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.generate import generate_world
from imkd_core.sample import CAMERA_NAMES, RADAR_NAMES
from imkd_core.wire.names import (
    KEYFRAMES_TOPIC,
    QOS_RESULTS,
    TF_STATIC_TOPIC,
    TF_TOPIC,
    camera_info_topic,
    image_topic,
    pointcloud_topic,
)
from imkd_ros.nuscenes2bag import convert
from imkd_ros.qos import profile

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
DETECTOR = "imkd_detector_jazzy"
# what a from-nothing build may take on a loaded 2-core machine (measured: 3-8 min)
BUILD_TIMEOUT_S = 1500


def jazzy_venv() -> Path:
    """Where scripts/setup.sh (ROS_DISTRO_WHEELS=jazzy) puts the Jazzy venv by default."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("IMKD_JAZZY_VENV") or cache / "imkd_ros" / "venv-jazzy")


def jazzy_env(venv: Path) -> dict[str, str]:
    """This process's environment without the Kilted venv: its ROS wheels' bootstrapper
    re-executes Python with the venv's libraries on LD_LIBRARY_PATH and marks that done, and a
    child that inherited both would load Kilted's librcl into Jazzy's rclpy. The Jazzy venv
    does not hold the project: it runs from the sources."""
    env = {k: v for k, v in os.environ.items() if k not in (
        "_ROS_WHEELS_BOOTSTRAP_COMPLETE", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH",
        "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    kilted = sys.prefix + os.sep
    for name in ("LD_LIBRARY_PATH", "PATH"):
        kept = [p for p in os.environ.get(name, "").split(os.pathsep)
                if p and not (p + os.sep).startswith(kilted)]
        env[name] = os.pathsep.join(kept)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env["PATH"]])
    env.update(PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
               OMP_NUM_THREADS="1")
    return env


def pinned(name: str) -> str:
    """The version of `name` in requirements/constraints-jazzy.txt."""
    for line in (REPO_ROOT / "requirements" / "constraints-jazzy.txt").read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in requirements/constraints-jazzy.txt")


@pytest.fixture(scope="module")
def jazzy_python() -> Path:
    """The Jazzy venv's python, built or refreshed by scripts/setup.sh (a no-op when current)."""
    venv = jazzy_venv()
    env = {**jazzy_env(venv), "ROS_DISTRO_WHEELS": "jazzy", "IMKD_JAZZY_VENV": str(venv)}
    start = time.monotonic()
    setup = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "setup.sh")], env=env,
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    output = setup.stdout + setup.stderr
    assert setup.returncode == 0, f"ROS_DISTRO_WHEELS=jazzy scripts/setup.sh:\n{output[-4000:]}"
    print(f"Jazzy venv {venv}: setup {time.monotonic() - start:.1f} s\n{output}")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def short_bag(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jazzy_world")
    world = generate_world(root / "world", WorldConfig(
        scenes=1, samples_per_scene=3, image_width=192, image_height=108,
        lidar_azimuth_steps=180, val_fraction=0.0), workers=1)
    convert(world, root / "world.bag", progress=False)
    return root / "world.bag"


def node_arguments(checkpoint: Path) -> list[str]:
    """The detector's ROS arguments for a bag, as detector.launch.py sets them with bag:=...,
    and every box of the random checkpoint published."""
    args = ["--ros-args", "-r", f"__node:={DETECTOR}"]
    for name, value in (("checkpoint", checkpoint), ("device", "cpu"), ("trigger", "keyframes"),
                        ("use_sim_time", "true"), ("reliable_inputs", "true"),
                        ("queue_size", 10), ("score_threshold", 0.0)):
        args += ["-p", f"{name}:={value}"]
    remaps = {f"~/input/{c}/image": image_topic(c) for c in CAMERA_NAMES}
    remaps |= {f"~/input/{c}/camera_info": camera_info_topic(c) for c in CAMERA_NAMES}
    remaps |= {f"~/input/{r}/points": pointcloud_topic(r) for r in RADAR_NAMES}
    remaps["~/input/keyframes"] = KEYFRAMES_TOPIC
    for source, target in remaps.items():
        args += ["-r", f"{source}:={target}"]
    return args


def replay_waits_for() -> list[str]:
    """Every topic the detector subscribes to: the replay starts once each has its reader."""
    topics = [TF_TOPIC, TF_STATIC_TOPIC, KEYFRAMES_TOPIC]
    topics += [t for c in CAMERA_NAMES for t in (image_topic(c), camera_info_topic(c))]
    return topics + [pointcloud_topic(r) for r in RADAR_NAMES]


def loaded_ros_libraries(pid: int) -> set[str]:
    """The librcl / librmw_fastrtps files process `pid` has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.split()[-1] for line in maps
            if "/librcl.so" in line or "/librmw_fastrtps_cpp.so" in line}


def _stamp(msg: Detection3DArray) -> int:
    return msg.header.stamp.sec * NS + msg.header.stamp.nanosec


# A known flake (about 1 run in 3, session 4) received 0 or 1 of the 3 detections while the node
# had done all 3: this recorder matched the node's output after the first arrays were sent. It
# now subscribes transient local, as the node publishes (QOS_RESULTS): a late match still gets
# them. Waiting for the publisher below keeps the failure message about discovery.
@pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
def test_detections_arrive_across_distros(jazzy_python, short_bag, tmp_path):
    venv = jazzy_python.parent.parent
    env = jazzy_env(venv)
    # the two sides really are two distros
    version = subprocess.run(
        [str(jazzy_python), "-c", "import importlib.metadata as m; print(m.version('ros-rclpy'))"],
        env=env, capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == pinned("ros-rclpy"), version.stderr
    assert importlib.metadata.version("ros-rclpy") != pinned("ros-rclpy")
    keyframes = [r.timestamp for r in read_keyframe_records(short_bag)]
    assert len(keyframes) == 3
    checkpoint = write_random_checkpoint(tmp_path / "model.pt")

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("jazzy_test_recorder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    detections: list[Detection3DArray] = []
    node.create_subscription(Detection3DArray, f"/{DETECTOR}/output/detections",
                             detections.append, profile(QOS_RESULTS))
    statuses: list[str] = []  # the node's counters: what a failure message needs to say why
    node.create_subscription(String, f"/{DETECTOR}/debug/status",
                             lambda msg: statuses.append(msg.data), 10)
    log_path = tmp_path / "detector.log"
    replay_log = tmp_path / "replay.log"
    start = time.monotonic()
    with open(log_path, "w") as log:
        detector = subprocess.Popen(
            [str(jazzy_python), "-m", "imkd_ros.detector_node", *node_arguments(checkpoint)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    replay = None
    try:
        # The replay waits for the detector's inputs, not for this recorder to have found the
        # detector's output: a failing run showed frames_done 3 and 0 received (discovery
        # across distros can take longer than the 1.5 s bag), so wait for that first.
        deadline = time.monotonic() + 120
        while node.count_publishers(f"/{DETECTOR}/output/detections") < 1:
            assert detector.poll() is None and time.monotonic() < deadline, log_path.read_text()
            executor.spin_once(timeout_sec=0.1)
        with open(replay_log, "w") as log:  # this (Kilted) venv's player
            replay = subprocess.Popen(
                [str(Path(sys.executable).parent / "imkd-replay"), str(short_bag), "--clock",
                 "--wait-for", *replay_waits_for(), "--wait-timeout", "120"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (
                len(detections) >= len(keyframes) and replay.poll() is not None):
            assert detector.poll() is None, log_path.read_text()
            executor.spin_once(timeout_sec=0.1)
        assert replay.poll() == 0, replay_log.read_text()
        assert len(detections) >= len(keyframes), (len(detections), log_path.read_text(),
                                                    statuses[-1:], replay_log.read_text())
        executor.spin_once(timeout_sec=0.5)  # anything late would show here
        libraries = loaded_ros_libraries(detector.pid)
        assert libraries and all(p.startswith(f"{venv}{os.sep}") for p in libraries), libraries
    finally:
        for proc in (replay, detector):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        try:
            code = detector.wait(timeout=30)
        except subprocess.TimeoutExpired:
            detector.kill()
            code = detector.wait()
        if replay is not None and replay.poll() is None:
            replay.kill()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    text = log_path.read_text()
    print(f"Jazzy detector, Kilted replay: {time.monotonic() - start:.1f} s\n{text}")
    assert [_stamp(d) for d in detections] == keyframes, text
    assert {d.header.frame_id for d in detections} == {"base_link"}
    assert all(d.detections for d in detections), "a random checkpoint scores every cell"
    assert code == 0 and "Traceback" not in text, text
