"""The events outbox: what to deliver next, and what the page has not shown yet. Session first, never commits."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.access import visible
from storage.models import Event, Job, utcnow


def events_after(session: Session, last_id: int, limit: int = 20) -> list[tuple[Event, str]]:
    """(event, job name) newer than `last_id`, oldest first."""
    query = (select(Event, Job.name).join(Job, Event.job_id == Job.id).where(Event.id > last_id, visible(Job.owner))
             .order_by(Event.id).limit(limit))
    return [(event, name) for event, name in session.execute(query)]


def newest_event_id(session: Session) -> int:
    return session.scalars(select(Event.id).order_by(Event.id.desc()).limit(1)).first() or 0


def undelivered(session: Session, limit: int = 20) -> list[tuple[Event, str]]:
    """(event, job name) not delivered yet, oldest first (delivery keeps this order)."""
    query = (select(Event, Job.name).join(Job, Event.job_id == Job.id).where(Event.delivered_at.is_(None))
             .order_by(Event.id).limit(limit))
    return [(event, name) for event, name in session.execute(query)]


def is_due(event: Event, now: datetime) -> bool:
    return event.next_delivery_at is None or event.next_delivery_at <= now


def mark_delivered(session: Session, event_id: int) -> None:
    event = session.get(Event, event_id)
    event.delivered_at, event.delivery_error = utcnow(), None


def mark_failed(session: Session, event_id: int, error: str, retry_in_s: float | None) -> None:
    """One more failed try; `retry_in_s` None gives up (recorded as delivered, with its last error)."""
    event = session.get(Event, event_id)
    event.delivery_attempts += 1
    event.delivery_error = error
    if retry_in_s is None:
        event.delivered_at = utcnow()
    else:
        event.next_delivery_at = utcnow() + timedelta(seconds=retry_in_s)
