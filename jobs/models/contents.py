"""What a model folder holds, read without loading it (no torch): layer names from the safetensors headers, the
chat template from the tokenizer files."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

LINEAR, EMBEDDING, OTHER = "linear", "embedding", "not a Linear or embedding layer"
LLAMA_TARGETS = {**dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                                  "lm_head"), LINEAR), "embed_tokens": EMBEDDING}
"""LoRA-able leaf modules of a Llama: both studio bases are Llamas, so a submit naming one is checked without
building or downloading it."""
EMBEDDING_NAMES = ("embed", "wte", "wpe")
ADAPTER_KIND, MODEL_KIND = "adapter", "model"


def is_whole_model(folder: Path) -> bool:
    """The registered folder holds a whole model that a full or freeze run saved (a transformers model folder), not a
    LoRA adapter: it has a model's config.json and no adapter_config.json."""
    return not (folder / "adapter_config.json").is_file() and (folder / "config.json").is_file()


def folder_kind(folder: Path) -> str:
    """What the adapters list shows as an entry's kind: 'model' (full or freeze fine-tuning) or 'adapter'."""
    return MODEL_KIND if is_whole_model(folder) else ADAPTER_KIND


def tensor_names(path: Path) -> list[str]:
    """Tensor names in one safetensors file; reads only its header."""
    with safe_open(str(path), framework="numpy") as handle:
        return list(handle.keys())


def readable_safetensors(path: Path) -> bool:
    """Whether the file's safetensors header reads (a 0-byte or damaged file does not)."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
    except Exception:  # safetensors raises its own error types for a damaged header
        return False
    return True


def module_kinds(model_dir: Path) -> dict[str, str] | None:
    """Every leaf module with a weight, by kind: LoRA adapts Linear layers (2-D weights) and embeddings; a norm's
    1-D weight is neither. Read from the safetensors headers only. None when the folder has no safetensors."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    kinds: dict[str, str] = {}
    for file in files:
        with safe_open(str(file), framework="numpy") as handle:
            for tensor in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                parts = tensor.split(".")
                if len(parts) < 2 or parts[-1] != "weight":
                    continue
                leaf, two_d = parts[-2], len(handle.get_slice(tensor).get_shape()) == 2
                kind = (EMBEDDING if any(e in leaf for e in EMBEDDING_NAMES) else LINEAR) if two_d else OTHER
                kinds.setdefault(leaf, kind)
    if _ties_embeddings(model_dir):
        kinds.setdefault("lm_head", LINEAR)  # tied: the head has no tensor of its own, but the module exists
    return kinds


def lora_targets(kinds: dict[str, str]) -> list[str]:
    return sorted(name for name, kind in kinds.items() if kind != OTHER)


def _ties_embeddings(model_dir: Path) -> bool:
    try:
        return bool(json.loads((Path(model_dir) / "config.json").read_text()).get("tie_word_embeddings"))
    except (OSError, ValueError):
        return False


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
