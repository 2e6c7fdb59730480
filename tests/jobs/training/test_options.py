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
