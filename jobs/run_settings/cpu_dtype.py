"""What compute dtype 'auto' means on a CPU, read without torch (the web app's memory verdict needs it too).

bfloat16 where the CPU multiplies bf16 natively and the model is wide enough for that to pay; float32 elsewhere.
Measured on a 2-core AMD EPYC with AVX512-BF16 (bench/compute_dtype.py, docs/benchmarks.md): SmolLM2-135M (hidden
576) trained 1.51x faster at the same held-out loss; the demo model (hidden 128) 5% slower. A CPU without native bf16
emulates it: `trl sft`'s bf16 autocast ran about 15x slower per step on an AVX2 EPYC. The 512 between the two
measured widths is a judgment, not a measured crossover."""

from __future__ import annotations

import json
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""Linux /proc/cpuinfo flags of x86 CPUs that multiply bf16 in hardware (AVX512-BF16 dot products, AMX tiles)."""
BF16_MIN_HIDDEN = 512
"""Models at least this wide train in bf16 on a native-bf16 CPU when the spec says 'auto'."""
NATIVE_BF16_LABEL = "native bf16"
"""Marks a worker's CPU device name (jobs.queue.devices), so the memory verdict knows which dtype 'auto' picks."""


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bf16 natively; False where the flags cannot be read (not Linux, not x86)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and NATIVE_BF16_FLAGS & set(line.split()) for line in text.splitlines())


def cpu_compute_dtype(spec_dtype: str, hidden: int | None, native: bool) -> str:
    """The dtype name a CPU job computes in: the spec's, or for 'auto' the rule above (`hidden`: the base model's
    hidden size; None when unknown, which keeps float32)."""
    if spec_dtype != "auto":
        return spec_dtype
    return "bfloat16" if native and hidden is not None and hidden >= BF16_MIN_HIDDEN else "float32"


def hidden_size(model_dir: str | Path) -> int | None:
    """The base's hidden size from its config.json; None when it is not a local folder with one."""
    try:
        value = json.loads((Path(model_dir) / "config.json").read_text()).get("hidden_size")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def base_positions(model_dir: str | Path) -> tuple[int | None, dict | None]:
    """The base's context (max_position_embeddings) and rope_parameters from its config.json (an older config's
    rope_theta and rope_scaling read as transformers 5 reads them); (None, None) without one."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(config, dict):
        return None, None
    config = config.get("text_config") or config
    context = config.get("max_position_embeddings")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if isinstance(rope, dict) and "rope_theta" not in rope and isinstance(config.get("rope_theta"), int | float):
        rope = {**rope, "rope_theta": config["rope_theta"]}
    return (context if isinstance(context, int) else None), (rope if isinstance(rope, dict) and rope else None)
