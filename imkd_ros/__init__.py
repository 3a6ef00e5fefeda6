"""imkd_ros: the ROS 2 layer, thin adapters around `imkd_core` (data flows only this way).

What belongs here (DESIGN.md §2): the detector node (messages -> `Sample` -> detector ->
messages), the multi-sensor synchroniser, message <-> numpy conversion, nuScenes -> rosbag2
conversion and bag replay for machines without `ros2 bag play`.
"""
