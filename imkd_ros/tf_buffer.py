"""A small TF cache for the node: the static tree from /tf_static and time-indexed dynamic
edges (the ego pose `map -> base_link`) from /tf, with interpolation. Pure numpy, no rclpy.

tf2_ros is not available everywhere this package runs, and the node needs only two kinds of
lookups, so it keeps its own cache, fed with `imkd_core.wire.fields.tf_message_to_list`:
- static: `T_target_source` through the static tree (sensor extrinsics). A frame that has no
  /tf_static entry may take its mount from /tf instead, as bags of other converters carry it
  (`base_link -> CAM_FRONT` republished at every keyframe): a /tf edge whose transform has not
  changed (within `STATIC_TOLERANCE`) over the cached span counts as static;
- dynamic: one direct edge at a stamp, linear in translation and spherical in rotation between
  the two neighbouring entries; a stamp that hits an entry exactly returns that entry's matrix
  bit for bit (bags carry an ego pose at every sensor stamp), and a stamp just outside the
  cached span is held at the nearest entry if it is within `max_hold_ns`.
"""

from __future__ import annotations

import bisect

import numpy as np

from imkd_core.geometry import make_transform, matrix_to_quaternion

# Largest matrix-entry change (rotation and metres) under which a /tf edge is still a fixed mount.
STATIC_TOLERANCE = 1e-4


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
        self._moving: set[tuple[str, str]] = set()  # dynamic edges whose transform changed

    def set_static(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        self._static[child] = (parent, np.asarray(T_parent_child, dtype=np.float64))

    def add(self, parent: str, child: str, stamp: int, T_parent_child: np.ndarray) -> bool:
        """Cache one dynamic transform. A stamp older than the edge's newest by more than
        `loop_ns` (a bag loop, the next scene) clears the edge first; returns True then."""
        edge = (parent, child)
        stamps, mats = self._dynamic.setdefault(edge, ([], []))
        reset = bool(stamps) and stamp < stamps[-1] - self.loop_ns
        if reset:
            stamps.clear()
            mats.clear()
            self._moving.discard(edge)
        T_parent_child = np.asarray(T_parent_child, dtype=np.float64)
        if mats and edge not in self._moving and not np.allclose(
                T_parent_child, mats[0], rtol=0.0, atol=STATIC_TOLERANCE):
            self._moving.add(edge)
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            mats[i] = T_parent_child
        else:
            stamps.insert(i, stamp)
            mats.insert(i, T_parent_child)
        drop = bisect.bisect_left(stamps, stamps[-1] - self.cache_ns)
        del stamps[:drop], mats[:drop]
        return reset

    def newest(self, parent: str, child: str) -> int | None:
        """The newest stamp cached for the dynamic edge, None when there is none."""
        stamps = self._dynamic.get((parent, child), ([], []))[0]
        return stamps[-1] if stamps else None

    def static_lookup(self, target: str, source: str) -> np.ndarray:
        """T_target_source through the static tree (`source` must descend from `target`); a
        frame missing from /tf_static is taken from a /tf edge that never moved."""
        T = np.eye(4)
        frame = source
        seen = set()
        while frame != target:
            entry = self._static.get(frame) or self._fixed_dynamic_parent(frame)
            if entry is None or frame in seen:
                raise TfLookupError(f"no /tf_static chain {target} -> {source} (stuck at "
                                    f"{frame!r}){self._why_not_on_tf(frame)}; waiting for "
                                    f"{target} -> {source} on /tf_static or /tf")
            seen.add(frame)
            parent, T_parent_frame = entry
            T = T_parent_frame @ T
            frame = parent
        return T

    def _fixed_dynamic_parent(self, child: str) -> tuple[str, np.ndarray] | None:
        """(parent, newest T) of a /tf edge into `child` that has not moved, else None."""
        for (parent, edge_child), (_, mats) in self._dynamic.items():
            if edge_child == child and mats and (parent, child) not in self._moving:
                return parent, mats[-1]
        return None

    def _why_not_on_tf(self, child: str) -> str:
        moving = [p for p, c in self._moving if c == child and self._dynamic[(p, c)][0]]
        return (f", and /tf {moving[0]} -> {child} moves: not a fixed sensor mount"
                if moving else "")

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
