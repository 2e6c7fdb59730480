"""Runs one claimed job in a child process and keeps the ledger honest about it.

The worker (a Huey consumer thread) claims the job, starts `python -m jobs.queue.child JOB ATTEMPT`, stamps the
heartbeat while the child lives, relays a cancel request (SIGUSR1) or its own shutdown (SIGTERM), kills a child that
has not stopped within the grace, and records a failure the child could not record itself. Torch and CUDA live only
in the child, so a crash or OOM there never takes the worker down."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from functools import cache
from pathlib import Path

from jobs.failures import explain_exit
from jobs.queue import gang, routing
from jobs.queue.child import EXIT_INTERRUPTED, EXIT_OUT_OF_MEMORY, SPAWNED_AT_ENV
from jobs.queue.devices import memory_limit_bytes
from jobs.queue.lifecycle import worker_name
from jobs.queue.ranks import EXIT_RANK_LOST
from jobs.queue.reaper import resync
from jobs.queue.retries import fit_inputs, killed_for_memory, nothing_left_words, override_fields, smaller_footprint
from jobs.queue.run_files import log_tail, run_dir_for
from jobs.queue.spare import SpareChild, child_command, child_env
from jobs.spec_store import load_stored_spec
from jobs.studio import REPO_ROOT, Studio, open_studio
from storage import jobs_repo, workers_repo
from storage.models import JobKind, JobStatus

log = logging.getLogger(__name__)
RELAY_POLL_S = 0.5
"""How often a supervisor looks for a cancel request between heartbeats (a read)."""
SHUTDOWN_GRACE_S = 60.0
"""A worker stopping gives its child this long to checkpoint; a cancel's grace is STUDIO_CANCEL_GRACE_S."""
EXIT_GRACE_S = 30.0
SHUTTING_DOWN = threading.Event()
"""Set when the worker is asked to stop: running children checkpoint, and their jobs go back to the queue."""
SPARE = SpareChild(enabled=False)
"""The worker's spare child (jobs.queue.spare); a worker process enables it, nothing else does."""
SUPERVISING = threading.Lock()
"""Held while this worker claims or runs a job, its own or a gang's it joins: one at a time, and a row that holds a
job while the lock is free is a reservation by another host's leader (jobs.queue.gang)."""
OFFER: int | None = None
"""How many devices this worker offers one job (set at registration); a job asking more needs a gang. None: no gang
is led from here (a process that is not a registered worker)."""


@cache
def worker_studio() -> Studio:
    return open_studio()


def supervise_job(woken_for: int) -> None:
    """Run the first job in the queue's order. The message names the job it was sent for, but only wakes the
    worker: reordering the queue in the ledger decides what runs next."""
    studio = worker_studio()
    with SUPERVISING:
        if SHUTTING_DOWN.is_set():
            return
        with studio.db.write() as session:
            claimed = gang.claim(session, studio.settings, worker_name(), OFFER)
        if claimed is None:
            log.info("woken for job %s, but no job is queued that this worker may start now (taken, cancelled, "
                     "finished, waiting for a gang's hosts, behind a gang job this worker holds for, or this worker "
                     "is reserved for one)", woken_for)
            return
        job_id, attempt = claimed
        try:
            _supervise(studio, job_id, attempt)
        finally:
            if not SHUTTING_DOWN.is_set():
                SPARE.start()  # the next job's process, now that this one's has ended
            resync(studio)  # a message consumed for another job leaves that one without: re-send it now, not later


def _supervise(studio: Studio, job_id: int, attempt: int) -> None:
    """Run an attempt the claim marked this worker busy with (gang.claim); free the worker however it ends."""
    run_dir = run_dir_for(studio, job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("job %s: attempt %s starting", job_id, attempt)
    with studio.db.read() as session:
        nodes = gang.Gang.of(jobs_repo.get_job(session, job_id).provenance, attempt)  # led from here, or None
    if nodes is not None:  # workers that held for this gang consumed the messages of the jobs behind it: re-send now
        resync(studio)
    watch = _GangWatch(studio, job_id, nodes)
    try:
        returncode = _run_child(studio, job_id, attempt, run_dir, watch)
        _record_outcome(studio, job_id, attempt, returncode, run_dir, watch.absence)
    finally:
        _mark_busy(studio, job_id, False)


def _mark_busy(studio: Studio, job_id: int, busy: bool) -> None:
    with studio.db.write() as session:
        workers_repo.worker_heartbeat(session, worker_name(), job_id, busy=busy)


def _run_child(studio: Studio, job_id: int, attempt: int, run_dir: Path, watch: _GangWatch) -> int | None:
    log_path = run_dir / "train.log"
    with log_path.open("ab") as log_file:
        log_file.write(f"\n=== attempt {attempt} on {worker_name()} ===\n".encode())
        log_file.flush()
        child = SPARE.take(job_id, attempt)  # the spare appends to this log itself once it has the job
        if child is None:
            child = subprocess.Popen(
                child_command(str(job_id), str(attempt)),
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                env={**os.environ, **child_env(studio.settings.jemalloc), SPAWNED_AT_ENV: repr(time.time())},  # timed
            )
    return _watch(studio, job_id, attempt, child, watch)


class _GangWatch:
    """The leader's look at its gang's other nodes at each heartbeat (gang.absent_member). A node whose worker went
    silent for a lease never joined the rendezvous or has gone with its host: this node is stopped now, not at the
    rendezvous timeout (RDZV_TIMEOUT_S) or a collective's, and the attempt is lost, naming that host. A node whose
    worker left in order ends with the agreed stop: this node gets EXIT_GRACE_S to end by itself."""

    def __init__(self, studio: Studio, job_id: int, nodes: gang.Gang | None) -> None:
        self.studio, self.job_id, self.nodes = studio, job_id, nodes
        self.absence: gang.Absence | None = None

    def look(self, session, stop: _Stop) -> None:
        if self.nodes is None or self.absence is not None:
            return
        self.absence = gang.absent_member(session, self.nodes, self.job_id, self.studio.settings.lease_s)
        if self.absence is None:
            return
        log.warning("job %s: %s", self.job_id, self.absence.words())
        if self.absence.silent:
            _kill(stop.child)
        else:
            stop.kill_after(EXIT_GRACE_S)


def follow_reservation(studio: Studio) -> None:
    """If another host's leader reserved this idle worker for its gang, run this host's node of that attempt now;
    free a reservation whose attempt has moved on. Called every GANG_POLL_S by the worker (jobs.queue.worker)."""
    if not SUPERVISING.acquire(blocking=False):
        return  # running a job of its own or a gang's: its row's job is not a reservation
    try:
        with studio.db.read() as session:
            reserved = gang.reservation(session, worker_name())
        if reserved is None:
            return
        job_id, join = reserved
        if join is None or SHUTTING_DOWN.is_set():
            with studio.db.write() as session:
                workers_repo.release_worker(session, worker_name(), job_id)
            return
        try:
            _follow(studio, job_id, *join)
        finally:
            with studio.db.write() as session:
                workers_repo.release_worker(session, worker_name(), job_id)
    finally:
        SUPERVISING.release()


def _follow(studio: Studio, job_id: int, attempt: int, node: int) -> None:
    """This host's node of a gang: its own child (which finds its node rank by this worker's name) joins the leader's
    rendezvous. It writes its own log (node-N.log in the run dir: two hosts appending to one file on a network
    filesystem may interleave), records no outcome (the leader does), and is stopped when the job is cancelled (after
    the cancel grace), when its attempt is over, or when this worker stops."""
    run_dir = run_dir_for(studio, job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("job %s: attempt %s, joining as node %s of its gang", job_id, attempt, node)
    with (run_dir / f"node-{node}.log").open("ab") as log_file:
        log_file.write(f"\n=== attempt {attempt} node {node} on {worker_name()} ===\n".encode())
        log_file.flush()
        child = subprocess.Popen(
            child_command(str(job_id), str(attempt)),
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
            env={**os.environ, **child_env(studio.settings.jemalloc), SPAWNED_AT_ENV: repr(time.time())},
        )
    stop = _Stop(child, studio.settings.cancel_grace_s, f"job {job_id}: attempt {attempt} node {node}")
    try:
        while True:
            try:
                returncode = child.wait(timeout=RELAY_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if SHUTTING_DOWN.is_set():
                stop.interrupt()
            with studio.db.read() as session:
                job = jobs_repo.get_job(session, job_id)
            if job is None or job.attempt != attempt or job.status != JobStatus.RUNNING:
                stop.kill_after(EXIT_GRACE_S)  # the leader recorded the outcome; its ranks are gone or going
            elif job.cancel_requested:
                stop.cancel()
    finally:
        stop.disarm()
    log.info("job %s: attempt %s node %s ended (exit %s)", job_id, attempt, node, returncode)


def _watch(studio: Studio, job_id: int, attempt: int, child: subprocess.Popen, nodes: _GangWatch) -> int | None:
    """Wait for the child, stamping the heartbeat every `heartbeat_s` and looking at the cancel flag every
    RELAY_POLL_S: a cancel seen only at the heartbeat waited up to 5 s before the child heard of it. A gang's leader
    looks at its other nodes at each heartbeat."""
    heartbeat_s, next_beat = studio.settings.heartbeat_s, 0.0
    stop = _Stop(child, studio.settings.cancel_grace_s, f"job {job_id}: attempt {attempt}")
    try:
        while True:
            try:
                return child.wait(timeout=RELAY_POLL_S)
            except subprocess.TimeoutExpired:
                pass
            if SHUTTING_DOWN.is_set():
                stop.interrupt()
            if time.monotonic() < next_beat:
                with studio.db.read() as session:  # a read: never waits behind the child's writes
                    if jobs_repo.get_job(session, job_id).cancel_requested:
                        stop.cancel()
                continue
            next_beat = time.monotonic() + heartbeat_s
            with studio.db.write() as session:
                beat = jobs_repo.heartbeat(session, job_id, attempt)
                job = jobs_repo.get_job(session, job_id)
                finished_by_child = job.attempt == attempt and job.status in JobStatus.FINISHED
                if beat.still_owner and not finished_by_child:
                    nodes.look(session, stop)
            if finished_by_child:
                stop.kill_after(EXIT_GRACE_S)  # the child recorded its outcome; let it exit
            elif not beat.still_owner:
                log.warning("job %s: attempt %s no longer owns the job; stopping its process", job_id, attempt)
                _kill(child)
                child.wait()
                return None
            elif beat.cancel_requested:
                stop.cancel()
    finally:
        stop.disarm()


class _Stop:
    """Asks a child to stop and kills it when it has not within the grace. The kill runs on a timer, so a
    supervisor held up in the database (a frozen child holding its write lock) still kills on time."""

    def __init__(self, child: subprocess.Popen, cancel_grace_s: float, label: str) -> None:
        self.child, self.cancel_grace_s, self.label = child, cancel_grace_s, label
        self.cancelled = self.interrupted = False
        self.kill_at: float | None = None
        self._timer: threading.Timer | None = None

    def cancel(self) -> None:
        """Nothing of a cancelled run is kept, so SIGUSR1 tells the child to drop the step's eval, samples and
        checkpoint and stop at once; the grace then bounds it whatever it is doing."""
        if not self.cancelled:
            self.cancelled = True
            _signal(self.child, signal.SIGUSR1)
            self.kill_after(self.cancel_grace_s)

    def interrupt(self) -> None:
        """The worker stops: the child finishes its step and saves a checkpoint, which the next attempt resumes."""
        if not self.interrupted:
            self.interrupted = True
            _signal(self.child, signal.SIGTERM)
            self.kill_after(SHUTDOWN_GRACE_S)

    def kill_after(self, seconds: float) -> None:
        at = time.monotonic() + seconds
        if self.kill_at is not None and self.kill_at <= at:
            return
        self.disarm()
        self.kill_at = at
        self._timer = threading.Timer(seconds, self._overdue, args=(seconds,))
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _overdue(self, seconds: float) -> None:
        if self.child.poll() is None:
            log.warning("%s: its process did not stop within %.0f s; killing it", self.label, seconds)
            _kill(self.child)


def _signal(child: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signum)


def _kill(child: subprocess.Popen) -> None:
    """SIGKILL the child and whatever it started: it leads its own process group (jobs.queue.child)."""
    if child.poll() is not None:
        return
    try:
        if os.getpgid(child.pid) == child.pid:
            os.killpg(child.pid, signal.SIGKILL)
            return
    except ProcessLookupError:
        return
    child.kill()


def _record_outcome(studio: Studio, job_id: int, attempt: int, returncode: int | None, run_dir: Path,
                    absence: gang.Absence | None = None) -> None:
    """`absence`: a node of the attempt's gang that was gone (the leader's look). The attempt is lost naming its host
    when that node went silent, or when this node had to be killed after it left; a node that left while this one
    ended by itself (a lost rank, a failure) leaves the child's own words."""
    if absence is not None and not (absence.silent or returncode is None or returncode < 0):
        absence = None
    with studio.db.write() as session:
        job = jobs_repo.get_job(session, job_id)
        if job is None or job.status != JobStatus.RUNNING or job.attempt != attempt:
            return  # the child recorded its own outcome, or the job has moved on
        if job.cancel_requested:
            jobs_repo.cancel_running_job(session, job_id, attempt)
        elif returncode == EXIT_INTERRUPTED or SHUTTING_DOWN.is_set():
            jobs_repo.requeue_planned(session, job_id, attempt, "Interrupted by a worker shutdown; resumes from "
                                      "its last checkpoint.")
        elif _lost(returncode) or absence is not None:
            _requeue_lost_attempt(session, studio, job, attempt, returncode, run_dir, absence)
        else:
            jobs_repo.fail_job(session, job_id, attempt, _failure_text(run_dir, returncode))
        status, priority, pool = job.status, job.priority, job.pool
    if status == JobStatus.QUEUED:
        routing.send(studio, job_id, priority, pool)


def _lost(returncode: int | None) -> bool:
    """Killed by a signal (not ours: a planned stop exits with EXIT_INTERRUPTED), or out of memory."""
    return returncode in (EXIT_OUT_OF_MEMORY, EXIT_RANK_LOST) or (returncode is not None and returncode < 0)


def _requeue_lost_attempt(session, studio: Studio, job, attempt: int, returncode: int | None, run_dir: Path,
                          absence: gang.Absence | None = None) -> None:
    """Requeue (counted against STUDIO_MAX_ATTEMPTS), resuming from the newest checkpoint; after running out of
    memory, with a smaller footprint by the plan's levers (jobs.queue.retries). A gang's missing node is named: its
    host is what the person must look at."""
    how = (absence.words() if absence is not None else "ran out of memory" if returncode == EXIT_OUT_OF_MEMORY
           else "lost one of its ranks (devices)" if returncode == EXIT_RANK_LOST
           else f"was killed by signal {-returncode}")
    overrides = job.overrides
    peak = jobs_repo.latest_metric(session, job.id, "peak_memory_bytes")
    out_of_memory = absence is None and (returncode == EXIT_OUT_OF_MEMORY or (
        returncode == -signal.SIGKILL and killed_for_memory(peak, memory_limit_bytes())))
    change = ""
    if out_of_memory and job.kind == JobKind.TRAIN:
        if returncode != EXIT_OUT_OF_MEMORY:
            how += f" with its memory near the limit (peak {peak / 2**30:.1f} GiB): the out-of-memory killer"
        stored = load_stored_spec(job.spec)
        if stored.spec is None:  # a spec today's rules refuse cannot be retried: say why, once
            jobs_repo.fail_job(session, job.id, attempt, f"The training process {how}. {stored.problems_text()} "
                               "Clone the run to fix the spec and submit it again.")
            return
        fields, inputs = override_fields(job.overrides), fit_inputs(session, studio, job, stored.spec)
        smaller = smaller_footprint(stored.spec, fields, inputs)
        if smaller is None:
            jobs_repo.fail_job(session, job.id, attempt, f"The training process {how}, "
                               f"{nothing_left_words(stored.spec, fields, inputs)}.\n\n"
                               f"{_failure_text(run_dir, returncode)}")
            return
        change = f" The next attempt {smaller[1]}."
        why = [*(job.overrides or {}).get("why", []), f"attempt {attempt} {how}: {smaller[1]}"]
        overrides = {"fields": smaller[0], "why": why}
    log.warning("job %s: attempt %s %s; requeued%s", job.id, attempt, how, change)
    jobs_repo.requeue_lost_worker(session, job.id, attempt, f"The training process {how}; requeued to resume "
                                  f"from its last checkpoint.{change}", studio.settings.max_attempts, overrides)


def _failure_text(run_dir: Path, returncode: int | None) -> str:
    error_file = run_dir / "error.txt"
    if error_file.is_file():
        return error_file.read_text(encoding="utf-8", errors="replace")
    return explain_exit(returncode, log_tail(run_dir / "train.log"))
