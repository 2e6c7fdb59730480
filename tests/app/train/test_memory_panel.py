"""The memory verdict beside the form: a DPO job is sized from its pairs (the longer answer of each, not max_length),
and a base of another family than Llama gets a verdict too."""

from app.train.memory_panel import longest_sequence, verdict_text
from bench.tiny_models import build_tiny
from jobs.data.formats import PREFERENCE, ParsedDataset
from jobs.data.store import register_parsed
from jobs.planning import data_size
from jobs.queue.devices import most_devices
from jobs.spec import parse_spec


def _pairs(count: int = 12) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
             "chosen": [{"role": "assistant", "content": f"{2 * i}."}],
             "rejected": [{"role": "assistant", "content": f"I do not know what {i} plus {i} is, sorry. " * 4}]}
            for i in range(count)]


def test_a_dpo_verdict_is_sized_from_the_longer_answer_of_its_pairs(studio):
    register_parsed(studio, "pairs", ParsedDataset(PREFERENCE, _pairs()))
    spec = parse_spec({"dataset": "pairs", "method": "dpo", "batch_size": 2, "max_length": 1024})
    longest, chosen = longest_sequence(studio, spec), max(data_size(studio, spec).lengths)
    assert 2 * chosen < longest < 200  # the rejected answers are the long ones; both far below max_length
    assert "Memory verdict" in verdict_text(studio, spec.model_dump())
    cores = most_devices(studio)  # no worker registered: this machine's
    every = verdict_text(studio, {**spec.model_dump(), "devices": "all"})
    assert (f"*{cores} devices ('all': the most one host that may take the job has)" in every) == (cores > 1)
    # Packed: the estimate fills every sequence to max_length; the longest row bounds only a shorter pack_length.
    assert longest_sequence(studio, parse_spec({"dataset": "pairs", "packing": True})) == chosen


def test_a_phi3_base_gets_a_verdict(studio, tmp_path):
    base = build_tiny("phi3", tmp_path / "tiny-phi3")
    text = verdict_text(studio, {"base_model": str(base), "batch_size": 2, "use_dora": True})
    assert "Memory verdict" in text and "no estimate" not in text
