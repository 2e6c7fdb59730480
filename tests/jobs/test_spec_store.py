"""Specs already stored keep working: specs written by the studio before versions existed (tests/jobs/fixtures, made
by that code) load under today's rules, and one today's rules refuse comes back with its problems in words, never as
an exception, in the worker's paths too (a resume, a recovery after running out of memory)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from sqlalchemy import text

from jobs import spec_versions
from jobs.presets import load_preset, save_preset
from jobs.queue.child import EXIT_OUT_OF_MEMORY, run_attempt
from jobs.queue.supervisor import _record_outcome
from jobs.spec import SPEC_VERSION, SpecError, TrainSpec, parse_spec
from jobs.spec_store import StoredSpecError, load_stored_spec, read_spec_file
from jobs.submit import submit_job
from storage import jobs_repo

V1 = {name: spec for name, spec in json.loads((Path(__file__).parent / "fixtures" / "specs_v1.json").read_text())
      .items() if not name.startswith("_")}


def write_stored_spec(studio, job_id: int, spec: dict) -> None:
    """Put a spec into a job's row as SQL would, past every check (an old studio, a hand edit)."""
    with studio.db.write() as session:
        session.execute(text("UPDATE jobs SET spec = :spec WHERE id = :id"), {"spec": json.dumps(spec), "id": job_id})


@pytest.mark.parametrize("name", sorted(V1))
def test_a_spec_saved_before_versions_loads_as_version_1_and_means_the_same(name):
    stored = load_stored_spec(V1[name])
    assert stored.version == 1 and stored.problems == []
    assert stored.spec.spec_version == SPEC_VERSION
    assert {k: v for k, v in stored.spec.model_dump(mode="json").items() if k in V1[name]} == V1[name]


def test_what_is_stored_now_carries_its_version():
    assert TrainSpec().model_dump(mode="json")["spec_version"] == SPEC_VERSION
    assert parse_spec({"spec_version": SPEC_VERSION, "lora_r": 4}).lora_r == 4  # a saved spec file resubmits
    assert parse_spec({"spec_version": 1}).spec_version == SPEC_VERSION  # every valid version is migrated
    with pytest.raises(SpecError, match="spec_version"):
        parse_spec({"spec_version": True})  # not a version, even where Python counts it as 1


def test_a_spec_that_can_no_longer_be_valid_comes_back_with_its_problems():
    stored = load_stored_spec({**V1["defaults"], "lora_r": 0, "max_steps": 0})
    assert stored.spec is None and [p.field for p in stored.problems] == ["lora_r", "max_steps"]
    assert "lora_r: must be a whole number from 1 to 1024 (got 0)" in stored.problems_text()
    with pytest.raises(StoredSpecError, match="version 1"):
        stored.require()
    assert load_stored_spec("not a spec").problems[0].field == "spec"
    newer = load_stored_spec({**V1["defaults"], "spec_version": SPEC_VERSION + 1})
    assert [p.field for p in newer.problems] == ["spec_version"]


def test_an_unreadable_run_folder_spec_is_a_problem_too(tmp_path):
    (tmp_path / "training_spec.json").write_text("{torn")
    assert "training_spec.json is unreadable" in read_spec_file(tmp_path / "training_spec.json").problems[0].message
    (tmp_path / "training_spec.json").write_text(json.dumps(V1["every_variant"]))
    assert read_spec_file(tmp_path / "training_spec.json").spec.use_dora


def test_migrations_run_in_order_from_the_stored_version(monkeypatch):
    """A later version that renames a field: a v1 spec goes through every step, a partial one (a preset) too."""
    later = spec_versions.SPEC_VERSION + 1
    monkeypatch.setattr(spec_versions, "SPEC_VERSION", later)
    monkeypatch.setitem(spec_versions.MIGRATIONS, later - 1, lambda f: {("rank" if k == "lora_r" else k): v
                                                                        for k, v in f.items()})
    assert spec_versions.migrate({"spec_version": 1, "lora_r": 4}) == {"rank": 4, "spec_version": later}
    assert spec_versions.migrate({"lora_r": 4}) == {"lora_r": 4}  # no version: written today, left as it is


def test_the_retired_lm_head_preset_becomes_embeddings_with_the_head_trained_fully():
    """Version 2's 'embeddings+lm_head' failed in every trainer (no LoRA on lm_head): a stored one now trains what it
    meant, and a new spec naming it is told what to write instead."""
    stored = load_stored_spec({"spec_version": 2, "target_modules": "embeddings+lm_head", "modules_to_save": ["norm"]})
    assert stored.problems == [] and stored.spec.target_modules == "embeddings"
    assert stored.spec.modules_to_save == ["norm", "lm_head"]
    assert stored.spec.target_module_names() == ["embed_tokens"]
    with pytest.raises(SpecError, match="use 'embeddings' with modules_to_save"):
        parse_spec({"target_modules": "embeddings+lm_head"})


def test_a_job_stored_before_versions_is_read_as_version_1(studio):
    job_id = submit_job(studio, {"max_steps": 3})
    write_stored_spec(studio, job_id, V1["every_variant"])
    with studio.db.read() as session:
        stored = load_stored_spec(jobs_repo.get_job(session, job_id).spec)
    assert stored.version == 1 and stored.spec.lora_r == 32 and stored.spec.quantization == "int8"


def test_a_resume_of_an_invalid_stored_spec_fails_the_attempt_in_words(studio):
    job_id = submit_job(studio, {"max_steps": 3})
    write_stored_spec(studio, job_id, {**V1["defaults"], "lora_r": 0})
    with studio.db.write() as session:
        attempt = jobs_repo.claim_job(session, job_id, "test:1")
    studio.run_dir(job_id).mkdir(parents=True)  # the supervisor makes it, for the child's log
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        assert run_attempt(studio, job_id, attempt) == 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    error = (studio.run_dir(job_id) / "error.txt").read_text()
    assert error.startswith("This stored spec (version 1) is not valid under today's rules: lora_r: must be")


def test_a_recovery_after_running_out_of_memory_fails_an_invalid_stored_spec_in_words(studio):
    job_id = submit_job(studio, {"max_steps": 3, "batch_size": 4})
    write_stored_spec(studio, job_id, {**V1["defaults"], "batch_size": 4, "max_length": 4})
    with studio.db.write() as session:
        attempt = jobs_repo.claim_job(session, job_id, "test:1")
    _record_outcome(studio, job_id, attempt, EXIT_OUT_OF_MEMORY, studio.run_dir(job_id))
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id)
    assert job.status == "failed" and "max_length: must be a whole number from 16 to 131072 (got 4)" in job.error


def test_presets_saved_before_versions_load_and_an_invalid_one_says_why(studio):
    save_preset(studio, "new", {"lora_r": 4})
    with studio.db.write() as session:
        session.execute(text("UPDATE presets SET fields = :fields WHERE name = 'new'"),
                        {"fields": json.dumps(V1["preset_partial"])})
    assert load_preset(studio, "new") == V1["preset_partial"]
    with studio.db.write() as session:
        session.execute(text("UPDATE presets SET fields = :fields WHERE name = 'new'"),
                        {"fields": json.dumps({"lora_r": 0})})
    with pytest.raises(ValueError, match="preset 'new' was saved under older rules: lora_r: must be"):
        load_preset(studio, "new")


def test_the_operators_job_verb_shows_an_invalid_stored_spec_with_its_problem(studio):
    from jobs.cli import operator

    job_id = submit_job(studio, {"max_steps": 3})
    assert operator.job(studio, job_id)["spec_problems"] == []
    write_stored_spec(studio, job_id, {**V1["defaults"], "lora_r": 0})
    assert operator.job(studio, job_id)["spec_problems"] == ["lora_r: must be a whole number from 1 to 1024 (got 0)"]
