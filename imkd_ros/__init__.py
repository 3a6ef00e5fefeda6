"""imkd_ros: the ROS 2 layer, thin adapters around `imkd_core` (data flows only this way).

What belongs here (docs/ARCHITECTURE.md §Layers): the detector node (messages -> `Sample` ->
detector -> messages) and the ROS-side pieces it wires (parameters, inputs, worker, TF, QoS),
the multi-sensor synchroniser, nuScenes -> rosbag2 conversion and bag replay for machines
without `ros2 bag play`.
"""
