"""Each training option the spec offers trains a few real NF4 steps on CPU, and the adapter records it."""

import json

import pytest

from jobs.data.formats import parse_file
from jobs.data.store import store_parsed
from jobs.run_settings.settings import optimizer_for
from jobs.spec import parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.train import train

pytestmark = pytest.mark.slow
FEW_STEPS = {"max_steps": 2, "batch_size": 2, "max_length": 128, "eval_fraction": 0, "logging_steps": 1,
             "save_steps": 100}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("data"))
    return path


@pytest.mark.parametrize("options", [
    {"use_dora": True}, {"use_rslora": True}, {"lora_bias": "lora_only"}, {"modules_to_save": ["lm_head"]},
    {"optimizer": "adamw_8bit"}, {"optimizer": "paged_adamw_8bit"}, {"optimizer": "paged_adamw_32bit"},
    {"lr_scheduler": "linear", "weight_decay": 0.01, "max_grad_norm": 0.5},
], ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()))
def test_option_trains_and_is_recorded(options, dataset, demo_model_dir, tmp_path):
    spec = parse_spec({**FEW_STEPS, "target_modules": "attention", **options})
    losses = []
    result = train(spec, tmp_path, str(demo_model_dir), dataset,
                   lambda step, values, total: losses.append(values.get("loss")), lambda: False)
    assert not result.stopped and [loss for loss in losses if loss is not None]
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["use_dora"] == spec.use_dora and config["use_rslora"] == spec.use_rslora
    assert config["bias"] == spec.lora_bias and (config["modules_to_save"] or []) == spec.modules_to_save
    assert json.loads((result.adapter_dir / "training_spec.json").read_text())["optimizer"] == spec.optimizer


def test_paged_optimizers_run_unpaged_on_cpu_and_say_so():
    ran, note = optimizer_for(parse_spec({"optimizer": "paged_adamw_8bit"}), "cpu")
    assert ran == "adamw_bnb_8bit" and "needs CUDA" in note
    assert optimizer_for(parse_spec({"optimizer": "paged_adamw_8bit"}), "cuda") == ("paged_adamw_8bit", None)
    assert optimizer_for(parse_spec({}), "cpu") == ("adamw_torch", None)


def test_tracking_attention_and_rope_change_the_run(dataset, demo_model_dir, tmp_path):
    """One short run with TensorBoard, eager attention, linear RoPE x2 and torch.compile asked for: the loss lands in
    TensorBoard's event files in the run folder, the model attends eagerly with its rotary frequencies halved, and
    torch.compile is dropped in words (the tests switch TorchDynamo off: compiling would be a silent no-op)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from jobs.training.train import prepare_run

    spec = parse_spec({**FEW_STEPS, "target_modules": "attention", "report_to": "tensorboard",
                       "attn_implementation": "eager", "rope_scaling": "linear", "rope_factor": 2,
                       "torch_compile": True})
    run = prepare_run(spec, tmp_path, str(demo_model_dir), dataset, lambda *_: None, lambda: False)
    model = run.trainer.model
    assert model.config._attn_implementation == "eager"
    assert model.config.rope_parameters["rope_type"] == "linear"
    rotary = model.base_model.model.model.rotary_emb
    assert rotary.inv_freq[0].item() == pytest.approx(0.5)  # 1 / 10000^0 divided by the factor
    assert not run.settings.torch_compile and any("TORCHDYNAMO_DISABLE" in note for note in run.settings.notes)
    run.trainer.train()
    events = EventAccumulator(str(tmp_path / "tracking" / "tensorboard"))
    events.Reload()
    losses = [event.value for event in events.Scalars("train/loss")]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
