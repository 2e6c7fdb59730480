"""DPO on the demo base, on CPU, for real: from a new LoRA and from a trained adapter (whose frozen copy is the
reference). The saved adapter is the trained one only, and it moved away from where it started."""

import json

import pytest
from safetensors.torch import load_file

from jobs.data.formats import PREFERENCE, UNPAIRED, ParsedDataset, parse_file
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
    # The pairs come as whole conversations without a prompt (TRL's implicit prompt): they read as the explicit rows.
    whole = [{"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}
             for row in preference_rows()]
    (tmp_path / "implicit.jsonl").write_text("\n".join(map(json.dumps, whole)))
    parsed = parse_file(tmp_path / "implicit.jsonl")
    assert parsed.format == PREFERENCE and parsed.rows == preference_rows()
    pairs, _ = store_parsed(parsed, tmp_path / "data")
    metrics = []
    result = train(parse_spec(DPO), tmp_path / "run", str(demo_model_dir), pairs,
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


def unpaired_rows(count: int = 8) -> list[dict]:
    """KTO's rows: a right answer labelled desirable, a wrong one undesirable, alternating (TRL reads them in order)."""
    return [{"prompt": [{"role": "user", "content": f"What is {i // 2} plus {i // 2}?"}],
             "completion": [{"role": "assistant", "content": f"{i}." if i % 2 == 0 else "I do not know."}],
             "label": i % 2 == 0} for i in range(count)]


SHORT = {"max_steps": 3, "batch_size": 2, "max_length": 64, "eval_fraction": 0, "logging_steps": 1,
         "save_steps": 100, "learning_rate": 1e-2, "lora_r": 4, "target_modules": "attention", "sample_prompts": 0}
OWN_METRIC = {"orpo": "log_odds_ratio", "simpo": "rewards/margins", "kto": "kl"}
"""What each method logs of its own: ORPO's odds-ratio term, SimPO's reward margin, KTO's KL estimate."""


@pytest.mark.parametrize("method", ["orpo", "simpo", "kto"])
def test_each_preference_method_trains_its_own_loss_and_resumes(method, tmp_path, demo_model_dir):
    """A few steps of each on the demo base: its loss moves and its own metric is logged. KTO is stopped after
    two steps (a checkpoint) and resumes from it to its third, its reference and KL pass rebuilt from the spec."""
    if method == "kto":
        data, _ = store_parsed(ParsedDataset(UNPAIRED, unpaired_rows()), tmp_path / "data")
    else:
        data = _pairs(tmp_path)
    spec = parse_spec({**SHORT, "method": method})
    logged: dict[int, dict] = {}

    def sink(step, values, total):
        logged.setdefault(step, {}).update(values)

    stop_at_first = method == "kto"
    result = train(spec, tmp_path / "run", str(demo_model_dir), data, sink,
                   lambda: stop_at_first and any(step >= 1 for step in logged))
    if stop_at_first:
        assert result.stopped and list((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
        result = train(spec, tmp_path / "run", str(demo_model_dir), data, sink, lambda: False)
    assert not result.stopped and (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert not (result.adapter_dir / "ref").exists()
    losses = [values["loss"] for _, values in sorted(logged.items()) if "loss" in values]
    assert len(losses) >= 3 and len(set(losses)) > 1, losses
    assert any(OWN_METRIC[method] in values for values in logged.values()), logged
    assert result.final_metrics["steps"] == 3
