"""Merge an adapter into its base: W' = W + (alpha/r)·B·A folded into a 16-bit copy of the base, saved as a plain
transformers folder (safetensors + tokenizer + model card) that loads with `AutoModelForCausalLM` alone.

The merge loads the base unquantized (a 4-bit base cannot hold the sum exactly), on the CPU: it needs the base's
16-bit size in RAM, not GPU memory. The adapter was trained against the NF4 base, so the merged model differs from
what training saw by the base's quantization error; the card says so."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from jobs.spec_store import read_spec_file
from jobs.training.checkpoints import fsync_tree

COPIED_FILES = ("training_spec.json", "final_metrics.json", "provenance.json", "combination.json")


def merge_adapter(base_path: str, adapter_dir: Path, out_dir: Path, dtype_name: str) -> Path:
    """Write the merged model to `out_dir` (atomically: built beside it, fsynced, renamed) and return it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = out_dir.with_name(f"{out_dir.name}.partial")
    for stale in (partial, out_dir):
        shutil.rmtree(stale, ignore_errors=True)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype_name), use_safetensors=True,
                                                device_map={"": "cpu"}, trust_remote_code=False,
                                                **trained_rope(base_path, adapter_dir))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(partial, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(partial)
    for name in COPIED_FILES:
        if (adapter_dir / name).is_file():
            shutil.copy2(adapter_dir / name, partial / name)
    (partial / "README.md").write_text(merged_card(adapter_dir, dtype_name), encoding="utf-8")
    fsync_tree(partial)
    os.replace(partial, out_dir)
    return out_dir


def trained_rope(base_path: str, adapter_dir: Path) -> dict:
    """The RoPE scaling the adapter trained with, for the base it merges into: the merged model's config keeps it,
    so it runs as the adapter learned (from_pretrained's keyword arguments; empty without scaling)."""
    from jobs.run_settings.cpu_dtype import base_positions
    from jobs.run_settings.speed import rope_parameters

    spec = read_spec_file(adapter_dir / "training_spec.json").fields if (adapter_dir / "training_spec.json").is_file() \
        else {}
    context, base_rope = base_positions(base_path)
    rope = rope_parameters(spec.get("rope_scaling", "none"), spec.get("rope_factor"), base_rope, context)
    return {"rope_parameters": rope} if rope else {}


def merged_card(adapter_dir: Path, dtype_name: str) -> str:
    spec = read_spec_file(adapter_dir / "training_spec.json").fields  # as today's version names the fields
    made = f"trained by the fine-tuning studio (rank {spec.get('lora_r')}, dataset `{spec.get('dataset')}`)"
    if (adapter_dir / "combination.json").is_file():  # a combined adapter (jobs.training.combine): no training spec
        record = json.loads((adapter_dir / "combination.json").read_text())
        parents = ", ".join(f"`{p['adapter']}` ×{p['weight']:g}" for p in record["combined_from"])
        spec = {"base_model": record["base_model"]}
        made = (f"combined by the fine-tuning studio (rank {record['rank']}, "
                f"{record['method']['combination_type']} of {parents})")
    return f"""---
library_name: transformers
base_model: {spec["base_model"]}
tags: [merged-lora, qlora]
---
# Merged model

The LoRA adapter {made} merged into a
{dtype_name} copy of its base `{spec["base_model"]}`. No peft is needed to use it. The adapter was trained against
the 4-bit base, so this merge (onto unquantized weights) differs slightly from what training saw.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
```

`training_spec.json`, `final_metrics.json` and `provenance.json` (or a combined adapter's `combination.json`) come
from the adapter.
"""
