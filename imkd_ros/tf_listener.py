"""The node's TF: /tf and /tf_static into a `TfCache`, shared by the subscription callbacks
and the model worker (what tf2_ros's TransformListener and Buffer give a C++ node).

/tf travels apart from the sensor data, and the ego pose at each sensor stamp is part of a
frame's input: the worker waits (`wait_for_ego_pose`, at most `tf_wait`) for a pose at or
after a set's newest stamp before it builds the `Sample`, and notes when the covering /tf
message came, from which the node counts the frame's latency.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import numpy as np

from imkd_ros.tf_buffer import TfCache

Transform = tuple[str, str, int, np.ndarray]  # parent, child, stamp (ns), T_parent_child


class TfListener:
    """A `TfCache` behind a lock, with the lookups the node needs; ego pose: map -> base."""

    def __init__(self, cache: TfCache, map_frame: str, base_frame: str) -> None:
        self.map_frame, self.base_frame = map_frame, base_frame
        self._cache = cache
        self._updated = threading.Condition()  # guards the cache; notified on new /tf poses
        self._arrival = 0.0  # perf_counter() when the newest /tf message was taken

    def add(self, transforms: Iterable[Transform], static: bool) -> bool:
        """Take one /tf (or /tf_static) message's transforms; True when /tf went backwards
        (a bag loop) and the poses were reset."""
        looped = False
        with self._updated:
            for parent, child, stamp, T in transforms:
                if static:
                    self._cache.set_static(parent, child, T)
                else:
                    looped |= self._cache.add(parent, child, stamp, T)
            if not static:
                self._arrival = time.perf_counter()
                self._updated.notify_all()
        return looped

    def extrinsics(self, frame: str) -> np.ndarray:
        """T_base_frame through /tf_static, or a /tf edge that never moved (bags of other
        converters put the mounts on /tf); raises TfLookupError saying what it waits for."""
        with self._updated:
            return self._cache.static_lookup(self.base_frame, frame)

    def ego_pose(self, stamp: int) -> np.ndarray:
        """T_map_base at `stamp`; raises TfLookupError."""
        with self._updated:
            return self._cache.lookup(self.map_frame, self.base_frame, stamp)

    def wait_for_ego_pose(self, stamp: int, timeout_s: float) -> float | None:
        """Block until an ego pose at or after `stamp` is cached, at most `timeout_s` (then the
        last pose is held within tf_hold, or sensors are treated as static). Returns when the
        input became complete (perf_counter): the covering /tf message was taken, or the wait
        gave up; None when there was nothing to wait for."""
        deadline = time.monotonic() + timeout_s
        waited = False
        with self._updated:
            while True:
                newest = self._cache.newest(self.map_frame, self.base_frame)
                if newest is None:  # no /tf ego pose at all: nothing to wait for
                    return None
                if newest >= stamp:
                    return self._arrival if waited else None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return time.perf_counter()
                self._updated.wait(remaining)
                waited = True
