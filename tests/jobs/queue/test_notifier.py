"""Webhook notifications from the events outbox, against a real local HTTP server that fails its first request."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from jobs.queue.notifier import deliver_due
from jobs.submit import cancel_job, submit_job
from storage import jobs_repo


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []
    refuse_next = 1

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Receiver.refuse_next:
            Receiver.refuse_next -= 1
            self.send_response(500)
        else:
            Receiver.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.received, Receiver.refuse_next = [], 1
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_one_post_per_state_change_even_after_a_failed_try(studio, receiver):
    first, second, third = (submit_job(studio, {"max_steps": 3}) for _ in range(3))
    cancel_job(studio, first)  # cancelled while queued
    with studio.db.write() as s:
        job_id, attempt = jobs_repo.claim_next(s, "w")
    with studio.db.write() as s:
        jobs_repo.requeue_planned(s, job_id, attempt, "Interrupted by a worker shutdown.")
    with studio.db.write() as s:
        job_id, attempt = jobs_repo.claim_next(s, "w")
        jobs_repo.fail_job(s, job_id, attempt, "Training failed.")
    deadline = time.monotonic() + 30
    while len(Receiver.received) < 3:
        deliver_due(studio, receiver)  # the first try is refused; the retry comes after its backoff (2 s)
        assert time.monotonic() < deadline, Receiver.received
        time.sleep(0.5)
    deliver_due(studio, receiver)
    assert [(e["job_id"], e["event"]) for e in Receiver.received] == [
        (first, "cancelled"), (second, "requeued"), (second, "failed")]
    assert len({e["event_id"] for e in Receiver.received}) == 3  # each once, none repeated
    assert Receiver.received[2]["message"] == "Training failed." and third not in {e["job_id"] for e in
                                                                                   Receiver.received}
