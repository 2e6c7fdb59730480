"""Each person's secrets (a hub token, an API key), already encrypted or hashed by the caller: this layer never sees
one in clear. Looked up by an explicit owner, never by the acting scope: an admin sees everyone's rows elsewhere, but
a secret is only ever its owner's; an API key's hash is looked up to learn whose it is. Session first, never
commits."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import Secret, utcnow


def get_secret(session: Session, owner: str, kind: str) -> Secret | None:
    return session.scalars(select(Secret).where(Secret.owner == owner, Secret.kind == kind)).first()


def owner_of(session: Session, kind: str, sealed: str) -> str | None:
    """The owner of the secret of `kind` stored as `sealed` (an API key's hash), or None."""
    return session.scalars(select(Secret.owner).where(Secret.kind == kind, Secret.ciphertext == sealed)).first()


def put_secret(session: Session, owner: str, kind: str, ciphertext: str, hint: str | None) -> Secret:
    """Store `owner`'s secret of `kind`, replacing the one they had."""
    secret = get_secret(session, owner, kind)
    if secret is None:
        secret = Secret(owner=owner, kind=kind, created_at=utcnow())
        session.add(secret)
    secret.ciphertext, secret.hint, secret.updated_at = ciphertext, hint, utcnow()
    session.flush()
    return secret


def delete_secret(session: Session, owner: str, kind: str) -> bool:
    """Forget `owner`'s secret of `kind`; whether there was one."""
    return session.execute(delete(Secret).where(Secret.owner == owner, Secret.kind == kind)).rowcount > 0
