"""The CPU cores this process may run on."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores the scheduler lets this process use: `taskset`, a cpuset cgroup (docker --cpuset-cpus) or a batch
    allocation may allow fewer than the machine has, and os.cpu_count() counts the machine's (torch threads beyond
    the allowed cores share them and run slower than one thread a core)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity call on this platform (macOS)
        return os.cpu_count() or 1
