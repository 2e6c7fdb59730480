"""Who is asking, for every query the web app makes on someone's behalf.

The web app runs each request as its signed-in person (`acting_as`); the repositories then see only that person's
rows: jobs, datasets, adapters, votes, prompt suites, and what hangs off them (metrics, samples, events). Every
lookup by id or name goes through them, so another person's row is simply "not found". Workers, the reaper, the CLI
and an admin's requests run unscoped and see everything. Checks that must see every row whoever asks (a name
already taken, a dataset a queued job uses) wrap themselves in `everyone()`.

With no accounts (the studio on 127.0.0.1), the one local person owns everything as `local`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, true

LOCAL_OWNER = "local"
"""The owner of everything made without accounts (and of every row that predates them)."""


@dataclass(frozen=True)
class Person:
    name: str
    admin: bool = False


_ACTING: ContextVar[Person | None] = ContextVar("acting_as", default=None)
_EVERYONE: ContextVar[bool] = ContextVar("everyone", default=False)


@contextmanager
def acting_as(person: Person | None) -> Iterator[None]:
    """Run the block as `person` (None: unscoped, as a worker)."""
    token = _ACTING.set(person)
    try:
        yield
    finally:
        _ACTING.reset(token)


@contextmanager
def everyone() -> Iterator[None]:
    """See every row inside the block (uniqueness and in-use checks), whoever is asking."""
    token = _EVERYONE.set(True)
    try:
        yield
    finally:
        _EVERYONE.reset(token)


def current_person() -> Person | None:
    return _ACTING.get()


def scope_owner() -> str | None:
    """The owner whose rows queries may see; None: all rows (no one signed in here, an admin, or `everyone()`)."""
    person = _ACTING.get()
    if person is None or person.admin or _EVERYONE.get():
        return None
    return person.name


class NobodySignedIn(PermissionError):
    """A row would be made on behalf of no one: never let it get an empty owner."""


def new_owner() -> str:
    """Who owns a row made now: the person acting, else (workers, the CLI) the local owner."""
    person = _ACTING.get()
    if person is None:
        return LOCAL_OWNER
    if not person.name:
        raise NobodySignedIn("nobody is signed in: sign in first")
    return person.name


def visible(owner_column, public_when_null: bool = False) -> ColumnElement[bool]:
    """A WHERE clause: the rows the current scope may see. `public_when_null`: an owner-less row (a bundled
    dataset) is everyone's."""
    owner = scope_owner()
    if owner is None:
        return true()
    if public_when_null:
        return or_(owner_column == owner, owner_column.is_(None))
    return owner_column == owner

