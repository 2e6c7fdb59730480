"""Where a job's attempts leave their files: one run dir per job, holding checkpoints and `train.log`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jobs.studio import Studio
from storage.files import private_partial

LOG_TAIL_LINES = 30
TAIL_WINDOW_BYTES = 64 * 1024


def run_dir_for(studio: Studio, job_id: int) -> Path:
    return studio.run_dir(job_id)


def train_log_path(studio: Studio, job_id: int) -> Path:
    return run_dir_for(studio, job_id) / "train.log"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log, reading only its end (logs of long runs grow large)."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - TAIL_WINDOW_BYTES))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def export_log(studio: Studio, job_id: int, owner: str | None) -> Path | None:
    """A downloadable copy of the job's whole log in the exports folder (the only folder the app serves), refreshed
    when the log has grown. None while the job has no log yet."""
    source = train_log_path(studio, job_id)
    if not source.is_file():
        return None
    target = studio.export_dir(f"job-{job_id}", owner) / f"job-{job_id}-train.log"
    stat = source.stat()
    if not target.is_file() or target.stat().st_size != stat.st_size or target.stat().st_mtime < stat.st_mtime:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = private_partial(target)
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    return target
