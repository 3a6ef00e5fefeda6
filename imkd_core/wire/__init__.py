"""The ROS 2 wire formats, without rclpy: the one home that the bag tools, the node and the
launch file share, so a topic name, a QoS profile, a message layout or the keyframe record is
stated once.

`names` (topics, frames, type names, QoS as plain data), `typestore` (the rosbags type store),
`pointcloud2` (the PointCloud2 byte codec), `fields` (reading values off a message of either
library, and `WireError`), `messages` (rosbags message builders), `cdr` (serialised detections
and markers), `keyframe` (the `/imkd/keyframes` record). See docs/ARCHITECTURE.md §Conventions.
"""
