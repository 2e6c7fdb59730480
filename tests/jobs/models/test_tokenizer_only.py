"""The torch-free tokenizer (jobs.models.tokenizer_only) gives the ids AutoTokenizer gives, on every row of the
example datasets, for the demo base and the real offline one; it never imports torch; and a folder naming no
class still loads, through AutoTokenizer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from jobs.data.store import load_rows
from jobs.models.tokenizer_only import load_tokenizer_only, named_tokenizer_class

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "static" / "examples"


def _ids(tokenizer, rows: list[dict]) -> list[list[int]]:
    return [tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
            for row in rows]


@pytest.mark.parametrize(("model", "examples"), [("demo", "chat.jsonl"), ("smollm2", "pirate_chat.jsonl")])
def test_the_same_ids_as_autotokenizer_on_every_example_row(request, model, examples):
    folder = str(request.getfixturevalue("demo_model_dir" if model == "demo" else "smollm2_dir"))
    rows = load_rows(EXAMPLES / examples)
    light, auto = load_tokenizer_only(folder), AutoTokenizer.from_pretrained(folder)
    assert type(light) is type(auto)
    assert _ids(light, rows) == _ids(auto, rows)
    assert (light.pad_token, light.eos_token, light.chat_template) == (auto.pad_token, auto.eos_token,
                                                                       auto.chat_template)


def test_loading_it_imports_no_torch(demo_model_dir):
    code = ("import sys; from jobs.models.tokenizer_only import load_tokenizer_only, named_tokenizer_class; "
            f"load_tokenizer_only({str(demo_model_dir)!r}); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_folder_naming_no_class_loads_through_autotokenizer(tmp_path, demo_model_dir):
    folder = tmp_path / "model"
    folder.mkdir()
    for source in demo_model_dir.iterdir():  # the tokenizer's files (and its chat template), not the weights
        if source.is_file() and source.suffix != ".safetensors" and source.name != "config.json":
            (folder / source.name).write_bytes(source.read_bytes())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["tokenizer_class"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    rows = load_rows(EXAMPLES / "chat.jsonl")[:20]
    assert _ids(load_tokenizer_only(str(folder)), rows) == _ids(AutoTokenizer.from_pretrained(str(demo_model_dir)),
                                                                 rows)


@pytest.mark.parametrize("named", ["AutoModelForCausalLM", "os", "__import__('os')", 42, "NoSuchTokenizer"])
def test_only_a_tokenizer_class_is_taken_from_the_config(tmp_path, named):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": named}))
    assert named_tokenizer_class(tmp_path) is None
