"""Notices on the open page for job events (the same outbox the webhook delivers): a job finishing, failing,
being requeued or cancelled pops up wherever the person is in the studio."""

from __future__ import annotations

import gradio as gr

from app.web.safe_text import notify
from jobs.studio import Studio
from storage import events_repo
from storage.models import JobStatus

NOTICE_S = 3.0


def newest_id(studio: Studio) -> int:
    with studio.db.read() as session:
        return events_repo.newest_event_id(session)


def show_new(studio: Studio, last_id: int) -> int:
    """Pop a notice for each event after `last_id`; returns the newest id shown."""
    with studio.db.read() as session:
        events = events_repo.events_after(session, last_id or 0)
    for event, job_name in events:
        text = f"Job {event.job_id} ({job_name}) {event.kind}" + (f": {event.message}" if event.message else "")
        notify(text[:300], warning=event.kind == JobStatus.FAILED)
    return events[-1][0].id if events else last_id


def build(studio: Studio, app: gr.Blocks) -> None:
    seen = gr.State(0)
    app.load(lambda: newest_id(studio), None, seen, api_visibility="private")  # old events are not news
    gr.Timer(NOTICE_S).tick(lambda last: show_new(studio, last), seen, seen, api_visibility="private",
                            show_progress="hidden")
