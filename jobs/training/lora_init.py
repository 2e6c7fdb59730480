"""LoRA variants and inits, through PEFT's own code: LoRA+ (a larger learning rate for B), and the starts that read
the base (PiSSA, OLoRA, LoftQ).

PiSSA and OLoRA move the base's principal part (or its QR factors) into the adapter: the model trains on the
residual W - s·B0·A0. The studio shares one unmodified base between every adapter (chat, merge, compare, GGUF), so
the start is kept in the run folder and the finished adapter is saved converted by PEFT
(`save_pretrained(path_initial_model_for_weight_conversion=...)`): ΔW = s·(B·A - B0·A0), a plain LoRA of twice the
rank that applies to the original base. LoftQ leaves the base as it is: on a 4-bit base, PEFT's
`replace_lora_weights_loftq` sets B·A to the low-rank part of the quantization error, read against the base's
safetensors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from jobs.run_settings.lora import LOFTQ_NEEDS_CUDA
from jobs.run_settings.settings import RunSettings

LORA_START = "lora_start"
"""The run folder's copy of a PiSSA or OLoRA adapter as it started (rewritten by each attempt: a resumed run takes the
start out of the base again, and the conversion must subtract the start this attempt trained from)."""


class LoraInitError(RuntimeError):
    """A start that cannot run where the job runs, said in words for the job's error."""


def start_adapter(model, settings: RunSettings, out_dir: Path, base_model: str) -> None:
    """After `get_peft_model`: keep a PiSSA/OLoRA start for the conversion at save, or give LoftQ its start."""
    if settings.lora.converted:
        keep_start(model, out_dir)
    elif settings.lora.loftq:
        if settings.device != "cuda":
            raise LoraInitError(LOFTQ_NEEDS_CUDA)
        loftq_start(model, base_model)


def keep_start(model, out_dir: Path) -> Path:
    """The adapter as it starts, in `out_dir/lora_start` (written beside, then renamed)."""
    final, partial = out_dir / LORA_START, out_dir / f"{LORA_START}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True, selected_adapters=[model.active_adapter])
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final


def conversion_kwargs(out_dir: Path, converted: bool) -> dict:
    """`save_pretrained`'s arguments that save a PiSSA/OLoRA adapter converted to apply to the original base."""
    if not converted:
        return {}
    start = out_dir / LORA_START
    if not (start / "adapter_model.safetensors").is_file():
        raise LoraInitError(f"the adapter's start ({start}) is missing, so it cannot be converted to apply to the "
                            "original base; run the job again")
    return {"path_initial_model_for_weight_conversion": str(start.resolve())}  # PEFT splits it into folder + name


def loftq_start(model, base_model: str) -> None:
    """PEFT's LoftQ for a 4-bit base: B·A fits the quantization error W - Q(W) of each adapted Linear4bit, with W read
    from the base's safetensors (one file, or shards with their index)."""
    from peft import replace_lora_weights_loftq

    replace_lora_weights_loftq(model, model_path=str(Path(base_model)))
    unscale_loftq(model)


@torch.no_grad()
def unscale_loftq(model, adapter: str = "default") -> None:
    """PEFT sets B·A to the error's low-rank part, but the layer adds scaling·B·A (peft#1982, open): divide B by the
    scaling, so the adapted layer starts at Q(W) + (W - Q(W))_r as LoftQ means."""
    from peft.tuners.lora import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit) and adapter in module.lora_B:
            module.lora_B[adapter].weight.div_(module.scaling[adapter])


def loraplus_optimizer(settings: RunSettings, args) -> tuple[type, dict] | None:
    """The Trainer's `optimizer_cls_and_kwargs` for LoRA+ (None: off): PEFT's create_loraplus_optimizer around the
    optimizer the spec chose, with the arguments the Trainer would give it (`args`: its TrainingArguments)."""
    if settings.loraplus_lr_ratio is None:
        return None
    from transformers import Trainer

    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    return LoraPlus, {**kwargs, "optimizer_cls": optimizer_cls, "loraplus_lr_ratio": settings.loraplus_lr_ratio,
                      "loraplus_weight_decay": args.weight_decay,
                      # PEFT's default for LoRA on embeddings is 1e-6, which would leave an 'embeddings' target
                      # all but frozen: the spec's learning rate instead.
                      "loraplus_lr_embedding": kwargs["lr"]}


class LoraPlus:
    """A factory the Trainer calls with its model in `create_optimizer` (transformers' optimizer factories): built
    there, the optimizer holds the parameters of the model as the trainer wrapped it, and a resumed run loads its
    states into it as into any other."""

    def __call__(self, model, *, optimizer_cls: type, lr: float, loraplus_lr_ratio: float, **kwargs):
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(model, optimizer_cls, lr=lr, loraplus_lr_ratio=loraplus_lr_ratio,
                                              **kwargs)
        if "bitsandbytes" in optimizer_cls.__module__ and kwargs.get("optim_bits") == 8:
            _embeddings_in_32_bits(model)
        return optimizer


def _embeddings_in_32_bits(model) -> None:
    # What the Trainer does for its own 8-bit bitsandbytes optimizers (PEFT's LoRA+ only for the 8-bit class names).
    import bitsandbytes

    manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            manager.register_module_override(module, "weight", {"optim_bits": 32})
