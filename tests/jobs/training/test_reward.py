"""Reward-model training on the demo base, on CPU, for real (TRL's RewardTrainer on a 4-bit sequence classifier with
a SEQ_CLS LoRA): on a trivially separable pair set the loss falls and the held-out pairs' margin is reported; the
saved adapter is a reward adapter with its score head; a stopped run resumes from its checkpoint."""

import json

import pytest
from safetensors.torch import load_file

from jobs.data.formats import PREFERENCE, ParsedDataset
from jobs.data.store import store_parsed
from jobs.reward_model import is_reward_adapter
from jobs.spec import parse_spec
from jobs.training.train import train

pytestmark = pytest.mark.slow
REWARD = {"method": "reward", "max_steps": 6, "batch_size": 4, "max_length": 64, "eval_fraction": 0.25,
          "eval_steps": 6, "logging_steps": 1, "save_steps": 3, "learning_rate": 2e-2, "lora_r": 4,
          "target_modules": "attention", "sample_prompts": 0}


def separable_pairs(count: int = 16) -> list[dict]:
    """Chosen always says one word, rejected another: a reward model separates them in a few steps."""
    return [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
             "chosen": [{"role": "assistant", "content": "yes yes yes"}],
             "rejected": [{"role": "assistant", "content": "no no no"}]} for i in range(count)]


def test_reward_model_trains_separates_pairs_and_resumes(tmp_path, demo_model_dir):
    data, _ = store_parsed(ParsedDataset(PREFERENCE, separable_pairs()), tmp_path / "data")
    spec = parse_spec(REWARD)
    logged: dict[int, dict] = {}

    def sink(step, values, total):
        logged.setdefault(step, {}).update(values)

    # Stopped after its first checkpoint (step 3), then resumed from it: the existing resume path.
    first = train(spec, tmp_path / "run", str(demo_model_dir), data, sink, lambda: any(s >= 3 for s in logged))
    assert first.stopped and list((tmp_path / "run" / "checkpoints").glob("checkpoint-3"))
    result = train(spec, tmp_path / "run", str(demo_model_dir), data, sink, lambda: False)
    assert not result.stopped and result.final_metrics["steps"] == 6
    losses = [values["loss"] for _, values in sorted(logged.items()) if "loss" in values]
    assert losses[-1] < losses[0], losses
    assert {"eval_accuracy", "eval_margin"} <= result.final_metrics.keys()
    assert result.final_metrics["eval_accuracy"] == 1.0 and result.final_metrics["eval_margin"] > 0
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    assert any(".score." in key for key in load_file(result.adapter_dir / "adapter_model.safetensors"))
    assert is_reward_adapter(result.adapter_dir)
