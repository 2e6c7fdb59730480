"""What the next attempt of a job that lost its training process changes, and why.

A child killed by a signal (`kill -9`, the kernel's OOM killer) is a lost attempt: the job is requeued and resumes
from its newest checkpoint. When the loss was for memory (a CUDA out-of-memory error, or a kill while the
process's memory was near the machine's limit), the retry needs less: first the micro-batch halves and gradient
accumulation doubles (the same effective batch, so the same optimizer steps), then gradient checkpointing turns
on, then the micro-batch keeps halving. The changes are kept as the job's `overrides` beside its spec:
{"fields": {spec field: value}, "why": [one line per change]}, so the Runs tab shows what changed and why."""

from __future__ import annotations

import os
from pathlib import Path

from jobs.spec import TrainSpec

NEAR_LIMIT_SHARE = 0.85
"""A kill with the process's memory above this share of the limit is taken for the OOM killer's."""
CGROUP_LIMIT_FILES = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_limit_bytes() -> int:
    """The memory a training process may use here: STUDIO_MEMORY_LIMIT_BYTES, else the cgroup's limit, else RAM."""
    if setting := os.environ.get("STUDIO_MEMORY_LIMIT_BYTES"):
        return int(setting)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in CGROUP_LIMIT_FILES:
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), total)
    return total


def killed_for_memory(peak_bytes: float | None, limit_bytes: int) -> bool:
    return peak_bytes is not None and peak_bytes >= NEAR_LIMIT_SHARE * limit_bytes


def override_fields(overrides: dict | None) -> dict:
    return dict((overrides or {}).get("fields", {}))


def smaller_footprint(spec: TrainSpec, fields: dict) -> tuple[dict, str] | None:
    """The override fields for the next attempt after running out of memory, and what changed; None when nothing
    is left to shrink (micro-batch 1 with gradient checkpointing on)."""
    current = TrainSpec.model_validate({**spec.model_dump(), **fields})
    halved_before = current.batch_size < spec.batch_size
    checkpointing_on = current.gradient_checkpointing == "on"
    if not checkpointing_on and (halved_before or current.batch_size == 1):
        return {**fields, "gradient_checkpointing": "on"}, "turned gradient checkpointing on"
    if current.batch_size > 1:
        batch, accum = current.batch_size // 2, current.grad_accum * 2
        return ({**fields, "batch_size": batch, "grad_accum": accum},
                f"halved the micro-batch to {batch} and doubled gradient accumulation to {accum} (the same "
                f"effective batch)")
    return None
