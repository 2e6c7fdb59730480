"""Sign-in sessions, kept in the ledger so that removing or disabling an account, changing a password or an expiry
ends them at once, for every web process. The cookie holds a random token; the table holds only its sha256, so a
copy of the database signs no one in. Session first, never commits."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import SignInSession, User, utcnow

TOUCH_EVERY_S = 60.0
"""How stale `last_seen_at` may get before a request writes it again: the idle limit is minutes to hours, so one
write a minute per session is plenty and keeps page loads read-only."""


@dataclass(frozen=True)
class Limits:
    idle_s: float
    """A session unused this long has ended."""
    max_s: float
    """A session this old has ended, however busy."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def start(session: Session, user_name: str, client: str | None, user_agent: str | None) -> str:
    """A new session for `user_name`; returns its token (for the cookie; never stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(SignInSession(token_hash=token_hash(token), user_name=user_name, created_at=now, last_seen_at=now,
                              client=(client or "")[:100] or None, user_agent=(user_agent or "")[:300] or None))
    session.flush()
    return token


def find(session: Session, token: str | None) -> SignInSession | None:
    if not token or len(token) > 200:
        return None
    return session.scalars(select(SignInSession).where(SignInSession.token_hash == token_hash(token))).first()


def is_live(row: SignInSession, limits: Limits, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return (now - row.last_seen_at <= timedelta(seconds=limits.idle_s)
            and now - row.created_at <= timedelta(seconds=limits.max_s))


def needs_touch(row: SignInSession, now: datetime | None = None) -> bool:
    return ((now or utcnow()) - row.last_seen_at).total_seconds() >= TOUCH_EVERY_S


def signed_in_user(session: Session, token: str | None, limits: Limits) -> User | None:
    """The active, enabled user a live session `token` belongs to; None for anything else."""
    row = find(session, token)
    if row is None or not is_live(row, limits):
        return None
    return session.scalars(select(User).where(User.name == row.user_name, User.removed_at.is_(None),
                                              User.disabled_at.is_(None))).first()


def touch(session: Session, token: str) -> None:
    row = find(session, token)
    if row is not None:
        row.last_seen_at = utcnow()


def end(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(SignInSession).where(SignInSession.token_hash == token_hash(token)))


def end_all(session: Session, user_name: str, keep_token: str | None = None) -> int:
    """End every session of `user_name` (but the one holding `keep_token`); returns how many ended."""
    query = delete(SignInSession).where(SignInSession.user_name == user_name)
    if keep_token:
        query = query.where(SignInSession.token_hash != token_hash(keep_token))
    return session.execute(query).rowcount or 0


def end_expired(session: Session, limits: Limits) -> int:
    """Drop sessions past either limit (they sign no one in already; this keeps the table small)."""
    now = utcnow()
    return session.execute(delete(SignInSession).where(
        (SignInSession.last_seen_at < now - timedelta(seconds=limits.idle_s))
        | (SignInSession.created_at < now - timedelta(seconds=limits.max_s)))).rowcount or 0


def sessions_of(session: Session, user_name: str) -> list[SignInSession]:
    return list(session.scalars(select(SignInSession).where(SignInSession.user_name == user_name)
                                .order_by(SignInSession.last_seen_at.desc())))
