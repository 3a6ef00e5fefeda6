"""imkd_core: the offline core of imkd_ros. It never imports rclpy or any ROS message module.

What belongs here (docs/ARCHITECTURE.md §Layers and §Where things live): the `Sample` record
(`sample.py`), shared geometry (`geometry.py`), ROS wire formats without rclpy (`wire/`),
nuScenes and rosbag2 data (`data/`), the LiDAR teacher and the camera+radar student
(`models/`), the three IMKD distillation stages (`distill/`), training (`train/`), official
nuScenes evaluation (`evaluation/`), configs and the `imkd` command line.
"""

__version__ = "0.1.0"
