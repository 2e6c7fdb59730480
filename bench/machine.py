"""What every bench report records about where it ran: Python, the training libraries' versions, the machine."""

from __future__ import annotations

import os
import platform


def versions() -> dict:
    import bitsandbytes
    import peft
    import torch
    import transformers
    import trl

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "trl": trl.__version__, "bitsandbytes": bitsandbytes.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"}
