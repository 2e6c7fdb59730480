"""A job as code: the `python -m jobs submit` spec, and a plain TRL script that trains the same adapter without the
studio (transformers + peft + bitsandbytes + TRL only). Both are text built from the spec; a test runs the script."""

from __future__ import annotations

import json

from jobs.models.cpu_dtype import NATIVE_BF16_FLAGS, cpu_compute_dtype, hidden_size
from jobs.models.templates import training_template
from jobs.spec import TrainSpec
from jobs.step_plan import AUTO_FIELDS

UNPAGED_ON_CPU = {"paged_adamw_8bit": "adamw_bnb_8bit", "paged_adamw_32bit": "adamw_torch"}
TRAINER_OPTIMIZERS = {"adamw_torch": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit"}


def cli_text(spec: TrainSpec) -> str:
    """The spec file and the command that submits it."""
    body = json.dumps(spec.model_dump(mode="json"), indent=2)
    return f"cat > spec.json <<'EOF'\n{body}\nEOF\npython -m jobs submit spec.json --wait"


def _auto_cpu_dtype_code(base_path: str) -> tuple[str, str]:
    """What 'auto' picks on a CPU (jobs.models.cpu_dtype), evaluated where the script runs: (a line that finds out
    whether the CPU multiplies bf16 natively, or "" for a model too narrow to gain; the dtype expression)."""
    hidden = hidden_size(base_path)
    if cpu_compute_dtype("auto", hidden, native=True) == "float32":
        return "", "torch.float32"
    flags = "{" + ", ".join(map(repr, sorted(NATIVE_BF16_FLAGS))) + "}"
    native = (f"# bf16 compute pays on a CPU that multiplies it natively, for a model this wide (hidden {hidden})\n"
              f"NATIVE_BF16 = os.path.exists('/proc/cpuinfo') and any(\n"
              f"    line.startswith('flags') and {flags} & set(line.split()) for line in open('/proc/cpuinfo'))\n")
    return native, "(torch.bfloat16 if NATIVE_BF16 else torch.float32)"


def plain_trl_script(spec: TrainSpec, base_path: str, dataset_file: str, chat_template: str | None = None,
                     out_dir: str = "adapter", eval_file: str | None = None, start_adapter: str | None = None) -> str:
    """A standalone script training what `spec` trains. `chat_template`: the base's template, patched here with
    generation markers when assistant-only loss needs them (the studio does the same). `eval_file`: the
    validation dataset's file, when the spec names one; `start_adapter`: the folder of its init_adapter. The spec's
    defaults must be chosen already (jobs.step_plan): the script trains fixed values."""
    if unplanned := [name for name in AUTO_FIELDS if getattr(spec, name) is None]:
        raise ValueError(f"choose {', '.join(unplanned)} first (jobs.planning.job_plan)")
    template = training_template(chat_template) if spec.assistant_only_loss else None
    template_line = (f"tokenizer.chat_template = {template!r}  # the base's template, with generation markers"
                     if template and template != chat_template else "")
    quant = ("None" if spec.quantization == "none" else "BitsAndBytesConfig(load_in_8bit=True)"
             if spec.quantization == "int8" else
             f'BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="{spec.quantization}", '
             f"bnb_4bit_use_double_quant={spec.double_quant}, bnb_4bit_compute_dtype=DTYPE)")
    optimizer = TRAINER_OPTIMIZERS.get(spec.optimizer)
    optimizer_code = (repr(optimizer) if optimizer else
                      f'"{spec.optimizer}" if torch.cuda.is_available() else "{UNPAGED_ON_CPU[spec.optimizer]}"')
    native_line, cpu_dtype = _auto_cpu_dtype_code(base_path) if spec.compute_dtype == "auto" else ("", "")
    dtype_code = (f"torch.{spec.compute_dtype}" if spec.compute_dtype != "auto" else
                  f"(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if CUDA else {cpu_dtype}")
    checkpointing = {"on": "True", "off": "False", "auto": "CUDA"}[spec.gradient_checkpointing]
    targets = spec.target_module_names()
    eval_file = eval_file if spec.eval_dataset else None
    return f'''"""Train the adapter the studio's spec describes, with plain transformers + peft + bitsandbytes + TRL."""
import json
import os

import torch
from datasets import load_dataset
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, EarlyStoppingCallback, set_seed
from trl import {"DPOConfig, DPOTrainer" if spec.method == "dpo" else "SFTConfig, SFTTrainer"}

BASE = {base_path!r}
DATA = {dataset_file!r}  # JSONL rows of {{"messages": [{{"role", "content"}}, ...]}} or {{"text": ...}}
EVAL_DATA = {eval_file!r}  # a validation file; None: hold out a fraction of DATA
CUDA = torch.cuda.is_available()
{native_line}DTYPE = {dtype_code}
if not CUDA:
    torch.set_num_threads(os.cpu_count() or 1)

set_seed({spec.seed})
tokenizer = AutoTokenizer.from_pretrained(BASE)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
{template_line}
model = AutoModelForCausalLM.from_pretrained(BASE, dtype=DTYPE, use_safetensors=True,
                                             device_map={{"": "cuda" if CUDA else "cpu"}},
                                             quantization_config={quant})
# bitsandbytes 0.50 repacks 4-bit weights for CPU inference at the first eval on an AVX512-BF16 CPU and never packs
# them back, and later training steps lose the gradient through the frozen base: keep the trainable layout.
for module in model.modules():
    if hasattr(module, "support_avx512bf16_for_cpu"):
        module.support_avx512bf16_for_cpu = False
{"model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=" + checkpointing + ")"
 if spec.quantization != "none" else ""}
{_adapter_code(spec, targets, start_adapter)}

rows = load_dataset("json", data_files=DATA, split="train")
{_row_selection(spec)}if EVAL_DATA:
    train_rows, eval_rows = rows, load_dataset("json", data_files=EVAL_DATA, split="train")
elif {spec.eval_fraction} > 0:
    parts = rows.train_test_split(test_size=max(1, round(len(rows) * {spec.eval_fraction})), seed={spec.seed})
    train_rows, eval_rows = parts["train"], parts["test"]
else:
    train_rows, eval_rows = rows, None
print(f"{{len(train_rows)}} train rows, {{len(eval_rows) if eval_rows is not None else 0}} eval rows")

args = {"DPOConfig" if spec.method == "dpo" else "SFTConfig"}(
    output_dir="checkpoints", max_steps={spec.max_steps}, num_train_epochs={spec.num_epochs},
    per_device_train_batch_size={spec.batch_size}, per_device_eval_batch_size={spec.batch_size},
    gradient_accumulation_steps={spec.grad_accum}, learning_rate={spec.learning_rate},
    lr_scheduler_type={spec.lr_scheduler!r}, warmup_steps={spec.warmup_ratio}, weight_decay={spec.weight_decay},
    max_grad_norm={spec.max_grad_norm}, optim={optimizer_code},
    logging_steps={spec.logging_steps}, eval_strategy="steps" if eval_rows is not None else "no",
    eval_steps={spec.eval_steps}, save_steps={_save_steps(spec)}, save_total_limit=2, seed={spec.seed},
    data_seed={spec.seed}, bf16=CUDA and DTYPE == torch.bfloat16, fp16=CUDA and DTYPE == torch.float16,
    gradient_checkpointing={checkpointing}, max_length={spec.max_length}, {_method_args(spec)}
    use_cpu=not CUDA, report_to="none", dataloader_num_workers=0,
    # Early stopping and the best adapter, the library's way (the studio keeps its own copy, so its save and eval
    # steps need not line up; here save_steps follows eval_steps when there is an eval split).
    load_best_model_at_end={spec.keep_best} and eval_rows is not None, metric_for_best_model="eval_loss",
    greater_is_better=False)
callbacks = ([EarlyStoppingCallback({spec.early_stopping_patience})]
             if {spec.early_stopping_patience} and eval_rows is not None else [])
trainer = {"DPOTrainer" if spec.method == "dpo" else "SFTTrainer"}(
    model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows, processing_class=tokenizer,
    callbacks=callbacks)
if DTYPE == torch.float32:  # TRL casts LoRA weights of quantized models to bf16; keep them in fp32
    for param in trainer.model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
trainer.train()
trainer.model.save_pretrained({out_dir!r}, selected_adapters=["default"])  # not DPO's frozen "ref" copy
tokenizer.save_pretrained({out_dir!r})
print("adapter saved to", {out_dir!r})
'''


DEDUP_CODE = """# Exact duplicates out, the first of each kept.
first_seen = {}
for index, row in enumerate(rows):
    first_seen.setdefault(json.dumps(row, sort_keys=True), index)
rows = rows.select(sorted(first_seen.values()))
"""
DROP_CODE = """# Rows longer than max_length dropped rather than cut.
def token_count(row):
    if row.get("text"):
        return len(tokenizer(row["text"])["input_ids"])
    return len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
rows = rows.filter(lambda row: token_count(row) <= MAX_LENGTH)
"""


def _row_selection(spec: TrainSpec) -> str:
    """The dedup and drop steps the studio applies before splitting, when the spec asks for them."""
    code = DEDUP_CODE if spec.dedup else ""
    if spec.overlong == "drop":
        code += f"MAX_LENGTH = {spec.max_length}\n" + DROP_CODE
    return code


def _adapter_code(spec: TrainSpec, targets, start_adapter: str | None) -> str:
    if spec.init_adapter:
        return (f"START = {start_adapter or spec.init_adapter!r}  # the adapter '{spec.init_adapter}' continues\n"
                "model = PeftModel.from_pretrained(model, START, is_trainable=True)")
    return f"""set_seed({spec.seed})  # LoRA init is random
model = get_peft_model(model, LoraConfig(
    r={spec.lora_r}, lora_alpha={spec.lora_alpha}, lora_dropout={spec.lora_dropout}, target_modules={targets!r},
    bias={spec.lora_bias!r}, use_rslora={spec.use_rslora}, use_dora={spec.use_dora},
    modules_to_save={spec.modules_to_save or None!r}, task_type="CAUSAL_LM"))"""


def _method_args(spec: TrainSpec) -> str:
    if spec.method == "dpo":
        return f"beta={spec.dpo_beta},"
    return (f"packing={spec.packing},\n    padding_free={spec.packing}, "
            f"assistant_only_loss={spec.assistant_only_loss},")


def _save_steps(spec: TrainSpec) -> str:
    """load_best_model_at_end needs checkpoints on eval steps."""
    if spec.keep_best:
        return f"{spec.eval_steps} if eval_rows is not None else {spec.save_steps}"
    return str(spec.save_steps)
