"""Datasets: the nuScenes reader, the synthetic nuScenes-format world, rosbag2 <-> Sample."""
