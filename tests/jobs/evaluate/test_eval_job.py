"""The eval job end to end on the session's live studio and worker (real queue, real 4-bit demo base, real
adapters): two adapters and the base answer a training job's held-out rows, judged pairwise by the first adapter;
the table, the predictions JSONL, the per-row view sorted by disagreement and the judging are checked, and bad
submissions are refused whole, naming every problem."""

import json

import pytest

from jobs.evaluate import results as eval_results
from jobs.evaluate.submit import submit_eval
from jobs.spec_words import SpecError
from jobs.submit import submit_jobs
from storage import catalog, jobs_repo
from storage.models import JobKind, JobStatus
from tests.conftest import FAST_JOB

pytestmark = pytest.mark.slow
DEMO = "demo-tiny-llama"


def _two_adapters(live) -> tuple[int, list[str]]:
    """(a training job with held-out rows, two adapters of its base): the session's when it has them; else the job
    is trained now and the second adapter is another of its base, or its own earlier checkpoint (adapter@step-N, a
    pane the chat and the eval job load like any adapter)."""
    from jobs.chat.request import checkpoint_names

    studio = live.studio
    with studio.db.read() as session:
        held_out = [j.id for j in jobs_repo.list_jobs(session) if j.kind == JobKind.TRAIN
                    and j.status == JobStatus.SUCCEEDED and (j.spec.get("eval_fraction") or 0) > 0
                    and not j.spec.get("eval_dataset") and j.spec.get("base_model", DEMO) == DEMO
                    and catalog.adapter_for_job(session, j.id) is not None]
    if not held_out:
        held_out = submit_jobs(studio, [{**FAST_JOB, "name": "eval-a"}])
        assert live.wait_for(held_out[0]).status == "succeeded", live.worker_log()
    with studio.db.read() as session:
        first = catalog.adapter_for_job(session, held_out[0])
        others = [a.name for a in catalog.list_adapters(session, first.base_model) if a.id != first.id]
    second = others[0] if others else checkpoint_names(studio, first)[0]
    return held_out[0], [first.name, second]


def _check_judging(found: dict, judge: str, rows: int) -> None:
    """Pairwise judging's mechanics: every row's every pair judged in both orders, the totals adding up, an
    unreadable reply counted as unparsed (never guessed), the reasons kept."""
    from jobs.evaluate.judging import DEFAULT_JUDGE_PROMPT, UNPARSED

    panes = found["panes"]
    assert found["judging"]["judge"] == judge and found["judging"]["prompt"] == DEFAULT_JUDGE_PROMPT
    pairs = found["judging"]["pairs"]
    assert [(p["a"], p["b"]) for p in pairs] == [(panes[0], panes[1]), (panes[0], panes[2]), (panes[1], panes[2])]
    judgments = [j for row in found["per_row"] for j in row["judgments"]]
    for pair in pairs:
        assert pair["judgments"] == 2 * rows
        assert pair["a_wins"] + pair["b_wins"] + pair["ties"] + pair["unparsed"] == pair["judgments"]
        mine = [j for j in judgments if {j["a"], j["b"]} == {pair["a"], pair["b"]}]
        assert sorted((j["row"], j["a"]) for j in mine) == sorted(
            (row, side) for row in range(rows) for side in (pair["a"], pair["b"]))  # both orders, every row
        assert pair["unparsed"] == sum(j["verdict"] == UNPARSED for j in mine)
    assert all(j["verdict"] in (*panes, "tie", UNPARSED) and isinstance(j["reason"], str) for j in judgments)
    assert any(j["reason"] for j in judgments)


def test_eval_job_scores_two_adapters_and_the_base_on_held_out_rows(live, monkeypatch, capsys):
    studio = live.studio
    train_job, (first, second) = _two_adapters(live)
    with studio.db.read() as session:
        jobs_before = len(jobs_repo.list_jobs(session))

    # Bad input: every problem of a submission at once, and no job written.
    with pytest.raises(SpecError) as refused:
        submit_eval(studio, {"adapters": [first, "no-such-adapter"], "source": "dataset", "dataset": "nope",
                             "max_rows": 0})
    text = refused.value.as_text()
    assert "max_rows" in text and "no-such-adapter" in text and "no dataset named 'nope'" in text, text
    with pytest.raises(SpecError, match="held out no rows|no job with id"):
        submit_eval(studio, {"adapters": [first], "train_job": 999999})
    with pytest.raises(SpecError, match="raw text"):
        from jobs.data.formats import parse_records
        from jobs.data.store import register_parsed

        register_parsed(studio, "eval-raw-text", parse_records([{"text": "just text"}]))
        submit_eval(studio, {"adapters": [first], "source": "dataset", "dataset": "eval-raw-text"})
    with studio.db.read() as session:
        assert len(jobs_repo.list_jobs(session)) == jobs_before

    # Judged too, by its first adapter: the demo's replies are noise, so the judging's mechanics are checked.
    job_id = submit_eval(studio, {"adapters": [first, second], "source": "held_out", "train_job": train_job,
                                  "max_rows": 4, "max_new_tokens": 8, "judge": first,
                                  "judge_max_tokens": 8})  # short replies: the 4-bit base is slow on a CPU
    job = live.wait_for(job_id)
    assert job.status == "succeeded", (job.error, live.worker_log())
    # Progress counted in answers, as the Runs tab shows it, then judgments: 3 pairs x 2 orders a row.
    assert job.step == job.total_steps == 4 * 3 + 4 * 3 * 2

    found = eval_results.eval_results(studio, job_id)
    assert found["panes"] == [first, second, "base"] and found["rows"] == 4
    for pane in found["panes"]:
        row = found["metrics"][pane]
        for name in ("loss", "perplexity", "rouge_l", "bleu", "chrf", "exact_match", "answer_tokens",
                     "seconds_per_answer"):
            assert row[name] is not None, (pane, name)
    assert set(found["best"]["loss"]) <= set(found["panes"])
    marked = eval_results.table(found, mark="★")
    assert any("★" in str(value) for row in marked for value in row.values())
    assert eval_results.export_text(studio, job_id, "table", "csv").splitlines()[0].startswith("adapter,")

    lines = [json.loads(line) for line in eval_results.predictions_file(studio, job_id).read_text().splitlines()]
    assert len(lines) == 4 * 3
    assert {line["adapter"] for line in lines} == {first, second, "base"}
    assert all({"prompt", "adapter", "answer", "reference", "tokens", "seconds"} <= set(line) for line in lines)
    assert all(line["reference"] for line in lines)
    # The very rows training held out: the run's sample answers answered its first eval rows, in the same order.
    with studio.db.read() as session:
        sampled = [s.prompt for s in jobs_repo.samples_for(session, train_job) if s.step == 0]
    ours = [line["messages"][-1]["content"] for line in lines if line["adapter"] == first]
    assert sampled and ours[:len(sampled)] == sampled[:len(ours)]

    _check_judging(found, first, rows=4)

    spread = [row["disagreement"] for row in found["per_row"]]
    assert spread == sorted(spread, reverse=True)
    view = eval_results.row_view(found)
    assert [row["disagreement"] for row in view] == [round(s, 4) for s in spread]
    assert all(view[0][pane] is not None for pane in found["panes"])

    # The same on the command line (the operator's verbs call what the API's endpoints call).
    from jobs.cli.main import main

    for key, value in live.env.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    assert main(["eval-results", str(job_id), "--rows", "2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [row["adapter"] for row in shown["table"]] == found["panes"] and len(shown["per_row"]) == 2
    assert shown["judging"]["pairs"] == found["judging"]["pairs"] and len(shown["judging"]["judgments"]) == 2 * 6
    assert any(key.startswith("judge ") for key in shown["per_row"][0])
    assert main(["export-eval", str(job_id), "--what", "predictions", "--format", "json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4 * 3
    assert main(["eval-results", str(train_job)]) == 1
    assert "not an evaluation" in capsys.readouterr().err

    # Cancelled while it runs: the job says so and leaves no results, not even a partial folder.
    from jobs.queue.run_files import run_dir_for
    from jobs.submit import cancel_job

    running = submit_eval(studio, {"adapters": [first], "source": "held_out", "train_job": train_job,
                                   "max_rows": 20, "max_new_tokens": 64})

    def answering(job) -> bool:  # past the child's start: the evaluation itself reported its first progress
        with studio.db.read() as session:
            return jobs_repo.latest_metric(session, job.id, "eval_answers") is not None

    live.wait_for(running, statuses=("running", "succeeded", "failed"), condition=answering, poll_s=0.1)
    cancel_job(studio, running)
    assert live.wait_for(running).status == "cancelled", live.worker_log()
    assert not any(run_dir_for(studio, running).glob("eval*"))


def test_a_benchmark_job_runs_lm_eval_tasks_on_an_adapter_and_the_base(live):
    studio = live.studio
    _, (first, _) = _two_adapters(live)
    job_id = submit_eval(studio, {"adapters": [first], "source": "benchmark", "tasks": ["arithmetic_words"],
                                  "max_rows": 4, "num_fewshot": 1})
    job = live.wait_for(job_id)
    assert job.status == "succeeded", (job.error, live.worker_log())
    assert job.step == job.total_steps == 2  # one task x two panes
    found = eval_results.eval_results(studio, job_id)
    assert found["panes"] == [first, "base"] and found["set"] == "arithmetic_words"
    for pane in found["panes"]:  # two-choice accuracy over 4 questions: a quarter step between 0 and 1
        assert found["metrics"][pane]["arithmetic_words acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    values = {found["metrics"][pane]["arithmetic_words acc"] for pane in found["panes"]}
    assert found["best"].get("arithmetic_words acc", []) == ([] if len(values) == 1 else
                                                              [max(found["panes"], key=lambda p: found["metrics"][p]
                                                                   ["arithmetic_words acc"])])

