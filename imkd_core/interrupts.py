"""SIGTERM handled like Ctrl-C, so a killed tool runs the same clean-up (no half outputs)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


def _raise_keyboard_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt; the previous handler returns after."""
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
