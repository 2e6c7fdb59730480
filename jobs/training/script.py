"""A job as code: the `python -m jobs submit` spec, and a plain TRL script that trains the same adapter without the
studio (transformers + peft + bitsandbytes + TRL only). The script states the run settings the studio resolves
(jobs.run_settings) for each kind of machine it may run on, and picks the row of the machine it runs on: its values
are the ones training uses, never a second copy of the rules. A test runs the script."""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict
from pathlib import Path

from jobs import rewards as rewards_module
from jobs.data import mixing
from jobs.models.templates import template_text, training_template
from jobs.run_settings.cpu_dtype import NATIVE_BF16_FLAGS
from jobs.run_settings.data import DataSettings
from jobs.run_settings.lora import read_adapter_lora
from jobs.run_settings.settings import MACHINES_BY_KIND, Base, Machine, RunSettings, resolve
from jobs.run_settings.tracking import tracking_environment_values
from jobs.spec import PLAIN_INITS, TrainSpec
from jobs.step_plan import AUTO_FIELDS

TRAINERS = {"sft": ("SFTConfig", "SFTTrainer"), "dpo": ("DPOConfig", "DPOTrainer"), "kto": ("KTOConfig", "KTOTrainer"),
            "orpo": ("ORPOConfig", "ORPOTrainer"), "simpo": ("CPOConfig", "CPOTrainer"),
            "grpo": ("GRPOConfig", "GRPOTrainer"), "reward": ("RewardConfig", "RewardTrainer")}
"""Each method's TRL config and trainer (SimPO is TRL's CPO with the SimPO loss: the settings say so)."""
TRAINER_MODULES = {"orpo": "trl.experimental.orpo", "simpo": "trl.experimental.cpo"}
"""Where TRL 1.16 keeps the trainers outside its stable API."""
ROW_SHAPES = {"sft": '{"messages": [{"role", "content"}, ...]} or {"text": ...}',
              "kto": '{"prompt": [messages], "completion": [messages], "label": true or false}'}
ROW_SHAPES.update(dict.fromkeys(("dpo", "orpo", "simpo", "reward"), '{"prompt", "chosen", "rejected"} (message lists)'))
ROW_SHAPES["grpo"] = '{"prompt": [messages], "reference": "..."}'



def cli_text(spec: TrainSpec) -> str:
    """The spec file and the command that submits it."""
    body = json.dumps(spec.model_dump(mode="json"), indent=2)
    return f"cat > spec.json <<'EOF'\n{body}\nEOF\npython -m jobs submit spec.json --wait"


def script_values(settings: RunSettings) -> dict:
    """The settings as the script states them: one flat dict of plain values, each library's arguments under its
    prefix ('quantization.', 'lora.', 'trainer.'). A continued adapter brings its own LoRA config."""
    values: dict = {"compute_dtype": settings.compute_dtype, "keep_lora_fp32": settings.keep_lora_fp32,
                    "release_checkpoint": settings.releases_checkpoint, "weights_dtype": settings.weights_dtype,
                    "upcast_unquantized": settings.upcasts_unquantized}
    if settings.whole_model:  # full or freeze: the base's own weights train, no LoRA to configure
        values.update(finetuning=settings.finetuning, trainable_layers=settings.trainable_layers,
                      train_head=settings.train_head)
    values.update({f"quantization.{k}": v for k, v in (settings.quantization_kwargs() or {}).items()})
    values.update({f"model.{k}": v for k, v in settings.model_kwargs().items()})
    if not settings.continues_adapter and not settings.whole_model:
        values.update({f"lora.{k}": v for k, v in settings.lora.peft_kwargs().items()})
    values.update({f"trainer.{k}": v for k, v in settings.trainer_kwargs().items()})
    values["loraplus_lr_ratio"] = settings.loraplus_lr_ratio
    values["lora_start"] = "continued" if settings.continues_adapter else settings.lora.init
    if settings.whole_model:
        values.pop("loraplus_lr_ratio")
        values.pop("lora_start")
    if settings.rewards is not None:
        values.update({f"rewards.{k}": v for k, v in asdict(settings.rewards).items()})
    return values


def machine_settings(spec: TrainSpec, base_path: str, start_adapter: str | None = None) -> dict[Machine, RunSettings]:
    """The settings the studio resolves for `spec` on this base, for each kind of machine."""
    adapter = _start_lora(start_adapter) if spec.init_adapter else None
    base = Base.from_dir(base_path)
    return {machine: resolve(spec, base, machine, adapter) for machine in MACHINES_BY_KIND}


def _start_lora(start_adapter: str | None):
    try:
        return read_adapter_lora(start_adapter) if start_adapter else None
    except (OSError, ValueError):
        return None  # the script loads it anyway; the settings then state the spec's (unused) LoRA fields


def _settings_code(by_machine: dict[Machine, dict]) -> str:
    """COMMON (what every machine runs with) and BY_MACHINE (what differs), keyed as finely as the values differ:
    not at all, by device, or by device and bf16 support."""
    rows = list(by_machine.values())
    common = {key: value for key, value in rows[0].items() if all(row.get(key) == value for row in rows)}
    differing = {machine: {k: v for k, v in row.items() if k not in common} for machine, row in by_machine.items()}
    by_device = {machine.device: row for machine, row in differing.items()}
    if not any(differing.values()):
        table, key = {}, "None"
    elif all(differing[m] == by_device[m.device] for m in differing):
        table, key = by_device, "DEVICE"
    else:
        table, key = {(m.device, m.bf16): row for m, row in differing.items()}, "(DEVICE, BF16)"
    lines = ["COMMON = {", *(f"    {k!r}: {v!r}," for k, v in common.items()), "}", "BY_MACHINE = {"]
    for machine, row in table.items():
        lines += [f"    {machine!r}: {{", *(f"        {k!r}: {v!r}," for k, v in row.items()), "    },"]
    lines += ["}", f"RUN = {{**COMMON, **BY_MACHINE.get({key}, {{}})}}"]
    return "\n".join(lines)


def _pack_comment(spec: TrainSpec) -> str:
    """What a pack_length below max_length does to the settings above, in words (empty without one)."""
    passes = spec.forward_passes()
    if passes == 1:
        return ""
    return (f"# pack_length {spec.pack_length}: TRL packs to and cuts at trainer max_length, so each packed sequence "
            f"of {spec.max_length}\n# tokens trains in {passes} forward passes of {spec.pack_length}, gradient "
            f"accumulation multiplied by {passes}\n# (the same tokens a step, less memory); the studio checked that no "
            f"row is longer, so none is cut.\n")


BF16_PROBE = """# bf16 support: the GPU says; a CPU computes it natively with these flags (else it is emulated and slow)
BF16 = torch.cuda.is_bf16_supported() if CUDA else os.path.exists("/proc/cpuinfo") and any(
    line.startswith("flags") and {flags} & set(line.split()) for line in open("/proc/cpuinfo"))
"""


def plain_trl_script(spec: TrainSpec, base_path: str, dataset_file: str | dict[str, str],
                     chat_template: str | None = None, out_dir: str = "adapter", eval_file: str | None = None,
                     start_adapter: str | None = None, reward_adapter: str | None = None) -> str:
    """A standalone script training what `spec` trains. `dataset_file`: the dataset's file, or for a mix each
    dataset's by name. `chat_template`: the base's template; the spec's chat_template replaces it, and either is
    patched here with generation markers when assistant-only loss needs them (the studio does the same). `eval_file`:
    the validation dataset's file, when the spec names one; `start_adapter`: the folder of its init_adapter. The
    spec's defaults must be chosen already (jobs.step_plan): the script trains fixed values. `reward_adapter`: the
    folder of its grpo_reward_adapter."""
    if unplanned := [name for name in AUTO_FIELDS if getattr(spec, name) is None]:
        raise ValueError(f"choose {', '.join(unplanned)} first (jobs.planning.job_plan)")
    data = DataSettings.from_spec(spec)
    chosen = template_text(spec.chat_template) or chat_template
    template = training_template(chosen) if spec.assistant_only_loss else chosen
    what = "the chosen template" if data.chat_template else "the base's template"
    template_line = (f"tokenizer.chat_template = {template!r}  # {what}"
                     + (", with generation markers" if spec.assistant_only_loss else "")
                     if template and template != chat_template else "")
    settings = {m: script_values(s) for m, s in machine_settings(spec, base_path, start_adapter).items()}
    settings_code = _settings_code(settings)
    flags = "{" + ", ".join(map(repr, sorted(NATIVE_BF16_FLAGS))) + "}"
    probe = BF16_PROBE.replace("{flags}", flags) if "BF16" in settings_code.rsplit("\n", 1)[-1] else ""
    eval_file = eval_file if spec.eval_dataset else None
    config, trainer = TRAINERS[spec.method]
    grpo = spec.method == "grpo"
    # A reward model: the base as a sequence classifier with one output (its LoRA's task_type is SEQ_CLS in RUN).
    auto, head = (("AutoModelForSequenceClassification", ", num_labels=1") if spec.method == "reward"
                  else ("AutoModelForCausalLM", ""))
    # GRPO's reward model is a sequence classifier beside the trained LM.
    imports = auto + (", AutoModelForSequenceClassification" if grpo and spec.grpo_reward_adapter else "")
    mix_constants = _mix_constants(data)
    eval_system_prompt = ("\n    eval_rows = eval_rows.map(lambda row: with_system_prompt(row, SYSTEM_PROMPT))"
                          if data.system_prompt else "")
    launch = (f"\n\nRun it as {spec.devices} data-parallel ranks on one host (DDP; gloo on a CPU, nccl on CUDA):\n"
              f"    torchrun --nproc-per-node={spec.devices} train.py" if spec.devices > 1 else "")
    title = "Train the adapter the studio's spec describes, with plain transformers + peft + bitsandbytes + TRL."
    whole = spec.finetuning != "lora"
    if whole:
        title = (f"Train the whole model ({spec.finetuning} fine-tuning) the studio's spec describes, with "
                 "transformers + TRL.")
    return f'''"""{title}{launch}"""
from __future__ import annotations

import json
import os

import torch
from datasets import Dataset, load_dataset
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import {imports}, AutoTokenizer, BitsAndBytesConfig, EarlyStoppingCallback, set_seed
from {TRAINER_MODULES.get(spec.method, "trl")} import {config}, {trainer}

BASE = {base_path!r}
DATA = {dataset_file!r}  # JSONL rows: {ROW_SHAPES.get(spec.method, ROW_SHAPES["sft"])}{mix_constants}
EVAL_DATA = {eval_file!r}  # a validation file; None: hold out a fraction of DATA
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
LOCAL_DEVICE = f"cuda:{{os.environ.get('LOCAL_RANK', '0')}}" if CUDA else "cpu"  # torchrun: one GPU per rank
{probe}
# The run settings the studio resolves for this spec and base (jobs.run_settings), for each kind of machine.
{settings_code}
{_pack_comment(spec)}

def part(prefix):
    """One library's arguments out of RUN."""
    return {{key.split(".", 1)[1]: value for key, value in RUN.items() if key.startswith(prefix + ".")}}


def trainer_args():
    """The Trainer's arguments; started without torchrun, one process trains alone (no DDP backend to set up)."""
    args = part("trainer")
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        args.pop("ddp_backend", None)
    return args


{_tracking_code(spec)}DTYPE = getattr(torch, RUN["compute_dtype"])
if not CUDA:  # ranks on one CPU (torchrun) share the cores this process may use (taskset, a cpuset)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("WORLD_SIZE", "1"))))

set_seed({spec.seed})
tokenizer = AutoTokenizer.from_pretrained(BASE)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
{template_line}
model = {auto}.from_pretrained(BASE, dtype=getattr(torch, RUN["weights_dtype"]), use_safetensors=True,
    device_map={{"": LOCAL_DEVICE}},
    quantization_config=BitsAndBytesConfig(**part("quantization")) if part("quantization") else None,
    **part("model"){head})
model.config.pad_token_id = tokenizer.pad_token_id  # a sequence classifier reads each row's last non-pad token
# bitsandbytes 0.50 repacks 4-bit weights for CPU inference at the first eval on an AVX512-BF16 CPU and never packs
# them back, and later training steps lose the gradient through the frozen base: keep the trainable layout.
for module in model.modules():
    if hasattr(module, "support_avx512bf16_for_cpu"):
        module.support_avx512bf16_for_cpu = False
if RUN["release_checkpoint"]:
    # On a CPU the unquantized weights (embeddings, norms) stay views into the mmapped checkpoint, which keeps the
    # whole file resident: copy them out so it is unmapped, and give glibc's freed quantization temporaries back.
    import ctypes
    import gc

    mapped = [tuple(int(a, 16) for a in line.split()[0].split("-")) for line in open("/proc/self/maps")
              if line.rstrip().endswith(".safetensors")]
    for module in model.modules():
        for tensor in [*module._parameters.values(), *module._buffers.values()]:
            if tensor is not None and any(lo <= tensor.untyped_storage().data_ptr() < hi for lo, hi in mapped):
                tensor.data = tensor.data.clone()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
if part("quantization"):
    loaded = {{name: param.dtype for name, param in model.named_parameters()}}
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=RUN["trainer.gradient_checkpointing"])
    if not RUN["upcast_unquantized"]:  # in bf16 the embeddings and norms stay bf16: activations half the size
        for name, param in model.named_parameters():
            if param.dtype != loaded[name]:
                param.data = param.data.to(loaded[name])
{_adapter_code(spec, start_adapter)}

{_rows_code(data)}
{_row_selection(spec)}{_grpo_code(spec, reward_adapter) if grpo else ""}if EVAL_DATA:
    train_rows, eval_rows = rows, load_dataset("json", data_files=EVAL_DATA, split="train"){eval_system_prompt}
elif {spec.eval_fraction} > 0:
    parts = rows.train_test_split(test_size=max(1, round(len(rows) * {spec.eval_fraction})), seed={spec.seed})
    train_rows, eval_rows = parts["train"], parts["test"]
else:
    train_rows, eval_rows = rows, None
print(f"{{len(train_rows)}} train rows, {{len(eval_rows) if eval_rows is not None else 0}} eval rows")
{_last_turn_code(data)}
args = {config}(
    **trainer_args(), output_dir="checkpoints", eval_strategy="steps" if eval_rows is not None else "no",
    save_steps={_save_steps(spec)},
    # Early stopping and the best adapter, the library's way (the studio keeps its own copy, so its save and eval
    # steps need not line up; here save_steps follows eval_steps when there is an eval split).
    load_best_model_at_end={spec.keep_best} and eval_rows is not None, metric_for_best_model="eval_loss",
    greater_is_better=False)
callbacks = ([EarlyStoppingCallback({spec.early_stopping_patience})]
             if {spec.early_stopping_patience} and eval_rows is not None else [])
trainer = {trainer}(
    model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows, processing_class=tokenizer,
    callbacks=callbacks{GRPO_TRAINER_ARGS if grpo else ""}){LORAPLUS_CODE if spec.loraplus_lr_ratio else ""}
if RUN["keep_lora_fp32"]:  # TRL casts LoRA weights of quantized models to bf16; keep them in fp32
    for param in trainer.model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
trainer.train()
{WHOLE_SAVE_CODE.format(out_dir=repr(out_dir)) if whole else ADAPTER_SAVE_CODE.format(out_dir=repr(out_dir))}'''


ADAPTER_SAVE_CODE = """converted = ({{"path_initial_model_for_weight_conversion": os.path.abspath("lora_start")}}
             if RUN["lora_start"].startswith(("pissa", "olora")) else {{}})
if trainer.is_world_process_zero():  # under torchrun, rank 0 saves
    trainer.model.save_pretrained({out_dir}, selected_adapters=["default"], **converted)  # no "ref" copy
    tokenizer.save_pretrained({out_dir})
    print("adapter saved to", {out_dir})
"""
WHOLE_SAVE_CODE = """if trainer.is_world_process_zero():  # under torchrun, rank 0 saves
    trainer.model.save_pretrained({out_dir})  # a whole model: AutoModelForCausalLM loads it, no peft
    tokenizer.save_pretrained({out_dir})
    print("model saved to", {out_dir})
"""
WHOLE_MODEL_CODE = """# Full or freeze fine-tuning: the base's own weights train (fp32 master weights), no LoRA.
if RUN["finetuning"] == "freeze":
    for param in model.parameters():
        param.requires_grad_(False)
    trained = list(model.get_decoder().layers)[-RUN["trainable_layers"]:]  # the last N decoder blocks
    if RUN["train_head"]:
        trained += [model.get_output_embeddings(), model.get_decoder().norm]
    for module in trained:
        for param in module.parameters():
            param.requires_grad_(True)
    if RUN["trainer.gradient_checkpointing"]:  # frozen embeddings: the checkpointed blocks need a grad input
        model.enable_input_require_grads()"""


START_CODE = """if RUN["lora_start"].startswith(("pissa", "olora")):
    # PiSSA/OLoRA took their start out of the base: keep it, to save the adapter converted for the original base.
    model.save_pretrained("lora_start")
elif RUN["lora_start"] == "loftq":
    # LoftQ on the 4-bit base (PEFT computes it on CUDA), B rescaled since PEFT leaves out LoRA's scaling.
    from peft import replace_lora_weights_loftq
    from peft.tuners.lora import Linear4bit

    replace_lora_weights_loftq(model, model_path=BASE)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Linear4bit):
                module.lora_B["default"].weight.div_(module.scaling["default"])"""
LORAPLUS_CODE = """


class LoraPlus:
    \"\"\"LoRA+: PEFT's optimizer with B at loraplus_lr_ratio times the learning rate, around the Trainer's own.\"\"\"

    def __call__(self, model, *, optimizer_cls, lr, loraplus_lr_ratio, **kwargs):
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(model, optimizer_cls, lr=lr, loraplus_lr_ratio=loraplus_lr_ratio, **kwargs)


if RUN["loraplus_lr_ratio"]:
    from transformers import Trainer

    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    trainer.optimizer_cls_and_kwargs = (LoraPlus, {
        **optimizer_kwargs, "optimizer_cls": optimizer_cls, "loraplus_lr_ratio": RUN["loraplus_lr_ratio"],
        "loraplus_weight_decay": args.weight_decay, "loraplus_lr_embedding": optimizer_kwargs["lr"]})"""


def _mix_constants(data: DataSettings) -> str:
    if not data.mixes and not data.system_prompt:
        return ""
    return f"\nMIX = {list(data.mix)!r}  # (dataset, ratio)\nMAX_ROWS = {data.max_rows!r}\nSYSTEM_PROMPT = " \
           f"{data.system_prompt!r}"


def _rows_code(data: DataSettings) -> str:
    """Loading the rows: the dataset's file, or the mix sampled by the studio's own functions (their source, so the
    script takes the same rows as the run), then the default system prompt added."""
    if not data.mixes:
        code = 'rows = load_dataset("json", data_files=DATA, split="train")\n'
    else:
        functions = "\n\n".join(inspect.getsource(f) for f in (mixing.mix_counts, mixing.mix_indices))
        code = f"""# The mix, sampled with the seed as the studio samples it (jobs.data.mixing).
{functions}

files = DATA if isinstance(DATA, dict) else {{MIX[0][0]: DATA}}
loaded = {{name: [json.loads(line) for line in open(files[name], encoding="utf-8") if line.strip()] for name, _ in MIX}}
picked = mix_indices([len(loaded[name]) for name, _ in MIX], [ratio for _, ratio in MIX], MAX_ROWS, {data.seed})
rows = Dataset.from_list([loaded[MIX[position][0]][index] for position, index in picked])
print("mixed", len(rows), "rows:", {{name: sum(MIX[p][0] == name for p, _ in picked) for name, _ in MIX}})
"""
    if data.system_prompt:
        code += f"""
# A system message first where a row has none (jobs.data.mixing).
{inspect.getsource(mixing.with_system_prompt)}

rows = rows.map(lambda row: with_system_prompt(row, SYSTEM_PROMPT))
"""
    return code


def _last_turn_code(data: DataSettings) -> str:
    if not data.last_turn_only:
        return ""
    return f"""# Loss on the last assistant turn only: each chat becomes a prompt/completion pair; TRL masks the prompt.
{inspect.getsource(mixing.last_turn_only)}

train_rows = train_rows.map(last_turn_only, remove_columns=["messages"])
if eval_rows is not None:
    eval_rows = eval_rows.map(last_turn_only, remove_columns=["messages"])
"""


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
    messages = row.get("messages") or row["prompt"] + (
        row.get("chosen") or row.get("completion") or [{"role": "assistant", "content": row["reference"]}])
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
rows = rows.filter(lambda row: token_count(row) <= MAX_LENGTH)
"""


def _tracking_code(spec: TrainSpec) -> str:
    """The tracker's output in a folder beside the script, local and offline, as the studio keeps it in the run's."""
    environment = tracking_environment_values(spec.report_to, Path("."))
    if not environment:
        return ""
    lines = [f"os.environ[{key!r}] = {value!r}" for key, value in environment.items()]
    if spec.report_to == "wandb":  # the key is never written here: W&B reads it from the environment
        lines.append("# W&B reads your API key from WANDB_API_KEY: set it before running (or WANDB_MODE=offline)")
    return f"# {spec.report_to}: local output under ./tracking\n" + "\n".join(lines) + "\n"


GRPO_TRAINER_ARGS = (",\n    reward_funcs=reward_funcs, reward_processing_classes=reward_processing_classes")
GRPO_CODE = """# GRPO's rewards: the studio's own reward functions (jobs/rewards.py), copied whole.
{rewards_source}
# Prompts too long to leave room for a whole answer within max_length are dropped (GRPO cuts no prompt itself).
ROOM = {room}
rows = rows.filter(lambda row: len(tokenizer.apply_chat_template(
    row["prompt"], tokenize=True, return_dict=True)["input_ids"]) <= ROOM)
REWARD_CODE = {code!r}  # the person's reward function file, when the rewards name 'code'
code_reward = None
if REWARD_CODE:
    namespace = {{}}
    exec(compile(REWARD_CODE, "reward_code.py", "exec"), namespace)
    code_reward = namespace["reward"]
{reward_model}reward_funcs = reward_functions(RewardSettings(**part("rewards")), code_reward, reward_model)
reward_processing_classes = processing_classes(RewardSettings(**part("rewards")), reward_tokenizer)
"""
REWARD_MODEL_CODE = """REWARD_ADAPTER = {adapter!r}  # the reward adapter '{name}' (grpo_reward_adapter)
# The reward_model reward: a second copy of the base, loaded as the one that trains but as a sequence classifier
# with one output, with the reward adapter (its score head) on it; frozen, in eval mode. TRL scores each prompt and
# answer with it, formatted by the reward adapter's own tokenizer.
reward_tokenizer = AutoTokenizer.from_pretrained(REWARD_ADAPTER)
if reward_tokenizer.pad_token is None:
    reward_tokenizer.pad_token = reward_tokenizer.eos_token
reward_model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(
    BASE, dtype=getattr(torch, RUN["weights_dtype"]), use_safetensors=True, device_map={{"": LOCAL_DEVICE}},
    quantization_config=BitsAndBytesConfig(**part("quantization")) if part("quantization") else None,
    num_labels=1, **part("model")), REWARD_ADAPTER).eval()
reward_model.requires_grad_(False)
reward_model.config.pad_token_id = reward_tokenizer.pad_token_id
reward_model.config._name_or_path = "reward_model"  # TRL names a model reward by it: rewards/reward_model/...
"""


def _grpo_code(spec: TrainSpec, reward_adapter: str | None = None) -> str:
    """The reward functions, exactly the studio's, the reward model when the rewards name it (`reward_adapter`: its
    folder), and the prompts that fit."""
    source = inspect.getsource(rewards_module).replace("from __future__ import annotations\n", "")
    terms = dict(rewards_module.parse_terms(spec.grpo_rewards))
    code = spec.grpo_reward_code if "code" in terms else ""
    scorer = (REWARD_MODEL_CODE.format(adapter=reward_adapter or spec.grpo_reward_adapter,
                                       name=spec.grpo_reward_adapter) if "reward_model" in terms
              else "reward_model = reward_tokenizer = None\n")
    return GRPO_CODE.format(rewards_source=source, room=spec.max_length - spec.max_completion_length, code=code,
                            reward_model=scorer)


def _row_selection(spec: TrainSpec) -> str:
    """The dedup and drop steps the studio applies before splitting, when the spec asks for them."""
    code = DEDUP_CODE if spec.dedup else ""
    if spec.overlong == "drop":
        code += f"MAX_LENGTH = {spec.max_length}\n" + DROP_CODE
    return code


def _adapter_code(spec: TrainSpec, start_adapter: str | None) -> str:
    if spec.finetuning != "lora":
        return WHOLE_MODEL_CODE
    if spec.init_adapter:
        return (f"START = {start_adapter or spec.init_adapter!r}  # the adapter '{spec.init_adapter}' continues\n"
                "model = PeftModel.from_pretrained(model, START, is_trainable=True)")
    return f"""set_seed({spec.seed})  # LoRA init is random
model = get_peft_model(model, LoraConfig(**part("lora")))""" + ("" if spec.init_lora_weights in PLAIN_INITS else
                                                                   "\n" + START_CODE)


def _save_steps(spec: TrainSpec) -> str:
    """load_best_model_at_end needs checkpoints on eval steps."""
    if spec.keep_best:
        return f"{spec.eval_steps} if eval_rows is not None else {spec.save_steps}"
    return str(spec.save_steps)
