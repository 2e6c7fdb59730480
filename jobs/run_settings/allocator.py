"""Which malloc a training process runs with: jemalloc preloaded where it is installed and not turned off
(STUDIO_JEMALLOC=0), else glibc's. The worker preloads it (jobs.queue.spare.child_env) and the memory estimate's
allocator factor depends on it (jobs.models.memory_inputs): both ask `jemalloc_for_training`, so the estimate knows
the allocator the job will run with. A worker names it in its CPU device (`JEMALLOC_LABEL`, jobs.queue.devices)."""

from __future__ import annotations

import glob
from pathlib import Path

JEMALLOC_GLOBS = ("/usr/lib/*-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
JEMALLOC_LABEL = "jemalloc"


def jemalloc_library() -> Path | None:
    """The installed jemalloc shared library (Debian: libjemalloc2), None when there is none."""
    for pattern in JEMALLOC_GLOBS:
        if found := sorted(glob.glob(pattern)):
            return Path(found[0])
    return None


def jemalloc_for_training(wanted: bool) -> bool:
    """Whether training processes run with jemalloc: `wanted` (the STUDIO_JEMALLOC setting) and installed."""
    return wanted and jemalloc_library() is not None


def allocator_in_use() -> str:
    """Which malloc this process runs with, from its own mappings."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return "jemalloc" if "libjemalloc" in maps else "glibc malloc"
