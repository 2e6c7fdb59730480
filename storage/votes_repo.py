"""Blind votes: record one, read a base model's. Session first, never commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.access import new_owner, visible
from storage.models import Vote


def add_vote(session: Session, **fields) -> Vote:
    vote = Vote(**fields, owner=new_owner())
    session.add(vote)
    session.flush()
    return vote


def votes_for(session: Session, base_model: str) -> list[Vote]:
    query = select(Vote).where(Vote.base_model == base_model, visible(Vote.owner)).order_by(Vote.id)
    return list(session.scalars(query))
