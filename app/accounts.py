"""Accounts: who may sign in, as whom every request runs, and `python -m app users add|remove|list`.

Without accounts the studio listens on 127.0.0.1 only and its one person (`local`) owns everything, no login.
Once one account exists, every page and API call signs in (Gradio's login, checked against salted argon2id hashes
in the ledger), and each request runs as its person: the repositories then show them only their own jobs, datasets,
adapters, votes and suites (storage/access.py); an admin sees everyone's."""

from __future__ import annotations

import argparse
import functools
import getpass
import inspect
import logging
import re
import secrets
import sys
import typing

import gradio as gr
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from jobs.studio import Studio
from storage import users_repo
from storage.access import LOCAL_OWNER, Person, acting_as

log = logging.getLogger("app")
PASSWORDS = PasswordHasher()  # argon2id; a fresh random salt in every hash
USER_NAME = re.compile(r"[a-z][a-z0-9._-]{1,31}")
MIN_PASSWORD = 10
_DUMMY_HASH = PASSWORDS.hash(secrets.token_hex(16))  # an unknown name costs the same time as a wrong password


def accounts_exist(studio: Studio) -> bool:
    with studio.db.read() as session:
        return users_repo.accounts_exist(session)


def check_login(studio: Studio, name: str, password: str) -> bool:
    """Gradio's `auth` callable: the name is an active user and the password matches its hash."""
    with studio.db.read() as session:
        user = users_repo.get_user(session, name or "")
        stored = user.password_hash if user is not None else None
    try:
        PASSWORDS.verify(stored or _DUMMY_HASH, password or "")
    except (VerificationError, InvalidHashError):
        return False
    return stored is not None


def person_for(studio: Studio, username: str | None) -> Person:
    """Whom a request runs as: the signed-in user; with no accounts, the local person (who may do everything)."""
    if not username:
        # No login happened: either there are no accounts (the local person), or this request slipped past the
        # login; then it runs as a name no row has, and sees nothing.
        return Person(LOCAL_OWNER, admin=True) if not accounts_exist(studio) else Person("", admin=False)
    with studio.db.read() as session:
        user = users_repo.get_user(session, username)
    return Person(user.name, admin=user.is_admin) if user is not None else Person("", admin=False)


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
        if error is None or isinstance(error, gr.Error) or self.person.admin or not isinstance(error, Exception):
            return False
        incident = secrets.token_hex(4)
        log.error("incident %s (user %s)", incident, self.person.name, exc_info=(kind, error, traceback))
        raise gr.Error(f"Something went wrong (incident {incident}); an admin can find the details in the studio's "
                       f"log.", print_exception=False) from None


# --- python -m app users add|remove|list ------------------------------------------------------------------------
def name_problem(name: str) -> str | None:
    if USER_NAME.fullmatch(name or ""):
        return None
    return "a user name is 2 to 32 lowercase letters, digits, '.', '_' or '-', starting with a letter"


def users_command(studio: Studio, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m app users", description="Manage the studio's accounts.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a person who signs in")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="sees and manages everyone's work, and the queue's order")
    add.add_argument("--max-queued-jobs", type=int, default=None, help="jobs queued or running at once (default: "
                     "STUDIO_MAX_QUEUED_JOBS)")
    add.add_argument("--max-upload-mb", type=int, default=None, help="largest dataset upload (default: "
                     "STUDIO_MAX_UPLOAD_BYTES)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    remove = commands.add_parser("remove", help="stop a person signing in (their work stays; admins see it)")
    remove.add_argument("name")
    commands.add_parser("list", help="list the people who may sign in")
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list(studio)
    if args.command == "remove":
        return _remove(studio, args.name)
    return _add(studio, args)


def _list(studio: Studio) -> int:
    with studio.db.read() as session:
        users = users_repo.active_users(session)
    if not users:
        print("no accounts: the studio runs as one local person, on 127.0.0.1 only")
    for user in users:
        limits = [f"max {user.max_queued_jobs} queued jobs" if user.max_queued_jobs is not None else "",
                  f"uploads up to {user.max_upload_bytes >> 20} MB" if user.max_upload_bytes is not None else ""]
        extras = ", ".join(part for part in ["admin" if user.is_admin else "", *limits] if part)
        print(f"{user.name}{f' ({extras})' if extras else ''}, since {user.created_at:%Y-%m-%d}")
    return 0


def _remove(studio: Studio, name: str) -> int:
    with studio.db.write() as session:
        removed = users_repo.remove_user(session, name)
    if not removed:
        print(f"error: no user named '{name}'", file=sys.stderr)
        return 2
    print(f"removed {name}: they can no longer sign in; their jobs, datasets and adapters stay (admins see them)")
    return 0


def _add(studio: Studio, args) -> int:
    problems = [f"name: {problem}"] if (problem := name_problem(args.name)) else []
    for flag, value in (("--max-queued-jobs", args.max_queued_jobs), ("--max-upload-mb", args.max_upload_mb)):
        if value is not None and value < 1:
            problems.append(f"{flag}: at least 1")
    with studio.db.read() as session:
        if not problems and users_repo.name_ever_used(session, args.name):
            problems.append(f"name: '{args.name}' is (or was) taken; names are never reused")
    password = _read_password(args.password_stdin)
    if len(password) < MIN_PASSWORD:
        problems.append(f"password: at least {MIN_PASSWORD} characters")
    if problems:
        print("error: " + "\n       ".join(problems), file=sys.stderr)
        return 2
    upload = args.max_upload_mb << 20 if args.max_upload_mb is not None else None
    with studio.db.write() as session:
        users_repo.add_user(session, args.name, PASSWORDS.hash(password), args.admin, args.max_queued_jobs, upload)
    print(f"added {args.name}{' (admin)' if args.admin else ''}. A running studio asks everyone to sign in once "
          f"restarted")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    return first if getpass.getpass("again: ") == first else ""
