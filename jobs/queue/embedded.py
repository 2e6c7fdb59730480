"""The app's own worker: a `jobs.queue.worker` process the app keeps alive.

When it dies without being asked to (a `kill -9`, a crash), the app logs why and starts another after a backoff
(1 s, doubling to a minute, reset once a worker has lived a minute). When another worker on this host already
serves the device (exit code EXIT_DEVICE_TAKEN), the app checks again every minute: it takes over if that worker
goes. The job the dead worker held is requeued by the reaper, which the app runs too."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from jobs.queue.worker import EXIT_DEVICE_TAKEN

log = logging.getLogger("app.worker")
MIN_BACKOFF_S, MAX_BACKOFF_S, HEALTHY_AFTER_S = 1.0, 60.0, 60.0
STOP_TIMEOUT_S = 150


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exited with {code}"


class EmbeddedWorker:
    def __init__(self, cwd: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.command = [sys.executable, "-m", "jobs.queue.worker", "--exit-with-parent", *extra_args]
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.restarts = 0

    def start(self) -> None:
        self._spawn()
        threading.Thread(target=self._watch, daemon=True, name="worker-watch").start()

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self.process = subprocess.Popen(self.command, cwd=self.cwd)

    def _watch(self) -> None:
        backoff = MIN_BACKOFF_S
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self.process.wait()  # also reaps it: a dead worker never lingers as a zombie
            if self._stopping.is_set():
                return
            if code == EXIT_DEVICE_TAKEN:
                log.warning("another worker on this host serves this device; checking again in %.0f s", MAX_BACKOFF_S)
                delay = MAX_BACKOFF_S
            else:
                backoff = MIN_BACKOFF_S if time.monotonic() - started > HEALTHY_AFTER_S else backoff
                delay = backoff
                log.warning("the worker (pid %s) %s; starting a new one in %.0f s", self.process.pid,
                            describe_exit(code), delay)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        """Graceful: the running job checkpoints and goes back to the queue."""
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
