"""Which malloc a training process runs with: jemalloc preloaded where it is installed and not turned off
(STUDIO_JEMALLOC=0), else glibc's; and the caps on oneDNN's per-shape caches (`ONEDNN_CACHES`) that bf16 compute
on a CPU would otherwise fill. The worker preloads it (jobs.queue.spare.child_env) and the memory estimate's
allocator factor depends on it (jobs.models.memory_inputs): both ask `jemalloc_for_training`, so the estimate knows
the allocator the job will run with. A worker names it in its CPU device (`JEMALLOC_LABEL`, jobs.queue.devices)."""

from __future__ import annotations

import glob
from pathlib import Path

JEMALLOC_GLOBS = ("/usr/lib/*-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
JEMALLOC_LABEL = "jemalloc"
ONEDNN_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64", "LRU_CACHE_CAPACITY": "64"}
"""A training process's caps on the per-shape caches of oneDNN (its primitive cache) and of PyTorch's ideep layer
(LRU_CACHE_CAPACITY), both 1,024 entries by default. A bf16 matmul on a CPU goes through oneDNN, which builds a
primitive for every input shape and keeps it; packed rows give nearly every step a new token count, so the caches
grew all job long: bf16 matmuls of SmolLM2's linear shapes over 107 token counts grew the resident set by 674 MB with
the defaults, 49 MB at 64 entries, 4 MB with none, and 20 calls at one shape took the same time (bench/onednn_cache.py,
docs/benchmarks.md). Float32 matmuls go through MKL and keep nothing (8 MB). 64 holds a step's shapes (the layers'
matmuls forward and backward at one token count); an operator's own setting in the environment is kept."""


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
