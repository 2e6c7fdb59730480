"""The dataset store: the same content in every format becomes the same tokens, a chosen mapping is stored with the
dataset, rename and delete are refused while a job uses the dataset, and files and rows go together."""

import json
import os
import time

import pandas as pd
import pytest

from jobs.data.errors import DatasetError
from jobs.data.formats import Mapping, parse_file
from jobs.data.hub import import_hub_dataset
from jobs.data.stats import tokenize_row
from jobs.data.store import (
    datasets_in_use,
    delete_dataset,
    find_dataset,
    import_dataset,
    remove_orphan_files,
    rename_dataset,
)
from jobs.models.loading import load_tokenizer
from jobs.spec import SpecError
from jobs.submit import submit_job
from storage import catalog

QA = [("What is 2 + 2?", "4"), ("Name a primary colour.", "Red"), ("Capital of Italy?", "Rome")]


def _jsonl(path, records):
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    return path


EQUIVALENT_FILES = {
    "messages.jsonl": lambda p: _jsonl(p, [{"messages": [{"role": "user", "content": q},
                                                          {"role": "assistant", "content": a}]} for q, a in QA]),
    "sharegpt.json": lambda p: p.write_text(json.dumps([{"conversations": [{"from": "human", "value": q},
                                                                            {"from": "gpt", "value": a}]}
                                                         for q, a in QA])),
    "alpaca.csv": lambda p: pd.DataFrame({"instruction": [q for q, _ in QA], "input": [""] * len(QA),
                                          "output": [a for _, a in QA]}).to_csv(p, index=False),
    "completion.parquet": lambda p: pd.DataFrame({"prompt": [q for q, _ in QA],
                                                  "completion": [a for _, a in QA]}).to_parquet(p),
}


def test_each_format_gives_the_same_tokenized_example(tmp_path, demo_model_dir):
    tokenizer = load_tokenizer(str(demo_model_dir), for_assistant_only_loss=True)
    seen = {}
    for filename, write in EQUIVALENT_FILES.items():
        path = tmp_path / filename
        write(path)
        parsed = parse_file(path)
        assert parsed.format == filename.split(".")[0]
        seen[filename] = [tokenize_row(tokenizer, row, True) for row in parsed.rows]
    first = next(iter(seen.values()))
    assert all(0 < sum(row.loss) < len(row.ids) for row in first)
    assert all(rows == first for rows in seen.values()), {name: rows[0] for name, rows in seen.items()}


def _odd_alpaca_csv(tmp_path):
    path = tmp_path / "odd.csv"
    pd.DataFrame({"Frage": [q for q, _ in QA], "Antwort": [a for _, a in QA], "note": ["x"] * len(QA)}).to_csv(
        path, index=False)
    return path


def test_odd_columns_need_a_mapping_and_the_chosen_one_is_stored(studio, tmp_path):
    path = _odd_alpaca_csv(tmp_path)
    with pytest.raises(DatasetError, match="Choose a format and map the columns"):
        import_dataset(studio, path, "odd")
    with pytest.raises(DatasetError) as caught:
        import_dataset(studio, path, "odd", Mapping("alpaca", {"instruction": "Frage", "output": "Answer"}))
    assert caught.value.problems == ["columns: no column 'Answer' in the file (it has: Antwort, Frage, note)"]
    mapping = Mapping("alpaca", {"instruction": "Frage", "output": "Antwort"})
    dataset = import_dataset(studio, path, "odd", mapping).dataset
    assert (dataset.format, dataset.rows, dataset.mapping) == ("alpaca", 3, mapping.as_dict())
    assert dataset.source == {"file": "odd.csv"}
    stored = [json.loads(line) for line in studio.absolute(dataset.path).read_text().splitlines()]
    assert stored[0]["messages"] == [{"role": "user", "content": QA[0][0]}, {"role": "assistant", "content": "4"}]


def test_a_mapping_naming_roles_the_format_lacks_lists_every_problem(studio, tmp_path):
    with pytest.raises(DatasetError) as caught:
        import_dataset(studio, _odd_alpaca_csv(tmp_path), "", Mapping("completion", {"question": "Frage"}))
    assert set(caught.value.problems) == {
        "name: must not be empty", "columns: 'question' is not a role of the completion format",
        "columns: the completion format needs a column for 'prompt'",
        "columns: the completion format needs a column for 'completion'"}


def _queued_job_on(studio, dataset: str) -> int:
    return submit_job(studio, {"dataset": dataset, "max_steps": 1, "eval_fraction": 0})


def test_delete_and_rename_are_refused_while_a_job_uses_the_dataset(studio, tmp_path):
    dataset = import_dataset(studio, _odd_alpaca_csv(tmp_path), "odd",
                             Mapping("alpaca", {"instruction": "Frage", "output": "Antwort"})).dataset
    _queued_job_on(studio, "odd")
    assert "odd" in datasets_in_use(studio)
    with pytest.raises(DatasetError, match="used by a queued or running job"):
        delete_dataset(studio, "odd")
    with pytest.raises(DatasetError, match="used by a queued or running job"):
        rename_dataset(studio, "odd", "renamed")
    assert find_dataset(studio, "odd") is not None and studio.absolute(dataset.path).exists()


def test_an_evaluation_dataset_counts_as_in_use(studio, tmp_path):
    held_out = _jsonl(tmp_path / "held.jsonl", [{"prompt": q, "completion": a} for q, a in QA])
    import_dataset(studio, held_out, "held")
    submit_job(studio, {"eval_dataset": "held", "max_steps": 1})
    with pytest.raises(DatasetError, match="used by a queued or running job"):
        delete_dataset(studio, "held")


def test_delete_removes_the_row_and_the_file_together(studio, tmp_path):
    dataset = import_dataset(studio, _jsonl(tmp_path / "mine.jsonl", [{"text": "some prose"}]), "mine").dataset
    stored = studio.absolute(dataset.path)
    delete_dataset(studio, "mine")
    assert find_dataset(studio, "mine") is None and not stored.exists()
    with pytest.raises(DatasetError, match="no dataset named 'mine'"):
        delete_dataset(studio, "mine")
    with pytest.raises(DatasetError, match="bundled"):
        delete_dataset(studio, "example")


def test_rename_keeps_the_content_and_refuses_taken_names(studio, tmp_path):
    import_dataset(studio, _jsonl(tmp_path / "a.jsonl", [{"text": "alpha"}]), "a")
    import_dataset(studio, _jsonl(tmp_path / "b.jsonl", [{"text": "beta"}]), "b")
    with pytest.raises(DatasetError, match="already named 'b'"):
        rename_dataset(studio, "a", "b")
    renamed = rename_dataset(studio, "a", "alpha")
    assert find_dataset(studio, "a") is None and find_dataset(studio, "alpha").sha256 == renamed.sha256
    with pytest.raises(DatasetError) as caught:
        rename_dataset(studio, "alpha", " ")
    assert caught.value.problems[0].startswith("new_name:")


def test_an_old_file_no_row_names_is_swept_and_a_young_one_stays(studio, tmp_path):
    kept = studio.absolute(import_dataset(studio, _jsonl(tmp_path / "k.jsonl", [{"text": "kept"}]), "k").dataset.path)
    old, young = studio.settings.datasets_dir / "old.jsonl", studio.settings.datasets_dir / "young.jsonl"
    torn = studio.settings.datasets_dir / ".abc.jsonl.123-beef.partial"  # a writer killed mid-write
    for path in (old, young, torn):
        path.write_text("{}\n")
    two_hours_ago = time.time() - 7200
    for path in (old, torn, kept):
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert sorted(remove_orphan_files(studio)) == sorted(["old.jsonl", torn.name])
    assert kept.exists() and young.exists() and not old.exists() and not torn.exists()


def test_the_same_content_under_a_new_name_reuses_the_stored_one(studio, tmp_path):
    first = import_dataset(studio, _jsonl(tmp_path / "x.jsonl", [{"text": "same"}]), "x")
    again = import_dataset(studio, _jsonl(tmp_path / "y.jsonl", [{"text": "same"}]), "y")
    assert again.reused and again.dataset.id == first.dataset.id
    assert "already stored as 'x'" in again.message("y")
    with studio.db.read() as session:
        assert catalog.get_dataset_by_name(session, "y") is None


def test_the_hub_offline_gives_a_clear_refusal(studio, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetError) as caught:
        import_hub_dataset(studio, "tatsu-lab/alpaca", "alpaca", split="train")
    assert caught.value.problems[0].startswith("hub: could not reach the Hugging Face hub to fetch 'tatsu-lab/alpaca'")
    with pytest.raises(DatasetError) as caught:
        import_hub_dataset(studio, "not an id!", "")
    assert caught.value.problems[0].startswith("hub_id: 'not an id!' is not a hub dataset id")


@pytest.mark.parametrize(("spec", "words"), [
    ({"eval_dataset": "nowhere"}, "no dataset named 'nowhere'"),
    ({"eval_dataset": "same"}, "is the training data itself"),
    ({"eval_dataset": "prose"}, "is raw text but 'same' is chat"),
])
def test_bad_evaluation_datasets_are_refused(studio, tmp_path, spec, words):
    import_dataset(studio, _jsonl(tmp_path / "same.jsonl", [{"prompt": q, "completion": a} for q, a in QA]), "same")
    import_dataset(studio, _jsonl(tmp_path / "prose.jsonl", [{"text": "prose"}]), "prose")
    with pytest.raises(SpecError) as caught:
        submit_job(studio, {"dataset": "same", **spec})
    assert any(p.field == "eval_dataset" and words in p.message for p in caught.value.problems), caught.value


def test_raw_text_refuses_assistant_only_loss(studio, tmp_path):
    import_dataset(studio, _jsonl(tmp_path / "prose.jsonl", [{"text": "prose"}, {"text": "more"}]), "prose")
    with pytest.raises(SpecError) as caught:
        submit_job(studio, {"dataset": "prose", "assistant_only_loss": True})
    assert [p.field for p in caught.value.problems] == ["assistant_only_loss"]
    assert submit_job(studio, {"dataset": "prose", "assistant_only_loss": False}) > 0
