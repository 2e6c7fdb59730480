"""Many hosts on real servers: the ledger on PostgreSQL, the queue on Redis or on PostgreSQL, both started by the
tests on free loopback ports (tests/servers.py). Two worker processes pose as two hosts: each has its own host name
and scratch dir (device locks), and they share the data dir (datasets, runs with their checkpoints, adapters), as
hosts sharing an NFS mount would. Nothing is mocked: real Huey, real Redis, real PostgreSQL, real 4-bit training."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from safetensors import safe_open
from sqlalchemy import select

from app.adapters.tab import adapter_zip
from jobs.queue.lifecycle import pid_alive
from jobs.queue.routing import live_pools
from jobs.studio import open_studio
from jobs.submit import cancel_job, submit_job
from jobs.training.distributed import free_port
from storage import catalog, jobs_repo, workers_repo
from storage.models import Worker
from storage.settings import load_settings
from tests.conftest import FAST_JOB, REPO_ROOT, process_ids, seed_model, studio_environ

pytestmark = pytest.mark.slow
# Each end-to-end test runs on one queue transport (CI time: each run is a minute of two hosts training); between them
# both transports carry real jobs across two hosts, and bench/scale_out.py's smoke run (tests/bench/test_smoke.py)
# measures claims on each.


class Team:
    """A shared data dir, a PostgreSQL ledger, a queue server, and worker processes posing as hosts."""

    def __init__(self, tmp_path: Path, demo_model_dir: Path, database_url: str, queue_url: str) -> None:
        self.tmp_path, self.data_dir = tmp_path, tmp_path / "shared"
        seed_model(self.data_dir, demo_model_dir)
        self.env = studio_environ(self.data_dir, STUDIO_DATABASE_URL=database_url, STUDIO_QUEUE_URL=queue_url,
                                  STUDIO_LEASE_S="8", STUDIO_HOST_NAME="web-host")
        self.studio = open_studio(load_settings(self.env))
        self.workers: dict[str, subprocess.Popen] = {}
        self.host_env: dict[str, dict[str, str]] = {}

    def start_workers(self, pools: dict[str, str], **env_of_host: dict[str, str]) -> None:
        """One worker per host (host name -> the pool it serves, "" for none; `env_of_host`: a host's own settings),
        all started before any is waited for: their start-ups overlap, as hosts' would."""
        for host, pool in pools.items():
            self.host_env[host] = {**self.env, "STUDIO_HOST_NAME": host, "STUDIO_POOL": pool,
                                   "STUDIO_SCRATCH_DIR": str(self.tmp_path / f"scratch-{host}"),
                                   **env_of_host.get(host.replace("-", "_"), {})}
        self.restart(*pools)

    def restart(self, *hosts: str) -> None:
        """Start these hosts' workers (again: a stopped host's), with the settings they were first started with."""
        ready = {host: self.log(host).count("worker ready") for host in hosts}
        for host in hosts:
            log = (self.tmp_path / f"{host}.log").open("ab")
            self.workers[host] = subprocess.Popen([sys.executable, "-m", "jobs.queue.worker", "--reap-interval", "1"],
                                                  env=self.host_env[host], cwd=REPO_ROOT, stdout=log,
                                                  stderr=subprocess.STDOUT)
        for host in hosts:
            self._wait(lambda host=host: self.log(host).count("worker ready") > ready[host], f"{host} ready", 120)

    def log(self, host: str) -> str:
        path = self.tmp_path / f"{host}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait(self, done, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {host}\n{self.log(host)[-4000:]}" for host in self.workers)
        raise AssertionError(f"no {what} within {timeout_s} s\n{logs}")

    def jobs(self, ids: list[int]):
        with self.studio.db.read() as session:
            return [jobs_repo.get_job(session, job_id) for job_id in ids]

    def wait_finished(self, ids: list[int], timeout_s: float = 600) -> list:
        self._wait(lambda: all(job.status in ("succeeded", "failed", "cancelled") for job in self.jobs(ids)),
                   f"end of jobs {ids}", timeout_s)
        return self.jobs(ids)

    def stop(self) -> None:
        for worker in self.workers.values():
            if worker.poll() is None:
                worker.terminate()
        for worker in self.workers.values():
            try:
                worker.wait(120)
            except subprocess.TimeoutExpired:
                worker.kill()
        self.studio.db.dispose()


def _postgresql_queue(database_url: str) -> str:
    """Huey's PostgreSQL storage, in the ledger's database (its tables are named huey_*)."""
    return database_url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def team(request, tmp_path, demo_model_dir, postgres_server):
    database_url = postgres_server.new_database()
    if request.param == "redis":
        queue_url = request.getfixturevalue("redis_server").url(db=postgres_server.databases % 64)
    else:
        queue_url = _postgresql_queue(database_url)
    team = Team(tmp_path, demo_model_dir, database_url, queue_url)
    yield team
    team.stop()


@pytest.fixture(scope="module")
def gang_team(tmp_path_factory, demo_model_dir, postgres_server):
    """Two hosts of pool `gang` on a PostgreSQL queue (_start_gang_hosts), started once for this file's two-host
    tests, which run in order on one pytest process (--dist loadfile): each leaves both hosts idle for the next."""
    database_url = postgres_server.new_database()
    team = Team(tmp_path_factory.mktemp("gang"), demo_model_dir, database_url, _postgresql_queue(database_url))
    team.gang_env = _start_gang_hosts(team)[1]
    yield team
    team.stop()


def _attempt_lines(team: Team, job_id: int) -> list[str]:
    log = (team.data_dir / "runs" / f"job-{job_id}" / "train.log").read_text(errors="replace")
    return re.findall(r"=== attempt (\d+) on (\S+) ===", log)


@pytest.mark.parametrize("team", ["redis"], indirect=True)
def test_a_host_killed_mid_job_and_the_other_host_finishes_it(team):
    team.start_workers({"host-a": "", "host-b": ""})
    steps = 40  # killed past step 5: the rest must outlast the kill's way to the training process
    job_id = submit_job(team.studio, {**FAST_JOB, "name": "survivor", "max_steps": steps, "save_steps": 2,
                                      "eval_fraction": 0})
    team._wait(lambda: team.jobs([job_id])[0].status == "running" and team.jobs([job_id])[0].step >= 5,
               "the job past step 5", 300)
    first = team.jobs([job_id])[0].worker.rpartition(":")[0]
    other = "host-b" if first == "host-a" else "host-a"
    team.workers[first].kill()  # kill -9 of the whole host's worker: no goodbye, its queue message is gone
    team.workers[first].wait()

    job = team.wait_finished([job_id])[0]
    assert job.status == "succeeded", job.error
    attempts = _attempt_lines(team, job_id)
    assert [(number, host.rpartition(":")[0]) for number, host in attempts] == [("1", first), ("2", other)]
    assert "Worker stopped sending heartbeats" in team.log(other)  # found by the other host's reaper, via the lease
    log = (team.data_dir / "runs" / f"job-{job_id}" / "train.log").read_text()
    assert "resuming from checkpoint-" in log  # the second host found the first host's checkpoint in the shared dir
    with team.studio.db.read() as session:
        logged = [m.step for m in jobs_repo.metrics_for(session, job_id) if m.name == "loss"]
        assert catalog.adapter_for_job(session, job_id) is not None
    assert logged == list(range(1, steps + 1))  # every step logged once across the two hosts


def test_jobs_on_two_hosts_run_once_each_and_one_job_spans_both(gang_team):
    """Two hosts of pool `gang` offering one device each (STUDIO_WORKER_DEVICES=1, both reachable at 127.0.0.1 on
    their own rendezvous port). Two unpooled jobs go one to each host, run once and download from the shared dir;
    then one `devices: 2` job runs as 2 nodes x 1 gloo rank: the claiming host leads (global rank 0, which alone
    writes), the other is reserved in the claim's transaction and joins; both ranks train every step, and one adapter
    is registered. Pool routing by claim: tests/jobs/queue/test_routing.py; the gang's waiting and refusal cases:
    tests/jobs/queue/test_gang.py."""
    team, hosts, env = gang_team, ("host-a", "host-b"), gang_team.gang_env
    with team.studio.db.read() as session:
        live = {(w.host, w.pool) for w in workers_repo.live_workers(session, team.studio.settings.lease_s)}
    assert live == {("host-a", "gang"), ("host-b", "gang")}
    assert live_pools(team.studio) == {"gang"}
    _two_jobs_one_on_each_host(team)

    steps = 3
    job_id = submit_job(team.studio, {**FAST_JOB, "name": "gang", "devices": 2, "pool": "gang", "max_steps": steps,
                                      "eval_fraction": 0, "sample_prompts": 0})
    [job] = team.wait_finished([job_id], timeout_s=400)
    run_dir = team.data_dir / "runs" / f"job-{job_id}"
    leader_log = (run_dir / "train.log").read_text(errors="replace")
    follower_log = (run_dir / "node-1.log").read_text(errors="replace") if (run_dir / "node-1.log").exists() else ""
    assert job.status == "succeeded", f"{job.error}\n{leader_log[-3000:]}\n--- node 1\n{follower_log[-3000:]}"
    gang = job.provenance["gang"]
    leader, follower = (member["host"] for member in gang["members"])
    assert {leader, follower} == set(hosts) and job.worker.startswith(f"{leader}:")
    assert (gang["nodes"], gang["per_host"], job.attempt) == (2, 1, 1)
    port = env[leader.replace("-", "_")]["STUDIO_RDZV_PORTS"].partition("-")[0]
    assert gang["rendezvous"] == f"127.0.0.1:{port}"  # the leader's own range
    # Each host's log carries its own rank's lines, and a rank trained on each: the ranks' shared lines once each.
    assert "[rank0]: estimated peak memory" in leader_log and "[rank1]:" not in leader_log
    assert "[rank1]: estimated peak memory" in follower_log and "[rank0]:" not in follower_log
    assert "node 1 of 2: 1 rank(s) here, 2 in all" in follower_log
    assert "joining as node 1 of its gang" in team.log(follower)
    with team.studio.db.read() as session:
        logged = [m.step for m in jobs_repo.metrics_for(session, job_id) if m.name == "loss"]
        adapter = catalog.adapter_for_job(session, job_id)
        adapters = [a for a in catalog.list_adapters(session) if a.job_id == job_id]
    assert logged == list(range(1, steps + 1))  # rank 0 alone streams, each step once
    assert adapter is not None and len(adapters) == 1  # registered once
    # Both workers are free again: the follower freed its reservation when its child ended.
    team._wait(lambda: _busy(team) == {}, "both workers free", 30)


CANCEL_BOUND_S = 10.0
"""The studio's cancel bound (tests/jobs/queue/test_queue_e2e.py's): here the job is cancelled, every process of it on
both hosts is gone and both workers are free within it."""


def test_a_two_host_job_outlives_a_host_that_never_joins_and_a_stopped_follower_and_a_cancel_ends_both(gang_team):
    """One `devices: 2` job of pool `gang` through three attempts on the two hosts.
    (b) host-b's worker hangs (SIGSTOP) just before the job comes: host-a claims it and reserves host-b, which never
    starts its node. Its heartbeat goes silent for a lease, and the leader stops its own node (which waits at the
    rendezvous) and requeues the attempt as lost, naming host-b; host-a holds no job. host-b resumes (SIGCONT), frees
    its stale reservation, and attempt 2 runs on both hosts.
    (c) attempt 2's follower worker is stopped (SIGTERM) at step 2: it exits only after its node's processes, the
    leader's rank stops with it, and the attempt is requeued uncounted. The follower's host starts a new worker and
    attempt 3 resumes from the checkpoint the stop wrote (each host's rank says so).
    (a) attempt 3 is cancelled: within the cancel bound the job is cancelled, the agent and the rank on each host are
    gone and both workers hold no job. Every step's loss is logged once across the attempts."""
    team = gang_team
    job_id, took = _host_b_never_joins(team)
    print(f"a reserved host that never joined: the attempt requeued {took:.1f} s after submit")

    job = _running(team, job_id, attempt=2, step=2)
    leader, follower = (member["host"] for member in job.provenance["gang"]["members"])
    processes = {host: _processes(team, job_id, 2, host) for host in (leader, follower)}
    assert [len(found) for found in processes.values()] == [2, 2], processes  # each host: its agent and its rank
    asked = time.monotonic()
    team.workers[follower].terminate()  # SIGTERM, as systemctl stop sends it
    team.workers[follower].wait(120)
    left = [pid for pid in processes[follower] if pid_alive(pid)]
    assert not left, f"the stopped worker left its node's processes running: {left}"
    team._wait(lambda: team.jobs([job_id])[0].status == "queued" and _held(team, leader) is None,
               "the attempt requeued and the leader free", 60)
    print(f"a follower's worker stopped: the attempt requeued {time.monotonic() - asked:.1f} s after the SIGTERM")
    job = team.jobs([job_id])[0]
    assert (job.attempt, job.lost_count) == (2, 1), job.error  # a planned stop: not counted against the attempts
    assert not [pid for pid in processes[leader] if pid_alive(pid)]
    node_log = (team.data_dir / "runs" / f"job-{job_id}" / "node-1.log").read_text(errors="replace")
    assert "the ranks were stopped (SIGTERM)" in node_log
    team.restart(follower)

    job = _running(team, job_id, attempt=3, step=job.step + 1)
    hosts = [member["host"] for member in job.provenance["gang"]["members"]]
    processes = {host: _processes(team, job_id, 3, host) for host in hosts}
    assert [len(found) for found in processes.values()] == [2, 2], processes
    asked = time.monotonic()
    assert cancel_job(team.studio, job_id) == "running"

    def over() -> bool:
        return (team.jobs([job_id])[0].status == "cancelled" and not any(_held(team, host) for host in hosts)
                and not [pid for found in processes.values() for pid in found if pid_alive(pid)])

    while not over() and time.monotonic() - asked < CANCEL_BOUND_S:
        time.sleep(0.1)
    took = time.monotonic() - asked
    print(f"cancel of a two-host job: cancelled, every process gone and both workers free {took:.1f} s after it")
    left = {host: [pid for pid in found if pid_alive(pid)] for host, found in processes.items()}
    job = team.jobs([job_id])[0]
    assert over(), f"{took:.1f} s after the cancel: {job.status}, still running {left}, " \
                   f"held {[_held(team, host) for host in hosts]}"
    assert job.attempt == 3 and job.lost_count == 1
    run_dir = team.data_dir / "runs" / f"job-{job_id}"
    leader_log = (run_dir / "train.log").read_text(errors="replace").split("=== attempt 3 on ")[-1]
    node_log = (run_dir / "node-1.log").read_text(errors="replace").split("=== attempt 3 node 1 ")[-1]
    resumed = [re.findall(rf"^\[rank{rank}\]: resuming from (checkpoint-\d+)", text, re.M)
               for rank, text in ((0, leader_log), (1, node_log))]
    assert resumed[0] == resumed[1] and len(resumed[0]) == 1, f"{leader_log[-2000:]}\n--- node 1\n{node_log[-2000:]}"
    with team.studio.db.read() as session:
        logged = [m.step for m in jobs_repo.metrics_for(session, job_id) if m.name == "loss"]
        assert catalog.adapter_for_job(session, job_id) is None  # a cancel keeps nothing
    assert logged == list(range(1, max(logged) + 1)), logged  # rank 0 alone, each step once across the attempts


def _host_b_never_joins(team: Team) -> tuple[int, float]:
    """(b) above: the job's id, and the seconds from its submit to its lost attempt's requeue."""
    _hang_right_after_a_heartbeat(team, "host-b")
    try:
        asked = time.monotonic()
        job_id = submit_job(team.studio, {**FAST_JOB, "name": "gang-3", "devices": 2, "pool": "gang",
                                          "max_steps": 200, "save_steps": 100, "eval_fraction": 0,
                                          "sample_prompts": 0})
        team._wait(lambda: team.jobs([job_id])[0].lost_count == 1 and _held(team, "host-a") is None,
                   "the attempt lost and host-a free", 90)
        took = time.monotonic() - asked
        job = team.jobs([job_id])[0]
        assert (job.status, job.attempt) == ("queued", 1), job.error
        assert [member["host"] for member in job.provenance["gang"]["members"]] == ["host-a", "host-b"]
        assert "node 1 of its gang, host host-b" in job.error and "did not join" in job.error, job.error
        assert not _processes(team, job_id, 1, "host-a")  # its node, which waited at the rendezvous, is gone
        assert _held(team, "host-b") == job_id  # the hung worker's row: it frees it itself when it answers again
    finally:
        os.kill(team.workers["host-b"].pid, signal.SIGCONT)
    return job_id, took


def _hang_right_after_a_heartbeat(team: Team, host: str) -> None:
    """SIGSTOP a host's worker just after its heartbeat committed: between its writes, so it holds no lock on its row
    (which a leader's reservation would pass over, SKIP LOCKED), and its row stays live for a lease."""
    name = f"{host}:{team.workers[host].pid}"

    def beat():
        with team.studio.db.read() as session:
            return session.scalars(select(Worker.heartbeat_at).where(Worker.name == name)).one()

    first, deadline = beat(), time.monotonic() + 10
    while beat() == first:
        assert time.monotonic() < deadline, f"{host} sent no heartbeat"
        time.sleep(0.02)
    os.kill(team.workers[host].pid, signal.SIGSTOP)


def _held(team: Team, host: str) -> int | None:
    """The job the row of the host's current worker holds: its own, or a gang's that reserved it."""
    with team.studio.db.read() as session:
        return workers_repo.reservation(session, f"{host}:{team.workers[host].pid}")


def _running(team: Team, job_id: int, attempt: int, step: int):
    """The job once `attempt` runs past `step`; fails, saying why, when the job is past that attempt or ended."""
    def there(job) -> bool:
        return job.attempt > attempt or job.status in ("succeeded", "failed", "cancelled") or (
            job.status == "running" and job.attempt == attempt and job.step >= step)

    team._wait(lambda: there(team.jobs([job_id])[0]), f"attempt {attempt} of job {job_id} past step {step}", 400)
    job = team.jobs([job_id])[0]
    assert (job.status, job.attempt) == ("running", attempt), job.error
    return job


def _processes(team: Team, job_id: int, attempt: int, host: str) -> list[int]:
    """One host's processes of the attempt: its child (torchrun's agent), `jobs.queue.child JOB ATTEMPT`, and its
    ranks, `... --rank JOB ATTEMPT`, by the data dir and host name in their environment."""
    mine = {f"STUDIO_DATA_DIR={team.data_dir}".encode(), f"STUDIO_HOST_NAME={host}".encode()}
    return [pid for pid in process_ids("jobs.queue.child", f" {job_id} {attempt}") if mine <= set(_environ(pid))]


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _two_jobs_one_on_each_host(team: Team) -> None:
    """Both hosts are idle when two unpooled jobs come, and each runs one job at a time: one goes to each host. Two
    steps each: what is checked is where and how often each job ran, and that any host builds the download."""
    short = {**FAST_JOB, "max_steps": 2, "eval_fraction": 0, "sample_prompts": 0}
    ids = [submit_job(team.studio, {**short, "name": f"team-{i}"}) for i in range(2)]
    jobs = team.wait_finished(ids)
    assert [job.status for job in jobs] == ["succeeded"] * 2, [job.error for job in jobs]
    assert [job.attempt for job in jobs] == [1, 1]  # claimed once each: no job ran twice, none was lost
    ran_on = set()
    for job in jobs:
        attempts = _attempt_lines(team, job.id)
        assert len(attempts) == 1, attempts  # one process trained it, once
        ran_on.add(attempts[0][1].rpartition(":")[0])
    assert ran_on == {"host-a", "host-b"}
    with team.studio.db.read() as session:
        adapters = {job.id: catalog.adapter_for_job(session, job.id) for job in jobs}
    assert all(adapters.values())
    for job in jobs:  # the download the Adapters tab serves, built from the shared dir by any host
        with zipfile.ZipFile(adapter_zip(team.studio, adapters[job.id].name)) as archive:
            names = archive.namelist()
            weights = next(name for name in names if name.endswith("adapter_model.safetensors"))
            extracted = archive.extract(weights, team.tmp_path / f"unzipped-{job.id}")
        with safe_open(extracted, "pt") as tensors:
            assert any("lora_A" in key for key in tensors.keys())  # noqa: SIM118 (safe_open is no dict)
    # Each host locked its device in its own scratch dir; nothing was locked in the shared dir.
    for host in ("host-a", "host-b"):
        assert (team.tmp_path / f"scratch-{host}" / "locks" / "worker-default.lock").is_file()
    assert not (team.data_dir / "locks").exists()


def _start_gang_hosts(team: Team) -> tuple[tuple[str, str], dict[str, dict[str, str]]]:
    """Two workers of pool `gang` posing as hosts that offer one device each, both reachable at 127.0.0.1 on a
    rendezvous port of their own. No spare process: on two cores it would only slow the ranks' imports."""
    hosts = ("host-a", "host-b")
    env = {host.replace("-", "_"): {"STUDIO_RDZV_ADDRESS": "127.0.0.1", "STUDIO_RDZV_PORTS": f"{port}-{port}",
                                    "STUDIO_WORKER_DEVICES": "1", "STUDIO_SPARE_CHILD": "0"}
           for host, port in zip(hosts, (free_port(), free_port()), strict=True)}
    team.start_workers(dict.fromkeys(hosts, "gang"), **env)
    return hosts, env


@pytest.mark.skipif(not os.environ.get("RUN_GANG_LOSS_TEST"), reason="two attempts of a two-host job: about two "
                    "minutes more of CI; run with RUN_GANG_LOSS_TEST=1")
@pytest.mark.parametrize("team", ["postgresql"], indirect=True)
def test_a_rank_killed_on_the_other_host_loses_the_attempt_and_the_gang_resumes(team):
    """kill -9 of the follower host's rank: the leader's rank sees its collective fail (no exit code of its own
    host's agent shows the loss), the attempt is requeued as lost, a new gang resumes from rank 0's checkpoint."""
    _start_gang_hosts(team)
    steps = 16
    job_id = submit_job(team.studio, {**FAST_JOB, "name": "gang", "devices": 2, "pool": "gang", "max_steps": steps,
                                      "save_steps": 2, "eval_fraction": 0, "sample_prompts": 0})
    team._wait(lambda: team.jobs([job_id])[0].status == "running" and team.jobs([job_id])[0].step >= 4,
               "the job past step 4", 400)
    mine = f"STUDIO_DATA_DIR={team.data_dir}".encode()
    [rank1] = [pid for pid in process_ids("jobs.queue.child", "--rank", f" {job_id} ")
               if {mine, b"RANK=1"} <= set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))]
    os.kill(rank1, signal.SIGKILL)
    [job] = team.wait_finished([job_id], timeout_s=500)
    log = (team.data_dir / "runs" / f"job-{job_id}" / "train.log").read_text(errors="replace")
    assert job.status == "succeeded", f"{job.error}\n{log[-3000:]}"
    assert (job.attempt, job.lost_count) == (2, 1) and "resuming from checkpoint-" in log
    assert any("lost one of its ranks" in team.log(host) for host in ("host-a", "host-b"))
    with team.studio.db.read() as session:
        logged = [m.step for m in jobs_repo.metrics_for(session, job_id) if m.name == "loss"]
        assert catalog.adapter_for_job(session, job_id) is not None
    assert logged == list(range(1, steps + 1))  # every step once across the two attempts


def _busy(team: Team) -> dict[str, int]:
    with team.studio.db.read() as session:
        return {w.host: w.current_job_id for w in workers_repo.live_workers(session, team.studio.settings.lease_s)
                if w.current_job_id is not None}
