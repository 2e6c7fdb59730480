"""Full and freeze fine-tuning: the base's own weights train (all of them, or the last N decoder blocks), and the run
saves a whole model (safetensors, config, tokenizer) instead of a LoRA adapter. The registry lists it beside the
adapters as a model of its own (jobs.models.contents.folder_kind)."""

from __future__ import annotations

from pathlib import Path

from jobs.run_settings.settings import RunSettings
from jobs.spec import TrainSpec
from jobs.training.adapter import cleared_folders, finish_folder


def decoder_blocks(model) -> list:
    """The base's decoder blocks, first to last (Llama-style `model.model.layers`, as transformers names them)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no decoder blocks found (freeze needs model.layers)")
    return list(layers)


def make_trainable(model, settings: RunSettings) -> list[str]:
    """Set which of the base's weights train, as the settings say; returns the trained parameters' names. full: all;
    freeze: the last `trainable_layers` blocks, plus the final norm and output head with `train_head`."""
    if settings.finetuning == "full":
        for param in model.parameters():
            param.requires_grad_(True)
    else:
        for param in model.parameters():
            param.requires_grad_(False)
        trained = [*decoder_blocks(model)[-settings.trainable_layers:]]
        if settings.train_head:
            decoder = model.get_decoder()
            trained += [model.get_output_embeddings(), *([decoder.norm] if hasattr(decoder, "norm") else [])]
        for module in trained:
            for param in module.parameters():
                param.requires_grad_(True)
        if settings.gradient_checkpointing:
            # The frozen embeddings give no grad to the first checkpointed block's input: the reentrant checkpoint
            # would then give none to the trained blocks behind it.
            model.enable_input_require_grads()
    return [name for name, param in model.named_parameters() if param.requires_grad]


def save_whole_model(model, tokenizer, spec: TrainSpec, final_metrics: dict[str, float], out_dir: Path) -> Path:
    """Write `out_dir/adapter` as a plain transformers model folder (what AutoModelForCausalLM.from_pretrained
    loads), with the spec and final metrics as an adapter's folder has them; written beside, fsynced, renamed."""
    partial, final_dir = cleared_folders(out_dir)
    for param in model.parameters():
        param.requires_grad_(False)
    model.save_pretrained(partial, safe_serialization=True)
    return finish_folder(partial, final_dir, tokenizer, spec, final_metrics)
