from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import jobs.models.demo as demo_model
from jobs.models.demo import DEMO_MODEL_NAME, EOS_TOKEN, build_demo_model, ensure_demo_model
from tests.conftest import REPO_ROOT

CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 3 plus 4?"},
    {"role": "assistant", "content": "3 plus 4 is 7."},
    {"role": "user", "content": "Spell the word cat."},
    {"role": "assistant", "content": "c-a-t"},
]


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)


def _build_in_threads(targets: list[tuple[Path, int]]) -> None:
    # Concurrent builds in one process: the seeded init must not interleave draws from the global generator.
    errors: list[BaseException] = []

    def build(out_dir: Path, seed: int) -> None:
        try:
            build_demo_model(out_dir, seed=seed)
        except BaseException as error:  # re-raised in the test thread
            errors.append(error)

    threads = [threading.Thread(target=build, args=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def test_same_seed_gives_identical_files_and_other_seed_other_weights(tmp_path, demo_model_dir):
    _build_in_threads([(tmp_path / "a", 0), (tmp_path / "b", 0), (tmp_path / "c", 1)])
    names = sorted(p.name for p in demo_model_dir.iterdir())
    for other in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / other).iterdir()) == names
        _, mismatch, errors = filecmp.cmpfiles(demo_model_dir, tmp_path / other, names, shallow=False)
        assert mismatch == [] and errors == []
    seed1 = tmp_path / "c"
    assert (seed1 / "model.safetensors").read_bytes() != (demo_model_dir / "model.safetensors").read_bytes()
    assert (seed1 / "tokenizer.json").read_bytes() == (demo_model_dir / "tokenizer.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp dirs left behind


def test_saved_files_are_safetensors_only(demo_model_dir):
    names = {p.name for p in demo_model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not [name for name in names if name.endswith((".bin", ".pt", ".pth", ".pkl"))]


def test_config_matches_tokenizer(demo_model_dir, tokenizer):
    config = json.loads((demo_model_dir / "config.json").read_text())
    generation = json.loads((demo_model_dir / "generation_config.json").read_text())
    assert config["vocab_size"] % 64 == 0 and config["vocab_size"] >= len(tokenizer)
    assert config["tie_word_embeddings"] is False
    assert config["max_position_embeddings"] == 1024
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.padding_side == "right"
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3


def test_every_linear_dimension_is_a_multiple_of_64(demo_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert len(linears) == 7 * model.config.num_hidden_layers + 1  # q k v o gate up down per layer + lm_head
    for name, module in linears.items():
        assert module.in_features % 64 == 0 and module.out_features % 64 == 0, name


def test_loads_in_4bit_and_generates(demo_model_dir, tokenizer):
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, quantization_config=quantization)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 7 * model.config.num_hidden_layers
    prompt = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True, return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert output.shape == (1, prompt["input_ids"].shape[1] + 8)


def test_chat_template_marks_assistant_turns_including_the_end_token(tokenizer):
    encoded = tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert mask[-1] == 1 and ids[-1] == tokenizer.eos_token_id  # the model is trained to stop
    masked = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert masked == f"3 plus 4 is 7.{EOS_TOKEN}c-a-t{EOS_TOKEN}"


def test_generation_prompt_opens_an_assistant_turn(tokenizer):
    text = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|assistant|>")
    assert not tokenizer.apply_chat_template(CHAT[:2], tokenize=False).endswith("<|assistant|>")


def test_trl_sees_a_usable_training_template(tokenizer):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    assert has_generation_markers(tokenizer.chat_template)
    assert is_chat_template_stop_token_trained(tokenizer)


def test_tokenizer_round_trips_text(tokenizer):
    text = "Sort these numbers: 42 7 19, then say GRAPE! Ünïcode too."
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_example_rows_span_short_and_long_token_counts(tokenizer):
    rows = [json.loads(line) for line in demo_model.EXAMPLE_DATASET_FILE.read_text(encoding="utf-8").splitlines()]
    # transformers 5: apply_chat_template returns a BatchEncoding (return_dict=True) by default
    lengths = sorted(len(tokenizer.apply_chat_template(row["messages"])["input_ids"]) for row in rows)
    assert lengths[0] <= 20 and lengths[-1] >= 200
    assert lengths[len(lengths) // 2] <= 60


def test_ensure_demo_model_builds_once(tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    first = ensure_demo_model(models_dir)
    assert first == models_dir / DEMO_MODEL_NAME
    rebuild = lambda *args, **kwargs: pytest.fail("rebuilt an existing model")  # noqa: E731
    monkeypatch.setattr(demo_model, "build_demo_model", rebuild)
    assert ensure_demo_model(models_dir) == first
    assert [p.name for p in models_dir.iterdir()] == [DEMO_MODEL_NAME]


def test_losing_the_build_race_keeps_the_winners_copy(tmp_path, monkeypatch, demo_model_dir):
    out_dir = tmp_path / DEMO_MODEL_NAME

    def rival_wins_while_we_write(tmp_dir: Path, seed: int, examples_path: Path) -> None:
        shutil.copytree(demo_model_dir, out_dir)  # another process renames its copy into place first
        shutil.copytree(demo_model_dir, tmp_dir)
        (tmp_dir / "ours").touch()

    monkeypatch.setattr(demo_model, "_write_model", rival_wins_while_we_write)
    assert ensure_demo_model(tmp_path) == out_dir
    assert not (out_dir / "ours").exists()
    assert [p.name for p in tmp_path.iterdir()] == [DEMO_MODEL_NAME]  # our copy was discarded


def test_build_refuses_to_overwrite(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        build_demo_model(tmp_path / "taken")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_importing_the_modules_loads_neither_gradio_nor_torch():
    imports = "import sys, jobs.models.demo, jobs.data.example_data"
    code = f"{imports}; print(sorted(sys.modules.keys() & {{'gradio', 'torch'}}))"
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
