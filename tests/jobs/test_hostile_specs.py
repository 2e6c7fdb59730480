"""Hostile specs and base-model folders: refused at submit with the field named, nothing queued. And a property:
any JSON gives a TrainSpec or a SpecError, and every accepted spec builds the trainer's own configs."""

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.data.errors import DatasetError
from jobs.data.store import import_dataset
from jobs.queue.transport import pending_job_ids
from jobs.spec import SpecError, TrainSpec, parse_spec
from jobs.submit import submit_job
from storage import jobs_repo


def _refused(studio, raw, priority=0) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        submit_job(studio, raw, priority=priority)
    with studio.db.read() as s:
        assert jobs_repo.list_jobs(s) == []
    assert pending_job_ids(studio.settings) == set()
    return {p.field: p.message for p in caught.value.problems}


@pytest.mark.parametrize(("raw", "field", "words"), [
    ({"seed": -1}, "seed", "from 0 to 4294967295"),
    ({"seed": 2**32}, "seed", "from 0 to 4294967295"),
    ({"max_steps": 10**30}, "max_steps", "from 1 to 10,000,000"),
    ({"name": "é" * 100}, "name", "use only letters, digits"),
    ({"name": "x" * 101}, "name", "at most 100 characters"),
    ({"learning_rate": float("nan")}, "learning_rate", "greater than 0"),
    ({"lora_alpha": float("inf")}, "lora_alpha", "greater than 0"),
    ({"base_model": "a\x00b"}, "base_model", "control character"),
    ({"dataset": "x\ud800"}, "dataset", "unable to parse raw data as a unicode string"),
    ({"lora_r": 2**70}, "lora_r", "from 1 to 1024"),
    ({"target_modules": {"q": 1}}, "target_modules", "should be a valid"),
])
def test_hostile_spec_values_are_refused(studio, raw, field, words):
    problems = _refused(studio, raw)
    assert words in problems[field], problems


def test_a_priority_beyond_64_bits_is_refused(studio):
    assert "from -1,000,000 to 1,000,000" in _refused(studio, {"max_steps": 3}, priority=2**70)["priority"]


def _model_copy(demo_model_dir, tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(demo_model_dir, folder)
    return folder


@pytest.mark.parametrize(("damage", "words"), [
    (lambda f: (f / "model.safetensors").write_bytes(b""), "model.safetensors is not a readable safetensors file"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64), "is not a readable safetensors file"),
    (lambda f: (f / "tokenizer_config.json").write_text("{not json"), "tokenizer_config.json is not valid JSON"),
    (lambda f: ((f / "model.safetensors").unlink(), (f / "pytorch_model.bin").write_bytes(b"pickle")),
     "has no .safetensors weights"),
])
def test_damaged_base_folders_are_refused(studio, demo_model_dir, tmp_path, damage, words):
    folder = _model_copy(demo_model_dir, tmp_path, "damaged")
    damage(folder)
    assert words in _refused(studio, {"base_model": str(folder)})["base_model"]


def test_a_folder_outside_the_allowed_ones_reads_like_a_missing_one(studio, demo_model_dir, tmp_path, monkeypatch):
    from jobs.studio import open_studio
    from storage.settings import load_settings

    guarded = open_studio(load_settings({"STUDIO_DATA_DIR": str(studio.settings.data_dir),
                                         "STUDIO_MODEL_DIRS": str(tmp_path / "allowed")}))
    outside, nowhere = _model_copy(demo_model_dir, tmp_path, "outside"), tmp_path / "nowhere"
    there, missing = (_refused(guarded, {"base_model": str(p)})["base_model"].replace(str(p), "X")
                      for p in (outside, nowhere))
    assert there == missing  # the same words: nothing about which server paths exist
    assert "among the folders this studio may load from" in there


def test_the_same_content_under_a_new_name_says_where_it_is(studio, tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n" + json.dumps({"prompt": "r", "completion":
                                                                                          "b"}))
    assert not import_dataset(studio, path, "first").reused
    again = import_dataset(studio, path, "second")
    assert again.reused and again.dataset.name == "first"
    assert "already stored as 'first'" in again.message("second")
    other = tmp_path / "b.jsonl"
    other.write_text(json.dumps({"prompt": "z", "completion": "z"}))
    with pytest.raises(DatasetError, match="a dataset named 'first' already exists with other content"):
        import_dataset(studio, other, "first")
    for bad in ("..", ".hidden", "a/b", ""):
        with pytest.raises(DatasetError, match="name"):
            import_dataset(studio, other, bad)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10)
FIELDS = st.sampled_from(sorted(TrainSpec.model_fields) + ["unknown", ""])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.dictionaries(FIELDS, JSON, max_size=6) | JSON)
def test_any_json_gives_a_spec_or_a_spec_error_and_accepted_specs_build_the_trainer(raw):
    try:
        spec = parse_spec(raw)
    except SpecError as error:
        assert error.problems and all(p.field and p.message for p in error.problems)
        return
    _trainer_accepts(spec)


def _trainer_accepts(spec: TrainSpec) -> None:
    """The bounds the trainer needs: peft and TRL build their configs from the accepted values."""
    import tempfile
    from pathlib import Path

    from jobs.run_settings.settings import Base, Machine, resolve
    from jobs.training.prepare import lora_config
    from jobs.training.train import sft_config

    planned = spec.model_copy(update={name: 1 if name != "packing" else True for name in
                                      ("batch_size", "packing", "learning_rate", "num_epochs")
                                      if getattr(spec, name) is None})
    settings = resolve(planned, Base(), Machine("cpu", bf16=False))
    lora_config(settings)
    with tempfile.TemporaryDirectory() as out:
        if planned.method == "grpo":  # each method's own config: TRL's configs take different arguments
            from jobs.training.grpo import grpo_config

            grpo_config(settings, planned, Path(out))
        elif planned.method != "sft":
            from jobs.training.preference import preference_config

            preference_config(settings, planned, Path(out), True)
        else:
            sft_config(settings, planned, Path(out), True)
    json.dumps(spec.model_dump(mode="json"))  # storable as it is
