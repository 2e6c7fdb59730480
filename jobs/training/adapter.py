"""The finished adapter's folder: PEFT files, tokenizer, spec and final metrics, written atomically (beside its
place, fsynced, renamed), so a crash never leaves half an adapter. The model card is written when the adapter is
published (jobs.training.registry), once its final folder is known."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from jobs.models.resolve import portable_base_reference
from jobs.spec import CONVERTED_INITS, TrainSpec
from jobs.training.checkpoints import fsync_tree
from jobs.training.lora_init import conversion_kwargs


def cleared_folders(out_dir: Path) -> tuple[Path, Path]:
    """(partial, final) folders of `out_dir/adapter`, with what an earlier attempt left in either removed."""
    partial, final_dir = out_dir / "adapter.partial", out_dir / "adapter"
    for stale in (partial, final_dir):
        if stale.exists():
            shutil.rmtree(stale)
    return partial, final_dir


def finish_folder(partial: Path, final_dir: Path, tokenizer, spec: TrainSpec, final_metrics: dict[str, float]) -> Path:
    """Beside the saved weights: the tokenizer, the spec and the final metrics; then fsynced and renamed into place
    (an adapter and a whole model are published the same way)."""
    tokenizer.save_pretrained(partial)
    (partial / "training_spec.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=2))
    (partial / "final_metrics.json").write_text(json.dumps(final_metrics, indent=2))
    fsync_tree(partial)
    os.replace(partial, final_dir)
    return final_dir


def save_adapter(model, tokenizer, spec: TrainSpec, final_metrics: dict[str, float], out_dir: Path) -> Path:
    """Write `out_dir/adapter` and return it."""
    partial, final_dir = cleared_folders(out_dir)
    # Only the trained adapter: a DPO run also holds TRL's frozen "ref" copy of its starting adapter.
    # PiSSA/OLoRA trained against the residual base: saved converted, so the adapter applies to the original base.
    converted = spec.init_lora_weights in CONVERTED_INITS and not spec.init_adapter
    model.save_pretrained(partial, safe_serialization=True, selected_adapters=[model.active_adapter],
                          **conversion_kwargs(out_dir, converted))
    _portable_config(partial / "adapter_config.json", portable_base_reference(spec.base_model))
    return finish_folder(partial, final_dir, tokenizer, spec, final_metrics)


def _portable_config(config_file: Path, base_reference: str) -> None:
    # peft records the path the base was loaded from: on the server that is an absolute path of ours.
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_reference
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
