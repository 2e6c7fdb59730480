"""Process ties: a supervised process must not outlive its supervisor."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def signal_when_parent_dies(signum: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `signum` when the parent exits. Returns False when the parent is already gone."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    return os.getppid() == parent
