"""As whom every request runs.

Without accounts the studio listens on 127.0.0.1 only and its one person (`local`) owns everything, no sign-in.
Once one account exists, every page and API call signs in (app/web/gate.py, app/web/guard.py: the studio's own sessions,
checked against salted argon2id hashes in the ledger), and each request runs as its person: the repositories then
show them only their own jobs, datasets, adapters, presets, votes and suites (storage/access.py); an admin sees
everyone's. The accounts themselves are managed with `python -m app users` (app/account/users_cli.py)."""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
import typing

import gradio as gr

from app.web.safe_text import escaped
from jobs.studio import Studio
from storage import users_repo
from storage.access import LOCAL_OWNER, Person, acting_as

log = logging.getLogger("app")


class SignInFirst(gr.Error):
    """A request that reached a handler with no signed-in person (the front door should have stopped it)."""

    def __init__(self) -> None:
        super().__init__("Sign in first: your session has ended.", print_exception=False)


def accounts_exist(studio: Studio) -> bool:
    with studio.db.read() as session:
        return users_repo.accounts_exist(session)


def person_for(studio: Studio, username: str | None) -> Person:
    """Whom a request runs as: the signed-in user; with no accounts, the local person (who may do everything).
    Raises SignInFirst for a request that names no active, enabled person: it never runs as nobody."""
    with studio.db.read() as session:
        if not users_repo.accounts_exist(session):
            return Person(LOCAL_OWNER, admin=True)
        user = users_repo.get_user(session, username) if username else None
    if user is None or user.disabled_at is not None:
        raise SignInFirst()
    return Person(user.name, admin=user.is_admin)


# --- every event handler runs as the person who sent the request ---------------------------------------------
def guard_events(app: gr.Blocks, studio: Studio) -> None:
    """Wrap every handler of `app` (UI events and API endpoints alike) so it runs as the request's person, and an
    unexpected error shows a non-admin an incident number instead of the exception's text."""
    for block_fn in app.fns.values():
        if block_fn.fn is not None and not getattr(block_fn.fn, "runs_as_person", False):
            block_fn.fn = _as_person(block_fn.fn, studio)


def _as_person(fn, studio: Studio):
    signature = inspect.signature(fn)
    wants_request = any(p.annotation in (gr.Request, "gr.Request") for p in signature.parameters.values())

    def split(args, kwargs):
        request = next((a for a in args if isinstance(a, gr.Request)), kwargs.get("request"))
        if not wants_request:  # the request was added for us; the handler does not take it
            args = [a for a in args if not isinstance(a, gr.Request)]
            kwargs = {k: v for k, v in kwargs.items() if k != "request"}
        return person_for(studio, getattr(request, "username", None)), args, kwargs

    if inspect.isgeneratorfunction(fn):
        def wrapper(*args, **kwargs):
            person, args, kwargs = split(args, kwargs)
            steps = fn(*args, **kwargs)
            while True:  # each step may run on another thread: act as the person around every one
                with acting_as(person), _shown_to(person):
                    try:
                        item = next(steps)
                    except StopIteration:
                        return
                yield item
    else:
        def wrapper(*args, **kwargs):
            person, args, kwargs = split(args, kwargs)
            with acting_as(person), _shown_to(person):
                return fn(*args, **kwargs)

    functools.update_wrapper(wrapper, fn)
    del wrapper.__wrapped__  # Gradio must see the signature below, not the handler's
    # Gradio injects the request by the hint of a positional parameter; the wrapper itself takes only *args, so it
    # always states one, and its hints as objects (a handler's string hint would be evaluated in this module).
    hints = _resolved_hints(fn)
    if wants_request:
        wrapper.__signature__ = signature
        wrapper.__annotations__ = hints
    else:  # first: Gradio injects a request only into a positional parameter, before any *args
        extra = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
        wrapper.__signature__ = signature.replace(parameters=[extra, *signature.parameters.values()])
        wrapper.__annotations__ = {**hints, "request": gr.Request}
    wrapper.runs_as_person = True
    return wrapper


def _resolved_hints(fn) -> dict:
    """The handler's type hints as objects: Gradio evaluates string hints in the wrapper's module, where a name such
    as FileData from the handler's module would not resolve."""
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):
        return dict(getattr(fn, "__annotations__", {}))


class _shown_to:
    """Around a handler: a bug's text (paths, SQL) reaches only admins; others get an incident number that the
    log holds with the traceback."""

    def __init__(self, person: Person) -> None:
        self.person = person

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if isinstance(error, gr.Error) and not getattr(error, "escaped", False):
            # Gradio renders an error's message as HTML, and messages quote what people typed.
            shown = gr.Error(escaped(error.message), duration=error.duration, visible=error.visible,
                             title=escaped(error.title), print_exception=False)
            shown.escaped = True
            raise shown from None
        if error is None or isinstance(error, gr.Error) or self.person.admin or not isinstance(error, Exception):
            return False
        incident = secrets.token_hex(4)
        log.error("incident %s (user %s)", incident, self.person.name, exc_info=(kind, error, traceback))
        shown = gr.Error(f"Something went wrong (incident {incident}); an admin can find the details in the studio's "
                         f"log.", print_exception=False)
        shown.escaped = True
        raise shown from None
