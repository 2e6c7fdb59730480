"""Dataset commands of `python -m jobs`: list, import a file or a hub dataset (format and columns overridable, as in
the Datasets tab), show stats for a base model, rename, delete. Refusals list every problem and exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs.data.errors import DatasetError
from jobs.data.formats import FORMATS, Mapping
from jobs.data.store import delete_dataset, import_dataset, rename_dataset
from jobs.spec import DEMO_BASE_MODEL, field_default
from jobs.studio import open_studio
from storage import catalog


def mapping_from_args(format_name: str | None, columns: list[str]) -> Mapping | None:
    """--format F --column role=column ... as a mapping (None: let the studio propose one)."""
    pairs, bad = {}, []
    for item in columns:
        role, sep, column = item.partition("=")
        if sep and role.strip() and column.strip():
            pairs[role.strip()] = column.strip()
        else:
            bad.append(item)
    problems = [f"--column: '{item}' is not role=column (e.g. instruction=question)" for item in bad]
    if pairs and not format_name:
        problems.append("--format: name the format the --column roles belong to")
    if problems:
        raise DatasetError(problems)
    return Mapping(format_name, pairs) if format_name else None


def _refused(error: DatasetError) -> int:
    print(error.as_text(), file=sys.stderr)
    return 2


def cmd_datasets(args: argparse.Namespace) -> int:
    studio = open_studio()
    with studio.db.read() as session:
        datasets = catalog.list_datasets(session)
    print(f"{'name':<24} {'format':<10} {'rows':>7}  {'sha256':<12}  mapping")
    for d in datasets:
        mapping = json.dumps(d.mapping["columns"]) if d.mapping else ""
        print(f"{d.name:<24} {d.format:<10} {d.rows:>7}  {d.sha256[:12]}  {mapping}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    studio = open_studio()
    name = args.name or Path(args.file).stem
    try:
        imported = import_dataset(studio, Path(args.file), name, mapping_from_args(args.format, args.column))
    except DatasetError as error:
        return _refused(error)
    print(imported.message(name))
    return 0


def cmd_import_hub(args: argparse.Namespace) -> int:
    from jobs.data.hub import import_hub_dataset

    studio = open_studio()
    try:
        imported = import_hub_dataset(studio, args.hub_id, args.name, args.config, args.split, args.revision,
                                      mapping_from_args(args.format, args.column))
    except DatasetError as error:
        return _refused(error)
    print(imported.message(args.name or args.hub_id))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from jobs.data.preview import NoTokenizer, dataset_view

    try:
        stats = dataset_view(open_studio(), args.name, args.base_model, args.max_length,
                             not args.all_tokens, 0)[0]
    except NoTokenizer:
        print(f"error: the tokenizer of '{args.base_model}' is not on this machine yet", file=sys.stderr)
        return 2
    except LookupError:
        print(f"error: no dataset named '{args.name}'", file=sys.stderr)
        return 2
    print(json.dumps({**stats.summary(), "histogram": stats.histogram()}, indent=2))
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    try:
        rename_dataset(open_studio(), args.name, args.new_name)
    except DatasetError as error:
        return _refused(error)
    print(f"renamed {args.name} to {args.new_name}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    try:
        delete_dataset(open_studio(), args.name)
    except DatasetError as error:
        return _refused(error)
    print(f"deleted {args.name}")
    return 0


def _mapping_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="", help="the name to list it under (default: the file's or hub's name)")
    parser.add_argument("--format", choices=FORMATS, help="override the proposed format")
    parser.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN",
                        help="which column holds a role, e.g. instruction=question (repeat for each role)")


def _columns_json(args: argparse.Namespace) -> str:
    mapping = mapping_from_args(args.format, args.column)
    return json.dumps(mapping.columns) if mapping and mapping.columns else ""


def _import_to_api(args: argparse.Namespace) -> dict:
    from jobs.cli.remote import Upload

    return {"file": Upload(args.file), "name": args.name or Path(args.file).stem, "format": args.format or "",
            "columns": _columns_json(args)}


def _hub_to_api(args: argparse.Namespace) -> dict:
    return {"hub_id": args.hub_id, "name": args.name, "config": args.config, "split": args.split,
            "revision": args.revision, "format": args.format or "", "columns": _columns_json(args)}


def add_commands(commands) -> None:
    """Each dataset verb mirrors its endpoint (`endpoint`, `to_api`: what --url sends), as in jobs/cli."""
    commands.add_parser("datasets", help="list stored datasets").set_defaults(
        func=cmd_datasets, endpoint="list_datasets", to_api=lambda args: {})
    upload = commands.add_parser("import-dataset", help="import a JSONL, JSON, CSV or Parquet file as a dataset")
    upload.add_argument("file")
    _mapping_arguments(upload)
    upload.set_defaults(func=cmd_import, endpoint="import_dataset", to_api=_import_to_api)
    hub = commands.add_parser("import-hub", help="import a Hugging Face hub dataset's data files (needs internet; "
                                                 "never runs a dataset script; uses STUDIO_HF_TOKEN when set)")
    hub.add_argument("hub_id", help="owner/name or owner/name@revision: a dataset on the hub, never a folder here")
    hub.add_argument("--config", default="")
    hub.add_argument("--split", default="train")
    hub.add_argument("--revision", default="")
    _mapping_arguments(hub)
    hub.set_defaults(func=cmd_import_hub, endpoint="import_hub_dataset", to_api=_hub_to_api)
    stats = commands.add_parser("dataset-stats", help="a dataset's tokens, lengths and loss share for a base model")
    stats.add_argument("name")
    stats.add_argument("--base-model", default=DEMO_BASE_MODEL)
    stats.add_argument("--max-length", type=int, default=field_default("max_length"))
    stats.add_argument("--all-tokens", action="store_true", help="loss on every token (assistant-only loss off)")
    stats.set_defaults(func=cmd_stats, endpoint="dataset_stats", to_api=lambda args: {
        "name": args.name, "base_model": args.base_model, "max_length": args.max_length,
        "assistant_only_loss": not args.all_tokens})
    rename = commands.add_parser("rename-dataset", help="rename a dataset no queued or running job uses")
    rename.add_argument("name")
    rename.add_argument("new_name")
    rename.set_defaults(func=cmd_rename, endpoint="rename_dataset",
                        to_api=lambda args: {"name": args.name, "new_name": args.new_name})
    delete = commands.add_parser("delete-dataset", help="delete a dataset no queued or running job uses")
    delete.add_argument("name")
    delete.set_defaults(func=cmd_delete, endpoint="delete_dataset", to_api=lambda args: {"name": args.name})
