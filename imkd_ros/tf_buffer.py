"""A small TF cache for the node: the static tree from /tf_static and time-indexed dynamic
edges (the ego pose `map -> base_link`) from /tf, with interpolation. Pure numpy, no rclpy.

tf2_ros is not available everywhere this package runs, and the node needs only two kinds of
lookups, so it keeps its own cache, fed with `imkd_core.wire.fields.tf_message_to_list`:
- static: `T_target_source` through the static tree (sensor extrinsics);
- dynamic: one direct edge at a stamp, linear in translation and spherical in rotation between
  the two neighbouring entries; a stamp that hits an entry exactly returns that entry's matrix
  bit for bit (bags carry an ego pose at every sensor stamp), and a stamp just outside the
  cached span is held at the nearest entry if it is within `max_hold_ns`.
"""

from __future__ import annotations

import bisect

import numpy as np

from imkd_core.geometry import make_transform, matrix_to_quaternion


class TfLookupError(LookupError):
    """A transform that the cache cannot give; the text names the frames and the stamp."""


class TfCache:
    """Static tree + bounded dynamic edges (see the module docstring)."""

    def __init__(self, cache_ns: int = 30_000_000_000, max_hold_ns: int = 50_000_000,
                 loop_ns: int = 1_000_000_000) -> None:
        self.cache_ns = int(cache_ns)
        self.loop_ns = int(loop_ns)
        self.max_hold_ns = int(max_hold_ns)
        self._static: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)
        self._dynamic: dict[tuple[str, str], tuple[list[int], list[np.ndarray]]] = {}

    def set_static(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        self._static[child] = (parent, np.asarray(T_parent_child, dtype=np.float64))

    def add(self, parent: str, child: str, stamp: int, T_parent_child: np.ndarray) -> bool:
        """Cache one dynamic transform. A stamp older than the edge's newest by more than
        `loop_ns` (a bag loop, the next scene) clears the edge first; returns True then."""
        stamps, mats = self._dynamic.setdefault((parent, child), ([], []))
        reset = bool(stamps) and stamp < stamps[-1] - self.loop_ns
        if reset:
            stamps.clear()
            mats.clear()
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            mats[i] = np.asarray(T_parent_child, dtype=np.float64)
        else:
            stamps.insert(i, stamp)
            mats.insert(i, np.asarray(T_parent_child, dtype=np.float64))
        drop = bisect.bisect_left(stamps, stamps[-1] - self.cache_ns)
        del stamps[:drop], mats[:drop]
        return reset

    def newest(self, parent: str, child: str) -> int | None:
        """The newest stamp cached for the dynamic edge, None when there is none."""
        stamps = self._dynamic.get((parent, child), ([], []))[0]
        return stamps[-1] if stamps else None

    def static_lookup(self, target: str, source: str) -> np.ndarray:
        """T_target_source through the static tree (`source` must descend from `target`)."""
        T = np.eye(4)
        frame = source
        seen = set()
        while frame != target:
            if frame not in self._static or frame in seen:
                raise TfLookupError(f"no /tf_static chain {target} -> {source} "
                                    f"(stuck at {frame!r})")
            seen.add(frame)
            parent, T_parent_frame = self._static[frame]
            T = T_parent_frame @ T
            frame = parent
        return T

    def lookup(self, parent: str, child: str, stamp: int) -> np.ndarray:
        """T_parent_child at `stamp` from the dynamic edge parent -> child."""
        stamps, mats = self._dynamic.get((parent, child), ([], []))
        if not stamps:
            raise TfLookupError(f"no /tf {parent} -> {child} received")
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            return mats[i]
        if i == 0 or i == len(stamps):
            nearest = 0 if i == 0 else len(stamps) - 1
            if abs(stamps[nearest] - stamp) <= self.max_hold_ns:
                return mats[nearest]
            raise TfLookupError(
                f"/tf {parent} -> {child} at {stamp * 1e-9:.3f} s is outside the cached span "
                f"[{stamps[0] * 1e-9:.3f}, {stamps[-1] * 1e-9:.3f}] s")
        alpha = (stamp - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
        return interpolate_transform(mats[i - 1], mats[i], alpha)


def interpolate_transform(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Rigid transform a fraction `alpha` of the way from T0 to T1 (lerp + slerp)."""
    q0, q1 = matrix_to_quaternion(T0[:3, :3]), matrix_to_quaternion(T1[:3, :3])
    dot = float(np.dot(q0, q1))
    if dot < 0:  # the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact enough and stable
        q = q0 + alpha * (q1 - q0)
    else:
        theta = np.arccos(dot)
        q = (np.sin((1 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)
    translation = (1 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return make_transform(q / np.linalg.norm(q), translation)
