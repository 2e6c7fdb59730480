"""A base's tokenizer without torch: for counting and showing tokens (the plan at submit, the Datasets tab).

`AutoTokenizer` reads the model's config through modules that import torch: in a process that has not imported it
yet (the jobs CLI, the app before its first preview), that cost 7-9 s on a 2-core CPU, against 1.5-2 s for the
tokenizer class alone. The class named in `tokenizer_config.json` is the one AutoTokenizer would build for a local
folder; its ids are the same (checked on every row of the example datasets, tests/jobs/models/test_tokenizer_only.py).
Anything else (no class named, a class transformers does not export) goes through AutoTokenizer."""

from __future__ import annotations

import json
from pathlib import Path


def load_tokenizer_only(model_path: str):
    """The tokenizer of the local model folder `model_path`, loaded by the class its tokenizer_config names."""
    import transformers

    loader = named_tokenizer_class(Path(model_path)) or transformers.AutoTokenizer
    return loader.from_pretrained(model_path, trust_remote_code=False)


def named_tokenizer_class(folder: Path) -> type | None:
    """The tokenizer class `folder`'s tokenizer_config.json names, when transformers exports it and it is a tokenizer
    (a config naming anything else, a model class say, is not obeyed here)."""
    import transformers
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    try:
        named = json.loads((folder / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(named, str) or not named.isidentifier():
        return None
    found = getattr(transformers, named, None)
    return found if isinstance(found, type) and issubclass(found, PreTrainedTokenizerBase) else None
