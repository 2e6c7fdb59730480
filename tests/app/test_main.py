"""`python -m app` as a person runs it in a terminal: Ctrl+C (SIGINT to the whole foreground process group: the app,
its embedded worker and the worker's training processes) stops the studio without a traceback, wherever it lands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import app.__main__ as main_module
from jobs.queue.embedded import STOP_TIMEOUT_S
from tests.conftest import REPO_ROOT, studio_environ
from tests.servers import free_port

STARTED_WORKER = "starting the worker"
IMPORTS_UNDER_WAY_S = 2.0  # the app builds its pages and the worker imports its libraries then: both mid-import
# The app gives its worker STOP_TIMEOUT_S to stop gracefully before it kills it (a job checkpoints meanwhile); on a
# loaded machine a worker still importing its libraries can take long to act on SIGTERM. The test allows what the
# app allows, plus its own exit: what it checks is how the studio ends, not how fast.
EXIT_TIMEOUT_S = STOP_TIMEOUT_S + 30


def _restore_ctrl_c() -> None:
    # A shell without job control starts background commands with SIGINT ignored; a terminal's app has it default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"the app exited early:\n{log.read_text(errors='replace')[-4000:]}"
        assert time.monotonic() < deadline, f"no '{text}' within {timeout_s} s"
        time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _dump_stacks(pid: int) -> None:
    """Ask a stuck app for every thread's stack (faulthandler on SIGUSR1, set up by app/__main__.py) into its log."""
    try:
        os.kill(pid, signal.SIGUSR1)
        time.sleep(2)
    except ProcessLookupError:
        pass


def test_ctrl_c_while_the_studio_starts_stops_it_without_a_traceback(tmp_path):
    log = tmp_path / "app.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "app", "--port", str(free_port())], cwd=REPO_ROOT,
                                   env=studio_environ(tmp_path / "data"), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_restore_ctrl_c)
    try:
        _wait_for(log, STARTED_WORKER, process)
        time.sleep(IMPORTS_UNDER_WAY_S)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl+C does
        pressed = time.monotonic()
        try:
            code = process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # reported below with the app's output, which says where it stuck
            code = None
            _dump_stacks(process.pid)
        print(f"the studio ended {time.monotonic() - pressed:.1f} s after Ctrl+C")
        deadline = time.monotonic() + 30
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftover = _group_alive(process.pid)
    finally:
        if process.poll() is None or _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = log.read_text(errors="replace")
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-6000:]
    assert code == 130, f"exit code {code}:\n{output[-4000:]}"
    assert not leftover, f"Ctrl+C left the worker or a training process running:\n{output[-4000:]}"


class _RunningApp:
    is_running = True


class _StopInFinaliser:
    def __del__(self):
        main_module.request_stop(130)


def test_a_stop_swallowed_in_a_finaliser_still_ends_the_studio(monkeypatch):
    """CI saw Ctrl+C land in a regex object's __del__ during garbage collection: Python swallowed the SystemExit and
    the studio served on. The request is recorded, the serving loop ends on it, and the swallowed exit is not
    printed as an error."""
    monkeypatch.setattr(main_module, "STOP_REQUESTED", threading.Event())
    printed = []
    monkeypatch.setattr(sys, "__unraisablehook__", printed.append)
    monkeypatch.setattr(sys, "unraisablehook", main_module.quiet_swallowed_stop)
    _StopInFinaliser()  # dropped at once: the finaliser runs and its SystemExit goes nowhere
    assert main_module.STOP_REQUESTED.is_set()
    with pytest.raises(SystemExit) as ended:
        main_module.serve_until_stopped(_RunningApp())
    assert ended.value.code == 130
    assert printed == []


def test_other_unraisable_errors_are_still_printed(monkeypatch):
    monkeypatch.setattr(main_module, "STOP_REQUESTED", threading.Event())
    printed = []
    monkeypatch.setattr(sys, "__unraisablehook__", printed.append)
    unraisable = SimpleNamespace(exc_value=ValueError("a real fault"))
    main_module.quiet_swallowed_stop(unraisable)
    assert printed == [unraisable]
