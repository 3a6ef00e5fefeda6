"""The node's model worker: one private thread behind a bounded, drop-oldest queue.

Why a thread of its own and not the executor: the model takes longer than the gap between
camera sets, and what must be bounded is the number of *complete frame sets* waiting for it,
with the oldest given up first (a stale set is worth less than the newest). No subscription's
QoS depth can say that, as a set is made of many topics; and a model running in an executor
callback would hold up the callbacks that convert and synchronise the next set. So callbacks
hand complete sets to `FrameWorker.put`, which never blocks, and the worker drains them
through the model; a set pushed out of a full queue is counted (`dropped`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class FrameWorker(Generic[Item]):
    """Runs `handle(item, start, queue_wait_s)` for each item, in order, on its own thread.

    `start` is what `put` was given (perf_counter() when the item's last input arrived);
    `queue_wait_s` how long it waited in the queue. An exception from `handle` goes to
    `on_error(item, exc)`: one bad item must not end the worker."""

    def __init__(self, size: int, handle: Callable[[Item, float, float], None],
                 on_error: Callable[[Item, Exception], None], name: str) -> None:
        self.size = size
        self.dropped = 0  # items pushed out of the full queue unprocessed
        self._handle, self._on_error = handle, on_error
        self._queue: deque[tuple[Item, float, float]] = deque()
        self._wake = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Item, start: float) -> None:
        """Queue `item`; when the queue is full the oldest waiting item is dropped."""
        with self._wake:
            if len(self._queue) >= self.size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((item, start, time.perf_counter()))
            self._wake.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the item being processed, leave the waiting ones, end the thread."""
        with self._wake:
            self._running = False
            self._wake.notify()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._running and not self._queue:
                    self._wake.wait()
                if not self._running:
                    return
                item, start, queued = self._queue.popleft()
            try:
                self._handle(item, start, time.perf_counter() - queued)
            except Exception as exc:  # one bad frame must not end the node
                self._on_error(item, exc)
