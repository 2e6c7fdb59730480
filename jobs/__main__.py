"""Command line: the same actions as the browser and the API.

    python -m jobs submit SPEC.json [--priority N] [--wait]
    python -m jobs list
    python -m jobs cancel JOB_ID
    python -m jobs worker [--reap-interval S]     # a standalone worker (one per GPU)
    python -m jobs datasets | import-dataset FILE [--format F --column ROLE=COLUMN ...] | import-hub ID
                 | dataset-stats NAME [--base-model B --max-length N] | rename-dataset | delete-dataset
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from jobs.data import cli as dataset_cli
from jobs.data.errors import DatasetError
from jobs.data.readers import parse_json_text
from jobs.data.store import import_dataset
from jobs.spec import EMPTY_SPEC, SpecError
from jobs.studio import Studio, open_studio
from jobs.submit import cancel_job, submit_job
from storage import jobs_repo
from storage.models import JobStatus

WAIT_POLL_S = 0.5  # a DB read: cheap, and the CLI returns within half a second of the job ending
NO_WORKER_HINT_S = 20.0


class SpecRefused(Exception):
    """The spec file itself is unusable (missing, not JSON/YAML, not a mapping, empty): exit status 2."""


def _read_spec(path: Path) -> dict:
    """A spec (or a preset) from a JSON or YAML file."""
    yaml_file = path.suffix.lower() in (".yaml", ".yml")
    try:
        text = path.read_text()
        raw = yaml.safe_load(text) if yaml_file else parse_json_text(text)
    except (FileNotFoundError, IsADirectoryError):
        raise SpecRefused(f"error: no such spec file: {path}") from None
    except (ValueError, RecursionError, yaml.YAMLError) as error:  # not JSON/YAML, absurd nesting, not UTF-8
        raise SpecRefused(f"error: {path} is not valid {'YAML' if yaml_file else 'JSON'}: {error}") from None
    if not isinstance(raw, dict):
        raise SpecRefused(f"error: {path} must hold a mapping of spec fields")
    if raw == {}:
        raise SpecRefused(f"error: the spec in {path} {EMPTY_SPEC}")
    return raw


def _local_dataset(studio: Studio, raw: dict, spec_dir: Path) -> dict:
    """A spec run from a shell may name a dataset file; import it and refer to it by name."""
    dataset = raw.get("dataset")
    if not isinstance(dataset, str):
        return raw
    candidate = Path(dataset).expanduser()
    candidate = candidate if candidate.is_absolute() else spec_dir / candidate
    if not candidate.is_file() and Path(dataset).is_file():
        candidate = Path(dataset)
    if not candidate.is_file():
        return raw
    imported = import_dataset(studio, candidate, candidate.stem)
    print(f"dataset: {imported.message(candidate.stem)}")
    return {**raw, "dataset": imported.dataset.name}


def _wait(studio: Studio, job_id: int) -> int:
    started, last_line = time.monotonic(), ""
    hinted = False
    while True:
        with studio.db.read() as session:
            job = jobs_repo.get_job(session, job_id)
            loss = jobs_repo.latest_metric(session, job_id, "loss")
        line = f"job {job_id}: {job.status}"
        if job.total_steps:
            line += f" step {job.step}/{job.total_steps}"
        if loss is not None:
            line += f" loss {loss:.4f}"
        if line != last_line:
            print(line, flush=True)
            last_line = line
        if job.status in JobStatus.FINISHED:
            if job.error and job.status != JobStatus.SUCCEEDED:
                print(job.error, file=sys.stderr)
            return 0 if job.status == JobStatus.SUCCEEDED else 1
        if job.status == JobStatus.QUEUED and not hinted and time.monotonic() - started > NO_WORKER_HINT_S:
            print("still queued: is a worker running? (`python -m app` starts one; or `python -m jobs worker`)",
                  file=sys.stderr, flush=True)
            hinted = True
        time.sleep(WAIT_POLL_S)


def cmd_submit(args: argparse.Namespace) -> int:
    studio = open_studio()
    spec_path = Path(args.spec)
    try:
        raw = _local_dataset(studio, _read_spec(spec_path), spec_path.parent)
        job_id = submit_job(studio, raw, priority=args.priority)
    except (SpecError, DatasetError) as error:
        print(error.as_text(), file=sys.stderr)
        return 2
    except SpecRefused as error:
        print(error, file=sys.stderr)
        return 2
    print(f"queued job {job_id}")
    return _wait(studio, job_id) if args.wait else 0


def cmd_list(args: argparse.Namespace) -> int:
    studio = open_studio()
    with studio.db.read() as session:
        jobs = jobs_repo.list_jobs(session)
    print(f"{'id':>5}  {'status':<10} {'step':>11}  name")
    for job in jobs:
        step = f"{job.step}/{job.total_steps}" if job.total_steps else ""
        print(f"{job.id:>5}  {job.status:<10} {step:>11}  {job.name}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    try:
        status = cancel_job(open_studio(), args.job_id)
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"job {args.job_id}: {status}" + (" (cancel requested)" if status == JobStatus.RUNNING else ""))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from jobs.queue.worker import main as worker_main

    worker_main(args.worker_args)  # its own options: `python -m jobs worker --help`
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs", description="Submit and manage training jobs.")
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", help="queue a job from a spec (or preset) JSON or YAML file (docs/api.md)")
    submit.add_argument("spec")
    submit.add_argument("--priority", type=int, default=0, help="higher runs first")
    submit.add_argument("--wait", action="store_true", help="follow the job; exit non-zero if it fails")
    submit.set_defaults(func=cmd_submit)
    commands.add_parser("list", help="list jobs").set_defaults(func=cmd_list)
    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id", type=int)
    cancel.set_defaults(func=cmd_cancel)
    dataset_cli.add_commands(commands)
    worker = commands.add_parser("worker", help="run a worker: one job at a time on this host's device",
                                 add_help=False)
    worker.set_defaults(func=cmd_worker)
    args, extra = parser.parse_known_args(argv)
    if args.func is cmd_worker:
        args.worker_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
