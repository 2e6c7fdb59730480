"""One spec, one set of run settings: what training builds its Trainer, LoRA and quantization from, what the plain TRL
script states, and what the memory estimate sizes are the same, for every machine kind and a table of options
(quantization x compute dtype x checkpointing x optimizer x LoRA variant x method). The script is read without
running it: its COMMON and BY_MACHINE tables are Python literals."""

from __future__ import annotations

import ast
import itertools
import json
from dataclasses import asdict

import pytest
from peft import LoraConfig
from transformers import BitsAndBytesConfig

from jobs.models.fits import job_estimate_inputs
from jobs.models.memory_inputs import ModelShape
from jobs.run_settings.settings import MACHINES_BY_KIND, Machine
from jobs.spec import parse_spec
from jobs.training import prepare
from jobs.training.script import plain_trl_script

CHOSEN = {"packing": True, "num_epochs": 1, "learning_rate": 5e-3, "eval_fraction": 0.1, "batch_size": 2}
VARIANTS = {"lora": {}, "dora": {"use_dora": True},
            "rslora": {"use_rslora": True, "lora_r": 16, "loraplus_lr_ratio": 16, "neftune_noise_alpha": 5}}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def stated_settings(script: str) -> dict[tuple[str, bool], dict]:
    """The settings a generated script states for each kind of machine, read from its text."""
    tables = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(script).body
              if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("COMMON", "BY_MACHINE")}
    by_machine = tables["BY_MACHINE"]
    return {(m.device, m.bf16): {**tables["COMMON"], **by_machine.get((m.device, m.bf16), by_machine.get(m.device, {}))}
            for m in MACHINES_BY_KIND}


def _part(values: dict, prefix: str) -> dict:
    return {key.split(".", 1)[1]: value for key, value in values.items() if key.startswith(prefix + ".")}


@pytest.fixture(scope="module")
def wide_base(tmp_path_factory):
    """A base wide enough that 'auto' differs between CPUs with and without native bf16."""
    folder = tmp_path_factory.mktemp("wide-base")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 2,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 1024, "tie_word_embeddings": True}))
    return folder


REWARD_MODEL = {"grpo_rewards": "reference, reward_model:0.5", "grpo_reward_adapter": "rm"}
"""GRPO scores with a reward model too: its second copy of the base is in the estimate."""


def _specs(quantization: str, method: str):
    # GRPO adds its own arguments on top of the shared ones the other methods vary: one optimizer and variant will do.
    optimizers = ("adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
    for dtype, checkpointing, optimizer, variant in itertools.product(
            ("auto", "float32", "bfloat16", "float16"), ("auto", "on", "off"),
            optimizers[:1] if method == "grpo" else optimizers, ["lora"] if method == "grpo" else VARIANTS):
        yield parse_spec({**CHOSEN, "quantization": quantization, "double_quant": quantization in ("nf4", "fp4"),
                          "compute_dtype": dtype, "gradient_checkpointing": checkpointing, "optimizer": optimizer,
                          "method": method, **VARIANTS[variant], **(REWARD_MODEL if method == "grpo" else {})})


@pytest.mark.parametrize(("quantization", "method"), [
    *itertools.product(["nf4", "fp4", "int8", "none"], ["sft", "dpo"]),
    ("nf4", "orpo"), ("nf4", "simpo"), ("nf4", "kto"), ("nf4", "reward"),  # these differ only in their own arguments
    ("nf4", "grpo")])
def test_training_the_script_and_the_estimate_agree(quantization, method, wide_base, tmp_path, monkeypatch):
    shape = ModelShape.from_dir(wide_base)
    for spec in _specs(quantization, method):
        stated = stated_settings(plain_trl_script(spec, str(wide_base), "data.jsonl"))
        for machine in MACHINES_BY_KIND:
            monkeypatch.setattr(prepare, "machine", lambda m=machine: Machine(m.device, m.bf16))
            used = prepare.settings_here(spec, tmp_path / "run", str(wide_base))
            script = stated[machine.device, machine.bf16]
            where = f"{spec.model_dump(include={'compute_dtype', 'gradient_checkpointing', 'optimizer'})} on {machine}"
            # Training's Trainer arguments, LoRA and quantization are the script's.
            args = prepare.trainer_args(used, spec, tmp_path, has_eval=True)
            assert {k: args[k] for k in _part(script, "trainer")} == _part(script, "trainer"), where
            assert LoraConfig(**_part(script, "lora")) == prepare.lora_config(used), where
            quantization_args = used.quantization_kwargs()
            assert (BitsAndBytesConfig(**_part(script, "quantization")).to_dict() if quantization_args else None) == (
                BitsAndBytesConfig(**quantization_args).to_dict() if quantization_args else None), where
            assert script["compute_dtype"] == used.compute_dtype and script["keep_lora_fp32"] == used.keep_lora_fp32
            assert script["release_checkpoint"] == used.releases_checkpoint, where
            assert script["upcast_unquantized"] == used.upcasts_unquantized, where
            assert (script["loraplus_lr_ratio"], script["lora_start"]) == (used.loraplus_lr_ratio, used.lora.init)
            if method == "grpo":  # the script rewards as training does
                assert _part(script, "rewards") == asdict(used.rewards), where
            # The estimate sizes the same run: its training shape and profile follow the same settings.
            train_shape, profile = job_estimate_inputs(spec, shape, machine)
            assert (train_shape.optimizer, train_shape.gradient_checkpointing) == (
                used.optimizer, used.gradient_checkpointing), where
            assert (train_shape.quantization, train_shape.double_quant) == (used.quantization, used.double_quant)
            assert (train_shape.lora_r, train_shape.use_dora, train_shape.packing) == (
                used.lora.r, used.lora.use_dora, bool(used.packing)), where
            assert train_shape.preference == (method in ("dpo", "kto"))  # a reference pass; ORPO, SimPO have none
            if method == "grpo":  # each prompt is num_generations answers
                assert train_shape.batch_size == used.batch_size * used.num_generations, where
                assert train_shape.reward_model and used.rewards.uses_reward_model, where
            else:
                paired = method in ("dpo", "orpo", "simpo", "reward")
                assert train_shape.batch_size == spec.batch_size * (2 if paired else 1)
            assert train_shape.releases_checkpoint == used.releases_checkpoint, where
            assert train_shape.upcast_unquantized == used.upcasts_unquantized, where
            assert train_shape.pad_multiple == (args.get("pad_to_multiple_of") or 0), where
            assert train_shape.lora_init == used.lora.init, where
            assert train_shape.lm_head == (method != "reward"), where  # a reward model's head is one score
            assert profile.compute_bytes == DTYPE_BYTES[used.compute_dtype], where


@pytest.mark.parametrize("finetuning", ["freeze", "full"])
def test_a_whole_model_run_the_script_and_the_estimate_agree(finetuning, wide_base, tmp_path, monkeypatch):
    """Full and freeze: no quantization and fp32 weights wherever the run goes, no LoRA in the script, and the estimate
    sizes the same whole-model run."""
    shape = ModelShape.from_dir(wide_base)
    spec = parse_spec({**CHOSEN, "finetuning": finetuning, "compute_dtype": "auto"})
    stated = stated_settings(plain_trl_script(spec, str(wide_base), "data.jsonl"))
    for machine in MACHINES_BY_KIND:
        monkeypatch.setattr(prepare, "machine", lambda m=machine: Machine(m.device, m.bf16))
        used = prepare.settings_here(spec, tmp_path / "run", str(wide_base))
        script = stated[machine.device, machine.bf16]
        args = prepare.trainer_args(used, spec, tmp_path, has_eval=True)
        assert {k: args[k] for k in _part(script, "trainer")} == _part(script, "trainer"), machine
        assert not _part(script, "lora") and not _part(script, "quantization") and not used.quantized
        assert (script["weights_dtype"], script["finetuning"], script["trainable_layers"]) == (
            "float32", finetuning, used.trainable_layers)
        train_shape, _ = job_estimate_inputs(spec, shape, machine)
        assert (train_shape.finetuning, train_shape.quantization) == (finetuning, "none")
