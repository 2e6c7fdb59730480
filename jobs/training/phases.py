"""Where a job's wall time goes: named phases timed as they run in the child, reported per job (issue 14).

One child trains one job, so the clock is the process's: `phase` adds a block's seconds to its name, `take` hands
the totals over and starts afresh. The Runs tab shows them with the queue wait and the share that is not training."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASES = {
    "child_start": "child start", "imports": "imports", "base_prepare": "base preparation", "data": "data",
    "base_load": "base load + 4-bit", "trainer_build": "trainer build + tokenization", "training": "training",
    "adapter_save": "adapter save", "registration": "registration",
}
"""Phase names, in the order a job goes through them, with the words the Runs tab shows."""
METRIC_PREFIX = "phase_s/"

_seconds: dict[str, float] = {}


@contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - started)


def add(name: str, seconds: float) -> None:
    _seconds[name] = _seconds.get(name, 0.0) + seconds


def take() -> dict[str, float]:
    """The phases timed since the last take, as metrics (`phase_s/<name>`: seconds)."""
    taken = {f"{METRIC_PREFIX}{name}": seconds for name, seconds in _seconds.items()}
    _seconds.clear()
    return taken
