"""A Hugging Face hub cache laid out as huggingface_hub lays it out (blobs named by content, snapshot folders of
symlinks, refs/main), holding a local model under a made-up repo id: the hub, mocked at the file level."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "chat_template.jinja")


def cache_model(cache: Path, repo_id: str, model_dir: Path, commit: str | None = None) -> str:
    """Put `model_dir`'s files into `cache` as `repo_id` at `commit` (made up from the repo id when not given), with
    main pointing at it. Returns the commit."""
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for folder in (repo / "blobs", repo / "refs", snapshot):
        folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if not (model_dir / name).is_file():
            continue
        data = (model_dir / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).unlink(missing_ok=True)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    (repo / "refs" / "main").write_text(commit)
    return commit
