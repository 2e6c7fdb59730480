"""The shared servers of a many-host studio, measured on real servers started here (tests/servers.py):

    python bench/scale_out.py [--writers 6] [--transactions 200] [--smoke] [--out bench/results/scale_out.json]

1. Ledger claims: W processes × T transactions, each claiming the next job and writing a metric for it in one
   transaction, on SQLite (one host) and on PostgreSQL (many hosts), side by side: transactions/s and the ratio.
2. Wake-up: a job submitted until a worker's queue consumer is handed its message, for each transport (SQLite
   polls; Redis and PostgreSQL block on the server), median of several.
3. Connections: how many PostgreSQL connections one real worker holds idle and while it trains a job, for a Redis
   and a PostgreSQL queue: what sizes `max_connections` (docs/scale-out.md)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import huey  # noqa: E402
import psycopg  # noqa: E402
import sqlalchemy  # noqa: E402

from storage import jobs_repo  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.schema import upgrade_database  # noqa: E402
from tests.servers import start_postgres, start_redis  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _claimer(url: str, worker: str, transactions: int, done) -> None:
    database = Database(url)  # after fork: engines are never inherited
    won = 0
    for _ in range(transactions):
        with database.write() as session:
            claimed = jobs_repo.claim_next(session, worker)
            if claimed is not None:
                jobs_repo.record_metrics(session, claimed[0], 1, {"loss": 1.0})
                won += 1
    done.put(won)


def claims_per_s(url: str, writers: int, transactions: int) -> dict:
    database = Database(url)
    upgrade_database(database)
    with database.write() as session:
        for _ in range(writers * transactions):
            jobs_repo.create_job(session, name="bench", spec={})
    database.dispose()
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    processes = [context.Process(target=_claimer, args=(url, f"w{i}", transactions, done)) for i in range(writers)]
    start = time.perf_counter()
    for process in processes:
        process.start()
    claimed = sum(done.get(timeout=600) for _ in processes)
    seconds = time.perf_counter() - start
    for process in processes:
        process.join()
    return {"transactions": writers * transactions, "claimed": claimed, "seconds": round(seconds, 2),
            "per_s": round(writers * transactions / seconds, 1)}


def wake_up_s(settings_env: dict[str, str], rounds: int) -> float:
    """Submit-to-dequeue latency through the real transport and a real Huey consumer (no training)."""
    from huey.consumer import Consumer

    from jobs.queue import transport
    from storage.settings import load_settings

    settings = load_settings(settings_env)
    handed: dict[int, float] = {}
    arrived = threading.Event()

    def runner(job_id: int) -> None:
        handed[job_id] = time.perf_counter()
        arrived.set()

    consumer = Consumer(transport.serve_jobs(settings, runner), workers=1, worker_type="thread", periodic=False,
                        initial_delay=0.2, max_delay=1.0)  # the worker's settings (jobs.queue.worker)
    consumer._set_signal_handlers = lambda: None  # this process's signals stay its own
    consumer.start()  # the consumer's threads, without its supervising loop
    time.sleep(2)
    samples = []
    for job_id in range(1, rounds + 1):
        time.sleep(1.3)  # let the consumer fall back to its idle poll, as between real jobs
        arrived.clear()
        sent = time.perf_counter()
        transport.enqueue_job(settings, job_id)
        arrived.wait(30)
        samples.append(handed[job_id] - sent)
    consumer.stop(graceful=False)
    return round(statistics.median(samples), 3)


def worker_connections(env: dict[str, str], database_name: str, port: int, max_steps: int, settle_s: float) -> dict:
    from jobs.models.demo import ensure_demo_model
    from jobs.studio import open_studio
    from jobs.submit import submit_job
    from storage.settings import load_settings
    from tests.conftest import seed_model

    data_dir = Path(env["STUDIO_DATA_DIR"])
    seed_model(data_dir, ensure_demo_model(data_dir.parent.parent / "shared-models"))  # built once for every arm
    log = (data_dir.parent / f"worker-{database_name}.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "jobs.queue.worker"], env=env, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)

    def count() -> int:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres") as connection:
            query = "select count(*) from pg_stat_activity where datname = %s"
            return connection.execute(query, (database_name,)).fetchone()[0]

    try:
        time.sleep(settle_s)  # the worker starts, registers and goes idle
        idle = count()
        studio = open_studio(load_settings(env))
        job_id = submit_job(studio, {"max_steps": max_steps, "batch_size": 2, "max_length": 256, "eval_fraction": 0})
        studio.db.dispose()
        peak, deadline = 0, time.monotonic() + 600
        ledger = Database(env["STUDIO_DATABASE_URL"])
        while time.monotonic() < deadline:
            peak = max(peak, count() - ledger.engine.pool.checkedin())  # less this loop's own (pooled) connection
            with ledger.read() as session:
                if jobs_repo.get_job(session, job_id).status in ("succeeded", "failed"):
                    break
            time.sleep(0.3)
        ledger.dispose()
    finally:
        worker.terminate()
        worker.wait(120)
    return {"idle": idle, "peak_with_a_job": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--transactions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale_out.json")
    args = parser.parse_args()
    if args.smoke:
        args.writers, args.transactions, args.rounds = 2, 10, 1
    work = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    postgres = start_postgres(Path(tempfile.mkdtemp(prefix="bench-postgres-")))
    redis = start_redis(work / "redis")
    report: dict = {"writers": args.writers, "transactions_each": args.transactions}
    try:
        sqlite_claims = claims_per_s(f"sqlite:///{work / 'claims.db'}", args.writers, args.transactions)
        postgres_claims = claims_per_s(postgres.new_database(), args.writers, args.transactions)
        report["claims"] = {"sqlite": sqlite_claims, "postgresql": postgres_claims,
                            "ratio_postgresql_over_sqlite": round(postgres_claims["per_s"] / sqlite_claims["per_s"], 2)}
        print(json.dumps(report["claims"], indent=1), flush=True)

        queues = {"sqlite": f"sqlite:///{work / 'queue.db'}", "redis": redis.url(1),
                  "postgresql": postgres.new_database().replace("postgresql+psycopg://", "postgresql://")}
        report["wake_up_s"] = {name: wake_up_s({"STUDIO_DATA_DIR": str(work / f"wake-{name}"),
                                                "STUDIO_QUEUE_URL": url}, args.rounds) for name, url in queues.items()}
        print("wake-up (s):", report["wake_up_s"], flush=True)

        report["connections_per_worker"] = {}
        for name in ("redis", "postgresql"):
            database_url = postgres.new_database()
            queue_url = redis.url(2) if name == "redis" else database_url.replace("+psycopg", "")
            env = {**os.environ, "STUDIO_DATA_DIR": str(work / f"conn-{name}" / "data"), "PYTHONPATH": str(ROOT),
                   "STUDIO_DATABASE_URL": database_url, "STUDIO_QUEUE_URL": queue_url, "STUDIO_HEARTBEAT_S": "1"}
            found = worker_connections(env, database_url.rsplit("/", 1)[1], postgres.port, 2 if args.smoke else 40,
                                       6 if args.smoke else 12)
            report["connections_per_worker"][f"{name}_queue"] = found
            print(f"PostgreSQL connections of one worker ({name} queue):", found, flush=True)
    finally:
        redis.stop()
        postgres.stop()
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    report["versions"] = {"huey": huey.__version__, "sqlalchemy": sqlalchemy.__version__,
                          "psycopg": psycopg.__version__, "postgresql": "15 (fsync off, a throwaway test server)",
                          "redis": "7"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
