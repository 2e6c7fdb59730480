"""The speed options and long inputs, resolved for a machine: which attention kernel, whether torch.compile and
Liger's kernels run, and the RoPE parameters the base is loaded with. Read without torch (the web app's memory
verdict and the plain script resolve them too).

A spec names what it wants; a machine that cannot run it runs the nearest thing it can and the run's log says so
(as a paged optimizer runs unpaged on a CPU): FlashAttention and Liger need CUDA and their packages, torch.compile a
compiler (Inductor's C++ one on a CPU, Triton on a GPU) and TorchDynamo switched on."""

from __future__ import annotations

import importlib.util
import os
import shutil

FLASH_ATTENTION = "flash_attention_2"
LIGER = "liger"
COMPILE = "compile"
ALL_KERNELS = frozenset({FLASH_ATTENTION, LIGER, COMPILE})
"""What a machine may be able to run beyond the defaults (Machine.kernels)."""
DYNAMO_OFF = ("1", "true", "yes")


def installed(module: str) -> bool:
    """Whether `module` is importable here, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def dynamo_disabled() -> bool:
    """TORCHDYNAMO_DISABLE set: every torch.compile in this process is a no-op (the tests set it)."""
    return os.environ.get("TORCHDYNAMO_DISABLE", "").lower() in DYNAMO_OFF


def kernels_here(device: str) -> frozenset[str]:
    """What this machine can run of ALL_KERNELS on `device` ('cpu' or 'cuda')."""
    found = set()
    if device == "cuda":
        found |= {FLASH_ATTENTION} if installed("flash_attn") else set()
        found |= {LIGER} if installed("liger_kernel") else set()
    compiler = installed("triton") if device == "cuda" else any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))
    if compiler and not dynamo_disabled():
        found.add(COMPILE)
    return frozenset(found)


def attention_for(asked: str, device: str, kernels: frozenset[str]) -> tuple[str | None, str | None]:
    """(the attn_implementation the model loads with, None for the library's own pick; a note when it is not what
    the spec asked for)."""
    if asked == "auto":
        return None, None
    if asked == FLASH_ATTENTION and FLASH_ATTENTION not in kernels:
        why = "this worker has no CUDA device" if device != "cuda" else "flash-attn is not installed on this worker"
        return "sdpa", f"note: attention flash_attention_2 needs CUDA and the flash-attn package; {why}: it runs sdpa"
    return asked, None


def compile_for(asked: bool, device: str, kernels: frozenset[str]) -> tuple[bool, str | None]:
    if not asked or COMPILE in kernels:
        return asked, None
    if dynamo_disabled():
        why = "TORCHDYNAMO_DISABLE is set in this worker's environment"
    else:
        why = "Triton is not installed" if device == "cuda" else "no C++ compiler (g++) is installed"
    return False, f"note: torch_compile asked for, but {why}: the model runs uncompiled"


def liger_for(asked: bool, device: str, kernels: frozenset[str]) -> tuple[bool, str | None]:
    if not asked or LIGER in kernels:
        return asked, None
    why = "this worker has no CUDA device" if device != "cuda" else "liger-kernel is not installed on this worker"
    return False, f"note: liger_kernel needs CUDA and the liger-kernel package; {why}: the run goes without"


def rope_parameters(scaling: str, factor: float | None, base_rope: dict | None,
                    context: int | None) -> dict | None:
    """The rope_parameters the base's config is loaded with for `scaling` (None: the base's own). The base's other
    RoPE values (theta, partial rotary) are kept; YaRN needs the context it was pretrained at."""
    if scaling == "none":
        return None
    kept = {k: v for k, v in (base_rope or {}).items() if k not in ("rope_type", "type", "factor")}
    parameters = {**kept, "rope_type": scaling, "factor": float(factor)}
    if scaling == "yarn" and context:
        parameters["original_max_position_embeddings"] = context
    return parameters


def rope_problems(scaling: str, factor: float | None, max_length: int, context: int | None,
                  base_rope_type: str | None) -> list[tuple[str, str]]:
    """(field, message) for RoPE settings the base cannot use, checked at submit from its config: scaling asked
    where max_length fits the context, a factor too small to reach max_length, a base that scales already, or a
    max_length beyond the context without scaling."""
    if context is None:
        return []  # a base whose config is not here yet (a hub id): its worker loads what it is given
    if scaling == "none":
        if max_length > context:
            return [("max_length", f"{max_length} exceeds the base's context of {context} tokens "
                                   f"(max_position_embeddings): lower it, or set rope_scaling (linear, dynamic or "
                                   f"yarn) with rope_factor at least {_least_factor(max_length, context)}")]
        return []
    if base_rope_type not in (None, "default"):
        return [("rope_scaling", f"the base already scales RoPE ({base_rope_type}) to its context of {context} "
                                 f"tokens: set rope_scaling to none")]
    if max_length <= context:
        return [("rope_scaling", f"not needed: max_length {max_length} fits the base's context of {context} tokens; "
                                 f"set rope_scaling to none (scaling would only blur its positions)")]
    if factor is not None and context * factor < max_length:
        return [("rope_factor", f"{factor:g} stretches the base's context of {context} tokens to "
                                f"{int(context * factor)}, short of max_length {max_length}: use at least "
                                f"{_least_factor(max_length, context)}")]
    return []


def _least_factor(max_length: int, context: int) -> str:
    return f"{max_length / context:.2f}".rstrip("0").rstrip(".")
