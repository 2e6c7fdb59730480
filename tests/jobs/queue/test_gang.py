"""The gang claim (jobs.queue.gang) on a real ledger: a leader claims a job that needs more devices than it offers
only with peers reserved on other hosts of the pool, in the claim's transaction; when it cannot, the job stays queued
(the queue says what it waits for) and the worker takes the next job it may run. Submit refuses a count the pool's
hosts cannot split evenly. The two-host run itself: tests/jobs/queue/test_scale_out.py."""

import itertools
import socket
from dataclasses import replace
from datetime import timedelta

import pytest

from app import views
from app.runs.tab import worker_list
from app.train.memory_panel import verdict_text
from app.train.plan_panel import plan_text
from jobs.queue import gang
from jobs.queue.devices import job_devices
from jobs.queue.transport import get_queue, pending_job_ids
from jobs.spec import SpecError
from jobs.submit import cancel_job, submit_job
from storage import jobs_repo, workers_repo
from storage.models import Job, Worker, utcnow
from tests.conftest import FAST_JOB


def _worker(studio, host: str, devices: int = 1, address: str | None = "127.0.0.1", memory: int = 64 << 30) -> str:
    with studio.db.write() as s:
        workers_repo.register_worker(s, f"{host}:1", host, 1, "default", "CPU (2 cores)", memory, "gang",
                                     address=address, rdzv_ports="29500-29599", device_count=devices)
    return f"{host}:1"


def _backdate(studio, job_id: int, seconds: float) -> None:
    with studio.db.write() as s:
        s.query(Job).filter_by(id=job_id).update({"created_at": utcnow() - timedelta(seconds=seconds)})


def _claim(studio, worker: str, offer: int = 1):
    settings = replace(studio.settings, pool="gang", host_name=worker.partition(":")[0], rdzv_address="127.0.0.1",
                       rdzv_ports=(29500, 29599))
    with studio.db.write() as s:
        return gang.claim(s, settings, worker, offer)


def _job(studio, job_id: int):
    with studio.db.read() as s:
        return jobs_repo.get_job(s, job_id)


def test_a_gang_job_claims_its_hosts_or_waits_and_lets_a_smaller_job_pass(studio):
    a, b = _worker(studio, "a"), _worker(studio, "b")
    wide = submit_job(studio, {**FAST_JOB, "name": "wide", "devices": 2, "pool": "gang"})  # 2 hosts x 1 device
    narrow = submit_job(studio, {**FAST_JOB, "name": "narrow", "pool": "gang"})
    assert views.progress_text(_job(studio, wide)) == "waits for 2 devices in pool gang"

    with studio.db.write() as s:  # b is busy: a cannot reserve it, so the wide job waits and a takes the next one
        workers_repo.worker_heartbeat(s, b, 99, busy=True)
    assert _claim(studio, a) == (narrow, 1)
    assert _job(studio, wide).status == "queued"
    with studio.db.write() as s:
        workers_repo.release_worker(s, a, narrow)
        workers_repo.release_worker(s, b, 99)

    assert _claim(studio, a) == (wide, 1)
    job = _job(studio, wide)
    record = job.provenance["gang"]
    assert (record["attempt"], record["nodes"], record["per_host"]) == (1, 2, 1)
    assert [(m["worker"], m["node_rank"]) for m in record["members"]] == [(a, 0), (b, 1)]
    assert 29500 <= int(record["rendezvous"].rpartition(":")[2]) <= 29599
    with studio.db.read() as s:
        assert gang.reservation(s, b) == (wide, (1, 1))  # b joins attempt 1 as node 1
        assert gang.reservation(s, a) == (wide, None)  # the leader's own job is no reservation
    assert _claim(studio, b) is None  # a reserved worker claims nothing of its own
    table = views.workers_table(worker_list(studio), 0)  # the Runs tab: b runs the job as a's node, not its own
    assert dict(zip(table["worker"], table["running job"], strict=True)) == {
        a: f"{wide}", b: f"{wide} (node 1 of 2, led by {a})"}

    with studio.db.write() as s:  # the attempt is lost and requeued: b's reservation is stale, to be freed
        jobs_repo.requeue_lost_worker(s, wide, 1, "lost", 3)
    with studio.db.read() as s:
        assert gang.reservation(s, b) == (wide, None)


def test_submit_spans_a_pools_hosts_only_where_they_split_the_devices_evenly(studio):
    _worker(studio, "a"), _worker(studio, "b"), _worker(studio, "c", address=None)  # c cannot join a gang
    submit_job(studio, {**FAST_JOB, "devices": 2, "pool": "gang"})
    with pytest.raises(SpecError) as refused:
        submit_job(studio, {**FAST_JOB, "devices": 3, "pool": "gang"})
    assert [p.field for p in refused.value.problems] == ["devices"]
    assert "offer a 1, b 1: no even split of 3" in str(refused.value)
    with pytest.raises(SpecError, match="unless it names a pool"):
        submit_job(studio, {**FAST_JOB, "devices": 2})


def test_a_job_on_several_devices_of_a_pool_that_does_not_answer_is_refused_and_one_on_one_device_waits(studio):
    _worker(studio, "a")  # pool gang answers; pool silent has no live worker (one whose heartbeat is past the lease)
    lease = studio.settings.lease_s
    with studio.db.write() as s:
        quiet = workers_repo.register_worker(s, "quiet:1", "quiet", 1, "default", "CPU (2 cores)", 64 << 30, "silent",
                                             address="127.0.0.1", rdzv_ports="29500-29599", device_count=4)
        quiet.heartbeat_at = utcnow() - timedelta(seconds=lease + 1)
    with pytest.raises(SpecError) as refused:
        submit_job(studio, {**FAST_JOB, "devices": 2, "pool": "silent"})
    assert [(p.field, p.message) for p in refused.value.problems] == [("pool", (
        f"no live worker serves pool 'silent' (none sent a heartbeat in the last {lease:g} s), so no host there can "
        "be counted for 2 devices: start its workers (STUDIO_POOL=silent) first, or name a pool that has them"))]
    with studio.db.read() as s:
        assert jobs_repo.list_jobs(s) == []  # nothing queued
    assert _job(studio, submit_job(studio, {**FAST_JOB, "pool": "silent"})).status == "queued"  # it waits for one


def test_shapes_put_the_most_ranks_on_each_host():
    assert gang.shapes(8, 4) == [(2, 4), (4, 2), (8, 1)] and gang.shapes(6, 4) == [(2, 3), (3, 2), (6, 1)]
    assert gang.feasible(4, {"a": 2, "b": 2}) == (2, 2) and gang.feasible(4, {"a": 4, "b": 1}) is None
    assert gang.feasible(2, {"a": 1}) is None


def test_a_reservation_whose_attempt_moved_on_is_freed_without_starting_anything(studio):
    from jobs.queue.lifecycle import worker_name
    from jobs.queue.run_files import run_dir_for
    from jobs.queue.supervisor import follow_reservation

    me, host = worker_name(), worker_name().rpartition(":")[0]
    with studio.db.write() as s:  # this process poses as the follower (the watch reads its own row by its name)
        workers_repo.register_worker(s, me, host, 1, "default", "CPU (2 cores)", 1 << 30, "gang",
                                     address="127.0.0.1", device_count=1)
    leader = _worker(studio, "leader")
    wide = submit_job(studio, {**FAST_JOB, "name": "wide", "devices": 2, "pool": "gang"})
    assert _claim(studio, leader) == (wide, 1)
    with studio.db.write() as s:
        assert workers_repo.reservation(s, me) == wide
        jobs_repo.requeue_lost_worker(s, wide, 1, "the leader was lost", 3)  # before the follower looked
    follow_reservation(studio)
    with studio.db.read() as s:
        assert workers_repo.reservation(s, me) is None  # free for the next gang or a job of its own
    assert not (run_dir_for(studio, wide) / "node-1.log").exists()  # no node was started for a finished attempt


def test_the_leader_finds_a_silent_or_departed_node_of_its_gang(studio):
    """gang.absent_member, which the leader's supervisor asks at each heartbeat: a follower whose heartbeat is older
    than the lease is silent (the leader stops its own node now), one whose row no longer holds the job or is gone
    has left (the leader's node is given time to end by itself); a follower that holds the job is present."""
    a, b = _worker(studio, "a"), _worker(studio, "b")
    wide = submit_job(studio, {**FAST_JOB, "name": "wide", "devices": 2, "pool": "gang"})
    assert _claim(studio, a) == (wide, 1)
    members = _job(studio, wide).provenance["gang"]
    nodes = gang.Gang.of(_job(studio, wide).provenance, 1)
    lease_s = studio.settings.lease_s
    with studio.db.read() as s:
        assert gang.absent_member(s, nodes, wide, lease_s) is None
    with studio.db.write() as s:
        s.query(Worker).filter_by(name=b).update({"heartbeat_at": utcnow() - timedelta(seconds=lease_s + 1)})
    with studio.db.read() as s:
        silent = gang.absent_member(s, nodes, wide, lease_s)
    assert silent.silent and silent.member == members["members"][1]
    assert "node 1 of its gang, host b (worker b:1)" in silent.words() and "did not join or left" in silent.words()
    with studio.db.write() as s:
        workers_repo.worker_heartbeat(s, b, busy=False)  # live again, and its row no longer holds the job
    with studio.db.read() as s:
        left = gang.absent_member(s, nodes, wide, lease_s)
    assert not left.silent and "left the gang" in left.words()
    with studio.db.write() as s:
        workers_repo.unregister_worker(s, b)  # stopped in order: its row is gone
    with studio.db.read() as s:
        assert not gang.absent_member(s, nodes, wide, lease_s).silent


def test_a_rendezvous_port_in_time_wait_is_picked_and_a_listening_one_is_not(studio):
    """A lost attempt's store leaves its port in TIME_WAIT for a minute; the store binds it again (SO_REUSEADDR), so
    the next claim may pick it. Before, the probe's plain bind refused it and a one-port range claimed nothing."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's TCPStore sets it
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        settings = replace(studio.settings, rdzv_ports=(port, port))
        assert gang.pick_port(settings, set()) is None  # in use
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = listener.accept()
            accepted.close()  # the server's side closes first: its port waits in TIME_WAIT
    assert gang.pick_port(settings, set()) == port
    assert gang.pick_port(settings, {port}) is None  # a running gang's port is never picked


def test_a_gang_jobs_verdict_and_plan_name_its_nodes_and_submit_refuses_one_too_few_hosts_hold(studio):
    """The memory verdict of a job only a gang can run checks each worker that may be one of its nodes (a CPU's memory
    shared by that node's ranks, not the job's), the plan names the nodes, and submit refuses, naming `devices` and
    each host's numbers, a job whose node's peak fits on fewer hosts than it needs nodes."""
    a, b = _worker(studio, "a", devices=2), _worker(studio, "b", devices=2)
    _worker(studio, "c", devices=2, address=None)  # cannot join a gang
    _worker(studio, "d", devices=1)  # offers fewer than a node's 2 ranks
    assert [(d.host, d.ranks, d.nodes) for d in job_devices(studio, "gang", 4)] == [("a", 2, 2), ("b", 2, 2)]
    wide = {**FAST_JOB, "name": "wide", "devices": 4, "pool": "gang"}
    text = verdict_text(studio, wide)
    assert "| a default: CPU (2 cores) | 2 |" in text and "| b default: CPU (2 cores) | 2 |" in text
    assert "c default" not in text and "d default" not in text
    assert "gang of 2 nodes × 2 ranks" in text and "2 of these 2 hosts can hold a node; the job needs 2." in text
    assert "It runs on 4 devices as a gang of 2 nodes × 2 ranks, one node per host of pool gang (any 2 of a, b)" \
        in plan_text(studio, wide)

    with studio.db.write() as s:  # b's memory now holds no node: only one host of the two the gang needs does
        s.query(Worker).filter_by(name=b).update({"memory_bytes": 1 << 20})
    assert "**It cannot run:** runs as a gang of 2 nodes × 2 ranks" in verdict_text(studio, wide)
    with pytest.raises(SpecError) as refused:
        submit_job(studio, wide)
    assert [p.field for p in refused.value.problems] == ["devices"]
    message = str(refused.value)
    assert "only 1 of the 2 host(s) that may be its nodes can hold a node's peak" in message
    assert "b default (CPU (2 cores)): its 2 ranks share" in message and "0.00 GiB free, does not fit" in message
    assert "a default (CPU (2 cores)): its 2 ranks share" in message and "64.00 GiB free, fits" in message
    pair = {**FAST_JOB, "name": "one-host", "devices": 2, "pool": "gang"}  # a, b, c run it alone; d may lead a gang
    assert "It runs on 2 devices of one host (a, b, c), or as a gang of 2 nodes × 1 rank, one node per host of pool " \
        "gang, led by d; batch_size is per device." in plan_text(studio, pair)
    one_host = submit_job(studio, pair)  # not refused: a and c hold it
    with studio.db.write() as s:
        s.query(Worker).filter_by(name=b).update({"memory_bytes": 64 << 30})
    accepted = submit_job(studio, wide)
    assert _claim(studio, a, offer=2) == (one_host, 1)  # one host runs the 2-device job alone
    assert _job(studio, accepted).status == "queued"


def test_a_gang_job_past_its_reserve_time_gets_its_hosts_from_a_stream_of_small_jobs(studio):
    """The backfill bound: small jobs behind a gang job pass it while it is young (the hosts stay busy), but once it
    has waited STUDIO_GANG_RESERVE_AFTER_S a host that ends its job claims nothing behind it, and the next host that
    comes free gathers the gang. Before, the stream kept both hosts busy and the gang job waited for ever."""
    a, b = _worker(studio, "a"), _worker(studio, "b")
    names = (f"small-{i}" for i in itertools.count())

    def small() -> int:
        return submit_job(studio, {**FAST_JOB, "name": next(names), "pool": "gang"})

    running = {a: small(), b: small()}
    wide = submit_job(studio, {**FAST_JOB, "name": "wide", "devices": 2, "pool": "gang"})
    for host in (a, b):
        assert _claim(studio, host) == (running[host], 1)

    def end_and_claim(host: str):
        small()  # the stream: a new small job for each that ends
        with studio.db.write() as s:
            jobs_repo.complete_job(s, running[host], 1)
            workers_repo.release_worker(s, host, running[host])
        claimed = _claim(studio, host)
        if claimed is not None:
            running[host] = claimed[0]
        return claimed

    for host in (a, b, a, b):  # young: the stream passes it on both hosts
        claimed = end_and_claim(host)
        assert claimed is not None and claimed[0] != wide
    _backdate(studio, wide, studio.settings.gang_reserve_after_s)
    assert end_and_claim(a) is None  # a holds: nothing behind the gang job passes it now
    assert _job(studio, wide).status == "queued"
    assert end_and_claim(b) == (wide, 1)
    members = _job(studio, wide).provenance["gang"]["members"]
    assert [m["worker"] for m in members] == [b, a]


def test_a_gang_job_holds_only_workers_that_may_join_it_and_only_while_its_pool_can_gather_it(studio):
    """Hostile cases of the bound: a worker that cannot be one of the gang's nodes (no rendezvous address) keeps
    taking the jobs behind it; a gang its pool can no longer gather (a host gone since submit) holds nobody, so the
    pool is never frozen; a cancel of the waiting gang job frees the pool at once, its held-back jobs' queue messages
    sent again."""
    a, b = _worker(studio, "a"), _worker(studio, "b")
    wide = submit_job(studio, {**FAST_JOB, "name": "wide", "devices": 2, "pool": "gang"})
    behind = [submit_job(studio, {**FAST_JOB, "name": f"behind-{i}", "pool": "gang"}) for i in range(3)]
    _backdate(studio, wide, studio.settings.gang_reserve_after_s)
    with studio.db.write() as s:
        workers_repo.worker_heartbeat(s, b, 99, busy=True)  # b busy: a cannot gather the gang now
    assert _claim(studio, a) is None  # a holds
    no_address = replace(studio.settings, pool="gang", host_name="e", rdzv_address=None)
    with studio.db.write() as s:
        assert gang.claim(s, no_address, "e:1", 1) == (behind[0], 1)  # e could never be a node: it passes

    with studio.db.write() as s:  # b's host is gone (its worker's heartbeat is a lease old): no gang of 2 can form
        s.query(Worker).filter_by(name=b).update({"heartbeat_at": utcnow() - timedelta(seconds=1e4)})
    assert _claim(studio, a) == (behind[1], 1)
    with studio.db.write() as s:
        workers_repo.release_worker(s, a, behind[1])
        workers_repo.worker_heartbeat(s, b, 99, busy=True)  # b is back, still busy: a holds again
    assert _claim(studio, a) is None

    get_queue(studio.settings, "gang").flush()  # the holders consumed the messages of the jobs behind it
    assert cancel_job(studio, wide) == "cancelled"
    assert pending_job_ids(studio.settings, "gang") == {behind[2]}  # sent again: a worker wakes for it now
    assert _claim(studio, a) == (behind[2], 1)


def test_a_worker_that_cannot_join_a_reserved_gang_leads_no_gang_behind_it(studio):
    """d (one device) cannot be a node of the 2 x 2 gang ahead, so it takes the one-host job behind it; it does not
    lead the 2 x 1 gang behind it, which would take a, holding idle for the reserved one."""
    a, b, d = _worker(studio, "a", devices=2), _worker(studio, "b", devices=2), _worker(studio, "d")
    wide = submit_job(studio, {**FAST_JOB, "name": "wide", "devices": 4, "pool": "gang"})
    pair = submit_job(studio, {**FAST_JOB, "name": "pair", "devices": 2, "pool": "gang"})
    single = submit_job(studio, {**FAST_JOB, "name": "single", "pool": "gang"})
    _backdate(studio, wide, studio.settings.gang_reserve_after_s)
    with studio.db.write() as s:
        workers_repo.worker_heartbeat(s, b, 99, busy=True)
    assert _claim(studio, a, offer=2) is None  # a holds for wide
    assert _claim(studio, d) == (single, 1)  # not pair, which would have reserved a
    with studio.db.read() as s:
        assert workers_repo.reservation(s, a) is None
    assert _job(studio, pair).status == "queued"
