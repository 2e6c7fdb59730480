"""Combine adapters: a new LoRA adapter from several of one base, made by PEFT's own `add_weighted_adapter` (linear,
cat, TIES, DARE, magnitude pruning, and their svd variants); what it accepts is jobs.combine_rules.

The base is loaded unquantized in float32 on the CPU: PEFT builds the new adapter's matrices in the base layers'
dtype (cat writes into them in place), and the parents were saved in float32, so a 16-bit base would round the
result. It needs the base's float32 size in RAM (4 bytes a parameter), no GPU. The folder is written beside its
target and renamed into place, so a failure or a cancel leaves nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jobs.spec import CombineSpec, TrainSpec
from jobs.spec_store import read_spec_file
from jobs.training.checkpoints import fsync_tree

COMBINED = "combined"
"""The new adapter's name inside the PeftModel (its studio name is the spec's)."""
STEPS = 4  # load the base, load the parents, combine, save
CARD_FILE, RECORD_FILE = "README.md", "combination.json"


class CombineStopped(Exception):
    """The job was cancelled (or lost) between two steps of the combination."""


@dataclass(frozen=True)
class ParentFolder:
    name: str
    folder: Path
    weight: float


def combine_adapters(base_path: str, parents: list[ParentFolder], spec: CombineSpec, out_dir: Path,
                     on_step: Callable[[int], None] = lambda step: None,
                     should_stop: Callable[[], bool] = lambda: False) -> Path:
    """Write the combined adapter (PEFT files, tokenizer, model card, combination.json) to `out_dir` and return it.
    `on_step(done)` after each of STEPS steps; `should_stop()` is asked between them (CombineStopped)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def step_done(step: int) -> None:
        on_step(step)
        if should_stop():
            raise CombineStopped(f"stopped after step {step} of {STEPS}")

    partial = out_dir.with_name(f"{out_dir.name}.partial")
    for stale in (partial, out_dir):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True,
                                                    device_map={"": "cpu"}, trust_remote_code=False)
        step_done(1)
        names = [f"parent{index}" for index in range(len(parents))]
        model = PeftModel.from_pretrained(base, str(parents[0].folder), adapter_name=names[0])
        for name, parent in zip(names[1:], parents[1:], strict=True):
            model.load_adapter(str(parent.folder), adapter_name=name)
        step_done(2)
        torch.manual_seed(spec.seed)  # DARE drops weights at random
        model.add_weighted_adapter(names, [parent.weight for parent in parents], COMBINED, **peft_arguments(spec))
        # PEFT folds each parent's scaling into the new matrices and sets lora_alpha = r (scaling 1), but copies the
        # first parent's use_rslora, which would scale the result by sqrt(r) again when loaded.
        model.peft_config[COMBINED].use_rslora = False
        step_done(3)
        # Only the adapter's own weights: "auto" would look the base up on the hub to see if its vocabulary changed.
        model.save_pretrained(partial / "peft", selected_adapters=[COMBINED], save_embedding_layers=False)
        saved = partial / "peft" / COMBINED  # PEFT saves an adapter not named "default" in its own subfolder
        for file in saved.iterdir():
            os.replace(file, partial / file.name)
        shutil.rmtree(partial / "peft")
        AutoTokenizer.from_pretrained(parents[0].folder).save_pretrained(partial)
        config = json.loads((partial / "adapter_config.json").read_text())
        record = combination_record(spec, parents, config, chat_base(parents))
        (partial / RECORD_FILE).write_text(json.dumps(record, indent=2))
        (partial / CARD_FILE).write_text(combined_card(spec.name, record), encoding="utf-8")
        fsync_tree(partial)
        os.replace(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    on_step(STEPS)
    return out_dir


def peft_arguments(spec: CombineSpec) -> dict:
    """`add_weighted_adapter`'s keyword arguments for the spec (the ones its type uses)."""
    arguments: dict = {"combination_type": spec.combination_type}
    if spec.density is not None:
        arguments["density"] = spec.density
    if spec.majority_sign_method is not None:
        arguments["majority_sign_method"] = spec.majority_sign_method
    if spec.svd_rank is not None:
        arguments["svd_rank"] = spec.svd_rank
    return arguments


BASE_FIELDS = ("quantization", "double_quant", "compute_dtype", "rope_scaling", "rope_factor")
"""The training spec's fields that say how the base was loaded (what jobs.chat.request.variant_of reads)."""


def chat_base(parents: list[ParentFolder]) -> dict:
    """How chat loads the combined adapter's base: as its parents trained (their quantization, compute dtype, RoPE
    scaling), since their deltas were learned against those weights; the first parent's where they differ, and the
    record says so. A parent without a readable training spec counts as the spec's defaults."""
    defaults = TrainSpec().model_dump(mode="json")
    variants = []
    for parent in parents:
        path = parent.folder / "training_spec.json"
        fields = read_spec_file(path).fields if path.is_file() else {}
        variants.append({name: (fields or {}).get(name, defaults[name]) for name in BASE_FIELDS})
    chosen: dict = {"variant": variants[0]}
    if any(variant != variants[0] for variant in variants[1:]):
        chosen["note"] = (f"the parents trained on different bases ({'; '.join(map(_described, variants))}); chat "
                          f"loads the first parent's, '{parents[0].name}'")
    return chosen


def _described(variant: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in variant.items() if value is not None)


def combination_record(spec: CombineSpec, parents: list[ParentFolder], config: dict,
                       base: dict | None = None) -> dict:
    """What the adapter was made of, kept beside it (combination.json) and in its provenance; `base`: how chat loads
    its base (chat_base)."""
    import peft
    import torch

    return {"combined_from": [{"adapter": p.adapter, "adapter_id": p.adapter_id, "weight": p.weight}
                              for p in spec.parents],
            "method": {"combination_type": spec.combination_type, "density": spec.density,
                       "majority_sign_method": spec.majority_sign_method, "svd_rank": spec.svd_rank,
                       "seed": spec.seed},
            "base_model": spec.base_model, "base_model_reference": config.get("base_model_name_or_path"),
            "rank": config.get("r"), "target_modules": _targets(config.get("target_modules")),
            "chat_base": base or {},
            "libraries": {"peft": peft.__version__, "torch": torch.__version__}}


def _targets(targets) -> str | list[str]:
    return targets if isinstance(targets, str) else sorted(targets or [])


def combined_card(name: str, record: dict) -> str:
    """The model card: a LoRA adapter like a trained one, saying it was combined, from what, and how."""
    method = record["method"]
    rows = "\n".join(f"| `{p['adapter']}` | {p['weight']:g} |" for p in record["combined_from"])
    settings = ", ".join(f"{key} {value}" for key, value in method.items() if value is not None and key != "seed")
    return f"""---
library_name: peft
base_model: {record["base_model_reference"]}
tags: [lora, peft, combined-adapter]
---
# {name}

A LoRA adapter (rank {record["rank"]}) made by the fine-tuning studio from {len(record["combined_from"])} adapters of
`{record["base_model"]}` with PEFT's `add_weighted_adapter` ({settings}). It was not trained itself.

| Adapter | Weight |
|---|---|
{rows}

```python
from peft import AutoPeftModelForCausalLM

model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/folder")
```

`combination.json` records the parents, their weights and the method (with peft {record["libraries"]["peft"]}).
"""


def rewrite_card(folder: Path, name: str) -> bool:
    """Rewrite a combined adapter's card under a new name; False when the folder is not a combined adapter's."""
    record_file = folder / RECORD_FILE
    if not record_file.is_file():
        return False
    (folder / CARD_FILE).write_text(combined_card(name, json.loads(record_file.read_text())), encoding="utf-8")
    return True
