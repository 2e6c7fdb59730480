"""Command line: the same actions as the browser and the API (docs/api.md, "CLI").

    python -m jobs VERB ...                          # the operator, on the studio's machine (the data dir)
    python -m jobs --url URL --user NAME VERB ...    # a person, against a running studio (STUDIO_PASSWORD or a prompt)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jobs.cli import dataset_verbs, jobs_verbs
from jobs.cli.verb import Refused, add_verb, api_values
from jobs.cli.verbs import VERBS

URL_ENV, USER_ENV = "STUDIO_URL", "STUDIO_USER"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs", description="The studio's actions from a shell.")
    parser.add_argument("--url", default=os.environ.get(URL_ENV, ""),
                        help=f"a running studio to act on as a person (env {URL_ENV}); without it: this machine's "
                             "data dir, as the operator")
    parser.add_argument("--user", default=os.environ.get(USER_ENV, ""),
                        help=f"whom to sign in as with --url (env {USER_ENV}); the password comes from "
                             "STUDIO_PASSWORD or a prompt")
    commands = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    jobs_verbs.add_commands(commands)
    dataset_verbs.add_commands(commands)
    for verb in VERBS:
        add_verb(commands, verb, run_local if verb.local else None)
    return parser


def run_local(args: argparse.Namespace) -> int:
    """A verb as the operator: its endpoint's domain call on this machine's studio, refusals in the same words."""
    from jobs.studio import open_studio

    values = api_values(args.verb, args)
    try:
        answer = args.verb.local(open_studio(), **values)
    except LookupError as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)  # KeyError quotes its str
        return 1
    except ValueError as error:  # SpecError, DatasetError, PresetError, ... each names its field
        problems = getattr(error, "problems", None)
        text = error.as_text() if hasattr(error, "as_text") else "\n".join(map(str, problems or [error]))
        print(text, file=sys.stderr)
        return 2
    return show(args, answer)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "worker":
        args.worker_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.url:
            return _remote(args)
        if getattr(args, "func", None) is None:
            print(f"error: `{args.command}` needs a running studio: pass --url (or set {URL_ENV}) and --user",
                  file=sys.stderr)
            return 2
        return args.func(args)
    except Refused as error:
        print(error, file=sys.stderr)
        return 2


def _remote(args: argparse.Namespace) -> int:
    from jobs.cli.remote import Remote, SignInFailed

    if getattr(args, "endpoint", None) is None:
        print(f"error: `{args.command}` runs on the studio's machine only (no --url)", file=sys.stderr)
        return 2
    try:
        remote = Remote(args.url, args.user)
    except SignInFailed as error:
        print(error, file=sys.stderr)
        return 2
    try:
        values = args.prepare_remote(args, remote) if hasattr(args, "prepare_remote") else args.to_api(args)
        answer = remote.call(args.endpoint, values)
    except Refused:
        raise  # the shell's own input: said as such by main()
    except Exception as error:  # noqa: BLE001 (the studio's refusal, in its words, whatever the client wraps it in)
        print(f"error: {error}", file=sys.stderr)
        return 2
    return args.show_remote(args, answer, remote) if hasattr(args, "show_remote") else show(args, answer)


def show(args: argparse.Namespace, answer) -> int:
    """An endpoint's answer on stdout: text as it is, anything else as JSON; a file saved under --out."""
    from jobs.cli.operator import save_file

    verb = getattr(args, "verb", None)
    if verb is not None and verb.download:
        answer = save_file(str(answer), args.out)
    print(answer if isinstance(answer, str) else json.dumps(answer, indent=2, default=str))
    return 0
