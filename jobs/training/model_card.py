"""The README model card that travels with every adapter: what trained it, its final metrics, where its base model
is, and a load snippet that runs as written on the machine that trained it."""

from __future__ import annotations

from pathlib import Path

from jobs.models.resolve import describe_base, is_hub_id, looks_local
from jobs.run_settings.settings import quantization_kwargs
from jobs.spec import DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL, TrainSpec


def _compute_dtype_code(spec: TrainSpec) -> str:
    if spec.compute_dtype != "auto":
        return f"torch.{spec.compute_dtype}"
    return "torch.bfloat16 if torch.cuda.is_available() else torch.float32  # as the studio's chat loads it"


def _quantization_code(spec: TrainSpec) -> str:
    """The BitsAndBytesConfig the run trained with (jobs.run_settings), computing in the card's DTYPE."""
    kwargs = quantization_kwargs(spec.quantization, spec.double_quant, "float32")
    if kwargs is None:
        return "None"
    args = [f"{name}={'DTYPE' if name == 'bnb_4bit_compute_dtype' else repr(value)}" for name, value in kwargs.items()]
    return f"BitsAndBytesConfig({', '.join(args)})"


def _length(spec: TrainSpec) -> str:
    return f"{spec.max_steps} steps" if spec.max_steps > 0 else f"{spec.num_epochs:g} epochs"


def _method(spec: TrainSpec) -> str:
    method = {"dpo": f"DPO (beta {spec.dpo_beta:g}) on preference pairs",
              "orpo": f"ORPO (lambda {spec.orpo_lambda:g}) on preference pairs",
              "simpo": f"SimPO (beta {spec.simpo_beta:g}, gamma/beta {spec.simpo_gamma_ratio:g}) on preference pairs",
              "kto": (f"KTO (beta {spec.kto_beta:g}, weights {spec.kto_desirable_weight:g} desirable / "
                      f"{spec.kto_undesirable_weight:g} undesirable) on labelled answers"),
              "grpo": (f"GRPO (rewards: {spec.grpo_rewards}"
                       + (f", the reward model `{spec.grpo_reward_adapter}`" if spec.grpo_reward_adapter else "")
                       + f"; {spec.num_generations} answers per prompt, beta {spec.grpo_beta:g}) on prompts with "
                       "references"),
              }.get(spec.method, "supervised fine-tuning (SFT)")
    return method + (f", continuing the adapter `{spec.init_adapter}`" if spec.init_adapter else "")


def _lora_line(spec: TrainSpec, adapter_dir: Path) -> str:
    """From the saved adapter_config.json (an adapter continued from another keeps that one's shape)."""
    import json

    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        rank, alpha, dropout, targets = (config["r"], config["lora_alpha"], config["lora_dropout"],
                                         config["target_modules"])
    except (OSError, ValueError, KeyError):
        rank, alpha, dropout, targets = spec.lora_r, spec.lora_alpha, spec.lora_dropout, spec.target_modules
    targets = targets if isinstance(targets, str) else ", ".join(sorted(targets))
    return f"rank {rank}, alpha {alpha:g}, dropout {dropout:g}, targets {targets}"


def _named_base(adapter_dir: Path) -> tuple[str | None, str | None]:
    """The base and revision the adapter's config names (jobs.training.registry.name_base)."""
    import json

    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None, None
    return config.get("base_model_name_or_path"), config.get("revision")


def _elsewhere(spec: TrainSpec, named: str | None, revision: str | None) -> str:
    """How the adapter loads away from the studio, from the base its config names."""
    auto = "`AutoPeftModelForCausalLM.from_pretrained(ADAPTER)` (from `peft`)"
    if spec.base_model == DEMO_BASE_MODEL:
        return (f"`adapter_config.json` names the base `{named}`: the demo model is on no hub, so {auto} finds it only "
                f"as a folder of that name in the directory you run it from (build it there as said above).")
    if looks_local(spec.base_model):
        return (f"`adapter_config.json` names the base by its folder's name, `{named}`: {auto} finds it as a folder "
                f"of that name in the directory you run it from, or pass your copy's path as `BASE` above.")
    at = f" at revision `{revision}`" if revision else ""
    return f"{auto} downloads the base `adapter_config.json` names, `{named}`{at}, and loads this adapter on it."


def render_model_card(adapter_name: str, spec: TrainSpec, final_metrics: dict[str, float], base_path: str,
                      adapter_dir: Path) -> str:
    """`base_path`: the base as `from_pretrained` found it when training (a local folder or a hub id)."""
    named, revision = _named_base(adapter_dir)
    on_a_hub = spec.base_model == SMOLLM2_BASE_MODEL or is_hub_id(spec.base_model)  # named by its hub id
    if revision:
        base_path = named  # a hub base: by its id, at the pinned commit (the cache serves it on this machine)
    revision_line = f'REVISION = "{revision}"\n' if revision else ""
    revision_arg = "revision=REVISION, " if revision else ""
    metrics = "\n".join(f"| {name} | {value:.4g} |" for name, value in sorted(final_metrics.items()))
    quant = (f"{spec.quantization}, double quantization {'on' if spec.double_quant else 'off'}, "
             f"compute dtype {spec.compute_dtype}")
    return f"""---
library_name: peft
base_model: {named if on_a_hub and named else spec.base_model}
tags: [lora, qlora, peft]
---
# {adapter_name}

A LoRA adapter trained with QLoRA by the fine-tuning studio.

- Base model: {describe_base(spec.base_model, base_path)}
- Method: {_method(spec)}
- Dataset: `{spec.dataset}`
- LoRA: {_lora_line(spec, adapter_dir)}
- Base quantization during training: {quant}
- Length: {_length(spec)}, learning rate {spec.learning_rate:g}, batch {spec.batch_size} x {spec.grad_accum},
  max length {spec.max_length}, seed {spec.seed}

## Final metrics

| metric | value |
|---|---|
{metrics}

## Load it

The paths below are where the studio kept the base model and this adapter on the machine that trained it; on
another machine, point `BASE` at your copy of the base (see above) and `ADAPTER` at this unzipped folder.

```python
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

BASE = "{base_path}"
{revision_line}ADAPTER = "{adapter_dir}"
DTYPE = {_compute_dtype_code(spec)}

base = AutoModelForCausalLM.from_pretrained(
    BASE, {revision_arg}dtype=DTYPE, use_safetensors=True,
    quantization_config={_quantization_code(spec)},
)
model = PeftModel.from_pretrained(base, ADAPTER)
tokenizer = AutoTokenizer.from_pretrained(ADAPTER)
messages = [{{"role": "user", "content": "Hello"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                       return_dict=True).to(base.device)
output = model.generate(**inputs, max_new_tokens=64)
print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

{_elsewhere(spec, named, revision)}

`training_spec.json` holds the full training spec; `final_metrics.json` the final metrics.
"""


def render_whole_model_card(name: str, spec: TrainSpec, final_metrics: dict[str, float], base_path: str,
                            folder: Path) -> str:
    """The card of a full or freeze run's model: a plain transformers model, loaded without peft or its base."""
    metrics = "\n".join(f"| {metric} | {value:.4g} |" for metric, value in sorted(final_metrics.items()))
    trained = ("every weight of the base" if spec.finetuning == "full" else
               f"the last {spec.freeze_trainable_layers} decoder block(s)"
               + (", the final norm and the output head" if spec.freeze_train_head else "") + ", the rest frozen")
    return f"""---
library_name: transformers
tags: [{spec.finetuning}-fine-tuning]
---
# {name}

A whole model ({spec.finetuning} fine-tuning: {trained}) trained by the fine-tuning studio. It is not an adapter:
there is nothing to merge, and it loads on its own.

- Started from: {describe_base(spec.base_model, base_path)}
- Method: {_method(spec)}
- Dataset: `{spec.dataset}`
- Length: {_length(spec)}, learning rate {spec.learning_rate:g}, batch {spec.batch_size} x {spec.grad_accum},
  max length {spec.max_length}, seed {spec.seed}

## Final metrics

| metric | value |
|---|---|
{metrics}

## Load it

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = "{folder}"  # this unzipped folder
model = AutoModelForCausalLM.from_pretrained(MODEL, use_safetensors=True)
tokenizer = AutoTokenizer.from_pretrained(MODEL)
messages = [{{"role": "user", "content": "Hello"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
output = model.generate(**inputs, max_new_tokens=64)
print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

`training_spec.json` holds the full training spec; `final_metrics.json` the final metrics.
"""


def write_model_card(adapter_dir: Path, adapter_name: str, spec: TrainSpec, final_metrics: dict[str, float],
                     base_path: str) -> None:
    render = render_whole_model_card if spec.finetuning != "lora" else render_model_card
    card = render(adapter_name, spec, final_metrics, base_path, adapter_dir)
    (adapter_dir / "README.md").write_text(card, encoding="utf-8")
