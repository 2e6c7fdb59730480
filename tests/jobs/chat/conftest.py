"""Fixtures the chat tests share: small adapters of the demo base, trained once per session (one of each variant chat
must serve besides tests/conftest.py's two LoRA), and a models folder that holds the demo base."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def variant_adapters(tmp_path_factory, demo_model_dir) -> dict[str, Path]:
    """A DoRA, an rsLoRA (another rank and target set, and lm_head trained in full) and an fp4 adapter (no double
    quant, with a kept checkpoint at step 2), a few steps each: name -> the run folder (adapter/ and checkpoints/)."""
    from jobs.data.formats import parse_file
    from jobs.data.store import store_parsed
    from jobs.spec import parse_spec
    from jobs.studio import EXAMPLE_DATASET_FILE
    from jobs.training.train import train

    data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("variant-data"))
    variants = {"dora": {"use_dora": True, "seed": 4},
                "rslora": {"use_rslora": True, "lora_r": 4, "target_modules": "mlp", "modules_to_save": ["lm_head"],
                           "seed": 5},
                "fp4": {"quantization": "fp4", "double_quant": False, "seed": 6, "save_steps": 2}}
    runs = {}
    for name, extra in variants.items():
        spec = parse_spec({"max_steps": 3, "batch_size": 2, "max_length": 128, "learning_rate": 1e-2,
                           "eval_fraction": 0, "save_steps": 100, **extra})
        out = tmp_path_factory.mktemp(f"run-{name}")
        train(spec, out, str(demo_model_dir), data, lambda *a: None, lambda: False)
        runs[name] = out
    return runs


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory, demo_model_dir) -> Path:
    """A models folder holding the demo base (a link to the session's one)."""
    models = tmp_path_factory.mktemp("chat-models")
    (models / demo_model_dir.name).symlink_to(demo_model_dir)
    return models
