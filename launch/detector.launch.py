"""Launch the IMKD detector on nuScenes-named topics, optionally with a bag replay and RViz.

    ros2 launch imkd_ros detector.launch.py                  # the shipped student
    ros2 launch imkd_ros detector.launch.py checkpoint:=/path/student.pt
    ros2 launch imkd_ros detector.launch.py checkpoint:=student.pt bag:=/data/scene.bag rviz:=true
    ros2 launch imkd_ros detector.launch.py checkpoint:=student.pt bag:=/data/other_tool.mcap \
        compressed:=true camera_suffix:=image_rect_compressed

Arguments: `ARGUMENTS` below (`--show-args` lists them; the README's table is tested against
them). With bag:=..., `imkd-replay --clock` plays it, use_sim_time and reliable_inputs follow
and queue_size is at least `BAG_QUEUE_SIZE`. The replay waits (`--wait-for`) until the detector
has subscribed to every input it will read, under exactly these remappings: the detector needs
seconds to load its model, and a short bag played at once would lose its first keyframes. Only
the detector's inputs, not every bag topic: nothing subscribes to /LIDAR_TOP or /gt/*. Its
subscriptions are created after the model loaded, so they are its ready signal.
"""

from pathlib import Path

import yaml
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from imkd_core.sample import CAMERA_NAMES, RADAR_NAMES
from imkd_core.wire.names import (
    KEYFRAMES_TOPIC,
    TF_STATIC_TOPIC,
    TF_TOPIC,
    camera_info_topic,
    image_topic,
    pointcloud_topic,
)
from imkd_ros.parameters import NODE_NAME, string_list
from launch import LaunchDescription

ARGUMENTS = {
    "checkpoint": ("", "Model checkpoint (.pt, or an `imkd export` file); empty: the "
                       "params_file's, by default the shipped student "
                       "(package://imkd_ros/models/imkd_tiny_student.pt)"),
    "device": ("auto", "auto | cpu | cuda"),
    "params_file": ("", "Node parameter YAML; empty: the installed config/detector.yaml"),
    "compressed": ("false", "true: subscribe /CAM_X/image_raw/compressed"),
    "camera_suffix": ("", "Camera image topic /CAM_X/<suffix> (e.g. image_rect_compressed, "
                          "with compressed:=true, for bags of other nuScenes converters); "
                          "empty: image_raw, image_raw/compressed with compressed:=true"),
    "trigger": ("cameras", "cameras (live) | keyframes (the bag's /imkd/keyframes records)"),
    "cameras": ("", "Camera subset, comma-separated (CAM_FRONT,CAM_BACK); empty: the "
                    "params_file's. The model's other cameras run blank (mode degraded)"),
    "radars": ("", "Radar subset, comma-separated (RADAR_FRONT), or none: camera-only; "
                   "empty: the params_file's (mode degraded without some)"),
    "bag": ("", "A bag (rosbag2 directory, or one .mcap / .db3 file) to replay with "
                "imkd-replay (publishes /clock), from the "
                "moment the detector has subscribed to its inputs"),
    "rate": ("1.0", "Replay rate"),
    "rviz": ("false", "true: start RViz with config/imkd.rviz"),
    "reliable_inputs": ("false", "true: reliable sensor subscriptions (always with bag:=...)"),
}


# With bag:=..., the detector queues at least this many frame sets for its model instead of
# dropping the oldest (the first inference is slow; live, a stale frame is worth nothing).
BAG_QUEUE_SIZE = 10


def remappings(compressed: bool, camera_suffix: str = "") -> list[tuple[str, str]]:
    """The node's private inputs -> the topic names nuscenes2bag writes (the images on
    /CAM_X/<camera_suffix> instead when it is given)."""
    pairs = []
    for cam in CAMERA_NAMES:
        image = f"/{cam}/{camera_suffix.strip('/')}" if camera_suffix else image_topic(
            cam, compressed)
        pairs += [(f"~/input/{cam}/image", image),
                  (f"~/input/{cam}/camera_info", camera_info_topic(cam))]
    pairs += [(f"~/input/{radar}/points", pointcloud_topic(radar)) for radar in RADAR_NAMES]
    pairs.append(("~/input/keyframes", KEYFRAMES_TOPIC))
    return pairs


def file_parameters(path: str) -> dict:
    """The detector's values in a `--params-file` YAML: `/**`, then its own node name."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    values: dict = {}
    for key in ("/**", NODE_NAME, f"/{NODE_NAME}"):
        values.update((data.get(key) or {}).get("ros__parameters") or {})
    return values


def detector_inputs(params: dict, compressed: bool, camera_suffix: str = "") -> list[str]:
    """The topics the detector subscribes to with these parameters, under `remappings`."""
    remap = dict(remappings(compressed, camera_suffix))
    cameras = string_list("cameras", params.get("cameras", CAMERA_NAMES))
    private = [f"~/input/{cam}/{kind}" for cam in cameras for kind in ("camera_info", "image")]
    private += [f"~/input/{radar}/points"
                for radar in string_list("radars", params.get("radars", RADAR_NAMES))]
    if params.get("trigger") == "keyframes":
        private.append("~/input/keyframes")
    resolved = [remap.get(name, f"/{NODE_NAME}/{name[2:]}") for name in private]
    return [TF_TOPIC, TF_STATIC_TOPIC, *resolved]


def _setup(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = FindPackageShare("imkd_ros").perform(context)
    replay = bool(arg["bag"])
    params_file = arg["params_file"] or f"{share}/config/detector.yaml"
    file_values = file_parameters(params_file)
    compressed = arg["compressed"] == "true"
    overrides = {"device": arg["device"],
                 "compressed_images": compressed, "trigger": arg["trigger"],
                 "use_sim_time": replay,
                 # the player's publishers are reliable; best-effort readers lose large raw
                 # images on Fast DDS (benchmarks/bench_node.py)
                 "reliable_inputs": replay or arg["reliable_inputs"] == "true"}
    if arg["checkpoint"]:
        overrides["checkpoint"] = arg["checkpoint"]
    if replay:  # a bag is evaluated, not watched live: keep every keyframe the model lags on
        overrides["queue_size"] = max(int(file_values.get("queue_size", 1)), BAG_QUEUE_SIZE)
    for sensors in ("cameras", "radars"):  # a subset; rcl cannot pass an empty list: "none"
        if arg[sensors]:
            file_values[sensors] = list(string_list(sensors, arg[sensors]))
            overrides[sensors] = file_values[sensors] or "none"
    actions = [Node(package="imkd_ros", executable="detector", name=NODE_NAME, output="screen",
                    parameters=[params_file, overrides],
                    remappings=remappings(compressed, arg["camera_suffix"]))]
    if replay:
        inputs = detector_inputs({**file_values, "trigger": arg["trigger"]}, compressed,
                                 arg["camera_suffix"])
        actions.append(Node(package="imkd_ros", executable="imkd-replay", name="imkd_replay",
                            output="screen",
                            arguments=[arg["bag"], "--rate", arg["rate"], "--clock",
                                       "--wait-for", *inputs]))
    if arg["rviz"] == "true":
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", f"{share}/config/imkd.rviz"],
                            parameters=[{"use_sim_time": replay}]))
    return actions


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_setup)])
