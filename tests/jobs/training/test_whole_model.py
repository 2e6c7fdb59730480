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
from jobs.submit import submit_job
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


def test_a_full_run_moves_every_weight_resumes_from_its_checkpoint_and_saves_a_model(dataset, demo_model_dir,
                                                                                      tmp_path, capsys):
    """Stopped after its first step (a whole-model checkpoint: weights and optimizer), it resumes there; the model it
    saves has every weight moved and loads and answers with plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before = load_file(demo_model_dir / "model.safetensors")
    first = train(parse_spec({**FEW_STEPS, "finetuning": "full", "save_steps": 1}), tmp_path, str(demo_model_dir),
                  dataset, lambda *_: None, lambda: True)  # a stop at the step's end: a checkpoint, no model
    assert first.stopped and (tmp_path / "checkpoints" / "checkpoint-1" / "model.safetensors").is_file()
    spec = parse_spec({**FEW_STEPS, "finetuning": "full", "save_steps": 1, "max_steps": 2})
    result = train(spec, tmp_path, str(demo_model_dir), dataset, lambda *_: None, lambda: False)
    assert "resuming from checkpoint-1" in capsys.readouterr().out and result.final_metrics["steps"] == 2
    folder = result.adapter_dir
    assert is_whole_model(folder) and not (folder / "adapter_config.json").exists()
    after = load_file(folder / "model.safetensors")
    assert set(after) == set(before)  # the same model, nothing added (no LoRA matrices, no quantization state)
    assert _changed(before, after) == set(before)  # the loss reaches every weight of the demo base
    assert json.loads((folder / "training_spec.json").read_text())["finetuning"] == "full"

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4


def test_a_freeze_job_is_published_as_a_model_of_its_own(studio, demo_model_dir, tmp_path):
    """Through the queue's child as a worker runs it: only the last block moves; the registry lists a model (kind
    shown), downloads it as a zip with a card that loads it with transformers, refuses to merge or combine it, and
    chat serves it as a pane on a base of its own beside the shared base."""
    import zipfile

    from jobs.cli.operator import adapters
    from jobs.submit import submit_combine, submit_merge
    from jobs.training.export import adapter_export
    from storage import catalog
    from tests.jobs.training.test_registry import _run_the_child

    job_id = submit_job(studio, {**FEW_STEPS, "name": "frozen", "finetuning": "freeze", "freeze_trainable_layers": 1})
    assert _run_the_child(studio, job_id) == 0, (studio.settings.runs_dir / f"job-{job_id}" / "train.log")
    with studio.db.read() as session:
        adapter = catalog.adapter_for_job(session, job_id)
    folder = studio.absolute(adapter.path)
    before, after = load_file(demo_model_dir / "model.safetensors"), load_file(folder / "model.safetensors")
    assert _changed(before, after) == {name for name in before if name.startswith("model.layers.1.")}
    assert [(row["name"], row["kind"]) for row in adapters(studio)] == [("frozen", "model")]
    with zipfile.ZipFile(adapter_export(studio, adapter)) as archive:
        names = set(archive.namelist())
        card = archive.read("frozen/README.md").decode()
    assert {"frozen/model.safetensors", "frozen/config.json", "frozen/tokenizer.json"} <= names
    assert "AutoModelForCausalLM.from_pretrained(MODEL" in card and "PeftModel" not in card
    with pytest.raises(SpecError, match="nothing to merge"):
        submit_merge(studio, "frozen")
    with pytest.raises(SpecError, match="whole model"):
        submit_combine(studio, "both", ["frozen", "frozen-too"])
    from jobs.chat.request import resolve_panes
    from jobs.training.gguf_export import build_export

    _chat_beside_the_base(resolve_panes(studio, "demo-tiny-llama", ["frozen", "base"]), folder, demo_model_dir,
                          tmp_path)
    record = build_export(folder, folder, tmp_path / "gguf", "f16", "frozen")  # a plain model: converted as it is
    assert record["files"][0] == "model-f16.gguf" and "no LoRA adapter" in record["lora"]
    assert (tmp_path / "gguf" / "model-f16.gguf").stat().st_size > 0


def _chat_beside_the_base(panes, folder, demo_model_dir, tmp_path):
    from jobs.chat.engine import ChatEngine, resident_estimate
    from jobs.chat.request import GenerationSettings
    from jobs.chat.scheduler import GenerationScheduler

    models = tmp_path / "models"
    models.mkdir()
    (models / demo_model_dir.name).symlink_to(demo_model_dir)
    engine = GenerationScheduler(ChatEngine(models))
    replies = engine.compare("demo-tiny-llama", panes,
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
