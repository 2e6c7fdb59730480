"""Batched compare: one generate with adapter_names gives each row what that adapter gives alone."""

import pytest
import torch

from jobs.chat.engine import ChatEngine
from jobs.chat.request import GenerationSettings
from jobs.data.formats import parse_file
from jobs.data.store import store_parsed
from jobs.spec import parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, demo_model_dir):
    data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("data"))
    adapters = []
    for seed, targets in ((1, "all-linear"), (2, "attention")):
        spec = parse_spec({"max_steps": 6, "batch_size": 2, "max_length": 256, "learning_rate": 1e-2,
                           "eval_fraction": 0, "seed": seed, "target_modules": targets, "save_steps": 100})
        out = tmp_path_factory.mktemp(f"run{seed}")
        adapters.append(train(spec, out, str(demo_model_dir), data, lambda *a: None, lambda: False).adapter_dir)
    return adapters


def _engine(tmp_path, demo_model_dir):
    models = tmp_path / "models"
    models.mkdir()
    (models / demo_model_dir.name).symlink_to(demo_model_dir)
    return ChatEngine(models)


PROMPTS = ["What is 2 plus 3?", "Reverse the words: apple owl key", "Uppercase the word: lime"]


def test_batched_rows_equal_each_adapter_alone(tmp_path, demo_model_dir, two_adapters):
    engine = _engine(tmp_path, demo_model_dir)
    panes = [("a1", two_adapters[0]), ("a2", two_adapters[1]), ("base", None)]
    greedy = GenerationSettings(max_new_tokens=16, temperature=0)
    for prompt in PROMPTS:
        # Different conversation lengths per pane force real left padding inside the batch.
        conversations = [[{"role": "user", "content": prompt}],
                         [{"role": "user", "content": prompt + " please, now"}],
                         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]]
        batched = engine.compare("demo-tiny-llama", panes, conversations, greedy)
        alone = [engine.compare("demo-tiny-llama", [pane], [conv], greedy)[0]
                 for pane, conv in zip(panes, conversations, strict=True)]
        assert batched == alone
    assert len(set(batched)) > 1  # the adapters really differ from each other and from the base


def test_adapters_share_one_base(tmp_path, demo_model_dir, two_adapters):
    engine = _engine(tmp_path, demo_model_dir)
    engine.compare("demo-tiny-llama", [("a1", two_adapters[0]), ("a2", two_adapters[1])],
                   [[{"role": "user", "content": "hi"}]] * 2, GenerationSettings(max_new_tokens=2))
    assert len(engine._bases) == 1
    model = engine._bases["demo-tiny-llama"].model
    assert set(model.peft_config) == {"adapter_0", "adapter_1"}
    assert any("Linear4bit" in type(m).__name__ for m in model.modules())


def test_streaming_yields_growing_replies_and_sampling_is_seeded(tmp_path, demo_model_dir, two_adapters):
    engine = _engine(tmp_path, demo_model_dir)
    panes = [("a1", two_adapters[0]), ("base", None)]
    conversations = [[{"role": "user", "content": "Spell the word: cat"}]] * 2
    sampled = GenerationSettings(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7)
    updates = list(engine.stream("demo-tiny-llama", panes, conversations, sampled))
    assert len(updates) > 2 and all(len(u) == 2 for u in updates)
    again = engine.compare("demo-tiny-llama", panes, conversations, sampled)
    assert again == updates[-1]
    torch.manual_seed(0)


def test_bad_generation_settings_are_named():
    problems = GenerationSettings(max_new_tokens=0, temperature=-1, top_p=0).problems()
    assert [p.split(":")[0] for p in problems] == ["max_new_tokens", "temperature", "top_p"]
