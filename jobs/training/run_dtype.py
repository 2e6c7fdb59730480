"""A run keeps the compute dtype it began in.

'auto' is resolved on the machine that runs the attempt: on a CPU, bfloat16 where it multiplies bf16 natively
(jobs.models.cpu_dtype); on a GPU, bfloat16 where it supports it, else float16. A job that a crash or a drained
worker hands to another machine resumes from its checkpoint there, and would switch dtype mid-run if that machine
answered differently: its adapter would then be trained partly in one dtype and partly in another. The run folder
records what the first attempt computed in, and later attempts on the same kind of device keep it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

RECORD_NAME = "compute_dtype.json"
KEPT_DTYPES = ("float32", "bfloat16", "float16")


def dtype_for_run(out_dir: Path, device: str, picked: torch.dtype, spec_dtype: str) -> torch.dtype:
    """`picked` (what this machine resolves the spec's dtype to), unless the spec says 'auto' and an earlier attempt
    of this run on the same kind of device computed in another dtype: then that one, said in the log."""
    kept = began_in(out_dir, device) if spec_dtype == "auto" else None
    if kept is not None and kept != _name(picked):
        print(f"compute dtype {kept}, as this run began (this machine would pick {_name(picked)} for 'auto')",
              flush=True)
        return getattr(torch, kept)
    (Path(out_dir) / RECORD_NAME).write_text(json.dumps({"device": device, "dtype": _name(picked)}))
    return picked


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


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
