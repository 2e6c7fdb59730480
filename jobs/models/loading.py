"""Loading a base model for training or chat: the device, the compute dtype, and the quantized weights.

Real NF4 on CPU too (bitsandbytes >= 0.50). Only safetensors are loaded and `trust_remote_code` stays off."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from jobs.models.templates import NO_TRAINING_TEMPLATE, training_template
from jobs.run_settings.allocator import allocator_in_use
from jobs.run_settings.cpu_dtype import base_positions, native_bf16
from jobs.run_settings.settings import Base, DeviceKind, Machine, quantization_kwargs
from jobs.run_settings.settings import compute_dtype as resolved_dtype
from jobs.run_settings.speed import kernels_here, rope_parameters
from jobs.spec import TrainSpec


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def machine(device: DeviceKind | None = None, began_in: str | None = None) -> Machine:
    """This machine as the run settings see it (jobs.run_settings): its device, whether it computes bf16 natively,
    the dtype a resumed run began in here, and whether this process runs with jemalloc (the worker preloads it)."""
    device = device or pick_device()
    bf16 = native_bf16() if device == "cpu" else torch.cuda.is_bf16_supported()
    return Machine(device=device, bf16=bf16, began_in=began_in, kernels=kernels_here(device),
                   jemalloc=device == "cpu" and allocator_in_use() == "jemalloc")


def compute_dtype(spec: TrainSpec, device: DeviceKind, hidden: int | None = None) -> torch.dtype:
    """The dtype the base computes in on `device` (jobs.run_settings.settings.compute_dtype). `hidden`: the base's
    hidden size, which 'auto' weighs on a CPU."""
    return getattr(torch, resolved_dtype(spec, Base(hidden=hidden), machine(device))[0])


def quantization_config(spec: TrainSpec, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    kwargs = quantization_kwargs(spec.quantization, spec.double_quant, str(dtype).removeprefix("torch."))
    return BitsAndBytesConfig(**kwargs) if kwargs is not None else None


def load_tokenizer(base_model: str, for_assistant_only_loss: bool = False, chat_template: str | None = None):
    """The base's tokenizer, with `chat_template` (the run's chosen one; None: the base's own); for assistant-only
    loss, with a template that marks the assistant's turns (the same text as the chosen one; the adapter's saved
    tokenizer records it, so chat, evaluation and export render as training did)."""
    tokenizer = AutoTokenizer.from_pretrained(base_model, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = chat_template
    if for_assistant_only_loss:
        template = training_template(tokenizer.chat_template)
        if template is None:
            raise ValueError(NO_TRAINING_TEMPLATE)
        tokenizer.chat_template = template
    return tokenizer


def load_base_model(spec: TrainSpec, base_model: str, device: str, dtype: torch.dtype):
    """The frozen base, quantized as the spec says, with the RoPE scaling its adapter trained with (an adapter
    learned its positions against that scaling: chat loads the base as training did)."""
    context, base_rope = base_positions(base_model)
    rope = rope_parameters(spec.rope_scaling, spec.rope_factor, base_rope, context)
    model = AutoModelForCausalLM.from_pretrained(
        base_model, quantization_config=quantization_config(spec, dtype), dtype=dtype,
        device_map={"": device}, use_safetensors=True, trust_remote_code=False,
        **({"rope_parameters": rope} if rope else {}))
    keep_4bit_layout(model)
    return model


def keep_4bit_layout(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference; returns how many layers it concerned. Every
    4-bit base the studio loads goes through here.

    bitsandbytes 0.50 repacks a Linear4bit's weight into a CPU-only layout the first time the layer runs in eval mode
    without grad on a CPU with AVX512-BF16. In a model that trains, it never packs it back: every later step goes
    through a kernel with no autograd, and the gradient through the frozen base is silently dropped
    (tests/jobs/training/test_train.py). In a resident base for chat or evaluation, reading the model's state dict
    (peft does, attaching another adapter) packs it back lossily (the double-quantized scales are quantized again),
    so every later pane, the base's included, computed on changed weights (tests/jobs/evaluate/test_resident.py,
    which failed on such a CPU); and the packed kernel computes in bfloat16, where chat computes in float32 on a CPU
    so that a batched row equals its unbatched answer."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def release_loading_memory(model) -> int:
    """What loading a quantized base leaves resident for no use, handed back: the mapped checkpoint file
    (release_checkpoint_file) and glibc's free heap, where the quantizer's fp32 temporaries went (malloc_trim; a
    no-op outside glibc). Returns the bytes copied out of the file."""
    copied = release_checkpoint_file(model)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    return copied


def release_checkpoint_file(model) -> int:
    """Copy the tensors that are still views into a mapped .safetensors file out of it, so the file is unmapped;
    returns the bytes copied.

    transformers loads a checkpoint through mmap: the weights that are not quantized (embeddings, norms) stay
    zero-copy views into the file, and the mapping keeps every page the loader read resident in this process, the
    pages of the weights it quantized and no longer uses included. On SmolLM2-135M's fp32 file that is 517 MB held
    for 113 MB of embeddings (bench/memory_breakdown.py). Worth it only where most of the file was quantized away: a
    base that computes straight from the file would copy all of it."""
    import gc

    ranges = _mapped_ranges(".safetensors")
    copied = 0
    for module in model.modules():
        for tensor in [*module._parameters.values(), *module._buffers.values()]:
            if tensor is None or tensor.device.type != "cpu":
                continue
            address = tensor.untyped_storage().data_ptr()
            if any(low <= address < high for low, high in ranges):
                tensor.data = tensor.data.clone()
                copied += tensor.nbytes
    gc.collect()
    return copied


def _mapped_ranges(suffix: str) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of files whose name ends with `suffix` (Linux; none elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith(suffix):
            low, _, high = fields[0].partition("-")
            ranges.append((int(low, 16), int(high, 16)))
    return ranges
