"""The smallest world the training and evaluation tests use: 2 scenes x 3 keyframes (one train
scene, one val scene) at 320x180 with a coarse LiDAR, generated in about 6 s on one core."""

from __future__ import annotations

from pathlib import Path

from imkd_core.data.world import WorldConfig, generate_world

TINY_WORLD = WorldConfig(scenes=2, samples_per_scene=3, seed=7, val_fraction=0.5,
                         image_width=320, image_height=180, lidar_azimuth_steps=180, density=0.5)


def make_tiny_world(directory: Path) -> Path:
    """Generate TINY_WORLD into `directory` (in this process) and return the dataroot."""
    return generate_world(directory, TINY_WORLD, workers=1)
