"""Datasets through the command line and into a job: an Alpaca CSV with odd column names imported with a chosen
mapping, a separate validation file, duplicates removed and over-long rows dropped, all as the train log tells."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from jobs.queue.run_files import train_log_path
from jobs.submit import submit_job
from storage import jobs_repo
from tests.conftest import FAST_JOB, REPO_ROOT

pytestmark = pytest.mark.slow


def _cli(live, *args):
    return subprocess.run([sys.executable, "-m", "jobs", *args], env=live.env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def _odd_csv(path, questions: list[str], answers: list[str]):
    pd.DataFrame({"Frage": questions, "Antwort": answers}).to_csv(path, index=False)
    return str(path)


def test_a_mapped_csv_trains_with_its_own_validation_file(live, tmp_path):
    questions = [f"question number {i}" for i in range(10)] + ["question number 0", "tell me everything"]
    answers = [f"answer {i}" for i in range(10)] + ["answer 0", "word " * 300]
    train_file = _odd_csv(tmp_path / "train.csv", questions, answers)
    held_file = _odd_csv(tmp_path / "held.csv", ["held one", "held two", "held three"], ["a", "b", "c"])

    refused = _cli(live, "import-dataset", train_file, "--name", "odd")
    assert refused.returncode == 2 and "Choose a format and map the columns" in refused.stderr
    refused = _cli(live, "import-dataset", train_file, "--column", "instruction")
    assert refused.returncode == 2 and "--column: 'instruction' is not role=column" in refused.stderr
    for name, path in (("odd", train_file), ("odd-held", held_file)):
        done = _cli(live, "import-dataset", path, "--name", name, "--format", "alpaca",
                    "--column", "instruction=Frage", "--column", "output=Antwort")
        assert done.returncode == 0, done.stderr
        assert f"imported '{name}'" in done.stdout and "alpaca" in done.stdout
    listing = _cli(live, "datasets").stdout
    assert '{"instruction": "Frage", "output": "Antwort"}' in listing.split("odd ")[1].splitlines()[0]

    spec = {**FAST_JOB, "dataset": "odd", "eval_dataset": "odd-held", "dedup": True, "overlong": "drop",
            "max_length": 64, "max_steps": 2}
    job_id = submit_job(live.studio, spec)
    job = live.wait_for(job_id)
    log = train_log_path(live.studio, job_id).read_text()
    assert job.status == "succeeded", log
    assert "dropped 1 exact duplicate rows" in log
    assert "dropped 1 rows longer than max_length 64" in log
    assert "10 train rows, 3 eval rows" in log
    assert job.provenance["dataset"]["rows"] == 12
    assert job.provenance["pinned"]["eval_dataset"]["name"] == "odd-held"
    with live.studio.db.read() as session:
        assert jobs_repo.metric_values(session, job_id, "eval_loss"), "the validation file was never evaluated"


def test_stats_rename_and_delete_from_the_command_line(live, tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"note {i} " * (i + 1)}) for i in range(5)))
    assert _cli(live, "import-dataset", str(path)).returncode == 0
    stats = _cli(live, "dataset-stats", "notes", "--max-length", "8", "--all-tokens")
    assert stats.returncode == 0, stats.stderr
    summary = json.loads(stats.stdout)
    assert summary["rows"] == 5 and summary["loss_token_share"] == 1.0 and summary["longer_than_max_length"] > 0
    assert sum(count for _, _, count in summary["histogram"]) == 5
    assert _cli(live, "rename-dataset", "notes", "jottings").returncode == 0
    assert _cli(live, "dataset-stats", "notes").returncode == 2
    assert _cli(live, "delete-dataset", "jottings").returncode == 0
    gone = _cli(live, "delete-dataset", "jottings")
    assert gone.returncode == 2 and "no dataset named 'jottings'" in gone.stderr
