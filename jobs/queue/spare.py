"""The next job's process, started before the job: a spare child that has imported the training libraries already.

Importing torch, transformers, peft, TRL and bitsandbytes is the largest cost of a job outside training: 6.5 s on
the 2-core Xeon measured first, 12-13 s on the 2-core EPYC after it (bench/job_overhead.py). A worker keeps one spare
`python -m jobs.queue.child --spare` that has done it and waits on its stdin for a job. It trains exactly one job,
as a freshly started child would (its own process, its own engines, the same exit codes), and the worker starts
the next spare only once that job has ended: never during one, where it would take CPU and memory from training.

STUDIO_SPARE_CHILD=0 turns it off (every job then starts its own interpreter, as before).

Every training process (a spare or a fresh child) runs with jemalloc preloaded where Debian's libjemalloc2 (or the
same library elsewhere) is installed: glibc's malloc keeps the freed activations of each step, so its resident set
grows from step to step; jemalloc gives them back (docs/benchmarks.md, "Where a job's memory goes").
STUDIO_JEMALLOC=0 keeps glibc's."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from jobs.run_settings.allocator import jemalloc_for_training, jemalloc_library
from jobs.studio import REPO_ROOT

log = logging.getLogger(__name__)
SPARE_FLAG = "--spare"
CHILD_ENV = {"PYTHONUNBUFFERED": "1"}


def child_env(jemalloc: bool) -> dict[str, str]:
    """What a training process's environment adds to the worker's: unbuffered output, and jemalloc preloaded where
    it is installed and not turned off (after any LD_PRELOAD the operator set)."""
    env = dict(CHILD_ENV)
    if jemalloc_for_training(jemalloc):  # the memory estimate asks the same (jobs.run_settings.allocator)
        library = str(jemalloc_library())
        env["LD_PRELOAD"] = " ".join(part for part in (os.environ.get("LD_PRELOAD", ""), library) if part)
    return env


def child_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.queue.child", *args]


def handoff_line(job_id: int, attempt: int) -> bytes:
    """What a spare reads to become the child of one attempt: the job, the attempt, and when it was handed over
    (so the child times how long it still took to start)."""
    return f"{job_id} {attempt} {time.time()!r}\n".encode()


def parse_handoff(line: str) -> tuple[int, int, float]:
    job_id, attempt, handed_at = line.split()
    return int(job_id), int(attempt), float(handed_at)


class SpareChild:
    """At most one waiting spare. `start` from a thread that lives as long as the worker: Linux sends the child's
    parent-death signal when the thread that started it ends."""

    def __init__(self, enabled: bool, jemalloc: bool = True) -> None:
        self.enabled = enabled
        self.jemalloc = jemalloc
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if not self.enabled or (self.process is not None and self.process.poll() is None):
            return
        # Its output until a job comes (import warnings) goes to the worker's own log; then to the job's.
        self.process = subprocess.Popen(child_command(SPARE_FLAG), stdin=subprocess.PIPE, cwd=REPO_ROOT,
                                        env={**os.environ, **child_env(self.jemalloc)})

    @property
    def pid(self) -> int | None:
        """The waiting spare's process id (None: none waits): what it holds becomes the next job's."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def take(self, job_id: int, attempt: int) -> subprocess.Popen | None:
        """The spare, handed this attempt; None when there is none alive (the caller starts a fresh child)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is not None:
            log.warning("the spare training process had exited (%s); starting a fresh one for job %s",
                        process.returncode, job_id)
            return None
        try:
            process.stdin.write(handoff_line(job_id, attempt))
            process.stdin.close()
        except OSError:  # it died between the check and the write
            process.kill()
            process.wait()
            return None
        return process

    def stop(self) -> None:
        """End a waiting spare now (it holds no job: nothing to save), rather than after its imports."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdin:
            process.stdin.close()
