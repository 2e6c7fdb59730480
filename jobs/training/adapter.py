"""The finished adapter's folder: PEFT files, tokenizer, spec, final metrics and model card, published
atomically (written beside its place, fsynced, renamed), so a crash never leaves half an adapter."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from jobs.spec import TrainSpec
from jobs.training.checkpoints import fsync_tree
from jobs.training.model_card import write_model_card


def save_adapter(model, tokenizer, spec: TrainSpec, final_metrics: dict[str, float], out_dir: Path) -> Path:
    """Write `out_dir/adapter` and return it."""
    partial, final_dir = out_dir / "adapter.partial", out_dir / "adapter"
    for stale in (partial, final_dir):
        if stale.exists():
            shutil.rmtree(stale)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / "training_spec.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=2))
    (partial / "final_metrics.json").write_text(json.dumps(final_metrics, indent=2))
    write_model_card(partial, spec, final_metrics)
    fsync_tree(partial)
    os.replace(partial, final_dir)
    return final_dir
