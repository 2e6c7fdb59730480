"""One job across several hosts of a pool (docs/scale-out.md, "One job across hosts"): the gang claim and its record.

A job whose `devices` exceed what its claiming worker offers runs as `nodes` x `per_host` ranks, one node per host.
The worker that claims it leads: in the claim's transaction it reserves nodes - 1 idle live workers of the job's pool
on other hosts (workers_repo.reserve_gang, SKIP LOCKED) and writes the gang into the job's provenance. Each reserved
worker sees its reservation within GANG_POLL_S, starts its own child for that attempt, and that child's agent joins
the leader's static rendezvous with its node rank (jobs.queue.ranks). When too few are free nothing is reserved and
the job stays queued ("waits for N devices in pool P" in the queue); the worker moves on to the next job it may run,
until the job has waited STUDIO_GANG_RESERVE_AFTER_S: then a worker that may be one of its nodes claims nothing behind
it (reserving), so the pool's hosts come free for it as their jobs end (the backfill bound).
Every worker frees its own row when its child ends, however it ends. The leader's supervisor looks at the other
nodes' rows at each heartbeat (absent_member): a node that never joins, or whose host dies or hangs, ends the attempt
within about a lease, not only at the rendezvous timeout."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from storage import jobs_repo, workers_repo
from storage.models import Job, JobKind, JobStatus, Worker, utcnow
from storage.settings import Settings, current_host

log = logging.getLogger(__name__)
GANG_POLL_S = 1.0
"""How often an idle worker looks for a reservation of its row (a read of one row)."""
RDZV_TIMEOUT_S = 120
"""How long the leader's agent waits for every node to join (and the nodes' agents for the leader's store): then the
attempt is lost. Generous over a follower's poll and its child's start on a loaded host."""
MAX_SKIPPED = 20
"""How many gang jobs one claim passes over (too few free hosts) before it gives up for now."""


@dataclass(frozen=True)
class Gang:
    """One attempt's nodes: `members[i]` is node rank i (0: the leader, whose global rank 0 writes)."""

    attempt: int
    nodes: int
    per_host: int
    rendezvous: str
    members: list[dict]

    def record(self) -> dict:
        return {"attempt": self.attempt, "nodes": self.nodes, "per_host": self.per_host,
                "rendezvous": self.rendezvous, "members": self.members}

    @classmethod
    def of(cls, provenance: dict | None, attempt: int) -> Gang | None:
        """The gang of this attempt, from the job's provenance (None: a one-host attempt, or another attempt's)."""
        found = (provenance or {}).get("gang")
        if not found or found.get("attempt") != attempt:
            return None
        return cls(found["attempt"], found["nodes"], found["per_host"], found["rendezvous"], found["members"])

    def node_of(self, worker: str) -> int | None:
        return next((member["node_rank"] for member in self.members if member["worker"] == worker), None)


@dataclass(frozen=True)
class Absence:
    """A follower node of a running attempt that is gone. `silent`: its worker has sent no heartbeat for a lease (it
    died or hangs, before it joined or while it trained), so the leader stops its own node now; else its worker no
    longer holds the job (it stopped in order, or its node ended), and the leader's node is given time to end by
    itself (a worker stop's agreed stop checkpoints on every node first)."""

    member: dict
    silent: bool
    lease_s: float

    def words(self) -> str:
        where = f"node {self.member['node_rank']} of its gang, host {self.member['host']} " \
                f"(worker {self.member['worker']}),"
        if self.silent:
            return (f"lost {where} which sent no heartbeat for {self.lease_s:.0f} s: that host did not join or left "
                    f"(its worker died or hangs), so this host's node was stopped")
        return f"lost {where} whose worker left the gang (it stopped, or its node ended)"


def absent_member(session: Session, gang: Gang, job_id: int, lease_s: float) -> Absence | None:
    """The first follower of `gang` whose worker is silent for a lease (first) or no longer holds `job_id`, or None."""
    followers = gang.members[1:]
    states = workers_repo.member_states(session, [member["worker"] for member in followers], lease_s)
    silent = [m for m in followers if m["worker"] in states and not states[m["worker"]][0]]
    left = [m for m in followers if m["worker"] not in states or states[m["worker"]][1] != job_id]  # no row: stopped
    if silent or left:
        return Absence((silent or left)[0], bool(silent), lease_s)
    return None


def job_devices(job: Job) -> int:
    """The devices a queued training job asks for (submit stores a number; 'all' was counted then)."""
    devices = (job.spec or {}).get("devices", 1) if job.kind == JobKind.TRAIN else 1
    return devices if isinstance(devices, int) and devices > 0 else 1


def shapes(devices: int, most_per_host: int) -> list[tuple[int, int]]:
    """(nodes, per_host) ways to run `devices` ranks evenly on hosts of at most `most_per_host` each, fewest nodes
    first (torchrun runs the same count on every node, so per_host divides devices)."""
    return [(devices // per_host, per_host) for per_host in range(min(devices, most_per_host), 0, -1)
            if devices % per_host == 0]


def pool_offers(session: Session, pool: str | None, lease_s: float) -> dict[str, int]:
    """The most devices each host of `pool` offers a gang (its live workers that have a rendezvous address)."""
    return host_offers([w for w in workers_repo.live_workers(session, lease_s) if w.pool == pool])


def host_offers(workers: list[Worker]) -> dict[str, int]:
    """The most devices each host of these workers offers a gang (those with a rendezvous address)."""
    offers: dict[str, int] = {}
    for worker in workers:
        if worker.address and worker.device_count:
            offers[worker.host] = max(offers.get(worker.host, 0), worker.device_count)
    return offers


def feasible(devices: int, offers: dict[str, int]) -> tuple[int, int] | None:
    """The shape a pool whose hosts offer `offers` could run `devices` in, or None (submit refuses with the counts)."""
    for nodes, per_host in shapes(devices, max(offers.values(), default=0)):
        if nodes > 1 and sum(1 for offer in offers.values() if offer >= per_host) >= nodes:
            return nodes, per_host
    return None


def pick_port(settings: Settings, used: set[int]) -> int | None:
    """The first port of this host's rendezvous range that no running gang uses and that is free here now."""
    first, last = settings.rdzv_ports
    for port in range(first, last + 1):
        if port in used:
            continue
        with socket.socket() as probe:
            # As the rendezvous store binds it: a port the last attempt's store closed is still in TIME_WAIT for a
            # minute, which a plain bind refuses (the claim failed with "no free port" after a lost attempt).
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("", port))
            except OSError:
                continue
        return port
    return None


def claim(session: Session, settings: Settings, worker: str, offer: int | None) -> tuple[int, int] | None:
    """Claim the next job this worker may start, in the caller's transaction: (job id, attempt), or None. A job
    that needs more devices than `offer` (this worker's) is claimed only with a gang reserved for it; one that
    cannot get one is passed over, and stays queued. The worker's row is marked busy with the job."""
    if not workers_repo.hold_for_claim(session, worker):
        return None  # reserved by another host's leader: it joins that job (follow_reservation)
    skipped: list[int] = []
    reserved_ahead = False  # a gang job ahead reserves its pool's hosts: lead no gang behind it (it would take them)
    while len(skipped) <= MAX_SKIPPED:
        job = jobs_repo.next_claimable(session, settings.pool, tuple(skipped))
        if job is None:
            return None
        devices = job_devices(job)
        gang = None
        if offer is not None and devices > offer:
            gang = None if reserved_ahead else _reserve(session, settings, worker, job, devices, offer)
            if gang is None and not reserved_ahead and (shape := reserving(session, settings, job, devices)):
                if settings.rdzv_address is not None and offer >= shape[1]:  # this worker may be one of its nodes
                    log.info("job %s needs %s devices across pool %s's hosts and has waited past "
                             "STUDIO_GANG_RESERVE_AFTER_S: this worker claims nothing behind it", job.id, devices,
                             job.pool)
                    return None
                reserved_ahead = True
            if gang is None:
                skipped.append(job.id)
                continue
        attempt = jobs_repo.claim_job(session, job.id, worker)
        if attempt is None:  # cannot happen with the row locked; never leave a reservation behind
            raise RuntimeError(f"job {job.id} changed under its claim")
        if gang is not None:
            jobs_repo.record_gang(session, job.id, attempt, Gang(attempt, *gang).record())
        workers_repo.worker_heartbeat(session, worker, job.id, busy=True)
        return job.id, attempt
    return None


def reserving(session: Session, settings: Settings, job: Job, devices: int) -> tuple[int, int] | None:
    """The (nodes, per_host) a gang job that could not be gathered now reserves its pool's hosts for (the backfill
    bound, docs/scale-out.md), or None while smaller jobs may still pass it: it has waited STUDIO_GANG_RESERVE_AFTER_S
    since it was submitted and its pool's live hosts can run it. A worker that may be one of its nodes then claims
    nothing behind it; one that may not still takes the one-host jobs behind it, but leads no gang there. A gang its
    pool can no longer gather (hosts gone since submit) reserves nothing: the pool keeps working and the job waits."""
    if utcnow() - job.created_at < timedelta(seconds=settings.gang_reserve_after_s):
        return None
    return feasible(devices, pool_offers(session, job.pool, settings.lease_s))


def _reserve(session: Session, settings: Settings, worker: str, job: Job, devices: int,
             offer: int) -> tuple[int, int, str, list[dict]] | None:
    """(nodes, per_host, rendezvous, members) with the peers reserved, or None with nothing written."""
    if settings.rdzv_address is None:
        return None  # this host cannot lead a gang
    used = {int(gang["rendezvous"].rpartition(":")[2]) for gang in jobs_repo.running_gangs(session)
            if gang["members"][0]["host"] == settings.host_name}
    for nodes, per_host in shapes(devices, offer):
        if nodes == 1:
            continue
        peers = workers_repo.reserve_gang(session, job.id, worker, job.pool, nodes - 1, per_host, settings.lease_s)
        if peers is None:
            continue
        port = pick_port(settings, used)
        if port is None:
            raise RuntimeError(f"no free port in STUDIO_RDZV_PORTS {settings.rdzv_ports} for job {job.id}")
        leader = {"worker": worker, "host": settings.host_name, "address": settings.rdzv_address, "node_rank": 0}
        members = [leader, *({"worker": peer.name, "host": peer.host, "address": peer.address, "node_rank": rank}
                             for rank, peer in enumerate(peers, start=1))]
        return nodes, per_host, f"{settings.rdzv_address}:{port}", members
    return None


def reservation(session: Session, worker: str) -> tuple[int, tuple[int, int] | None] | None:
    """None when this worker's row is not reserved; else (job id, (attempt, node rank)) to join that attempt, or
    (job id, None) for a stale reservation to free (the job moved on, or this worker is no follower of its attempt)."""
    job_id = workers_repo.reservation(session, worker)
    if job_id is None:
        return None
    job = jobs_repo.get_job(session, job_id)
    gang = Gang.of(job.provenance, job.attempt) if job is not None and job.status == JobStatus.RUNNING else None
    node = gang.node_of(worker) if gang is not None else None
    return job_id, ((job.attempt, node) if node else None)  # node 0 is a leader: its own job, never a reservation


def parent_worker() -> str:
    """The worker that started this process (a job's child): how a gang's member list names it."""
    return f"{current_host()}:{os.getppid()}"
