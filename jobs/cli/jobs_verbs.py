"""The job verbs: submit (and follow), list, cancel, and the standalone worker. Each but the worker mirrors an
endpoint, and runs against a running studio with --url too (a dataset file named in the spec is uploaded first)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jobs.cli.remote import Upload
from jobs.cli.verb import read_spec_file
from jobs.data.errors import DatasetError
from jobs.spec import SpecError
from jobs.spec_docs import fields_help
from jobs.studio import Studio, open_studio
from jobs.submit import cancel_job, submit_job
from storage import jobs_repo
from storage.models import JobStatus

WAIT_POLL_S = 0.5  # a DB read: cheap, and the CLI returns within half a second of the job ending
REMOTE_POLL_S = 1.0
NO_WORKER_HINT_S = 20.0
FINISHED = ("succeeded", "failed", "cancelled", "pruned")


def _dataset_file(raw: dict, spec_dir: Path) -> Path | None:
    """A spec run from a shell may name a dataset file rather than a stored dataset."""
    dataset = raw.get("dataset")
    if not isinstance(dataset, str):
        return None
    candidate = Path(dataset).expanduser()
    candidate = candidate if candidate.is_absolute() else spec_dir / candidate
    if not candidate.is_file() and Path(dataset).is_file():
        candidate = Path(dataset)
    return candidate if candidate.is_file() else None


def _local_dataset(studio: Studio, raw: dict, spec_dir: Path) -> dict:
    from jobs.data.store import import_dataset

    candidate = _dataset_file(raw, spec_dir)
    if candidate is None:
        return raw
    imported = import_dataset(studio, candidate, candidate.stem)
    print(f"dataset: {imported.message(candidate.stem)}")
    return {**raw, "dataset": imported.dataset.name}


def _progress_line(job_id: int, status: str, step: int, total: int | None, loss: float | None) -> str:
    line = f"job {job_id}: {status}"
    if total:
        line += f" step {step}/{total}"
    if loss is not None:
        line += f" loss {loss:.4f}"
    return line


def _follow(read, job_id: int, poll_s: float) -> int:
    """Print each change of the job's progress until it ends; 0 when it succeeded. `read` -> (status, step, total,
    loss, error)."""
    started, last_line, hinted = time.monotonic(), "", False
    while True:
        status, step, total, loss, error = read()
        line = _progress_line(job_id, status, step, total, loss)
        if line != last_line:
            print(line, flush=True)
            last_line = line
        if status in FINISHED:
            if error and status != JobStatus.SUCCEEDED:
                print(error, file=sys.stderr)
            return 0 if status == JobStatus.SUCCEEDED else 1
        if status == JobStatus.QUEUED and not hinted and time.monotonic() - started > NO_WORKER_HINT_S:
            print("still queued: is a worker running? (`python -m app` starts one; or `python -m jobs worker`)",
                  file=sys.stderr, flush=True)
            hinted = True
        time.sleep(poll_s)


def _wait(studio: Studio, job_id: int) -> int:
    def read():
        with studio.db.read() as session:
            job = jobs_repo.get_job(session, job_id)
            return job.status, job.step, job.total_steps, jobs_repo.latest_metric(session, job_id, "loss"), job.error

    return _follow(read, job_id, WAIT_POLL_S)


def cmd_submit(args: argparse.Namespace) -> int:
    studio = open_studio()
    spec_path = Path(args.spec)
    try:
        raw = _local_dataset(studio, read_spec_file(spec_path), spec_path.parent)
        job_id = submit_job(studio, raw, priority=args.priority)
    except (SpecError, DatasetError) as error:
        print(error.as_text(), file=sys.stderr)
        return 2
    print(f"queued job {job_id}")
    return _wait(studio, job_id) if args.wait else 0


def submit_remote(args: argparse.Namespace, job_id, remote) -> int:
    print(f"queued job {job_id}")
    if not args.wait:
        return 0

    def read():
        job = remote.call("get_job", {"job_id": job_id})
        return (job["status"], job.get("step") or 0, job.get("total_steps"), (job.get("metrics") or {}).get("loss"),
                job.get("error"))

    return _follow(read, job_id, REMOTE_POLL_S)


def upload_spec_dataset(args: argparse.Namespace, remote) -> dict:
    """Remote submit: a dataset file named in the spec is uploaded as a dataset first, as the local submit imports
    it; the spec then names it."""
    spec_path = Path(args.spec)
    raw = read_spec_file(spec_path)
    candidate = _dataset_file(raw, spec_path.parent)
    if candidate is not None:
        name = remote.call("import_dataset", {"file": Upload(str(candidate)), "name": candidate.stem, "format": "",
                                              "columns": ""})
        print(f"dataset: uploaded '{name}'")
        raw = {**raw, "dataset": name}
    return {"spec": json.dumps(raw), "priority": args.priority}


def _print_jobs(rows: list[dict]) -> int:
    print(f"{'id':>5}  {'status':<10} {'step':>11}  name")
    for job in rows:
        step = f"{job['step']}/{job['total_steps']}" if job.get("total_steps") else ""
        print(f"{job['id']:>5}  {job['status']:<10} {step:>11}  {job['name']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with open_studio().db.read() as session:
        rows = [{"id": j.id, "status": j.status, "step": j.step, "total_steps": j.total_steps, "name": j.name}
                for j in jobs_repo.list_jobs(session)]
    return _print_jobs(rows)


def cmd_cancel(args: argparse.Namespace) -> int:
    try:
        status = cancel_job(open_studio(), args.job_id)
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return _cancelled(args.job_id, status)


def _cancelled(job_id: int, status: str) -> int:
    print(f"job {job_id}: {status}" + (" (cancel requested)" if status == JobStatus.RUNNING else ""))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from jobs.queue.worker import main as worker_main

    worker_main(args.worker_args)  # its own options: `python -m jobs worker --help`
    return 0


def add_commands(commands) -> None:
    submit = commands.add_parser("submit", help="queue a job from a spec (or preset) JSON or YAML file (docs/api.md)",
                                 epilog=fields_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    submit.add_argument("spec")
    submit.add_argument("--priority", type=int, default=0, help="higher runs first")
    submit.add_argument("--wait", action="store_true", help="follow the job; exit non-zero if it fails")
    submit.set_defaults(func=cmd_submit, endpoint="submit_job", prepare_remote=upload_spec_dataset,
                        show_remote=submit_remote)
    listing = commands.add_parser("list", help="list jobs")
    listing.set_defaults(func=cmd_list, endpoint="list_jobs", to_api=lambda args: {},
                         show_remote=lambda args, rows, remote: _print_jobs(rows))
    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id", type=int)
    cancel.set_defaults(func=cmd_cancel, endpoint="cancel_job", to_api=lambda args: {"job_id": args.job_id},
                        show_remote=lambda args, status, remote: _cancelled(args.job_id, status))
    worker = commands.add_parser("worker", help="run a worker: one job at a time on this host's device",
                                 add_help=False)
    worker.set_defaults(func=cmd_worker)
