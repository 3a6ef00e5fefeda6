"""Warnings the node gives about its inputs: throttled per topic and reason, and counted drops.

Bad input never stops the node: a message that cannot be used is dropped, counted per topic
(`~/debug/status` reports the counts) and warned about with the topic and the reason. A broken
driver repeats the same fault at sensor rate, so a topic and reason warn at most once per
`warn_throttle` seconds; reasons that differ only in their numbers (sizes, stamps) count as the
same reason.

One mechanism keeps every input from ending the node: each subscription callback is wrapped by
`InputWarnings.guard`, so any exception from one message (a `WireError` the converters raise
on purpose, or anything a decoder or a library raised on input no check foresaw) drops that
message, counts it and warns with the topic and a one-line reason (`reason`): the exception's
text, with its type unless it is a `WireError`; never a traceback. The model worker's failures
go through `failed`, throttled the same way.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from imkd_core.wire.fields import WireError

MAX_REASON_CHARS = 300  # an exception's text can quote a whole message


def _shape(text: str) -> str:
    """`text` with its numbers replaced: texts that differ only in sizes or stamps are one."""
    return re.sub(r"\d+(\.\d+)?", "#", text)


def reason(exc: BaseException) -> str:
    """One line saying why: a `WireError`'s text; any other exception's type and text."""
    text = str(exc) if isinstance(exc, WireError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())  # one line: a log line per problem
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 3] + "..."


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
        if self._due((topic, _shape(reason))):
            self._logger.warning(f"{topic}: {detail}")

    def guard(self, topic: str, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """`callback` for subscriptions to `topic`: an exception from a message drops it."""
        def guarded(msg: Any) -> None:
            try:
                callback(msg)
            except Exception as exc:  # one message must never end the node
                self.drop(topic, reason(exc))
        return guarded

    def failed(self, what: str, exc: Exception) -> None:
        """Log (as an error, throttled per exception type) that `what` failed with `exc`."""
        # `what` carries numbers (a frame's stamp): throttle on its shape, as `warn` does
        if self._due((_shape(what), type(exc).__name__)):
            self._logger.error(f"{what} failed: {reason(exc)}")

    def _due(self, key: tuple[str, str]) -> bool:
        """Whether `key` may log now (it did not in the last throttle); records it if so."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._throttle_s:
                return False
            self._last[key] = now
        return True

    def dropped(self) -> dict[str, int]:
        """Dropped messages so far, per full topic name."""
        with self._lock:
            return dict(self._dropped)
