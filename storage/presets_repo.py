"""Presets: named partial specs, each private to its owner unless an admin shared it with everyone. Session first,
never commits."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from storage.access import new_owner, visible
from storage.models import Preset, utcnow


def visible_presets(session: Session) -> list[Preset]:
    """The asker's own presets and the shared ones (an admin: everyone's), by owner then name."""
    query = select(Preset).where(or_(visible(Preset.owner), Preset.shared.is_(True)))
    return list(session.scalars(query.order_by(Preset.owner, Preset.name)))


def find_preset(session: Session, owner: str, name: str) -> Preset | None:
    """`owner`'s preset `name`, if the asker may see it (their own, a shared one, or any for an admin)."""
    return session.scalars(select(Preset).where(Preset.owner == owner, Preset.name == name,
                                                or_(visible(Preset.owner), Preset.shared.is_(True)))).first()


def put_preset(session: Session, name: str, fields: dict) -> Preset:
    """Create or replace the asker's own preset `name` (never anyone else's, admins included)."""
    owner = new_owner()
    preset = session.scalars(select(Preset).where(Preset.owner == owner, Preset.name == name)).first()
    now = utcnow()
    if preset is None:
        preset = Preset(name=name, owner=owner, fields=fields, shared=False, created_at=now, updated_at=now)
        session.add(preset)
    else:
        preset.fields, preset.updated_at = fields, now
    session.flush()
    return preset


def delete_preset(session: Session, preset: Preset) -> None:
    session.delete(preset)
