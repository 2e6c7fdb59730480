"""The reaper requeues a job whose worker on this host has died, at once, and leaves a live worker's job alone."""

import os
import subprocess
import sys

from jobs.queue import reaper
from storage import jobs_repo
from storage.models import JobStatus


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_local_workers_job_is_requeued_and_resent(studio, monkeypatch):
    sent = []
    monkeypatch.setattr(reaper.routing, "send", lambda _studio, *route: sent.append(route))
    host = studio.settings.host_name
    with studio.db.write() as s:
        orphan = jobs_repo.create_job(s, name="orphan", spec={}, priority=3, pool="gpu").id
        alive = jobs_repo.create_job(s, name="alive", spec={}).id
    with studio.db.write() as s:
        jobs_repo.claim_job(s, orphan, f"{host}:{_dead_pid()}")
        jobs_repo.claim_job(s, alive, f"{host}:{os.getpid()}")
    reaper.reap_dead_local_workers(studio)
    with studio.db.read() as s:
        assert jobs_repo.get_job(s, orphan).status == JobStatus.QUEUED
        assert jobs_repo.get_job(s, alive).status == JobStatus.RUNNING
    assert sent == [(orphan, 3, "gpu")]
