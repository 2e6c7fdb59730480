"""The training child's recorded memory estimate: it sizes the run training makes here, with the settings training
resolves (the dtype the run trains in, the adapter that trains) and the data's longest pair for DPO."""

from __future__ import annotations

import json

from jobs.data.formats import PREFERENCE, ParsedDataset
from jobs.data.store import find_dataset, register_parsed
from jobs.models.demo import ensure_demo_model
from jobs.models.fits import job_estimate
from jobs.models.memory_inputs import ModelShape
from jobs.planning import longest_sequence
from jobs.queue import child
from jobs.run_settings.cpu_dtype import native_bf16
from jobs.run_settings.lora import read_adapter_lora
from jobs.run_settings.settings import Machine
from jobs.spec import TrainSpec
from jobs.training.run_dtype import RECORD_NAME

PLANNED = {"batch_size": 2, "packing": True, "learning_rate": 1e-3, "num_epochs": 1.0, "eval_fraction": 0.0}
HERE = Machine("cpu", bf16=native_bf16())


def _estimate(spec: TrainSpec, base: str, run, studio=None, dataset=None, start=None) -> int | None:
    return child._memory_estimate(studio, spec, base, run, dataset, start, None)


def test_a_resumed_run_is_estimated_in_the_dtype_it_keeps(tmp_path, capsys):
    base = str(ensure_demo_model(tmp_path / "models"))  # 128 wide: 'auto' is float32 on any CPU
    run = tmp_path / "run"
    run.mkdir()
    spec = TrainSpec(**PLANNED)
    fresh = _estimate(spec, base, run)
    assert "(on cpu in float32)" in capsys.readouterr().out
    (run / RECORD_NAME).write_text(json.dumps({"device": "cpu", "dtype": "bfloat16"}))  # how the run began
    resumed = _estimate(spec, base, run)
    assert "(on cpu in bfloat16)" in capsys.readouterr().out
    assert resumed < fresh  # 2-byte activations and LoRA
    assert _estimate(TrainSpec(**PLANNED, compute_dtype="float32"), base, run) == fresh  # the spec wins


def _pairs(count: int = 12) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
             "chosen": [{"role": "assistant", "content": f"{2 * i}."}],
             "rejected": [{"role": "assistant", "content": f"I do not know what {i} plus {i} is, sorry. " * 4}]}
            for i in range(count)]


def test_a_dpo_job_is_estimated_from_its_longest_pair_not_max_length(studio, demo_model_dir, tmp_path):
    """The Train tab sizes a DPO job from its pairs; the child recorded max_length long ones (4x the peak seen)."""
    register_parsed(studio, "pairs", ParsedDataset(PREFERENCE, _pairs()))
    dataset = find_dataset(studio, "pairs")  # the row the job pinned
    spec = TrainSpec(**PLANNED, dataset="pairs", method="dpo", max_length=1024)
    longest = longest_sequence(studio, spec, dataset)
    assert 0 < longest < 200
    recorded = _estimate(spec, str(demo_model_dir), tmp_path, studio, dataset)
    shape = ModelShape.from_dir(demo_model_dir)
    assert recorded == job_estimate(spec, shape, HERE, longest).peak  # what the Train tab's panel shows
    assert recorded < job_estimate(spec, shape, HERE).peak  # not max_length pairs


def test_a_job_that_continues_an_adapter_is_estimated_with_that_adapters_lora(demo_model_dir, tmp_path):
    """The spec's LoRA fields are not used when a job continues an adapter: its own rank, targets and DoRA train."""
    start = tmp_path / "start"
    start.mkdir()
    (start / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 64, "lora_alpha": 128, "lora_dropout": 0.0, "use_dora": True, "bias": "none",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}))
    spec = TrainSpec(**PLANNED, init_adapter="start", lora_r=4, target_modules="attention")
    recorded = _estimate(spec, str(demo_model_dir), tmp_path / "run", start=start)
    shape = ModelShape.from_dir(demo_model_dir)
    assert recorded == job_estimate(spec, shape, HERE, adapter=read_adapter_lora(start)).peak
    assert recorded > job_estimate(spec, shape, HERE).peak  # r=64 DoRA on every Linear, not r=4 on attention
