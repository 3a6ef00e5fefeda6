"""SIGTERM handled like Ctrl-C, so a killed tool runs the same clean-up (no half outputs); and,
for the ROS executables, only the first interrupt counts: `ros2 launch` forwards the Ctrl-C
that the terminal already sent to the whole process group, so a node sees SIGINT twice, and
the second must not cut the first one's clean-up short with a traceback and a death by
signal."""

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


def interrupt_once(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
                   ) -> None:
    """From now on the first of `signals` raises KeyboardInterrupt and every later one is
    ignored, so the clean-up it starts (and a clean Ctrl-C's exit status 0) cannot be cut short.
    For a command's main(); install it before `rclpy.init`, whose handlers call it after theirs.
    """
    def stop(signum: int, _frame) -> None:
        for each in signals:
            signal.signal(each, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in signals:
        signal.signal(signum, stop)
