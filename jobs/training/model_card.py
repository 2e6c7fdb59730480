"""The README model card that travels with every adapter."""

from __future__ import annotations

from pathlib import Path

from jobs.spec import TrainSpec


def render_model_card(adapter_name: str, spec: TrainSpec, final_metrics: dict[str, float]) -> str:
    metrics = "\n".join(f"| {name} | {value:.4g} |" for name, value in sorted(final_metrics.items()))
    quant = (f"{spec.quantization}, double quantization {'on' if spec.double_quant else 'off'}, "
             f"compute dtype {spec.compute_dtype}")
    targets = spec.target_modules if isinstance(spec.target_modules, str) else ", ".join(spec.target_modules)
    return f"""---
library_name: peft
base_model: {spec.base_model}
tags: [lora, qlora, peft]
---
# {adapter_name}

A LoRA adapter trained with QLoRA by the fine-tuning studio.

- Base model: `{spec.base_model}`
- Dataset: `{spec.dataset}`
- LoRA: rank {spec.lora_r}, alpha {spec.lora_alpha:g}, dropout {spec.lora_dropout:g}, targets {targets}
- Base quantization during training: {quant}
- Steps: {spec.max_steps}, learning rate {spec.learning_rate:g}, batch {spec.batch_size} x {spec.grad_accum},
  max length {spec.max_length}, seed {spec.seed}

## Final metrics

| metric | value |
|---|---|
{metrics}

## Load it

```python
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

base = AutoModelForCausalLM.from_pretrained(
    "{spec.base_model}",  # or the local path of the same base model
    quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                           bnb_4bit_use_double_quant=True,
                                           bnb_4bit_compute_dtype=torch.float32),
)
model = PeftModel.from_pretrained(base, "path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
messages = [{{"role": "user", "content": "Hello"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                       return_dict=True)
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0]))
```

`training_spec.json` holds the full training spec; `final_metrics.json` the final metrics.
"""


def write_model_card(adapter_dir: Path, spec: TrainSpec, final_metrics: dict[str, float]) -> None:
    name = spec.name or adapter_dir.parent.name
    (adapter_dir / "README.md").write_text(render_model_card(name, spec, final_metrics), encoding="utf-8")
