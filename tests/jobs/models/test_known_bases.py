"""What the studio knows of its bases before preparing them is what preparing them gives: the same config numbers and
the same token ids on the bundled data."""

import json

import pytest

from jobs.data.stats import tokenize_row
from jobs.data.store import load_rows
from jobs.models.known_bases import known_config, known_tokenizer
from jobs.models.tokenizer_only import load_tokenizer_only
from jobs.spec import DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL
from jobs.studio import EXAMPLE_DATASET_FILE, PIRATE_DATASET_FILE

SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "vocab_size", "tie_word_embeddings")


@pytest.mark.parametrize("base", [DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL])
def test_the_known_config_and_tokenizer_are_the_prepared_ones(base, demo_model_dir, request):
    prepared = demo_model_dir if base == DEMO_BASE_MODEL else request.getfixturevalue("smollm2_dir")
    config = json.loads((prepared / "config.json").read_text())
    assert {key: known_config(base).get(key, False) for key in SHAPE_KEYS} == {
        key: config.get(key, False) for key in SHAPE_KEYS}
    rows = load_rows(EXAMPLE_DATASET_FILE)[:100] + load_rows(PIRATE_DATASET_FILE)[:100]
    ours, theirs = known_tokenizer(base), load_tokenizer_only(str(prepared))
    for row in rows:
        assert tokenize_row(ours, row, False).ids == tokenize_row(theirs, row, False).ids
    assert known_config("owner/name") is None and known_tokenizer("owner/name") is None
