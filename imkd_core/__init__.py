"""imkd_core: the offline core of imkd_ros. It never imports rclpy or any ROS message module.

What belongs here (DESIGN.md §2): the `Sample` record (`sample.py`), shared geometry
(`geometry.py`), nuScenes and rosbag2 data (`data/`), the LiDAR teacher and the camera+radar
student (`models/`), the three IMKD distillation stages (`distill/`), training, official nuScenes
evaluation, export, configs and the `imkd` command line.
"""

__version__ = "0.1.0"
