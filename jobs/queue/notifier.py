"""Webhook notifications: every job event in the outbox (succeeded, failed, requeued, cancelled) is POSTed as JSON
to STUDIO_WEBHOOK_URL, in order, retried with backoff (2 s doubling to 10 minutes, then given up after a day),
from a thread of the app: never from a worker, so a slow receiver never holds up training."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request

from jobs.studio import Studio
from storage import events_repo
from storage.models import utcnow

log = logging.getLogger(__name__)
POLL_S = 2.0
TIMEOUT_S = 5.0
FIRST_RETRY_S, MAX_RETRY_S, GIVE_UP_AFTER = 2.0, 600.0, 150  # 150 tries at up to 10 minutes: about a day


def payload(event, job_name: str) -> dict:
    return {"event_id": event.id, "event": event.kind, "job_id": event.job_id, "job_name": job_name,
            "message": event.message, "at": event.created_at.isoformat() + "Z"}


def post(url: str, body: dict) -> None:
    """POST `body` as JSON; raises on anything but a 2xx answer."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "qlora-studio"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(url, response.status, "not a 2xx answer", response.headers, None)


def deliver_due(studio: Studio, url: str) -> int:
    """One pass: deliver in order, oldest first; an event waiting for its retry holds back the ones after it."""
    with studio.db.read() as session:
        pending = events_repo.undelivered(session)
    delivered, now = 0, utcnow()
    for event, job_name in pending:
        if not events_repo.is_due(event, now):
            break
        try:
            post(url, payload(event, job_name))
        except Exception as error:  # the receiver's problem, whatever it is, is reported and retried
            retry = min(FIRST_RETRY_S * 2**event.delivery_attempts, MAX_RETRY_S)
            give_up = event.delivery_attempts + 1 >= GIVE_UP_AFTER
            with studio.db.write() as session:
                events_repo.mark_failed(session, event.id, f"{type(error).__name__}: {error}",
                                        None if give_up else retry)
            log.warning("webhook: event %s (job %s %s) not delivered (%s); %s", event.id, event.job_id, event.kind,
                        error, "giving up" if give_up else f"retrying in {retry:.0f} s")
            break
        with studio.db.write() as session:
            events_repo.mark_delivered(session, event.id)
        delivered += 1
    return delivered


def start_notifier(studio: Studio, url: str) -> threading.Event:
    """A daemon thread delivering events until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(POLL_S):
            try:
                deliver_due(studio, url)
            except Exception:  # a database hiccup must not end notifications
                log.exception("webhook pass failed; retrying")

    threading.Thread(target=loop, daemon=True, name="webhook").start()
    return stop
