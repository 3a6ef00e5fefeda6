"""Launch the IMKD detector on nuScenes-named topics, optionally with a bag replay and RViz.

    ros2 launch imkd_ros detector.launch.py checkpoint:=/path/student.pt
    ros2 launch imkd_ros detector.launch.py checkpoint:=student.pt bag:=/data/scene.bag rviz:=true

Arguments: checkpoint (required), device (auto|cpu|cuda), params_file (default: the installed
config/detector.yaml), compressed (subscribe /CAM_X/image_raw/compressed), trigger
(cameras|keyframes), bag (replay it with `imkd-replay --clock`; use_sim_time and
reliable_inputs follow), rate, rviz (start RViz with config/imkd.rviz), reliable_inputs.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from imkd_core.sample import CAMERA_NAMES, RADAR_NAMES
from imkd_core.wire.names import KEYFRAMES_TOPIC, camera_info_topic, image_topic, pointcloud_topic
from launch import LaunchDescription

ARGUMENTS = {
    "checkpoint": (None, "Model checkpoint (.pt); required"),
    "device": ("auto", "auto | cpu | cuda"),
    "params_file": ("", "Node parameter YAML; empty: the installed config/detector.yaml"),
    "compressed": ("false", "true: subscribe /CAM_X/image_raw/compressed"),
    "trigger": ("cameras", "cameras (live) | keyframes (the bag's /imkd/keyframes records)"),
    "bag": ("", "A nuscenes2bag bag to replay with imkd-replay (publishes /clock)"),
    "rate": ("1.0", "Replay rate"),
    "rviz": ("false", "true: start RViz with config/imkd.rviz"),
    "reliable_inputs": ("false", "true: reliable sensor subscriptions (always with bag:=...)"),
}


def remappings(compressed: bool) -> list[tuple[str, str]]:
    """The node's private inputs -> the topic names nuscenes2bag writes."""
    pairs = []
    for cam in CAMERA_NAMES:
        pairs += [(f"~/input/{cam}/image", image_topic(cam, compressed)),
                  (f"~/input/{cam}/camera_info", camera_info_topic(cam))]
    pairs += [(f"~/input/{radar}/points", pointcloud_topic(radar)) for radar in RADAR_NAMES]
    pairs.append(("~/input/keyframes", KEYFRAMES_TOPIC))
    return pairs


def _setup(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = FindPackageShare("imkd_ros").perform(context)
    replay = bool(arg["bag"])
    actions = [Node(
        package="imkd_ros", executable="detector", name="imkd_detector", output="screen",
        parameters=[arg["params_file"] or f"{share}/config/detector.yaml",
                    {"checkpoint": arg["checkpoint"], "device": arg["device"],
                     "compressed_images": arg["compressed"] == "true",
                     "trigger": arg["trigger"], "use_sim_time": replay,
                     # the player's publishers are reliable; best-effort readers lose large
                     # raw images on Fast DDS (benchmarks/bench_node.py)
                     "reliable_inputs": replay or arg["reliable_inputs"] == "true"}],
        remappings=remappings(arg["compressed"] == "true"))]
    if replay:
        actions.append(Node(package="imkd_ros", executable="imkd-replay", name="imkd_replay",
                            output="screen",
                            arguments=[arg["bag"], "--rate", arg["rate"], "--clock"]))
    if arg["rviz"] == "true":
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", f"{share}/config/imkd.rviz"],
                            parameters=[{"use_sim_time": replay}]))
    return actions


def generate_launch_description() -> LaunchDescription:
    declared = []
    for name, (default, description) in ARGUMENTS.items():
        if default is None:
            declared.append(DeclareLaunchArgument(name, description=description))
        else:
            declared.append(DeclareLaunchArgument(name, default_value=default,
                                                  description=description))
    return LaunchDescription([*declared, OpaqueFunction(function=_setup)])
