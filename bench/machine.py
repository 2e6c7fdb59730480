"""What every bench report records about where it ran: Python, the training libraries' versions, the machine; and
the one way reports are written."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path


def versions() -> dict:
    import bitsandbytes
    import peft
    import torch
    import transformers
    import trl

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "trl": trl.__version__, "bitsandbytes": bitsandbytes.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}", "cpu": cpu_model()}


SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""What decides these kernels' speed on a CPU: the same 2-core kind has been an AVX-512 + AMX Xeon and an AVX2-only
EPYC, 2.5× apart on the same job."""


def cpu_model() -> str:
    """The CPU's model name and which of SIMD_FLAGS it has, from /proc/cpuinfo ('unknown' elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in info.splitlines())}
    name, flags = fields.get("model name", "unknown"), set(fields.get("flags", "").split())
    return f"{name} ({', '.join(flag for flag in SIMD_FLAGS if flag in flags) or 'none of ' + '/'.join(SIMD_FLAGS)})"


def write_report(out: Path, fields: dict) -> None:
    """`fields` as JSON at `out`, stamped with the date, the versions and the command that made it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), **fields, "versions": versions(),
                               "command": " ".join(sys.argv)}, indent=2))
