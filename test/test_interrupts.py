"""Our commands stop on Ctrl-C and SIGTERM however they were started: a shell starts a
background job with SIGINT ignored, and Python would keep that."""

from __future__ import annotations

import os
import signal
import time

import pytest

from imkd_core.interrupts import stop_signals_as_keyboard_interrupt


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_raise_keyboard_interrupt_where_sigint_was_ignored(signum):
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(KeyboardInterrupt), stop_signals_as_keyboard_interrupt():
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler runs here, in the main thread
        # the block gives back what it found
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
