"""People who sign in. Session first, never commits (the caller does). Hashing lives in app/web/accounts.py."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.access import current_person
from storage.models import User, utcnow


def get_user(session: Session, name: str) -> User | None:
    """The active user named `name` (a removed one is not returned)."""
    return session.scalars(select(User).where(User.name == name, User.removed_at.is_(None))).first()


def name_ever_used(session: Session, name: str) -> bool:
    return session.scalars(select(User.id).where(User.name == name)).first() is not None


def add_user(session: Session, name: str, password_hash: str, admin: bool = False, max_queued_jobs: int | None = None,
             max_upload_bytes: int | None = None, max_storage_bytes: int | None = None,
             max_datasets: int | None = None) -> User:
    user = User(name=name, password_hash=password_hash, is_admin=admin, max_queued_jobs=max_queued_jobs,
                max_upload_bytes=max_upload_bytes, max_storage_bytes=max_storage_bytes, max_datasets=max_datasets,
                created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def remove_user(session: Session, name: str) -> bool:
    """Stop `name` signing in; the row stays, so the name is never handed to someone else. False: no such user."""
    user = get_user(session, name)
    if user is None:
        return False
    user.password_hash, user.removed_at = None, utcnow()
    return True


def set_disabled(session: Session, name: str, disabled: bool) -> bool:
    """Stop (or let again) `name` signing in, keeping everything else. False: no such user."""
    user = get_user(session, name)
    if user is None:
        return False
    user.disabled_at = utcnow() if disabled else None
    return True


def set_password_hash(session: Session, name: str, password_hash: str) -> bool:
    user = get_user(session, name)
    if user is None:
        return False
    user.password_hash = password_hash
    return True


def active_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).where(User.removed_at.is_(None)).order_by(User.name)))


def accounts_exist(session: Session) -> bool:
    return session.scalars(select(User.id).where(User.removed_at.is_(None)).limit(1)).first() is not None


def limited_user(session: Session, lock: bool = False) -> User | None:
    """The signed-in person's row when limits apply to them (a non-admin with an account), else None. `lock`: held
    until the transaction ends (PostgreSQL; SQLite's writing transactions are serialized whole)."""
    person = current_person()
    if person is None or person.admin:
        return None
    query = select(User).where(User.name == person.name, User.removed_at.is_(None))
    return session.scalars(query.with_for_update() if lock else query).first()


def queue_order_locked() -> bool:
    """Whether the person acting may not reorder the shared queue (priorities, moves): only admins may, once
    accounts exist; a person's own jobs run in the order they were submitted."""
    person = current_person()
    return person is not None and not person.admin
