"""Submit-time checks of an evaluation on a real studio (no worker: nothing here runs): every problem at once, each
naming its field, and no job row written; and how dataset rows become eval rows."""

import pytest

from jobs.data.formats import parse_records
from jobs.data.store import register_parsed
from jobs.evaluate.sets import row_from_record, rows_from_records
from jobs.evaluate.submit import submit_eval
from jobs.spec_words import SpecError
from storage import jobs_repo
from storage.models import Adapter


def _adapters(studio, **bases: str) -> None:
    with studio.db.write() as session:
        for name, base in bases.items():
            session.add(Adapter(name=name, base_model=base, path=f"adapters/{name}", size_bytes=1))


def _job_count(studio) -> int:
    with studio.db.read() as session:
        return len(jobs_repo.list_jobs(session))


def test_every_problem_at_once_and_nothing_queued(studio):
    _adapters(studio, a="demo-tiny-llama", b="smollm2-135m-instruct")
    with pytest.raises(SpecError) as refused:
        submit_eval(studio, {"adapters": ["a", "b"], "source": "suite", "suite": "nope", "temperature": 9,
                             "surprise": 1})
    fields = {p.field: p.message for p in refused.value.problems}
    assert "different bases" in fields["adapters"] and "'demo-tiny-llama': a" in fields["adapters"]
    assert "no prompt suite named 'nope'" in fields["suite"]
    assert "temperature" in fields and "surprise" in fields
    assert _job_count(studio) == 0


def test_unknown_adapter_empty_and_raw_sets_are_named(studio):
    with pytest.raises(SpecError, match="no adapter named 'ghost'"):
        submit_eval(studio, {"adapters": ["ghost"], "source": "dataset", "dataset": "x"})
    with pytest.raises(SpecError, match="name the training job"):
        submit_eval(studio, {"base_model": "demo-tiny-llama", "adapters": []})
    with pytest.raises(SpecError, match="name at least one adapter"):
        submit_eval(studio, {"adapters": [], "include_base": False, "source": "suite", "suite": "s"})
    register_parsed(studio, "raw", parse_records([{"text": "a story"}]))
    with pytest.raises(SpecError, match="raw text"):
        submit_eval(studio, {"base_model": "demo-tiny-llama", "source": "dataset", "dataset": "raw"})
    with pytest.raises(SpecError, match="spec: must be a JSON object"):
        submit_eval(studio, ["not", "a", "spec"])
    assert _job_count(studio) == 0


def test_a_valid_submission_pins_what_it_evaluates(studio):
    from jobs.chat.suites import save_suite

    save_suite(studio, "capitals", [{"prompt": "Capital of France?", "reference": "Paris"},
                                    {"prompt": "Say hi", "reference": None}])
    job_id = submit_eval(studio, {"base_model": "demo-tiny-llama", "source": "suite", "suite": "capitals"})
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id)
        assert job.kind == "eval" and job.total_steps == 2 and job.status == "queued"
        pins = job.provenance["pinned"]
    assert pins["suite"]["prompts"][0]["reference"] == "Paris"
    assert pins["adapters"] == [{"name": "base", "id": None}] and pins["base_model"] == "demo-tiny-llama"


def test_dataset_rows_become_prompts_and_references():
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"},
                         {"role": "assistant", "content": "4"}]}
    row, _ = row_from_record(chat)
    assert row.reference == "4" and [m["role"] for m in row.prompt] == ["system", "user"]
    open_ended, _ = row_from_record({"messages": [{"role": "user", "content": "hello"}]})
    assert open_ended.reference is None  # batch prediction
    pair, _ = row_from_record({"prompt": [{"role": "user", "content": "q"}],
                               "chosen": [{"role": "assistant", "content": "good"}],
                               "rejected": [{"role": "assistant", "content": "bad"}]})
    assert pair.reference == "good"
    checked, _ = row_from_record({"prompt": [{"role": "user", "content": "2+2?"}], "reference": "4"})  # GRPO's rows
    assert checked.reference == "4" and checked.prompt == [{"role": "user", "content": "2+2?"}]
    rows, problems = rows_from_records([{"text": "x"}], "'raw'")
    assert rows == [] and "raw text" in problems[0]


def test_benchmark_tasks_come_from_the_operators_folder_by_name_only(studio, tmp_path):
    import dataclasses

    from jobs.evaluate.harness import task_names
    from jobs.studio import REPO_ROOT

    _adapters(studio, a="demo-tiny-llama")
    with pytest.raises(SpecError, match="no benchmark task folder on this studio: its operator sets "):
        submit_eval(studio, {"adapters": ["a"], "source": "benchmark", "tasks": ["arithmetic_words"]})
    tasks = REPO_ROOT / "examples" / "lm_eval_tasks"
    # A YAML tag that would run code when lm_eval reads the task is text when the studio lists names.
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "coded.yaml").write_text("task: coded\nprocess_docs: !function utils.process\n")
    (tmp_path / "tasks" / "torn.yaml").write_text("task: [unclosed\n")
    assert task_names(tmp_path / "tasks") == ["coded"] and task_names(tasks) == ["arithmetic_words"]
    studio.settings = dataclasses.replace(studio.settings, lm_eval_tasks=tasks)
    with pytest.raises(SpecError) as refused:
        submit_eval(studio, {"adapters": ["a"], "source": "benchmark", "tasks": ["mmlu", "../../etc/passwd"],
                             "num_fewshot": 99})
    fields = {p.field: p.message for p in refused.value.problems}
    assert fields["tasks"].endswith("not a path (got '../../etc/passwd')")
    assert "num_fewshot" in fields and len(refused.value.problems) == 2
    with pytest.raises(SpecError, match=r"no task named 'mmlu' in the studio's task folder \(it has: arithmetic_words"):
        submit_eval(studio, {"adapters": ["a"], "source": "benchmark", "tasks": ["mmlu"]})
    assert _job_count(studio) == 0


def test_a_judge_must_be_a_model_the_person_may_use(studio):
    """Another person's adapter as judge is 'no adapter named' (as if it did not exist), a judge needs two panes, and
    a judging prompt without its answers' places is named; nothing is queued."""
    from storage.access import Person, acting_as

    with studio.db.write() as session:
        session.add(Adapter(name="hers", base_model="demo-tiny-llama", path="adapters/hers", size_bytes=1,
                            owner="mallory"))
    with acting_as(Person("alice")), pytest.raises(SpecError) as refused:
        submit_eval(studio, {"base_model": "demo-tiny-llama", "source": "suite", "suite": "s", "judge": "hers",
                             "judge_prompt": "Which is better? {question}"})
    said = [(p.field, p.message) for p in refused.value.problems]
    assert any(f == "judge" and "no adapter named 'hers'" in m for f, m in said), said
    assert any(f == "judge" and "two adapters at least" in m for f, m in said), said
    assert any(f == "judge_prompt" and "{answer_a}, {answer_b}" in m for f, m in said), said
    assert _job_count(studio) == 0
