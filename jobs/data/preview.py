"""What the model will see: stored rows rendered through the base model's chat template.

Only a tokenizer is loaded (never weights), cached per base model, and only when a preview is asked for."""

from __future__ import annotations

import threading
from functools import cache

from jobs.data.store import dataset_path, load_rows
from jobs.models.resolve import allowed_model_roots, base_model_problem, looks_local, prepared_path
from jobs.spec import STUDIO_BASE_MODELS
from jobs.studio import Studio

_TOKENIZER_LOAD = threading.Lock()


@cache
def _tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)


def preview_tokenizer(studio: Studio, base_model: str):
    """The base model's tokenizer when it is on this machine, else None (the preview then shows plain turns): a
    preview never downloads or prepares a model."""
    roots = allowed_model_roots(list(studio.settings.model_dirs), studio.settings.models_dir)
    if base_model not in STUDIO_BASE_MODELS and (base_model_problem(base_model, roots) or not looks_local(base_model)):
        return None  # a hub id cannot be fetched offline; a folder must be one the studio may read
    path = prepared_path(base_model, studio.settings.models_dir)
    if path is None:
        return None
    try:
        with _TOKENIZER_LOAD:
            return _tokenizer(path)
    except (OSError, ValueError):
        return None


def render_row(tokenizer, messages: list[dict]) -> str:
    if tokenizer is not None:
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(f"[{m['role']}] {m['content']}" for m in messages)


def preview_rows(studio: Studio, base_model: str, dataset: str, count: int) -> list[str] | None:
    """The first `count` rows as the model will see them, or None when there is no such dataset."""
    path = dataset_path(studio, dataset) if dataset else None
    if path is None:
        return None
    tokenizer = preview_tokenizer(studio, base_model)
    return [render_row(tokenizer, row["messages"]) for row in load_rows(path)[:count]]
