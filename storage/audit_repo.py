"""The audit log: sign-ins and failed ones, account changes, hub pushes, deletions. Admins read it; the login limit
counts failed sign-ins from it (so the count holds across restarts and web processes). Session first, never
commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
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


def _matching(action: str, since: datetime, actor: str | None, client: str | None) -> list:
    where = [AuditEvent.action == action, AuditEvent.created_at >= since]
    if actor is not None:
        where.append(AuditEvent.actor == actor[:64])
    if client is not None:
        where.append(AuditEvent.client == client[:100])
    return where


def count_since(session: Session, action: str, since: datetime, actor: str | None = None,
                client: str | None = None) -> int:
    """How many `action` events since `since`, by `actor` and from `client` where given (both must match)."""
    return session.scalar(select(func.count(AuditEvent.id)).where(*_matching(action, since, actor, client))) or 0


def oldest_since(session: Session, action: str, since: datetime, actor: str | None = None,
                 client: str | None = None) -> datetime | None:
    """When the oldest of those events happened (for "try again in N s")."""
    return session.scalar(select(func.min(AuditEvent.created_at)).where(*_matching(action, since, actor, client)))
