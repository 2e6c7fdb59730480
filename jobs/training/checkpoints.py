"""Checkpoints a run can resume from. A checkpoint counts only once marked complete (after the Trainer's save
returned and its files were fsynced), and resuming picks the newest complete one by explicit path (never
`resume_from_checkpoint=True`, which would pick a checkpoint torn by a kill during its save)."""

from __future__ import annotations

import json
import os
from pathlib import Path

COMPLETE_MARKER = "studio-complete.json"


def fsync_tree(root: Path) -> None:
    """Flush every file under `root` to disk, so a rename that publishes it never exposes half-written data."""
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def mark_complete(checkpoint: Path, step: int) -> None:
    fsync_tree(checkpoint)
    (checkpoint / COMPLETE_MARKER).write_text(json.dumps({"step": step}))


def checkpoint_step(path: Path) -> int:
    try:
        return int(path.name.removeprefix("checkpoint-"))
    except ValueError:
        return -1


def newest_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    if not checkpoints_dir.is_dir():
        return None
    complete = [p for p in checkpoints_dir.glob("checkpoint-*")
                if p.is_dir() and checkpoint_step(p) >= 0 and (p / COMPLETE_MARKER).is_file()
                and (p / "trainer_state.json").is_file()]
    return max(complete, key=checkpoint_step, default=None)
