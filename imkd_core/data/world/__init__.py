"""A synthetic world in exact nuScenes format (docs/ARCHITECTURE.md §Data without the nuScenes
download).

`generate_world(out_dir, WorldConfig(...))` writes a dataroot with all 13 tables, `samples/`,
`sweeps/` and `maps/` that nuscenes-devkit loads and evaluates unmodified; the CLI is
`imkd world`. Modules: `config` (settings), `road` (street geometry: lanes, markings, sidewalks),
`scene` (the scene model the sensors read: actors on a time grid, poses at any time), `layout`
(the street a scene is built on and the placement tools) and `population` (what goes on it, in
order), `shapes` (objects as cuboid parts), `materials` (what cameras and LiDAR see of a
surface), `raycast` (shared ray casting), `rig` (nuScenes calibration), `render`/`lidar`/`radar`
(the sensors), `tables` (the nuScenes schema), `generate` (orchestration), `worker` (one scene in
a worker process), `cli` (`imkd world`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imkd_core.data.world.config import WorldConfig

if TYPE_CHECKING:
    from imkd_core.data.world.generate import generate_world, scene_names

__all__ = ["WorldConfig", "generate_world", "scene_names"]


def __getattr__(name: str):
    # the generator pulls in OpenCV and the devkit's split lists: load it on first use only
    if name in ("generate_world", "scene_names"):
        from imkd_core.data.world import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
