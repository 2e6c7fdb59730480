"""What a model folder holds, read without loading it (no torch): layer names from the safetensors headers, the
chat template from the tokenizer files."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open


def tensor_names(path: Path) -> list[str]:
    """Tensor names in one safetensors file; reads only its header."""
    with safe_open(str(path), framework="numpy") as handle:
        return list(handle.keys())


def linear_module_names(model_dir: Path) -> set[str] | None:
    """Leaf names of the modules holding 2-D weights (Linear layers and embeddings), or None if unknown."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    names = set()
    for file in files:
        for tensor in tensor_names(file):
            parts = tensor.split(".")
            if len(parts) >= 2 and parts[-1] == "weight":
                names.add(parts[-2])
    return names


def chat_template_text(model_dir: Path) -> str | None:
    """The chat template(s) a tokenizer folder defines, or None when it has no tokenizer_config.json."""
    config_file = model_dir / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    template = json.loads(config_file.read_text()).get("chat_template") or ""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        template += jinja.read_text()
    return template
