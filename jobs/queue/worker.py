"""A worker: one Huey consumer thread, so one job at a time per device.

    python -m jobs worker                         # uses the default device
    CUDA_VISIBLE_DEVICES=1 python -m jobs worker  # one worker per GPU
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

EMBEDDED_FLAG = "--exit-with-parent"
if __name__ == "__main__" and EMBEDDED_FLAG in sys.argv:
    # An embedded worker is the app's, and the app stops it gracefully (SIGTERM) as it ends. A terminal's Ctrl+C
    # reaches the whole process group: ignored here, and by the training processes that inherit it, only the app
    # acts on it, and no import or training step dies of it with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

from huey.consumer import Consumer  # noqa: E402

from jobs.queue import supervisor  # noqa: E402
from jobs.queue.devices import describe_device, device_count, resident_anon_bytes  # noqa: E402
from jobs.queue.gang import GANG_POLL_S  # noqa: E402
from jobs.queue.lifecycle import device_label, hold_device_lock, signal_when_parent_dies, worker_name  # noqa: E402
from jobs.queue.reaper import reap_interval_s, reap_once, start_reaper  # noqa: E402
from jobs.queue.supervisor import (  # noqa: E402
    SHUTDOWN_GRACE_S,
    SHUTTING_DOWN,
    SPARE,
    follow_reservation,
    supervise_job,
    worker_studio,
)
from jobs.queue.transport import serve_jobs  # noqa: E402
from jobs.studio import sqlite_notice  # noqa: E402
from storage import workers_repo  # noqa: E402

log = logging.getLogger("jobs.worker")
EXIT_DEVICE_TAKEN = 3


class StudioConsumer(Consumer):
    """Huey's consumer, but SIGTERM and SIGINT both shut down gracefully: the running child checkpoints and
    its job is requeued (Huey's default drops an in-flight task for good). `embedded`: SIGINT stays ignored (the
    app that started the worker stops it)."""

    SHUTDOWN_TIMEOUT_S = 120

    def __init__(self, huey, embedded: bool = False, **options) -> None:
        super().__init__(huey, workers=1, worker_type="thread", periodic=False, initial_delay=0.2,
                         max_delay=1.0, shutdown_timeout=self.SHUTDOWN_TIMEOUT_S, **options)
        self._signal_actions = {signal.SIGTERM: (False, True)}
        if not embedded:
            self._signal_actions[signal.SIGINT] = (False, True)

    def _handle_signal(self, signum, frame) -> None:
        SHUTTING_DOWN.set()
        super()._handle_signal(signum, frame)


def register(studio, device: str) -> None:
    """This worker's row in the ledger: the workers panel and the memory verdict read it."""
    settings = studio.settings
    device_name, memory_bytes = describe_device(resident_anon_bytes(SPARE.pid), settings.jemalloc)
    offer = settings.worker_devices or device_count(device, device_name)
    first, last = settings.rdzv_ports
    with studio.db.write() as session:
        workers_repo.register_worker(session, worker_name(), settings.host_name, os.getpid(), device,
                                     device_name, memory_bytes, pool=settings.pool, address=settings.rdzv_address,
                                     rdzv_ports=f"{first}-{last}", device_count=offer)
    supervisor.OFFER = offer
    serves = f"pool '{settings.pool}'" if settings.pool else "no pool"
    gangs = (f"; leads or joins jobs across hosts at {settings.rdzv_address} (ports {first}-{last})"
             if settings.rdzv_address else "")
    log.info("worker %s: %s with %.1f GiB for a job, %d device(s); serves %s%s", worker_name(), device_name,
             memory_bytes / 2**30, offer, serves, gangs)


def watch_reservations(studio, stop: threading.Event) -> None:
    """Join a gang that another host's leader reserved this worker for (jobs.queue.gang), checked every GANG_POLL_S
    on a thread of its own: the Huey thread sleeps on the queue, and a reservation sends no message."""
    while not stop.wait(GANG_POLL_S):
        try:
            follow_reservation(studio)
        except Exception:  # a database blip must not end the watch; the reservation is looked at again
            log.exception("looking for a gang reservation failed; retrying")


def beat(studio) -> None:
    """The heartbeat, with the memory a job may use here now (kept only while no job runs: workers_repo)."""
    _, memory_bytes = describe_device(resident_anon_bytes(SPARE.pid), studio.settings.jemalloc)
    with studio.db.write() as session:
        workers_repo.worker_heartbeat(session, worker_name(), idle_memory_bytes=memory_bytes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs worker", description="Run a studio worker (one job at a "
                                     "time on this host's device).")
    parser.add_argument("--reap-interval", type=float, default=None,
                        help="seconds between reaper passes (default: a third of the lease)")
    parser.add_argument(EMBEDDED_FLAG, action="store_true",
                        help="shut down (gracefully) when the parent process dies; the app's embedded worker uses it")
    args = parser.parse_args(argv)
    if args.exit_with_parent and not signal_when_parent_dies(signal.SIGTERM):
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    studio = worker_studio()
    if not args.exit_with_parent and (notice := sqlite_notice(studio.settings)):
        log.info(notice)  # a standalone worker owns its log; the app that embeds one says it in its own
    device = device_label()
    lock = hold_device_lock(studio.settings.locks_dir, device)
    if lock is None:
        log.warning("another worker on this host already serves device '%s' (its lock is in %s); one job per device, "
                    "so this one exits", device, studio.settings.locks_dir)
        raise SystemExit(EXIT_DEVICE_TAKEN)
    reap_once(studio)
    register(studio, device)
    stop = start_reaper(studio, args.reap_interval or reap_interval_s(studio.settings), also=lambda: beat(studio))
    gang_stop, gang_watch = threading.Event(), None
    if studio.settings.rdzv_address:
        gang_watch = threading.Thread(target=watch_reservations, args=(studio, gang_stop), daemon=True,
                                      name="gang-watch")
        gang_watch.start()
    consumer = StudioConsumer(serve_jobs(studio.settings, supervise_job), embedded=args.exit_with_parent)
    SPARE.enabled, SPARE.jemalloc = studio.settings.spare_child, studio.settings.jemalloc
    SPARE.start()  # from the main thread, which lives as long as the worker (the spare's parent-death signal)
    log.info("worker ready: queue %s, database %s%s", studio.settings.queue_url, studio.db.engine.url,
             "; a spare training process waits for the next job" if SPARE.enabled else "")
    try:
        consumer.run()
    finally:
        SPARE.stop()
        if gang_watch is not None:  # a gang's node this worker runs stops as its own job would: its ranks first
            gang_stop.set()
            gang_watch.join(SHUTDOWN_GRACE_S + 10)
        stop.set()  # the heartbeat ran until here: the leader must not take this node for a silent one
        with studio.db.write() as session:
            workers_repo.unregister_worker(session, worker_name())


if __name__ == "__main__":
    main()
