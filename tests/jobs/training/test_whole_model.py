"""Full and freeze fine-tuning on the demo model: which of the base's own weights move, and the whole model saved
(no adapter) loads with plain transformers and answers."""

import json

import pytest
import torch
from safetensors.torch import load_file

from jobs.data.formats import parse_file
from jobs.data.store import store_parsed
from jobs.models.contents import is_whole_model
from jobs.spec import LORA_ONLY_FIELDS, parse_spec
from jobs.spec_words import SpecError
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.train import train

pytestmark = pytest.mark.slow
FEW_STEPS = {"max_steps": 1, "warmup_ratio": 0, "batch_size": 2, "max_length": 64, "eval_fraction": 0,
             "logging_steps": 1, "save_steps": 100, "learning_rate": 1e-2, "sample_prompts": 0}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("data"))
    return path


def _changed(before: dict, after: dict) -> set[str]:
    return {name for name, tensor in before.items() if not torch.equal(tensor, after[name])}


@pytest.mark.parametrize("options", [{"finetuning": "freeze", "freeze_trainable_layers": 1}, {"finetuning": "full"}],
                         ids=["freeze", "full"])
def test_a_whole_model_run_moves_the_weights_it_trains_and_saves_a_model(options, dataset, demo_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before = load_file(demo_model_dir / "model.safetensors")
    spec = parse_spec({**FEW_STEPS, **options})
    result = train(spec, tmp_path, str(demo_model_dir), dataset, lambda *_: None, lambda: False)
    folder = result.adapter_dir
    assert is_whole_model(folder) and not (folder / "adapter_config.json").exists()
    after = load_file(folder / "model.safetensors")
    assert set(after) == set(before)  # the same model, nothing added (no LoRA matrices, no quantization state)
    changed = _changed(before, after)
    if spec.finetuning == "freeze":  # the demo base has two blocks: only the last one moves
        assert changed and all(name.startswith("model.layers.1.") for name in changed)
        assert {name for name in before if name.startswith("model.layers.1.")} == changed
    else:  # every weight that the loss reaches moves (the demo's are all reached)
        assert changed == set(before)
    assert json.loads((folder / "training_spec.json").read_text())["finetuning"] == spec.finetuning

    if spec.finetuning == "freeze":  # chat serves it as a pane on a base of its own, beside the shared base
        _chat_beside_the_base(folder, demo_model_dir, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4


def _chat_beside_the_base(folder, demo_model_dir, tmp_path):
    from jobs.chat.engine import ChatEngine, resident_estimate
    from jobs.chat.request import GenerationSettings
    from jobs.chat.scheduler import GenerationScheduler

    models = tmp_path / "models"
    models.mkdir()
    (models / demo_model_dir.name).symlink_to(demo_model_dir)
    engine = GenerationScheduler(ChatEngine(models))
    replies = engine.compare("demo-tiny-llama", [("tuned", folder), ("base", None)],
                             [[{"role": "user", "content": "hi"}]] * 2, GenerationSettings(max_new_tokens=3))
    assert len(replies) == 2
    labels = sorted(loaded.label for loaded in engine.engine._bases.values())
    assert labels == ["demo-tiny-llama", "demo-tiny-llama (its own whole model, unquantized)"]
    assert not any("Linear4bit" in type(m).__name__ for m in next(
        b for b in engine.engine._bases.values() if "whole" in b.label).model.modules())
    own = resident_estimate(str(folder), "demo-tiny-llama", "cpu", _variant(folder))
    assert engine.resident_bytes() == own + resident_estimate(str(demo_model_dir), "demo-tiny-llama", "cpu")


def _variant(folder):
    from jobs.chat.request import variant_of

    return variant_of(folder, "tuned")


def test_whole_model_runs_refuse_lora_options_and_other_methods():
    with pytest.raises(SpecError) as error:
        parse_spec({"finetuning": "full", "use_dora": True, "loraplus_lr_ratio": 16, "target_modules": "attention"})
    fields = {problem.field for problem in error.value.problems}
    assert fields == {"use_dora", "loraplus_lr_ratio", "target_modules"}
    assert all("finetuning is 'full'" in problem.message for problem in error.value.problems)
    with pytest.raises(SpecError, match="method sft only"):
        parse_spec({"finetuning": "freeze", "method": "dpo"})
    with pytest.raises(SpecError, match="freeze_trainable_layers"):
        parse_spec({"freeze_trainable_layers": 3})
    assert parse_spec({"finetuning": "full", "quantization": "nf4"}).finetuning == "full"
    assert "lora_r" in LORA_ONLY_FIELDS


def test_whole_model_settings_load_unquantized_in_fp32():
    from jobs.run_settings.settings import MACHINES_BY_KIND, Base, resolve

    spec = parse_spec({"finetuning": "freeze", "batch_size": 2, "learning_rate": 1e-4, "num_epochs": 1,
                       "packing": False})
    for machine in MACHINES_BY_KIND:
        settings = resolve(spec, Base(hidden=128), machine)
        assert not settings.quantized and settings.weights_dtype == "float32" and settings.trainable_layers == 2
        assert settings.quantization_kwargs() is None


def test_the_memory_verdict_counts_whole_model_training_and_refuses_what_cannot_fit():
    """fp32 weights for every parameter, a fp32 gradient and AdamW's two fp32 states for each trained one: a full run
    of SmolLM2 (134.5 M parameters) needs about 1.5 GiB more than its LoRA run, and a budget the LoRA run meets is
    refused for it, in words."""
    from jobs.models.budget import fit
    from jobs.models.fits import Device, job_estimate
    from jobs.models.known_bases import known_config
    from jobs.models.memory import whole_model_trained_params
    from jobs.models.memory_inputs import TrainShape
    from jobs.models.shape import ModelShape

    shape = ModelShape.from_config(known_config("smollm2-135m-instruct"))
    gpu = Device(label="cuda:0", name="NVIDIA test GPU", memory_bytes=80 * 2**30)
    planned = {"batch_size": 1, "learning_rate": 1e-4, "num_epochs": 1, "packing": False}
    peaks = {mode: job_estimate(parse_spec({**planned, **extra}), shape, gpu.machine).peak
             for mode, extra in (("lora", {}), ("freeze", {"finetuning": "freeze"}), ("full", {"finetuning": "full"}))}
    assert peaks["lora"] < peaks["freeze"] < peaks["full"]
    assert peaks["full"] - peaks["lora"] > 12 * shape.total_params  # weights fp32, grads and states per param
    assert whole_model_trained_params(shape, TrainShape(finetuning="full")) == shape.total_params
    assert whole_model_trained_params(shape, TrainShape(finetuning="freeze", trainable_layers=99)) < shape.total_params

    budget = {"memory_budget_gib": (peaks["lora"] + 0.2 * 2**30) / 2**30}
    for extra, fits in (({}, True), ({"finetuning": "full"}, False)):
        spec = parse_spec({**planned, **budget, **extra})
        _, memory, _ = fit(spec, spec, shape, [gpu])
        assert memory.fits is fits
    assert "set at least" in memory.problem()
