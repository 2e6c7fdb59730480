"""A verb that mirrors one API endpoint: its arguments carry the endpoint's parameter names, so the remote mode
sends them as they are and the parity test (tests/app/web/test_parity.py) checks them against the endpoint's signature.
`local` is the operator's way to do the same on the studio's machine; None: only a running studio can do it."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED = object()


@dataclass(frozen=True)
class Arg:
    name: str
    """The endpoint's parameter name (also the option's: --base-model for base_model)."""
    help: str = ""
    type: Callable = str
    default: Any = REQUIRED
    """REQUIRED: a positional argument; (): positionals, none or more; otherwise an option with this default."""
    choices: tuple = ()
    many: bool = False
    """A list: positionals take one or more values; an option is repeated."""
    read: str = ""
    """How the shell's value becomes the endpoint's: 'file' (the file's text), 'spec' (a JSON or YAML spec file as
    JSON text), 'json' (a JSON file or JSON text), 'secret' (from the env var named by `env`, else a prompt)."""
    env: str = ""
    api: bool = True
    """False: for the shell only (such as --out), never sent."""


@dataclass(frozen=True)
class Verb:
    name: str
    endpoint: str
    help: str
    args: tuple[Arg, ...] = ()
    local: Callable[..., Any] | None = None
    """The operator's implementation: local(studio, **values) -> the endpoint's answer."""
    download: bool = False
    """The answer is a file: saved under --out."""
    extra: dict = field(default_factory=dict)


def add_verb(commands, verb: Verb, func: Callable | None) -> None:
    """The verb's subcommand; `func` runs it as the operator (None: only with --url)."""
    parser = commands.add_parser(verb.name, help=verb.help, description=verb.help)
    for arg in verb.args:
        _add_argument(parser, arg)
    if verb.download:
        parser.add_argument("--out", default=".", help="the folder to save the file in (default: here)")
    parser.set_defaults(func=func, endpoint=verb.endpoint, verb=verb,
                        to_api=lambda args, verb=verb: api_values(verb, args))


def _add_argument(parser: argparse.ArgumentParser, arg: Arg) -> None:
    kinds = {"type": arg.type} if arg.type is not bool else {}
    if arg.choices:
        kinds["choices"] = arg.choices
    help_text = arg.help + (f" (env {arg.env}, else a prompt; never an argument)" if arg.read == "secret" else "")
    if arg.read == "secret":
        return  # never on the command line: `ps` and the shell's history would show it
    if arg.default is REQUIRED or arg.default == ():  # () : positional, none or more
        many = ("+" if arg.default is REQUIRED else "*") if arg.many else None
        parser.add_argument(arg.name, nargs=many, help=help_text, **kinds)
        return
    flag = "--" + arg.name.replace("_", "-")
    if arg.type is bool:
        parser.add_argument(flag, dest=arg.name, default=arg.default, action=argparse.BooleanOptionalAction,
                            help=help_text)
    elif arg.many:
        parser.add_argument(flag, dest=arg.name, default=[], action="append", help=help_text, **kinds)
    else:
        parser.add_argument(flag, dest=arg.name, default=arg.default, help=help_text, **kinds)


class Refused(Exception):
    """The shell's input itself is unusable (a missing file, not JSON): exit status 2."""


def api_values(verb: Verb, args: argparse.Namespace) -> dict:
    """The endpoint's arguments, by name, from the parsed command line."""
    return {arg.name: _read(arg, getattr(args, arg.name, None)) for arg in verb.args if arg.api}


def _read(arg: Arg, value):
    if arg.read == "secret":
        return os.environ.get(arg.env) or getpass.getpass(f"{arg.name.replace('_', ' ')}: ")
    if arg.read == "file":
        return _text(value, arg.name)
    if arg.read == "spec":
        return json.dumps(read_spec_file(Path(value)))
    if arg.read == "json":
        text = value if value.lstrip().startswith(("[", "{")) else _text(value, arg.name)  # JSON itself, or a file
        try:
            return json.loads(text)
        except ValueError as error:
            raise Refused(f"error: {arg.name}: not valid JSON: {error}") from None
    return value


def _text(path: str, name: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise Refused(f"error: {name}: cannot read {path}: {error}") from None


def read_spec_file(path: Path) -> dict:
    """A spec (or a preset) from a JSON or YAML file, as a mapping; an unusable file is Refused, naming why."""
    import yaml

    from jobs.data.readers import parse_json_text
    from jobs.spec import EMPTY_SPEC

    yaml_file = path.suffix.lower() in (".yaml", ".yml")
    try:
        text = path.read_text()
        raw = yaml.safe_load(text) if yaml_file else parse_json_text(text)
    except (FileNotFoundError, IsADirectoryError):
        raise Refused(f"error: no such spec file: {path}") from None
    except (ValueError, RecursionError, yaml.YAMLError) as error:  # not JSON/YAML, absurd nesting, not UTF-8
        raise Refused(f"error: {path} is not valid {'YAML' if yaml_file else 'JSON'}: {error}") from None
    if not isinstance(raw, dict):
        raise Refused(f"error: {path} must hold a mapping of spec fields")
    if raw == {}:
        raise Refused(f"error: the spec in {path} {EMPTY_SPEC}")
    return raw
