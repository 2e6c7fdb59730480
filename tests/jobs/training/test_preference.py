"""DPO on the demo base, on CPU, for real: from a new LoRA and from a trained adapter (whose frozen copy is the
reference). The saved adapter is the trained one only, and it moved away from where it started."""

import json

import pytest
from safetensors.torch import load_file

from jobs.data.formats import PREFERENCE, ParsedDataset, parse_file
from jobs.data.store import store_parsed
from jobs.spec import parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.train import train

pytestmark = pytest.mark.slow
DPO = {"method": "dpo", "max_steps": 3, "batch_size": 2, "max_length": 96, "eval_fraction": 0.2, "eval_steps": 3,
       "logging_steps": 1, "save_steps": 100, "learning_rate": 1e-3, "lora_r": 4}


def preference_rows(count: int = 10) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
             "chosen": [{"role": "assistant", "content": f"{2 * i}."}],
             "rejected": [{"role": "assistant", "content": f"I do not know what {i} plus {i} is."}]}
            for i in range(count)]


def _pairs(tmp_path):
    path, _ = store_parsed(ParsedDataset(PREFERENCE, preference_rows()), tmp_path / "data")
    return path


def _no_metrics(*args) -> None:
    return None


def test_dpo_from_a_new_lora_trains_and_saves_an_adapter(tmp_path, demo_model_dir):
    metrics = []
    result = train(parse_spec(DPO), tmp_path / "run", str(demo_model_dir), _pairs(tmp_path),
                   lambda step, values, total: metrics.append(values), lambda: False)
    assert not result.stopped and (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert any("loss" in values for values in metrics)
    assert "eval_loss" in result.final_metrics


def test_dpo_from_an_adapter_keeps_its_shape_and_moves_it(tmp_path, demo_model_dir):
    sft = {"max_steps": 2, "batch_size": 2, "max_length": 96, "eval_fraction": 0, "save_steps": 100, "lora_r": 8,
           "target_modules": "attention", "sample_prompts": 0}
    example, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path / "data")
    start = train(parse_spec(sft), tmp_path / "sft", str(demo_model_dir), example, _no_metrics, lambda: False)
    spec = parse_spec({**DPO, "init_adapter": "start", "lora_r": 4, "target_modules": "mlp"})
    result = train(spec, tmp_path / "dpo", str(demo_model_dir), _pairs(tmp_path), _no_metrics, lambda: False,
                   init_adapter=start.adapter_dir)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert not (result.adapter_dir / "ref").exists()  # TRL's frozen reference copy is not part of the adapter
    before = load_file(start.adapter_dir / "adapter_model.safetensors")
    after = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not before[key].equal(after[key]) for key in before)
