"""How long the node's RViz markers live.

A marker should vanish when the next detections replace it, or a stopped node leaves stale
boxes behind. With no fixed `marker_lifetime`, markers live two periods of the detection rate,
measured on the trigger stamps (sensor time) and smoothed, so one late frame does not blank
RViz; until a period is measured, a 0.5 s period is assumed.
"""

from __future__ import annotations

NS = 1_000_000_000


class MarkerLifetime:
    """`lifetime(stamp)` -> ns, called once per published frame, in stamp order."""

    def __init__(self, fixed_s: float) -> None:
        self.fixed_s = fixed_s  # > 0: always this; 0: two (smoothed) detection periods
        self._last_trigger: int | None = None
        self._period_ns: float | None = None

    def __call__(self, stamp: int) -> int:
        if self.fixed_s > 0:
            return int(self.fixed_s * NS)
        if self._last_trigger is not None and stamp > self._last_trigger:
            period = stamp - self._last_trigger
            self._period_ns = period if self._period_ns is None else (
                0.8 * self._period_ns + 0.2 * period)
        self._last_trigger = stamp
        return int(2 * (self._period_ns or 0.5 * NS))
