"""What the Datasets tab shows equals what the trainer uses: the loss mask against TRL's own collator output for the
same rows, and the length histogram against a direct count."""

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs.data.formats import ParsedDataset, parse_file
from jobs.data.stats import (
    dataset_stats,
    duplicates,
    packed_sequence_count,
    rows_per_packed_sequence,
    tokenize_row,
)
from jobs.data.store import load_rows, store_parsed
from jobs.models.loading import load_tokenizer
from jobs.spec import parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.train import prepare_run

MAX_LENGTH = 48  # short enough that some example rows are cut


def _chat(*turns: str, system: str | None = None) -> dict:
    roles = ["user", "assistant"] * len(turns)
    messages = [{"role": role, "content": text} for role, text in zip(roles, turns, strict=False)]
    return {"messages": ([{"role": "system", "content": system}] if system else []) + messages}


ROWS = [*parse_file(EXAMPLE_DATASET_FILE).rows[:6],
        _chat("first question", "first answer", "a follow-up", "the second answer"),
        _chat("what is the capital of France?", "Paris.", system="Answer in one word."),
        _chat("tell me a long story " * 8, "once upon a time " * 12)]


def _trainer_masks(tmp_path, demo_model_dir, rows: list[dict], assistant_only_loss: bool):
    """(input ids, loss flags) per row, as TRL's SFTTrainer tokenizes and its collator labels them."""
    path, _ = store_parsed(ParsedDataset(format="messages", rows=rows), tmp_path / "data")
    spec = parse_spec({"max_steps": 1, "batch_size": 1, "max_length": MAX_LENGTH, "packing": False,
                       "eval_fraction": 0, "sample_prompts": 0, "assistant_only_loss": assistant_only_loss})
    run = prepare_run(spec, tmp_path / "run", str(demo_model_dir), path, lambda *a: None, lambda: False)
    masks = []
    for example in run.trainer.train_dataset:
        labels = run.trainer.data_collator([example])["labels"][0].tolist()
        masks.append((list(example["input_ids"]), [label != -100 for label in labels]))
    return masks, run.tokenizer


@pytest.mark.parametrize("assistant_only_loss", [True, False])
def test_the_loss_mask_shown_is_the_one_trl_trains_with(tmp_path, demo_model_dir, assistant_only_loss):
    trained, _ = _trainer_masks(tmp_path, demo_model_dir, ROWS, assistant_only_loss)
    tokenizer = load_tokenizer(str(demo_model_dir), for_assistant_only_loss=assistant_only_loss)
    shown = [tokenize_row(tokenizer, row, assistant_only_loss) for row in ROWS]
    # The trainer shuffles nothing at tokenization: row i is row i. Shown rows are cut where the trainer cuts them,
    # and a row whose cut leaves no loss token is one TRL drops: the stats count exactly those.
    kept = [row for row in shown if any(row.loss[:MAX_LENGTH])]
    stats = dataset_stats(ROWS, tokenizer, MAX_LENGTH, assistant_only_loss)
    assert stats.no_loss_after_cut == len(shown) - len(kept) == (1 if assistant_only_loss else 0)
    shown = kept
    assert len(trained) == len(shown)
    for (ids, loss), row in zip(trained, shown, strict=True):
        assert ids == row.ids[:MAX_LENGTH]
        assert loss == row.loss[:MAX_LENGTH]
    assert any(len(row.ids) > MAX_LENGTH for row in shown), "no row exercises the cut"
    if assistant_only_loss:
        assert all(0 < sum(loss) < len(loss) for _, loss in trained)


def test_histogram_counts_equal_a_direct_count(demo_model_dir):
    tokenizer = load_tokenizer(str(demo_model_dir), for_assistant_only_loss=True)
    rows = load_rows_of_example()
    stats = dataset_stats(rows, tokenizer, MAX_LENGTH, assistant_only_loss=True)
    lengths = [len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
               for row in rows]
    assert stats.lengths == lengths
    buckets = stats.histogram()
    assert sum(count for _, _, count in buckets) == len(rows)
    for start, end, count in buckets[:-1]:
        assert count == sum(start <= length < end for length in lengths)
    last_start, last_end, last_count = buckets[-1]
    assert last_count == sum(length >= last_start for length in lengths)
    assert last_end >= max(lengths)
    assert stats.over_max == sum(length > MAX_LENGTH for length in lengths) > 0
    assert stats.summary()["share_longer"] == pytest.approx(stats.over_max / len(rows))
    assert stats.summary()["mean_turns"] == pytest.approx(
        sum(sum(m["role"] == "user" for m in row["messages"]) for row in rows) / len(rows))


def load_rows_of_example() -> list[dict]:
    return parse_file(EXAMPLE_DATASET_FILE).rows


def test_raw_text_carries_loss_on_every_token(demo_model_dir):
    tokenizer = load_tokenizer(str(demo_model_dir), for_assistant_only_loss=False)
    row = tokenize_row(tokenizer, {"text": "Plain prose for continued pre-training."}, assistant_only_loss=True)
    assert row.ids and all(row.loss)
    stats = dataset_stats([{"text": "one two three"}, {"text": "one two three"}], tokenizer, 64, True)
    assert stats.loss_share == 1.0 and stats.duplicates == 1 and stats.turns == [0, 0]


def test_exact_duplicates_and_packing():
    rows = [_chat("a", "b"), _chat("a", "b"), _chat("a", "c"), _chat("a", "b")]
    assert duplicates(rows) == 2
    # Best-fit decreasing: 60+40 | 50+50 | 30 → 5 rows in 3 sequences of 100.
    assert rows_per_packed_sequence([60, 50, 50, 40, 30], 100) == pytest.approx(5 / 3)
    # An over-long row is cut to max_length and fills a sequence alone.
    assert rows_per_packed_sequence([500, 10], 100) == pytest.approx(1.0)


@pytest.mark.parametrize("max_length", [64, 512])
def test_the_packed_count_is_trls_own_best_fit_packing(max_length):
    """The plan's count of packed sequences equals what TRL's BFD packing makes of the same lengths (in one map
    batch: TRL packs each batch of 1,000 rows apart)."""
    import random

    from datasets import Dataset
    from trl.data_utils import pack_dataset

    rng = random.Random(max_length)
    lengths = [rng.randint(1, max_length * 6 // 5) for _ in range(900)]
    rows = Dataset.from_dict({"input_ids": [[1] * n for n in lengths]})
    packed = pack_dataset(rows, max_length, strategy="bfd", map_kwargs={"batch_size": len(lengths)})
    assert packed_sequence_count(lengths, max_length) == len(packed)
    big = [rng.randint(1, 500) for _ in range(100_000)]  # counted in well under a second, not minutes
    assert sum(big) / 512 <= packed_sequence_count(big, 512) <= len(big)


def test_stored_rows_read_back(tmp_path):
    path, _ = store_parsed(ParsedDataset(format="messages", rows=ROWS), tmp_path)
    assert load_rows(path) == ROWS


def test_two_inspects_at_once_count_what_one_alone_counts(demo_model_dir):
    """The web process inspects for several people at once. transformers compiles a chat template once per process
    with one AssistantTracker: two renders at once raised "AssistantTracker should not be reused before closed", or
    one's assistant tokens landed in the other's mask."""
    tokenizer = load_tokenizer(str(demo_model_dir), for_assistant_only_loss=True)
    rows = load_rows_of_example()[:150]
    alone = dataset_stats(rows, tokenizer, MAX_LENGTH, assistant_only_loss=True)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads take turns often, as a loaded server's do
    try:
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda _: dataset_stats(rows, tokenizer, MAX_LENGTH, True), range(4)))
    finally:
        sys.setswitchinterval(switch)
    for stats in together:
        assert (stats.lengths, stats.loss_tokens, stats.no_loss_after_cut) == (
            alone.lengths, alone.loss_tokens, alone.no_loss_after_cut)
