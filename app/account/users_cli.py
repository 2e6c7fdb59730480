"""`python -m app users add|remove|disable|enable|passwd|list|audit`: the operator manages accounts on the studio's
own machine. Every change is in the audit log, and every change that takes a person's access away (remove, disable,
a new password) ends their sessions at once: their next request is refused, in every web process."""

from __future__ import annotations

import argparse
import getpass
import re
import sys

from app.web.gate import PASSWORDS
from jobs.studio import Studio
from storage import audit_repo, jobs_repo, sessions_repo, users_repo

USER_NAME = re.compile(r"[a-z][a-z0-9._-]{1,31}")
MIN_PASSWORD = 10


def name_problem(name: str) -> str | None:
    if USER_NAME.fullmatch(name or ""):
        return None
    return "a user name is 2 to 32 lowercase letters, digits, '.', '_' or '-', starting with a letter"


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"password: at least {MIN_PASSWORD} characters"
    if len(password) > 1024:
        return "password: at most 1024 characters"
    return None


def users_command(studio: Studio, argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        return _list(studio)
    if args.command == "audit":
        return _audit(studio, args.limit)
    if args.command == "add":
        return _add(studio, args)
    if args.command == "passwd":
        return _passwd(studio, args.name, args.password_stdin)
    return _change_access(studio, args.command, args.name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app users", description="Manage the studio's accounts.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a person who signs in")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="sees and manages everyone's work, and the queue's order")
    add.add_argument("--max-queued-jobs", type=int, default=None, help="jobs queued or running at once (default: "
                     "STUDIO_MAX_QUEUED_JOBS)")
    add.add_argument("--max-upload-mb", type=int, default=None, help="largest dataset upload (default: "
                     "STUDIO_MAX_UPLOAD_BYTES)")
    add.add_argument("--max-storage-mb", type=int, default=None, help="disk their datasets may take together "
                     "(default: STUDIO_MAX_STORAGE_BYTES)")
    add.add_argument("--max-datasets", type=int, default=None, help="datasets they may keep (default: "
                     "STUDIO_MAX_DATASETS)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    remove = commands.add_parser("remove", help="stop a person signing in for good: their sessions end and their "
                                 "queued and running jobs are cancelled; their datasets and adapters stay (admins "
                                 "see them)")
    remove.add_argument("name")
    disable = commands.add_parser("disable", help="stop a person signing in for now: their sessions end; their "
                                  "jobs and files stay as they are")
    disable.add_argument("name")
    enable = commands.add_parser("enable", help="let a disabled person sign in again")
    enable.add_argument("name")
    passwd = commands.add_parser("passwd", help="set a person's password (their sessions end)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    commands.add_parser("list", help="list the people who may sign in")
    audit = commands.add_parser("audit", help="the audit log, newest first")
    audit.add_argument("--limit", type=int, default=50)
    return parser


def _list(studio: Studio) -> int:
    with studio.db.read() as session:
        users = users_repo.active_users(session)
    if not users:
        print("no accounts: the studio runs as one local person, on 127.0.0.1 only")
    for user in users:
        limits = [f"max {user.max_queued_jobs} queued jobs" if user.max_queued_jobs is not None else "",
                  f"uploads up to {user.max_upload_bytes >> 20} MB" if user.max_upload_bytes is not None else "",
                  f"datasets up to {user.max_storage_bytes >> 20} MB" if user.max_storage_bytes is not None else "",
                  f"at most {user.max_datasets} datasets" if user.max_datasets is not None else "",
                  "disabled" if user.disabled_at is not None else ""]
        extras = ", ".join(part for part in ["admin" if user.is_admin else "", *limits] if part)
        print(f"{user.name}{f' ({extras})' if extras else ''}, since {user.created_at:%Y-%m-%d}")
    return 0


def _audit(studio: Studio, limit: int) -> int:
    with studio.db.read() as session:
        events = audit_repo.recent(session, max(1, min(limit, 10_000)))
    for event in events:
        where = f" from {event.client}" if event.client else ""
        target = f" {event.target}" if event.target else ""
        print(f"{event.created_at:%Y-%m-%d %H:%M:%S} {event.actor or '(operator)'} {event.action}{target}{where}")
    return 0


def _change_access(studio: Studio, command: str, name: str) -> int:
    with studio.db.write() as session:
        if command == "remove":
            cancelled = [job_id for job_id in jobs_repo.active_job_ids_of(session, name)
                         if jobs_repo.request_cancel(session, job_id)]
            found = users_repo.remove_user(session, name)
        else:
            cancelled, found = [], users_repo.set_disabled(session, name, command == "disable")
        ended = sessions_repo.end_all(session, name) if found and command != "enable" else 0
        if found:
            audit_repo.record(session, f"user_{command}", None, name, detail={"sessions_ended": ended,
                                                                             "jobs_cancelled": len(cancelled)})
    if not found:
        print(f"error: no user named '{name}'", file=sys.stderr)
        return 2
    if command == "remove":
        jobs = f"; {len(cancelled)} queued or running job(s) cancelled" if cancelled else ""
        print(f"removed {name}: they can no longer sign in ({ended} session(s) ended{jobs}); their datasets and "
              f"adapters stay (admins see them)")
    elif command == "disable":
        print(f"disabled {name}: {ended} session(s) ended; `users enable {name}` lets them sign in again")
    else:
        print(f"enabled {name}: they may sign in again")
    return 0


def _add(studio: Studio, args) -> int:
    problems = [f"name: {problem}"] if (problem := name_problem(args.name)) else []
    for flag, value in (("--max-queued-jobs", args.max_queued_jobs), ("--max-upload-mb", args.max_upload_mb),
                        ("--max-storage-mb", args.max_storage_mb), ("--max-datasets", args.max_datasets)):
        if value is not None and value < 1:
            problems.append(f"{flag}: at least 1")
    with studio.db.read() as session:
        if not problems and users_repo.name_ever_used(session, args.name):
            problems.append(f"name: '{args.name}' is (or was) taken; names are never reused")
    password = _read_password(args.password_stdin)
    if problem := password_problem(password):
        problems.append(problem)
    if problems:
        print("error: " + "\n       ".join(problems), file=sys.stderr)
        return 2
    upload = args.max_upload_mb << 20 if args.max_upload_mb is not None else None
    storage = args.max_storage_mb << 20 if args.max_storage_mb is not None else None
    with studio.db.write() as session:
        users_repo.add_user(session, args.name, PASSWORDS.hash(password), args.admin, args.max_queued_jobs, upload,
                            storage, args.max_datasets)
        audit_repo.record(session, "user_add", None, args.name, detail={"admin": args.admin})
    print(f"added {args.name}{' (admin)' if args.admin else ''}. From now on everyone signs in, also in a studio "
          f"already running")
    return 0


def _passwd(studio: Studio, name: str, from_stdin: bool) -> int:
    password = _read_password(from_stdin)
    if problem := password_problem(password):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    with studio.db.write() as session:
        found = users_repo.set_password_hash(session, name, PASSWORDS.hash(password))
        ended = sessions_repo.end_all(session, name) if found else 0
        if found:
            audit_repo.record(session, "user_passwd", None, name, detail={"sessions_ended": ended})
    if not found:
        print(f"error: no user named '{name}'", file=sys.stderr)
        return 2
    print(f"new password set for {name}; {ended} session(s) ended")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    return first if getpass.getpass("again: ") == first else ""
