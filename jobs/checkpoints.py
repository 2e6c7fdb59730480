"""Which checkpoint to resume from: the newest one marked complete, chosen by explicit path (never
`resume_from_checkpoint=True`, which would pick a checkpoint torn by a kill during its save)."""

from __future__ import annotations

from pathlib import Path

COMPLETE_MARKER = "studio-complete.json"


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
