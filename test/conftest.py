"""Shared test setup.

DDS stays on this machine for every test (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and each
pytest process gets its own ROS_DOMAIN_ID, so parallel runs and other sessions on the machine
never see each other's traffic. Subprocesses started by tests inherit both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
REAL_NUSCENES = SHARED_DATA / "nuscenes_real"

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# 1..100 is inside the range every RMW accepts; derive from the pid so xdist workers differ.
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_nuscenes_dir() -> Path:
    """The one real nuScenes keyframe shipped in ../shared (read-only: copy before adding)."""
    if not REAL_NUSCENES.is_dir():
        pytest.fail(f"real nuScenes keyframe missing: {REAL_NUSCENES} (shared/ is part of CI)")
    return REAL_NUSCENES
