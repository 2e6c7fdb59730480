"""The same walk on the CLI and on the API, against a running studio with accounts: a person signs in (the CLI with
--url, the password from the environment), trains a LoRA, a DoRA, an rsLoRA and an fp4 adapter on the demo base (two
steps each), then one compare with the base and all four, a blind vote and a suite run: every pane answers, on both.
The CLI never touches a data dir in this mode. The session's studio with accounts (tests/conftest.py), its worker and
app serve the module; the training is shared."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from gradio_client import Client

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
PERSON, PASSWORD = "walker", "a long enough password"
STEPS = {"max_steps": 2, "batch_size": 2, "max_length": 128, "eval_fraction": 0, "sample_prompts": 0,
         "learning_rate": 1e-2, "save_steps": 100, "logging_steps": 1}
VARIANTS = {"walk-lora": {}, "walk-dora": {"use_dora": True}, "walk-rslora": {"use_rslora": True, "lora_r": 4},
            "walk-fp4": {"quantization": "fp4", "double_quant": False}}
PANES = ["base", *VARIANTS]
PROMPT = "What is 2 plus 3?"


@pytest.fixture(scope="module")
def served(signed_in_studio, tmp_path_factory):
    """The session's studio with accounts, its worker and its web app (API and page), and one more account added
    with the operator's CLI: this walk's person, whose jobs, adapters and suites are named walk-*."""
    live = signed_in_studio.live
    subprocess.run([sys.executable, "-m", "app", "users", "add", PERSON, "--password-stdin"], input=PASSWORD + "\n",
                   env=live.env, cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=120)
    return live, signed_in_studio.url, tmp_path_factory.mktemp("walk")


def cli(served, *args: str, password: str = PASSWORD, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m jobs` as the person, against the running studio; its data dir is out of reach."""
    live, url, root = served
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "STUDIO_URL": url, "STUDIO_USER": PERSON,
           "STUDIO_PASSWORD": password, "STUDIO_DATA_DIR": str(root / "not-the-studio")}
    return subprocess.run([sys.executable, "-m", "jobs", *args], env=env, cwd=root, capture_output=True, text=True,
                          timeout=timeout)


def _json(done: subprocess.CompletedProcess):
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def trained(served):
    """The four variants, each submitted and followed with the CLI (two steps each)."""
    _, _, root = served
    for name, extra in VARIANTS.items():
        spec = root / f"{name}.json"
        spec.write_text(json.dumps({**STEPS, **extra, "name": name}))
        done = cli(served, "submit", str(spec), "--wait")
        assert done.returncode == 0 and "succeeded" in done.stdout, done.stdout + done.stderr
    return list(VARIANTS)


@pytest.fixture(scope="module")
def client(served):
    _, url, _ = served
    return Client(url, auth=(PERSON, PASSWORD), verbose=False)


def _free_memory_left_out(plan: dict) -> dict:
    """A plan with the free memory it was planned under (a number that moves with the machine's load) taken out."""
    memory = {key: value for key, value in plan["memory"].items() if key != "budget_bytes"}
    sentence = re.sub(r"under the [0-9.]+ GiB free", "under the … GiB free", plan["sentence"])
    return {**plan, "memory": memory, "sentence": sentence}


def test_a_wrong_password_is_refused_and_nothing_is_done(served):
    done = cli(served, "list", password="not the password at all")
    assert done.returncode == 2 and "signing in" in done.stderr and PERSON in done.stderr


def test_the_walk_on_the_cli(served, trained):
    _, _, root = served
    assert set(trained) <= {a["name"] for a in _json(cli(served, "adapters", "--base-model", "demo-tiny-llama"))}
    replies = _json(cli(served, "compare", PROMPT, *PANES, "--max-new-tokens", "8"))
    assert [r["adapter"] for r in replies] == PANES and all(r["reply"].strip() for r in replies), replies

    answers = json.dumps([{"adapter": r["adapter"], "reply": r["reply"]} for r in replies])
    voted = cli(served, "vote", "--prompt", PROMPT, "--answers", answers, "--outcome", "best", "--best", "2")
    assert voted.returncode == 0 and "walk-dora" in voted.stdout, voted.stderr
    board = _json(cli(served, "leaderboard"))
    assert {row["adapter"] for row in board} == set(PANES)

    suite = root / "suite.txt"
    suite.write_text(f"{PROMPT} => 5\nName a colour.\n")
    assert cli(served, "save-suite", "walk", str(suite)).returncode == 0
    assert cli(served, "run-suite", "walk", *PANES, "--max-new-tokens", "6").stdout.strip() == str(2 * len(PANES))
    grid = _json(cli(served, "suite-results", "walk"))
    assert set(grid["panes"]) == set(PANES) and all(all(a and a.strip() for a in row) for row in grid["answers"])
    diff = cli(served, "suite-diff", "walk", "base", "walk-lora").stdout
    assert diff.count("<h4>") == 2 and ('class="added"' in diff or "unchanged" in diff), diff
    assert not (root / "not-the-studio").exists()  # the CLI acted through the API only


def test_the_walk_on_the_api(client, trained):
    replies = client.predict(PROMPT, PANES, "demo-tiny-llama", 8, api_name="/compare")
    assert [r["adapter"] for r in replies] == PANES and all(r["reply"].strip() for r in replies), replies
    shown = [{"adapter": r["adapter"], "reply": r["reply"]} for r in reversed(replies)]
    assert "walk-lora" in client.predict("demo-tiny-llama", PROMPT, shown, "tie", -1, api_name="/record_vote")
    client.predict("api-walk", f"{PROMPT} => 5\nSay hi.", api_name="/save_suite")
    assert client.predict("api-walk", PANES, "demo-tiny-llama", 6, api_name="/run_suite") == 2 * len(PANES)
    grid = client.predict("api-walk", "demo-tiny-llama", api_name="/suite_results")
    assert set(grid["panes"]) == set(PANES) and all(all(a and a.strip() for a in row) for row in grid["answers"])


def test_what_the_page_shows_beside_its_forms_answers_on_both(served, client, trained):
    _, _, root = served
    spec = root / "walk-lora.json"
    plan = _json(cli(served, "plan", str(spec)))
    assert plan["steps"] == 2 and plan["sentence"].startswith("This job will make 2")
    # Whole but for the device's free memory: the worker reports it in 1% steps that hold still while it holds still
    # (jobs.queue.devices.reported_free), but the other tests' jobs on this machine move it by more than that (17.42
    # against 17.89 GiB free between the two calls in one full run).
    assert _free_memory_left_out(client.predict(spec.read_text(), api_name="/plan_job")) == _free_memory_left_out(plan)
    verdicts = _json(cli(served, "estimate", str(spec)))
    assert verdicts and verdicts[0]["peak_bytes"] > 0 and verdicts[0]["verdict"] in ("fits", "tight", "does not fit")
    assert "SFTTrainer" in _json(cli(served, "script", str(spec)))["script"]
    assert "as the model sees them" in cli(served, "preview", str(spec)).stdout
    jobs = {job["name"]: job["id"] for job in client.predict(api_name="/list_jobs")}
    compared = _json(cli(served, "compare-runs", str(jobs["walk-lora"]), str(jobs["walk-dora"])))
    assert any("use_dora" in row["field"] for row in compared["specs"]), compared["specs"]
    assert list(_json(cli(served, "metrics", str(jobs["walk-lora"]), "--names", "loss"))) == ["loss"]
    refused = cli(served, "job", "424242")
    assert refused.returncode == 2 and "no job with id 424242" in refused.stderr
