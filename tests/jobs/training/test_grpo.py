"""GRPO on the demo base, on CPU, for real: one short job rewarded for valid JSON, for its length and by a reward
model (a reward adapter of the same base) logs each reward's mean, moves the adapter and resumes; a person's reward
that returns the wrong type fails the run with its traceback."""

import pytest
from safetensors.torch import load_file

from jobs.data.formats import REFERENCE, ParsedDataset
from jobs.data.store import register_parsed, store_parsed
from jobs.spec import parse_spec
from jobs.submit import submit_job
from jobs.training.train import train
from storage import catalog

pytestmark = pytest.mark.slow
GRPO = {"method": "grpo", "max_steps": 2, "batch_size": 1, "num_generations": 2, "max_completion_length": 8,
        "max_length": 96, "logging_steps": 1, "save_steps": 100, "learning_rate": 5e-3, "lora_r": 4,
        "target_modules": "attention", "sample_prompts": 0, "warmup_ratio": 0, "grpo_rewards": "json, length:0.5",
        "grpo_max_chars": 20}


def reference_rows(count: int = 6) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Give {i} as JSON."}], "reference": f'{{"n": {i}}}'}
            for i in range(count)]


def _rows(tmp_path):
    path, _ = store_parsed(ParsedDataset(REFERENCE, reference_rows()), tmp_path / "data")
    return path


def test_a_grpo_run_logs_its_rewards_moves_the_adapter_and_resumes(tmp_path, demo_model_dir, reward_adapter,
                                                                   capsys):
    # With a KL beta: TRL keeps a frozen "ref" copy of the adapter, logs the KL, and only the trained one is saved.
    # The reward model (grpo_reward_adapter) is a second copy of the base with the reward adapter; a resumed run
    # loads it again.
    spec = parse_spec({**GRPO, "save_steps": 100, "grpo_beta": 0.04, "grpo_rewards": "json, length:0.5, reward_model",
                       "grpo_reward_adapter": "rm"})
    rows, scorer = _rows(tmp_path), {"reward_adapter": reward_adapter}
    # Stopped at its first step's end (a checkpoint is saved), then run again: it resumes there, as a recovery does.
    first = train(spec, tmp_path / "run", str(demo_model_dir), rows, lambda *a: None, lambda: True, **scorer)
    assert first.stopped
    metrics = []
    result = train(spec, tmp_path / "run", str(demo_model_dir), rows,
                   lambda step, values, total: metrics.append((step, values)), lambda: False, **scorer)
    assert "resuming from checkpoint-1" in capsys.readouterr().out
    assert not result.stopped and (result.adapter_dir / "adapter_model.safetensors").is_file()
    logged = {name for step, values in metrics for name in values}
    assert {"reward", "rewards/json/mean", "rewards/length/mean", "rewards/reward_model/mean", "kl"} <= logged, logged
    # The score is the reward model's own number, not a 0-or-1 check, and the reward sums the weighted terms.
    [scored] = [values for step, values in metrics if "reward" in values]
    assert scored["reward"] == pytest.approx(scored["rewards/json/mean"] + 0.5 * scored["rewards/length/mean"]
                                             + scored["rewards/reward_model/mean"], abs=1e-4)
    assert {step for step, values in metrics if "reward" in values} == {2}  # step 1 was the first attempt's
    assert result.final_metrics["steps"] == 2 and "reward_last" in result.final_metrics
    # LoRA starts with B = 0: a B that is not all zeros after the steps was moved by the rewards' advantages.
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert not any(".ref." in name for name in weights) and not (result.adapter_dir / "ref").exists()
    assert any(name.endswith("lora_B.weight") and weights[name].abs().sum() > 0 for name in weights)


def test_a_reward_returning_the_wrong_type_fails_the_job_with_its_traceback(live):
    """Through the queue: submitted where the operator allows code, the job fails, its log holds the traceback through
    the person's file, and the worker goes on."""

    allowed = live.studio  # its operator allows code (STUDIO_USER_CODE=admins), its worker too
    register_parsed(allowed, "grpo-rows", ParsedDataset(REFERENCE, reference_rows()))
    code = "def reward(completions, **kwargs):\n    return 'high'\n"
    job_id = submit_job(allowed, {**GRPO, "max_steps": 1, "dataset": "grpo-rows", "grpo_rewards": "code",
                                  "grpo_reward_code": code})
    job = live.wait_for(job_id)
    assert job.status == "failed" and "The reward function failed: the reward function returned str" in job.error
    log = (live.data_dir / "runs" / f"job-{job_id}" / "train.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "jobs.rewards.RewardError: the reward function returned str" in log
    with live.studio.db.read() as session:
        assert catalog.adapter_for_job(session, job_id) is None  # nothing registered


def test_a_reward_that_raises_shows_its_own_lines_in_the_traceback(tmp_path):
    import traceback

    from jobs.rewards import checked
    from jobs.training.grpo import load_reward_code

    code = "def reward(completions, **kwargs):\n    return [1 / 0 for _ in completions]\n"
    reward = checked(load_reward_code(code, tmp_path))
    with pytest.raises(ZeroDivisionError) as raised:
        reward(prompts=["p"], completions=["a"])
    text = "".join(traceback.format_exception(raised.value))
    assert "reward_code.py\", line 2, in reward" in text and "return [1 / 0 for _ in completions]" in text
