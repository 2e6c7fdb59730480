"""The audit log: sign-ins and failed ones, account changes, hub pushes, deletions. Admins read it; the login limit
counts failed sign-ins from it (so the count holds across restarts and web processes). Session first, never
commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from storage.models import AuditEvent, utcnow

DETAIL_CHARS = 500
"""What a detail value may hold: the log records what happened, never a payload someone sent."""


def record(session: Session, action: str, actor: str | None = None, target: str | None = None,
           client: str | None = None, detail: dict | None = None) -> AuditEvent:
    event = AuditEvent(created_at=utcnow(), action=action, actor=(actor or None) and actor[:64],
                       target=(target or None) and str(target)[:300], client=(client or None) and client[:100],
                       detail={k: str(v)[:DETAIL_CHARS] for k, v in detail.items()} if detail else None)
    session.add(event)
    session.flush()
    return event


def recent(session: Session, limit: int = 200, actor: str | None = None,
           action: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(session.scalars(query))


def count_since(session: Session, action: str, since: datetime, actor: str | None = None,
                client: str | None = None) -> int:
    """How many `action` events since `since` by `actor` or from `client` (either matches)."""
    who = [column == value for column, value in ((AuditEvent.actor, actor), (AuditEvent.client, client)) if value]
    if not who:
        return 0
    return session.scalar(select(func.count(AuditEvent.id)).where(
        AuditEvent.action == action, AuditEvent.created_at >= since, or_(*who))) or 0


def oldest_since(session: Session, action: str, since: datetime, actor: str | None = None,
                 client: str | None = None) -> datetime | None:
    """When the oldest `action` event since `since` by `actor` or from `client` happened (for "try again in N s")."""
    who = [column == value for column, value in ((AuditEvent.actor, actor), (AuditEvent.client, client)) if value]
    if not who:
        return None
    return session.scalar(select(func.min(AuditEvent.created_at)).where(
        AuditEvent.action == action, AuditEvent.created_at >= since, or_(*who)))
