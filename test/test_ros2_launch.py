"""`ros2 launch imkd_ros detector.launch.py bag:=... trigger:=keyframes` as a user runs it: a
short bag gives one Detection3DArray per keyframe, the first included (the replay waits for the
detector's subscriptions), in base_link with the keyframe stamps; the launch file's parameters
and remappings are what `ros2 param` and the ROS graph show; and Ctrl-C to the process group,
which each process then gets twice (the terminal's and launch's forward), ends every process
with exit code 0 and no traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_rig import NS, write_random_checkpoint
from vision_msgs.msg import Detection3DArray

from imkd_core.data.bag_reader import read_keyframe_records
from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.generate import generate_world
from imkd_core.sample import CAMERA_NAMES, RADAR_NAMES
from imkd_core.wire.names import KEYFRAMES_TOPIC, camera_info_topic, image_topic, pointcloud_topic
from imkd_ros.demo import ament_prefix_path, ros2_executable
from imkd_ros.nuscenes2bag import convert

pytestmark = [pytest.mark.ros, pytest.mark.slow]

pytest.importorskip("ros2launch", reason="`ros2 launch` is not importable here: `make setup` "
                                         "installs it from ../shared/wheels/ros2cli")

DETECTOR = "imkd_detector"


def ros2_env() -> dict[str, str]:
    return {**os.environ, "AMENT_PREFIX_PATH": ament_prefix_path(), "PYTHONUNBUFFERED": "1",
            "RCUTILS_COLORIZED_OUTPUT": "0", "OMP_NUM_THREADS": "1"}




def ros2_param(*args: str) -> str:
    result = subprocess.run([ros2_executable(), "param", *args, "--no-daemon", "--spin-time", "2"],
                            env=ros2_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"ros2 param {' '.join(args)}:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def short_bag(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("launch_world")
    world = generate_world(root / "world", WorldConfig(
        scenes=1, samples_per_scene=3, image_width=192, image_height=108,
        lidar_azimuth_steps=180, val_fraction=0.0), workers=1)
    convert(world, root / "world.bag", progress=False)
    return root / "world.bag"


def _stamp(msg) -> int:
    return msg.header.stamp.sec * NS + msg.header.stamp.nanosec


def test_ros2_launch_with_a_bag(short_bag, tmp_path):
    keyframes = [r.timestamp for r in read_keyframe_records(short_bag)]
    assert len(keyframes) == 3
    checkpoint = write_random_checkpoint(tmp_path / "model.pt")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("launch_test_recorder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    detections: list[Detection3DArray] = []
    node.create_subscription(Detection3DArray, f"/{DETECTOR}/output/detections",
                             detections.append, QoSProfile(
                                 depth=50, reliability=ReliabilityPolicy.RELIABLE))
    log_path = tmp_path / "launch.log"
    start = time.monotonic()
    with open(log_path, "w") as log:
        # its own session: Ctrl-C below goes to the whole group, as a terminal sends it
        launch = subprocess.Popen(
            [ros2_executable(), "launch", "imkd_ros", "detector.launch.py", f"bag:={short_bag}",
             "trigger:=keyframes", f"checkpoint:={checkpoint}", "device:=cpu"],
            stdout=log, stderr=subprocess.STDOUT, env=ros2_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
                len(detections) >= len(keyframes)
                and "imkd-replay-2]: process has finished cleanly" in log_path.read_text()):
            assert launch.poll() is None, log_path.read_text()
            executor.spin_once(timeout_sec=0.1)
        assert len(detections) >= len(keyframes), (len(detections), log_path.read_text())
        # the launch file's values, read back from the running node
        values = yaml.safe_load(ros2_param("dump", f"/{DETECTOR}"))
        values = values[f"/{DETECTOR}"]["ros__parameters"]
        assert values["checkpoint"] == str(checkpoint) and values["device"] == "cpu"
        assert values["trigger"] == "keyframes" and values["use_sim_time"] is True
        assert values["reliable_inputs"] is True and values["queue_size"] >= 10
        assert ros2_param("get", f"/{DETECTOR}", "trigger").strip() == (
            "String value is: keyframes")
        # the remappings: the node subscribes to the bag's names, not its private ones
        subscribed = {name for name, _ in node.get_subscriber_names_and_types_by_node(
            DETECTOR, "/")}
        expected = {image_topic(c) for c in CAMERA_NAMES} | {camera_info_topic(c)
                                                            for c in CAMERA_NAMES}
        expected |= {pointcloud_topic(r) for r in RADAR_NAMES} | {KEYFRAMES_TOPIC}
        assert expected <= subscribed, subscribed
        assert not [t for t in subscribed if "/input/" in t], subscribed
        executor.spin_once(timeout_sec=0.5)  # anything late would show here
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGINT)
        try:
            code = launch.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)
            code = launch.wait()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    wall = time.monotonic() - start
    text = log_path.read_text()
    print(f"ros2 launch: {wall:.1f} s\n{text}")  # shown when the test fails
    # one per keyframe, the first included, each with its keyframe's stamp, in base_link
    assert [_stamp(d) for d in detections] == keyframes, text
    assert {d.header.frame_id for d in detections} == {"base_link"}
    assert code == 0, text
    assert "Traceback" not in text and "process has died" not in text, text
    assert len(re.findall(r"\]: process has finished cleanly", text)) == 2, text
    assert "detector-1]: process has finished cleanly" in text, text
