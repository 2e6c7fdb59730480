"""'Show as CLI / Python': the spec file submits as is, and the plain TRL script trains the same adapter alone."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from jobs.data.formats import ParsedDataset, parse_file
from jobs.data.store import store_parsed
from jobs.models.loading import load_tokenizer
from jobs.models.templates import CHATML_TEMPLATE, SMOLLM2_TEMPLATE, SMOLLM2_TRAINING_TEMPLATE
from jobs.spec import parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.script import cli_text, plain_trl_script


def test_the_cli_text_holds_the_whole_spec():
    spec = parse_spec({"lora_r": 32, "target_modules": ["q_proj", "v_proj"]})
    text = cli_text(spec)
    body = text.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    assert parse_spec(json.loads(body)) == spec and text.endswith("python -m jobs submit spec.json --wait")


# The script trains fixed values: the fields the rule would choose per job (jobs.step_plan) are set here.
CHOSEN = {"packing": True, "num_epochs": 1, "learning_rate": 5e-3, "eval_fraction": 0.1}


def test_a_template_without_markers_is_patched_in_the_script():
    script = plain_trl_script(parse_spec({**CHOSEN, "batch_size": 4}), "base", "data.jsonl",
                              chat_template=SMOLLM2_TEMPLATE)
    assert f"tokenizer.chat_template = {SMOLLM2_TRAINING_TEMPLATE!r}" in script


@pytest.mark.slow
def test_the_plain_trl_script_trains_the_adapter(demo_model_dir, tmp_path):
    """With the Data options set too: two datasets mixed by ratio, a default system prompt, a chosen template and
    loss on the last turn only. The script mixes and drops the rows the studio's run takes, by the same functions."""
    from jobs.training.prepare import run_rows, select_rows

    rows = parse_file(EXAMPLE_DATASET_FILE).rows
    data, _ = store_parsed(ParsedDataset("messages", rows[:40] + rows[:5]), tmp_path / "data")
    extra, _ = store_parsed(ParsedDataset("messages", rows[50:66]), tmp_path / "data")
    held, _ = store_parsed(ParsedDataset("messages", rows[40:44]), tmp_path / "data")
    spec = parse_spec({**CHOSEN, "max_steps": 2, "batch_size": 2, "max_length": 96, "lora_r": 4,
                       "target_modules": "attention", "eval_dataset": "held", "eval_steps": 2,
                       "optimizer": "paged_adamw_8bit", "use_rslora": True, "dedup": True, "overlong": "drop",
                       "loraplus_lr_ratio": 16, "neftune_noise_alpha": 5,
                       "report_to": "tensorboard", "attn_implementation": "eager", "rope_scaling": "linear",
                       "rope_factor": 2, "torch_compile": True, "dataset": "data",
                       "dataset_mix": "data:0.8, extra:0.2", "system_prompt": "Be brief.", "chat_template": "chatml",
                       "loss_turns": "last", "devices": 2})
    files = {"data": str(data), "extra": str(extra)}
    script = tmp_path / "train.py"
    script.write_text(plain_trl_script(spec, str(demo_model_dir), files, eval_file=str(held)))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # The mix (45 of 'data', 11 of 'extra'), then duplicates out and rows over 96 tokens dropped (ChatML's framing
    # is long in the demo's tokens), as the studio's own run takes them; the held-out file evaluates.
    tokenizer = load_tokenizer(str(demo_model_dir), for_assistant_only_loss=True, chat_template=CHATML_TEMPLATE)
    kept = len(select_rows(run_rows(spec, {name: Path(path) for name, path in files.items()}), spec, tokenizer))
    assert "mixed 56 rows: {'data': 45, 'extra': 11}" in done.stdout, done.stdout
    assert 0 < kept < 56 and f"{kept} train rows, 4 eval rows" in done.stdout, done.stdout
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["use_rslora"] and set(config["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj"}
    # The tracker writes beside the script; the base loads with the run's attention and RoPE scaling.
    assert list((tmp_path / "tracking" / "tensorboard").glob("events.out.tfevents.*"))
    assert "'model.attn_implementation': 'eager'" in script.read_text()
    assert "'rope_type': 'linear', 'factor': 2.0" in script.read_text()
    # Two devices: the script says how torchrun starts its ranks (run as one process here, it trains alone).
    assert "torchrun --nproc-per-node=2 train.py" in script.read_text()
    assert "'trainer.ddp_backend'" in script.read_text()
    assert AutoTokenizer.from_pretrained(tmp_path / "adapter").chat_template == CHATML_TEMPLATE


@pytest.mark.slow
def test_the_plain_script_of_a_dpo_job_continues_its_adapter(demo_model_dir, tmp_path):
    from jobs.data.formats import PREFERENCE
    from jobs.training.train import train
    from tests.jobs.training.test_preference import preference_rows

    example, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path / "data")
    sft = parse_spec({"max_steps": 2, "batch_size": 2, "max_length": 96, "eval_fraction": 0, "lora_r": 8,
                      "target_modules": "attention", "save_steps": 99, "sample_prompts": 0})
    start = train(sft, tmp_path / "sft", str(demo_model_dir), example, lambda *a: None, lambda: False).adapter_dir
    pairs, _ = store_parsed(ParsedDataset(PREFERENCE, preference_rows()), tmp_path / "data")
    spec = parse_spec({**CHOSEN, "method": "dpo", "init_adapter": "start", "max_steps": 2, "batch_size": 2,
                       "max_length": 96, "eval_fraction": 0.2, "eval_steps": 1, "lora_r": 4, "learning_rate": 1e-3})
    script = tmp_path / "dpo.py"
    script.write_text(plain_trl_script(spec, str(demo_model_dir), str(pairs), start_adapter=str(start)))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and not (tmp_path / "adapter" / "ref").exists()


@pytest.mark.parametrize("method", ["orpo", "simpo", "kto"])
def test_the_script_of_each_preference_method_names_its_trainer_and_its_config_takes_the_settings(method, tmp_path):
    """Cheap for every method: the script compiles, imports the method's TRL trainer and passes its own arguments,
    and that config accepts every trainer argument the script states (the KTO script is also run, below)."""
    from jobs.run_settings.settings import Base, Machine, resolve
    from jobs.training.preference import trainer_classes
    from jobs.training.script import TRAINERS

    spec = parse_spec({**CHOSEN, "method": method, "batch_size": 2, "eval_fraction": 0})
    script = plain_trl_script(spec, "base", "data.jsonl")
    compile(script, "train.py", "exec")
    config_name, trainer_name = TRAINERS[method]
    assert f"import {config_name}, {trainer_name}" in script and f"trainer = {trainer_name}(" in script
    own = {"orpo": "'trainer.beta': 0.1,", "simpo": "'trainer.loss_type': 'simpo',",
           "kto": "'trainer.desirable_weight': 1.0,"}[method]
    assert own in script
    config, _ = trainer_classes(method)
    kwargs = resolve(spec, Base(), Machine("cpu", bf16=False)).trainer_kwargs()
    built = config(**kwargs, output_dir=str(tmp_path))
    assert built.beta == kwargs["beta"] and built.max_length == spec.max_length


@pytest.mark.slow
def test_the_plain_script_of_a_kto_job_trains_on_labelled_answers(demo_model_dir, tmp_path, monkeypatch, capsys):
    """Run in this process (runpy), not a fresh interpreter: the imports are already paid for, and the script is
    the same file a person runs."""
    import runpy

    from jobs.data.formats import UNPAIRED
    from tests.jobs.training.test_preference import unpaired_rows

    data, _ = store_parsed(ParsedDataset(UNPAIRED, unpaired_rows()), tmp_path / "data")
    spec = parse_spec({**CHOSEN, "method": "kto", "max_steps": 2, "batch_size": 2, "max_length": 64,
                       "eval_fraction": 0, "lora_r": 4, "target_modules": "attention", "learning_rate": 1e-3})
    script = tmp_path / "kto.py"
    script.write_text(plain_trl_script(spec, str(demo_model_dir), str(data)))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert "'kl'" in capsys.readouterr().out and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter" / "ref").exists()


@pytest.mark.slow
def test_the_plain_script_of_a_reward_job_trains_a_score_head(demo_model_dir, tmp_path, monkeypatch, capsys):
    """In this process (runpy), as the KTO script's test: the base as a sequence classifier, a SEQ_CLS LoRA whose
    score head is saved, TRL's RewardTrainer logging the pairs' accuracy."""
    import runpy

    from jobs.data.formats import PREFERENCE
    from tests.jobs.training.test_reward import separable_pairs

    data, _ = store_parsed(ParsedDataset(PREFERENCE, separable_pairs(8)), tmp_path / "data")
    spec = parse_spec({**CHOSEN, "method": "reward", "max_steps": 2, "batch_size": 2, "max_length": 64,
                       "eval_fraction": 0, "lora_r": 4, "target_modules": "attention", "learning_rate": 1e-3})
    script = tmp_path / "reward.py"
    script.write_text(plain_trl_script(spec, str(demo_model_dir), str(data)))
    assert "import RewardConfig, RewardTrainer" in script.read_text()
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert "'accuracy'" in capsys.readouterr().out
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]


@pytest.mark.slow
def test_the_plain_script_of_a_pissa_job_saves_it_converted(demo_model_dir, tmp_path, monkeypatch):
    """In this process (runpy), as the KTO script's test: the imports are paid for already."""
    import runpy

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rows = parse_file(EXAMPLE_DATASET_FILE).rows
    data, _ = store_parsed(ParsedDataset("messages", rows[:8]), tmp_path / "data")
    spec = parse_spec({**CHOSEN, "eval_fraction": 0, "max_steps": 1, "batch_size": 2, "max_length": 48, "lora_r": 4,
                       "target_modules": "attention", "quantization": "none", "double_quant": False,
                       "init_lora_weights": "pissa", "pissa_niter": 2})
    script = tmp_path / "train.py"
    script.write_text(plain_trl_script(spec, str(demo_model_dir), str(data)))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    # Saved for the original base: a plain LoRA of twice the rank, loading onto the unmodified base.
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(demo_model_dir)), str(tmp_path / "adapter"))


def test_the_plain_script_of_a_grpo_job_rewards_as_the_studio_does(demo_model_dir, reward_adapter, tmp_path,
                                                                   monkeypatch, capsys):
    """Run in this process (runpy), as the KTO script is: the same file a person runs, the imports already paid. Its
    reward model (grpo_reward_adapter) loads from the reward adapter's folder, as the job's does."""
    import inspect
    import runpy

    from jobs import rewards
    from jobs.data.formats import REFERENCE
    from tests.jobs.training.test_grpo import GRPO, reference_rows

    rows, _ = store_parsed(ParsedDataset(REFERENCE, reference_rows()), tmp_path / "data")
    code = "def reward(completions, reference, **kwargs):\n    return [float(len(c) > 0) for c in completions]\n"
    spec = parse_spec({**CHOSEN, **GRPO, "eval_fraction": 0, "max_steps": 1, "packing": False,
                       "grpo_rewards": "json, regex:0.5, code:0.2, reward_model:0.3", "grpo_regex": r"\d",
                       "grpo_reward_code": code, "grpo_reward_adapter": "rm"})
    text = plain_trl_script(spec, str(demo_model_dir), str(rows), reward_adapter=str(reward_adapter))
    # The studio's reward functions, copied whole (the future import is the script's own first line).
    assert inspect.getsource(rewards).replace("from __future__ import annotations\n", "") in text
    script = tmp_path / "grpo.py"
    script.write_text(text)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert all(f"rewards/{name}/mean" in out for name in ("json", "regex", "code", "reward_model")), out[-2000:]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_the_plain_script_of_a_freeze_job_trains_the_last_block_and_saves_a_model(demo_model_dir, tmp_path,
                                                                                   monkeypatch):
    """In this process (runpy), as the PiSSA script's test: freeze fine-tuning in plain transformers + TRL moves only
    the last block of the demo base, and the saved folder is a model AutoModelForCausalLM loads (no adapter)."""
    import runpy

    import torch
    from safetensors.torch import load_file

    rows = parse_file(EXAMPLE_DATASET_FILE).rows
    data, _ = store_parsed(ParsedDataset("messages", rows[:8]), tmp_path / "data")
    spec = parse_spec({**CHOSEN, "eval_fraction": 0, "max_steps": 1, "batch_size": 2, "max_length": 48,
                       "learning_rate": 1e-2, "warmup_ratio": 0, "finetuning": "freeze", "freeze_trainable_layers": 1})
    script = tmp_path / "train.py"
    script.write_text(plain_trl_script(spec, str(demo_model_dir), str(data)))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    before = load_file(demo_model_dir / "model.safetensors")
    after = load_file(tmp_path / "adapter" / "model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {name for name in before if name.startswith("model.layers.1.")}
    assert not (tmp_path / "adapter" / "adapter_config.json").exists()
