"""The gang reservation's SQL (docs/scale-out.md, one job across hosts), on SQLite and on a real PostgreSQL: a leader
reserves idle live workers of its pool, one per other host; two leaders never reserve one worker; a worker claiming
is passed over, and a reserved worker may not claim."""

import threading

import pytest

from storage import workers_repo
from storage.db import Database
from storage.models import Worker
from storage.schema import upgrade_database

LEASE_S = 60.0


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'studio.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_server").new_database())
    database = Database(url)
    upgrade_database(database)
    yield database
    database.dispose()


def _worker(session, host: str, pid: int = 1, pool: str | None = "gang", address: str | None = "10.0.0.1",
            devices: int = 1) -> str:
    name = f"{host}:{pid}"
    workers_repo.register_worker(session, name, host, pid, "default", "CPU (2 cores)", 1 << 30, pool,
                                 address=address, rdzv_ports="29500-29599", device_count=devices)
    return name


def _rows(db) -> dict[str, int | None]:
    with db.read() as s:
        return {w.name: w.current_job_id for w in s.query(Worker)}


def test_a_leader_reserves_one_idle_worker_per_other_host_of_its_pool(db):
    with db.write() as s:
        leader = _worker(s, "a")
        _worker(s, "a", pid=2)  # the leader's own host: never a peer
        _worker(s, "b")
        _worker(s, "b", pid=2)  # b's second worker: one node per host
        _worker(s, "c", pool="other")  # another pool
        _worker(s, "d", address=None)  # no rendezvous address: cannot join
        _worker(s, "e", devices=1)
        s.flush()
    with db.write() as s:
        assert workers_repo.reserve_gang(s, 7, leader, "gang", 3, 1, LEASE_S) is None  # only b and e qualify
    assert set(_rows(db).values()) == {None}  # nothing written
    with db.write() as s:
        assert workers_repo.reserve_gang(s, 7, leader, "gang", 2, 2, LEASE_S) is None  # nobody offers 2
        peers = workers_repo.reserve_gang(s, 7, leader, "gang", 2, 1, LEASE_S)
        assert sorted(peer.host for peer in peers) == ["b", "e"]
    rows = _rows(db)
    assert rows["b:1"] == rows["e:1"] == 7 and rows["b:2"] is None and rows[leader] is None
    with db.write() as s:  # a reserved worker may not claim a job of its own; an idle one may
        assert not workers_repo.hold_for_claim(s, "b:1") and workers_repo.hold_for_claim(s, "b:2")
        assert workers_repo.reservation(s, "e:1") == 7
        workers_repo.release_worker(s, "e:1", 8)  # another job's release leaves this reservation
        assert workers_repo.reservation(s, "e:1") == 7
        workers_repo.release_worker(s, "e:1", 7)
        assert workers_repo.reservation(s, "e:1") is None and workers_repo.hold_for_claim(s, "nobody:1")


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # SQLite serializes writers (BEGIN IMMEDIATE): no
def test_two_leaders_at_once_never_reserve_one_worker_and_a_claiming_worker_is_passed_over(db):  # two in flight
    with db.write() as s:
        for host in ("a", "b", "c", "d"):
            _worker(s, host)
    first_done, second_done = threading.Event(), threading.Event()
    found = {}

    def second_leader():
        first_done.wait(10)
        with db.write() as s:
            peers = workers_repo.reserve_gang(s, 2, "b:1", "gang", 1, 1, LEASE_S)
            found["second"] = [peer.name for peer in peers or []]
        second_done.set()

    thread = threading.Thread(target=second_leader)
    thread.start()
    with db.write() as s:  # leader a reserves, and holds its transaction open while leader b reserves
        found["first"] = [peer.name for peer in workers_repo.reserve_gang(s, 1, "a:1", "gang", 1, 1, LEASE_S)]
        assert workers_repo.hold_for_claim(s, "a:1")
        first_done.set()
        assert second_done.wait(10)  # b did not wait on a's locked rows: SKIP LOCKED
    thread.join()
    assert found["first"] == ["b:1"] and found["second"] == ["c:1"]  # b:1 locked by a's reservation and a leader
    assert _rows(db) == {"a:1": None, "b:1": 1, "c:1": 2, "d:1": None}
