"""The command line against a live worker: submit --wait, list, cancel, and exit statuses."""

import json
import subprocess
import sys

import pytest

from jobs.spec import parse_spec
from tests.conftest import FAST_JOB, REPO_ROOT, broken_model_dir

pytestmark = pytest.mark.slow
DEMO_JOB = REPO_ROOT / "static" / "examples" / "demo_job.json"


def _cli(live, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "jobs", *args], env=live.env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _spec_file(tmp_path, spec) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_demo_job_example_is_a_valid_spec():
    raw = json.loads(DEMO_JOB.read_text())
    assert {"base_model", "dataset", "seed", "save_steps", "lora_r", "quantization"} <= set(raw)
    assert parse_spec(raw).base_model == "demo-tiny-llama"


def test_submit_wait_succeeds_and_list_shows_it(live, tmp_path):
    done = _cli(live, "submit", _spec_file(tmp_path, {**FAST_JOB, "name": "cli-job"}), "--wait")
    assert done.returncode == 0, done.stderr
    assert "queued job" in done.stdout and "succeeded" in done.stdout
    listing = _cli(live, "list")
    assert "cli-job" in listing.stdout and "succeeded" in listing.stdout
    assert "SQLite" not in done.stderr + listing.stderr  # the version warning belongs in the app's log only


def test_the_readme_example_runs_twice(live):
    """The README's CLI example names no adapter, so running it again does not collide with the first run."""
    example = {**json.loads(DEMO_JOB.read_text()), **FAST_JOB}
    path = live.data_dir / "example.json"
    path.write_text(json.dumps(example))
    for _ in range(2):
        done = _cli(live, "submit", str(path), "--wait")
        assert done.returncode == 0, done.stderr


def test_submit_wait_exits_non_zero_when_the_job_fails(live, tmp_path, demo_model_dir):
    spec = {**FAST_JOB, "base_model": str(broken_model_dir(tmp_path, demo_model_dir))}
    done = _cli(live, "submit", _spec_file(tmp_path, spec), "--wait")
    assert done.returncode == 1
    assert "failed" in done.stdout and "Error" in done.stderr


def test_bad_spec_is_refused_with_every_problem(live, tmp_path):
    done = _cli(live, "submit", _spec_file(tmp_path, {"lora_r": 0, "target_modules": ["nope_proj"]}))
    assert done.returncode == 2
    assert "lora_r" in done.stderr and "nope_proj" in done.stderr and "queued job" not in done.stdout


def test_dataset_file_in_spec_is_imported(live, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(6)))
    done = _cli(live, "submit", _spec_file(tmp_path, {**FAST_JOB, "dataset": "mine.jsonl", "max_steps": 1}))
    assert done.returncode == 0, done.stderr
    assert "dataset: imported 'mine' (6 rows, completion)" in done.stdout
    job_id = int(done.stdout.split("queued job")[1].split()[0])
    cancelled = _cli(live, "cancel", str(job_id))
    assert cancelled.returncode == 0 and f"job {job_id}" in cancelled.stdout
    assert _cli(live, "cancel", "99999").returncode == 1


@pytest.mark.parametrize(("content", "words"), [
    ("", "is not valid JSON"), ("{oops", "is not valid JSON"), ("[1, 2]", "must hold a mapping"),
    ("{}", "is empty: name at least one field"), ('{"lora_r": 0}', "lora_r"),
])
def test_every_refused_spec_file_exits_2(live, tmp_path, content, words):
    path = tmp_path / "spec.json"
    path.write_text(content)
    done = _cli(live, "submit", str(path))
    assert done.returncode == 2 and words in done.stderr and "queued job" not in done.stdout
    assert _cli(live, "submit", str(tmp_path / "missing.json")).returncode == 2
