"""Shared test setup.

DDS stays on this machine for every test (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and each
pytest process gets its own ROS_DOMAIN_ID, so parallel runs and other sessions on the machine
never see each other's traffic. Subprocesses started by tests inherit both.

Test data lives in the repository (`test/data/`, licence in `test/data/LICENSE.md`): a clone
with nothing beside it runs every test. The development checkout has a `../shared/` folder that
a clone lacks, so an audit hook makes any open or listing under it fail the test that did it,
here, where it would otherwise pass unnoticed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "test" / "data"
REAL_NUSCENES = TEST_DATA / "nuscenes_real"
OUTSIDE_DATA = str(REPO_ROOT.parent / "shared")  # beside the checkout, absent from a clone

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# 1..100 is inside the range every RMW accepts; derive from the pid so xdist workers differ.
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)


class OutsideDataError(RuntimeError):
    """A test opened a file beside the repository instead of under test/data."""


def refuse_outside_data(event: str, args: tuple) -> None:
    """Audit hook (sys.addaudithook): opening or listing anything under OUTSIDE_DATA raises."""
    if event not in ("open", "os.listdir", "os.scandir"):
        return
    path = args[0]
    if not isinstance(path, (str, bytes, os.PathLike)):
        return  # a file descriptor, or the default "."
    path = os.path.abspath(os.fsdecode(path))
    if path == OUTSIDE_DATA or path.startswith(OUTSIDE_DATA + os.sep):
        raise OutsideDataError(f"{event} {path}: tests read data from test/data only "
                               "(a clone has nothing beside it)")


sys.addaudithook(refuse_outside_data)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_nuscenes_dir() -> Path:
    """The one real nuScenes keyframe in test/data (part of the repository: copy before adding)."""
    if not (REAL_NUSCENES / "SOURCE.md").is_file():
        pytest.fail(f"real nuScenes keyframe missing: {REAL_NUSCENES} (tracked in git)")
    return REAL_NUSCENES
