"""What the studio knows of its own bases before it builds or prepares them: their config (so their size) and their
tokenizer. A job's plan is made from these, so the same spec gets the same plan whether or not the base's weights are
on disk yet: read from disk, a fresh studio planned one spec at 2e-4 (unknown size) and then at 5e-3.

The demo's tokenizer is trained from the bundled example chats exactly as the demo build trains it (deterministic),
and its config follows from `MODEL_SHAPE` and that tokenizer's size. SmolLM2's config and tokenizer ship in
static/models/ as the preparation writes them (the tokenizer xz-compressed: 0.45 MB instead of 3.5 MB);
tests/jobs/models/test_known_bases.py checks both against prepared copies."""

from __future__ import annotations

import json
import lzma
import shutil
import tempfile
import threading
from functools import cache
from pathlib import Path

from jobs.spec import DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL
from jobs.studio import EXAMPLE_DATASET_FILE, REPO_ROOT

SHIPPED_DIR = REPO_ROOT / "static" / "models"
"""One folder per studio base whose config and tokenizer ship with the studio."""
_LOADING = threading.Lock()


def known_config(base_model: str) -> dict | None:
    """A studio base's config.json as a dict (None for any other base)."""
    if base_model == DEMO_BASE_MODEL:
        from jobs.models.demo import MODEL_SHAPE, VOCAB_MULTIPLE

        vocab = -(-len(known_tokenizer(DEMO_BASE_MODEL)) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
        return {**MODEL_SHAPE, "vocab_size": vocab, "tie_word_embeddings": False}
    if base_model == SMOLLM2_BASE_MODEL:
        return json.loads((SHIPPED_DIR / base_model / "config.json").read_text())
    return None


def known_tokenizer(base_model: str):
    """A studio base's tokenizer, as loading its prepared folder gives it (None for any other base)."""
    if base_model not in (DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL):
        return None
    with _LOADING:
        return _tokenizer(base_model)


@cache
def _tokenizer(base_model: str):
    from jobs.models.tokenizer_only import load_tokenizer_only

    # Loaded from a folder laid out as the prepared one, by the same loader, so the ids cannot differ by the path.
    folder = Path(tempfile.mkdtemp(prefix=f".{base_model}-tokenizer-"))
    try:
        if base_model == DEMO_BASE_MODEL:
            from jobs.models.demo import train_tokenizer

            train_tokenizer(EXAMPLE_DATASET_FILE).save_pretrained(folder)
        else:
            shipped = SHIPPED_DIR / base_model
            (folder / "tokenizer.json").write_bytes(lzma.decompress((shipped / "tokenizer.json.xz").read_bytes()))
            for name in ("tokenizer_config.json", "chat_template.jinja"):
                shutil.copyfile(shipped / name, folder / name)
        return load_tokenizer_only(str(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
