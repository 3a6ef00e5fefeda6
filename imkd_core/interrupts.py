"""How our commands stop. Ctrl-C and SIGTERM both raise KeyboardInterrupt, so a killed tool runs
the same clean-up as an interrupted one (no half outputs). Both handlers are installed
explicitly: a shell starts a background job (`cmd &` in a script, `nohup`) with SIGINT
ignored, Python keeps an inherited SIG_IGN, and a `kill -INT` from whoever started the job
would then do nothing. For the ROS executables only the first interrupt counts: `ros2 launch`
forwards the Ctrl-C that the terminal already sent to the whole process group, so a node sees
SIGINT twice, and the second must not cut the first one's clean-up short with a traceback and
a death by signal."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_keyboard_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def stop_signals_as_keyboard_interrupt() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM raise KeyboardInterrupt (also where SIGINT was
    inherited ignored); the previous handlers return after."""
    previous = {signum: signal.signal(signum, _raise_keyboard_interrupt)
                for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interrupt_once(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
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
