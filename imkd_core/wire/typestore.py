"""The rosbags type store that every bag this project writes or reads uses, without ROS.

Base: the ROS 2 Humble store shipped with `rosbags` (the oldest distro the bags target; the
message layouts used here are identical in Jazzy and Kilted, so the CDR bytes are the same
everywhere). On top of it: the project's own interface definitions in `interfaces/`
(vision_msgs 4.1.1, tf2_msgs), registered from their `.msg` text with `get_types_from_msg`, so
a bag's schema records carry the real definitions and `ros2 bag play` / Foxglove decode them.

The `.msg` files are looked up, first hit wins, in
1. `interfaces/` next to the sources (a checkout or an editable install),
2. `share/imkd_ros/interfaces/` under this Python's prefix and every `AMENT_PREFIX_PATH` entry
   (where `setup.py` installs them, e.g. through colcon),
3. `share/<package>/msg/` under those same prefixes (a distro's or the venv's built package).
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

INTERFACE_PACKAGES: tuple[str, ...] = ("vision_msgs", "tf2_msgs")
BASE_STORE = Stores.ROS2_HUMBLE


class InterfaceNotFoundError(FileNotFoundError):
    """An interface package's `.msg` files are in none of the searched places."""


def _prefixes() -> list[Path]:
    prefixes = [Path(sys.prefix)]
    for entry in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if entry:
            prefixes.append(Path(entry))
    return prefixes


def candidate_dirs(package: str) -> list[Path]:
    """Every place searched for `<package>/msg/*.msg`, in order."""
    dirs = [Path(__file__).resolve().parents[2] / "interfaces" / package / "msg"]
    dirs += [p / "share" / "imkd_ros" / "interfaces" / package / "msg" for p in _prefixes()]
    dirs += [p / "share" / package / "msg" for p in _prefixes()]
    return dirs


def find_msg_dir(package: str) -> Path:
    """The first directory holding `package`'s `.msg` files."""
    tried = candidate_dirs(package)
    for directory in tried:
        if directory.is_dir() and any(directory.glob("*.msg")):
            return directory
    raise InterfaceNotFoundError(
        f"no .msg files for {package}; looked in: " + ", ".join(str(d) for d in tried))


def load_msg_types(package: str, directory: Path | None = None) -> dict:
    """Parse every `.msg` of `package` into a rosbags types dict."""
    directory = directory or find_msg_dir(package)
    types: dict = {}
    for path in sorted(directory.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"),
                                        f"{package}/msg/{path.stem}"))
    return types


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The shared type store (Humble + `INTERFACE_PACKAGES`); built once per process.

    A type the base store already has must be defined identically by our `.msg` text
    (rosbags raises `TypesysError` otherwise), so the bag never mixes two layouts of one name.
    """
    store = get_typestore(BASE_STORE)
    for package in INTERFACE_PACKAGES:
        store.register(load_msg_types(package))
    return store
