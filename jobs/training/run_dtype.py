"""A run keeps the compute dtype it began in.

'auto' is resolved on the machine that runs the attempt: on a CPU, bfloat16 where it multiplies bf16 natively
(jobs.run_settings.cpu_dtype); on a GPU, bfloat16 where it supports it, else float16. A job that a crash or a drained
worker hands to another machine resumes from its checkpoint there, and would switch dtype mid-run if that machine
answered differently: its adapter would then be trained partly in one dtype and partly in another. The run folder
records what the first attempt computed in, and later attempts on the same kind of device keep it (the rule itself is
jobs.run_settings.settings.compute_dtype: this module only reads and writes the record)."""

from __future__ import annotations

import json
from pathlib import Path

RECORD_NAME = "compute_dtype.json"
KEPT_DTYPES = ("float32", "bfloat16", "float16")


def record(out_dir: Path, device: str, dtype: str) -> None:
    """Write down what this attempt computes in (jobs.run_settings keeps it for 'auto' when the run resumes)."""
    (Path(out_dir) / RECORD_NAME).write_text(json.dumps({"device": device, "dtype": dtype}))


def began_in(out_dir: Path, device: str) -> str | None:
    """The dtype an earlier attempt of this run computed in on this kind of device; None for a new run."""
    began = _read(Path(out_dir) / RECORD_NAME)
    return began["dtype"] if began is not None and began["device"] == device else None


def _read(record: Path) -> dict | None:
    try:
        began = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(began, dict) or began.get("dtype") not in KEPT_DTYPES or not isinstance(began.get("device"), str):
        return None  # torn or foreign: this attempt's pick stands and is recorded afresh
    return began
