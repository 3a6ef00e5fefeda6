"""Warnings the node gives about its inputs: throttled per topic and reason, and counted drops.

Bad input never stops the node: a message that cannot be used is dropped, counted per topic
(`~/debug/status` reports the counts) and warned about with the topic and the reason. A broken
driver repeats the same fault at sensor rate, so a topic and reason warn at most once per
`warn_throttle` seconds; reasons that differ only in their numbers (sizes, stamps) count as the
same reason.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable


class InputWarnings:
    """Throttled warnings and per-topic drop counts; safe to use from any thread."""

    def __init__(self, logger, resolve: Callable[[str], str], throttle_s: float) -> None:
        """`resolve`: a topic as written in the node (`~/input/...`) -> its full name."""
        self._logger = logger
        self._resolve = resolve
        self._throttle_s = throttle_s
        self._lock = threading.Lock()
        self._dropped: dict[str, int] = defaultdict(int)
        self._last: dict[tuple[str, str], float] = {}

    def drop(self, topic: str, reason: str) -> None:
        """Count a dropped message of `topic` and warn about it."""
        with self._lock:
            self._dropped[self._resolve(topic)] += 1
        self.warn(topic, reason, f"dropped message: {reason}")

    def warn(self, topic: str, reason: str, detail: str) -> None:
        """Log "<topic>: <detail>" unless `topic` warned for `reason` in the last throttle."""
        topic = self._resolve(topic)
        key = (topic, re.sub(r"\d+(\.\d+)?", "#", reason))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._throttle_s:
                return
            self._last[key] = now
        self._logger.warning(f"{topic}: {detail}")

    def dropped(self) -> dict[str, int]:
        """Dropped messages so far, per full topic name."""
        with self._lock:
            return dict(self._dropped)
