"""The Train tab's preview speaks the spec's own words about an eval fraction it cannot use (no second range)."""

from app.train import tab as train_tab
from jobs.data.store import find_dataset


def test_the_preview_refuses_an_eval_fraction_in_the_words_of_the_field(studio):
    found = find_dataset(studio, "example")
    assert "the eval fraction must be at least 0 and below 0.5 (got 0.7)." in train_tab._split_text(studio, found,
                                                                                                     "0.7", "")
    assert "the eval fraction must be a number." in train_tab._split_text(studio, found, "a tenth", "")
    assert "eval fraction 0.2)" in train_tab._split_text(studio, found, "0.2", "")


def test_the_preview_shows_the_rows_a_mix_takes(studio):
    """The preview (the tab's and the API's) follows the mix: what it takes from each dataset, the split of the mixed
    rows, and the first mixed rows with the default system prompt, as the run will see them."""
    import json

    from app.web import api_reads

    spec = {"dataset_mix": "example:0.5, pirate:0.5", "max_rows": 8, "system_prompt": "Be brief.",
            "eval_fraction": 0.25}
    text = api_reads.preview(studio, json.dumps(spec))
    pirate = find_dataset(studio, "pirate").rows
    assert f"Mixed with seed 42: 4 of 600 rows from 'example'; 4 of {pirate:,} rows from 'pirate'." in text, text
    assert "**8 rows** (messages): 6 train, 2 eval" in text and text.count("<|system|>Be brief.<|end|>") >= 1
