"""The Train tab's preview speaks the spec's own words about an eval fraction it cannot use (no second range)."""

from app.train import tab as train_tab
from jobs.data.store import find_dataset


def test_the_preview_refuses_an_eval_fraction_in_the_words_of_the_field(studio):
    found = find_dataset(studio, "example")
    assert "the eval fraction must be at least 0 and below 0.5 (got 0.7)." in train_tab._split_text(studio, found,
                                                                                                     "0.7", "")
    assert "the eval fraction must be a number." in train_tab._split_text(studio, found, "a tenth", "")
    assert "eval fraction 0.2)" in train_tab._split_text(studio, found, "0.2", "")
