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
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"}


def write_report(out: Path, fields: dict) -> None:
    """`fields` as JSON at `out`, stamped with the date, the versions and the command that made it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), **fields, "versions": versions(),
                               "command": " ".join(sys.argv)}, indent=2))
