"""Process ties: a supervised process must not outlive its supervisor; one worker per device per host; is a
worker process still alive."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
from pathlib import Path
from typing import IO

from storage.settings import current_host

PR_SET_PDEATHSIG = 1


def worker_name() -> str:
    """How the ledger names this worker process: host and PID, so a worker on the same host can tell if it died."""
    return f"{current_host()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process runs: a zombie (dead, not yet waited for by its parent) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"  # the state follows the command name in parentheses


def signal_when_parent_dies(signum: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `signum` when the parent exits. Returns False when the parent is already gone."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    return os.getppid() == parent


def device_label() -> str:
    """Which device a worker trains on: the GPUs it is given, or the CPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return f"cuda-{visible.replace(',', '_') or 'none'}"
    return "default"


def hold_device_lock(locks_dir: Path, device: str) -> IO | None:
    """Take this host's lock for `device`, so two workers never train on one device at once.

    Returns the open lock file (keep it open for the worker's life), or None when another worker holds it.
    The kernel drops the lock when the process dies, however it dies."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    handle = (locks_dir / f"worker-{device}.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
