"""`python -m jobs` as the operator, in-process on a fresh studio with no worker: the verbs that mirror endpoints run
the same domain calls with the same refusals; verbs only a running studio can do say so; secrets never come from the
command line."""

from __future__ import annotations

import json

import pytest

from jobs.cli.main import main
from tests.conftest import FAST_JOB


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**FAST_JOB, "name": "op"}))
    return path


def test_plan_is_the_plan_the_studio_makes(studio, capsys, spec_file):
    from jobs.planning import job_plan
    from jobs.spec import parse_spec

    code, out, _ = run(capsys, "plan", str(spec_file))
    assert code == 0
    assert json.loads(out)["steps"] == job_plan(studio, parse_spec(json.loads(spec_file.read_text()))).steps == 4


def test_presets_saved_loaded_listed_shared_and_deleted(studio, capsys, spec_file):
    assert run(capsys, "save-preset", "mine", str(spec_file))[0] == 0
    assert json.loads(run(capsys, "load-preset", "mine")[1])["max_steps"] == 4
    assert json.loads(run(capsys, "presets")[1]) == ["mine"]
    assert run(capsys, "share-preset", "mine")[1].strip() == "mine: shared"
    assert run(capsys, "delete-preset", "mine")[0] == 0
    code, _, err = run(capsys, "load-preset", "mine")
    assert code == 2 and "mine" in err


def test_a_sweep_queued_reordered_and_cancelled(studio, capsys, spec_file, tmp_path):
    axes = tmp_path / "axes.yaml"
    axes.write_text("seed: [1, 2, 3]\n")
    code, out, err = run(capsys, "sweep", str(spec_file), str(axes), "--name", "op-sweep")
    assert code == 0, err
    first, second, third = json.loads(out)["job_ids"]
    assert json.loads(run(capsys, "move", str(third), "front")[1]) == [third, first, second]
    assert json.loads(run(capsys, "priority", str(second), "5")[1])[0] == second
    assert json.loads(run(capsys, "job", str(second))[1])["priority"] == 5
    cancelled = json.loads(run(capsys, "cancel-sweep", "op-sweep")[1])
    assert set(cancelled.values()) == {"cancelled"}
    code, _, err = run(capsys, "move", str(first), "front")
    assert code == 1 and f"job {first} is not queued" in err


def test_suites_saved_and_listed(studio, capsys, tmp_path):
    prompts = tmp_path / "suite.txt"
    prompts.write_text("What is 2 plus 3? => 5\nName a colour.\n")
    assert "2 prompts" in run(capsys, "save-suite", "s1", str(prompts))[1]
    assert json.loads(run(capsys, "suites")[1]) == ["s1"]
    grid = json.loads(run(capsys, "suite-results", "s1")[1])
    assert len(grid["prompts"]) == 2 and grid["panes"] == []


def test_unknown_things_are_named(studio, capsys):
    code, _, err = run(capsys, "job", "424242")
    assert code == 1 and "no job with id 424242" in err
    code, _, err = run(capsys, "download-adapter", "ghost")
    assert code == 1 and "no adapter named 'ghost'" in err
    assert json.loads(run(capsys, "adapters")[1]) == []
    code, _, err = run(capsys, "vote", "--prompt", "hi", "--answers", '[{"adapter": "ghost", "reply": "a"}]')
    assert code == 2 and "best: name the winning pane" in err


@pytest.mark.parametrize("verb", [["compare", "hi", "base"], ["estimate", "x.json"], ["account"], ["hub-token"]])
def test_verbs_only_a_running_studio_can_do_say_so(studio, capsys, verb):
    code, _, err = run(capsys, *verb)
    assert code == 2 and "needs a running studio: pass --url" in err


def test_the_worker_is_never_remote_and_secrets_are_never_arguments(capsys):
    code, _, err = run(capsys, "--url", "http://127.0.0.1:9", "worker")
    assert code == 2 and "runs on the studio's machine only" in err
    for verb in (["set-hub-token", "hf_secret"], ["change-password", "old", "new"]):
        with pytest.raises(SystemExit):
            main(verb)
