"""The training spec: one typed config, validated once, stored verbatim in the ledger.

Field descriptions are the UI's help text. `parse_spec` reports every problem at once, each naming its field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from storage.settings import check_pool_name

TARGET_PRESETS: dict[str, list[str] | str] = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
    "all-linear": "all-linear",
    "embeddings+lm_head": ["embed_tokens", "lm_head"],
}
"""Named target sets (Llama-style module names; 'all-linear' is peft's: every Linear but the output head)."""
DEMO_BASE_MODEL = "demo-tiny-llama"
SMOLLM2_BASE_MODEL = "smollm2-135m-instruct"
STUDIO_BASE_MODELS = (DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL)
"""Base models the studio provides offline, by name: the random demo, and a real instruct model."""
EXAMPLE_DATASET = "example"
PIRATE_DATASET = "pirate"
BUNDLED_DATASETS = (EXAMPLE_DATASET, PIRATE_DATASET)
"""Datasets that ship with the studio: keyword tasks for the demo base, a pirate voice for the real offline one."""


MAX_NAME_LENGTH = 100


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_problem(name: str) -> str | None:
    """Why `name` cannot name an adapter or dataset, or None. Names are shown and looked up, never used as paths,
    but they also name downloads, so they stay short and plain."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters (got {len(name)})"
    if not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
        return "use only letters, digits, '-', '_' and '.'"
    if name.startswith("."):
        return "must not start with '.'"
    return None


class Problem(BaseModel):
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class SpecError(ValueError):
    """Every problem found in a submission, each naming the field it concerns."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    @classmethod
    def from_text(cls, field: str, message: str) -> SpecError:
        return cls([Problem(field=field, message=message)])

    def as_text(self) -> str:
        lines = [f"The job was not queued: {len(self.problems)} problem(s) to fix."]
        lines += [f"- {p.field}: {p.message}" for p in self.problems]
        return "\n".join(lines)


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", title="Adapter name", max_length=100, description=(
        "Name of the adapter this job produces (letters, digits, - _ .). Empty: derived from the job id."))
    base_model: str = Field(DEMO_BASE_MODEL, title="Base model", min_length=1, description=(
        f"Base model: '{SMOLLM2_BASE_MODEL}' (a real instruct model, prepared offline on first use), "
        f"'{DEMO_BASE_MODEL}' (random weights, built instantly), a local directory with safetensors weights, or a "
        "Hugging Face hub id (needs internet)."))
    dataset: str = Field(EXAMPLE_DATASET, title="Dataset", min_length=1, description=(
        f"Name of an uploaded dataset, or a bundled one: '{EXAMPLE_DATASET}' (keyword tasks the demo base can "
        f"learn) or '{PIRATE_DATASET}' (a pirate voice for {SMOLLM2_BASE_MODEL})."))
    method: Literal["sft", "dpo"] = Field("sft", title="Method", description=(
        "sft: supervised fine-tuning on chats or text. dpo: direct preference optimization on a preference dataset "
        "(prompt, chosen, rejected), such as the Chat tab's blind votes exported."))
    init_adapter: str = Field("", title="Start from adapter", description=(
        "An adapter of this base model to continue training (its rank, alpha, dropout and targets are kept and the "
        "LoRA fields are not used; for dpo, a frozen copy of it is the reference); empty: a new adapter."))
    dpo_beta: float = Field(0.1, title="DPO beta", description=(
        "How strongly DPO keeps the adapter near its reference: higher stays closer (0.1 is usual). dpo only."))

    lora_r: int = Field(8, title="LoRA rank (r)",
        description="LoRA rank: size of the low-rank update. 8-64 is typical.")
    lora_alpha: float = Field(16, title="LoRA alpha", description="LoRA alpha: the update is scaled by alpha / rank.")
    lora_dropout: float = Field(0.0, title="LoRA dropout", description=(
        "Dropout on the LoRA input during training, in [0, 1). 0 by default: a mask per adapted layer cost a fifth "
        "of a CPU training step (docs/benchmarks.md); 0.05-0.1 may help a small dataset over many epochs."))
    target_modules: str | list[str] = Field("all-linear", title="Target modules", description=(
        "Which layers get LoRA: a preset ('attention': q,k,v,o; 'mlp': gate,up,down; 'all-linear': every Linear "
        "but the output head; 'embeddings+lm_head': the token embeddings and the head, e.g. for new tokens) or a "
        "list of the base's Linear or embedding module names such as ['q_proj', 'v_proj']."))
    lora_bias: Literal["none", "all", "lora_only"] = Field("none", title="LoRA bias", description=(
        "Which biases train too: none, all of the model's, or only those of the LoRA-adapted layers."))
    use_rslora: bool = Field(False, title="rsLoRA", description=(
        "Rank-stabilized LoRA: scale the update by alpha / sqrt(rank) instead of alpha / rank, so higher ranks "
        "keep learning."))
    use_dora: bool = Field(False, title="DoRA", description=(
        "Weight-decomposed LoRA: learn a magnitude per output as well as the direction update. Often better at low "
        "rank, about twice as slow on a 4-bit base (the weight is dequantized each step)."))
    modules_to_save: list[str] = Field(default_factory=list, title="Modules to train fully", description=(
        "Modules trained in full and saved with the adapter, e.g. ['lm_head'] (large: a full copy each)."))

    quantization: Literal["nf4", "fp4", "int8", "none"] = Field("nf4", title="Base quantization", description=(
        "How the frozen base is stored: 4-bit NormalFloat (QLoRA), 4-bit float, 8-bit, or unquantized."))
    double_quant: bool = Field(True, title="Double quantization", description=(
        "Quantize the 4-bit scales too (about 0.37 bits per parameter saved). 4-bit only."))
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", title="Compute dtype",
                                                                             description=(
        "Dtype for matmuls on the dequantized weights. 'auto': bfloat16 on GPUs that support it (else float16); "
        "on a CPU, bfloat16 where it multiplies bf16 natively (AVX512-BF16 or AMX) and the model is at least 512 "
        "wide (SmolLM2 trained 1.5x faster at the same loss; the tiny demo 5% slower), else float32 (without "
        "native bf16 it is emulated and slow). docs/benchmarks.md."))

    max_steps: int = Field(-1, title="Max steps", description=(
        "Optimizer steps to train; -1: train for num_epochs instead."))
    num_epochs: float | None = Field(None, title="Epochs", description=(
        "Passes over the training data, used when max_steps is -1. Empty (null; 0 in the form): enough for at "
        "least 100 steps, from 1 to 10 epochs (the Train tab shows the plan)."))
    learning_rate: float | None = Field(None, title="Learning rate", description=(
        "Peak learning rate (cosine decay after a short warmup). Empty (null; 0 in the form): chosen from the "
        "base's size, 2e-4 at 7B parameters scaled by (7B / size)^0.7 within 1e-4 to 5e-3 (3.2e-3 for a 135M "
        "model, 5e-3 for the demo)."))
    optimizer: Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"] = Field(
        "adamw_torch", title="Optimizer", description=(
            "AdamW in 32 bits (torch), or bitsandbytes' 8-bit AdamW (its two states in 8 bits: a quarter of the "
            "memory), optionally paged to CPU memory under GPU memory pressure. Paging needs CUDA: on a CPU worker a "
            "paged choice runs the same optimizer unpaged, and the run's log says so."))
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", title="LR schedule", description="How the learning rate moves after warmup.")
    weight_decay: float = Field(0.0, title="Weight decay", description=(
        "AdamW's decoupled weight decay on the trained weights, in [0, 1]."))
    max_grad_norm: float = Field(1.0, title="Max grad norm", description=(
        "Clip the gradient norm to this before each step; 0 turns clipping off."))
    batch_size: int | None = Field(None, title="Batch size", description=(
        "Sequences per device step. With packing, each sequence is up to max_length tokens of whole rows. Empty "
        "(null; 0 in the form): chosen so an epoch makes at least 32 steps (the data's sequences / 32, from 1 to 8)."))
    grad_accum: int = Field(1, title="Gradient accumulation",
        description="Steps to accumulate gradients over; effective batch = batch × this.")
    max_length: int = Field(512, title="Max length (tokens)",
        description="Longest sequence in tokens; longer rows are truncated.")
    overlong: Literal["truncate", "drop"] = Field("truncate", title="Rows longer than max length", description=(
        "Cut a row longer than max_length at it (its end is lost), or drop the row. The Datasets tab and the preview "
        "count them for the chosen base."))
    dedup: bool = Field(False, title="Drop exact duplicates", description=(
        "Train on each distinct row once (exact repeats removed; the log and the preview count them)."))
    packing: bool | None = Field(None, title="Packing", description=(
        "Pack whole rows into sequences of up to max_length tokens, padding-free (position ids, no padding; "
        "padding was 62% of a padded batch on the example data). Empty (auto): on, unless the data packs into "
        "fewer than 10 sequences; then each row is its own sequence, so a small dataset still gets enough steps."))
    gradient_checkpointing: Literal["auto", "on", "off"] = Field("auto", title="Gradient checkpointing", description=(
        "Recompute activations to save memory. 'auto': on for GPUs, off on CPU (measured 30% faster off)."))
    assistant_only_loss: bool = Field(True, title="Assistant-only loss", description=(
        "Train only on assistant turns (needs a chat template with generation markers)."))
    seed: int = Field(42, title="Seed", description="Seed for LoRA init, data order and dropout; same seed, same run.")
    eval_fraction: float | None = Field(None, title="Eval fraction", description=(
        "Share of rows held out for eval loss, early stopping, the best adapter and sample answers, in [0, 0.5); 0: "
        "none (unused with a validation dataset). Empty (null; 'auto' in the form): none below 500 rows, where "
        "every row is worth more in training (holding out a tenth of 320 rows cost 2-4% in held-out loss, "
        "bench/eval_split.py); from 500 rows a tenth, at most 200 rows."))
    eval_dataset: str = Field("", title="Validation dataset", description=(
        "A stored dataset to evaluate on instead of a random eval_fraction of the training rows (all training rows "
        "then train); empty: hold out eval_fraction."))
    eval_steps: int = Field(25, title="Eval every (steps)", description=(
        "Evaluate every this many steps (when there is an eval split; without one, the sample answers come this "
        "often)."))
    logging_steps: int = Field(5, title="Log every (steps)",
        description="Log loss, learning rate and throughput every this many steps.")
    sample_prompts: int = Field(3, title="Sample answers", description=(
        "Prompts the run answers (greedy) at each eval and at the end, and the base model before training, shown "
        "side by side in the Runs tab so learning is visible: held-out rows' prompts, or in a run without an eval "
        "split the first training rows' (answered every eval_steps); 0: none."))
    early_stopping_patience: int = Field(3, title="Early stopping patience", description=(
        "Stop when eval loss has not improved for this many evals in a row; 0: never stop early. Needs an eval "
        "split."))
    keep_best: bool = Field(True, title="Keep the best adapter", description=(
        "Register the adapter as it was at its lowest eval loss rather than at the last step (the run records "
        "which step that was). Needs an eval split."))
    save_steps: int = Field(50, title="Checkpoint every (steps)",
        description="Save a resumable checkpoint every this many steps.")
    warmup_ratio: float = Field(0.05, title="Warmup ratio",
        description="Share of steps spent warming up the learning rate.")
    pool: str = Field("", title="Worker pool", max_length=63, description=(
        "Run only on workers of this pool (a worker's STUDIO_POOL, e.g. a100-80g); the memory verdict then checks "
        "that pool's devices. Empty: any worker."))

    @field_validator("pool")
    @classmethod
    def _pool_name(cls, value: str) -> str:
        if value and (problem := check_pool_name(value)):
            raise ValueError(problem)
        return value

    @field_validator("base_model", "dataset", "eval_dataset", "init_adapter")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        # A NUL or an unpaired surrogate cannot be a file name, nor stored as UTF-8: refuse it here, in words.
        if "\x00" in value or not value.isprintable() or not _encodable(value):
            raise ValueError("holds a control character or an invalid (unpaired surrogate) character")
        return value

    @field_validator("name")
    @classmethod
    def _name_chars(cls, value: str) -> str:
        problem = value and name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("modules_to_save")
    @classmethod
    def _saved_modules(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not name.replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise ValueError(f"not a module name: {', '.join(map(repr, bad))}")
        return list(dict.fromkeys(value))

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            if value in TARGET_PRESETS:
                return value
            value = [part.strip() for part in value.split(",")]
        names = [name for name in value if name]
        if not names:
            raise ValueError("name at least one module, or use 'attention' or 'all-linear'")
        bad = [name for name in names if not name.replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise ValueError(f"not a module name: {', '.join(map(repr, bad))}")
        return names

    def target_module_names(self) -> list[str] | str:
        """The list peft gets: preset expanded, 'all-linear' passed through."""
        if isinstance(self.target_modules, str):
            return TARGET_PRESETS[self.target_modules]
        return list(self.target_modules)


class MergeSpec(BaseModel):
    """A merge job: the adapter folded into a 16-bit copy of its base (W' = W + (alpha/r)·BA), for serving
    without peft. Built by a worker, like training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter: str = Field(description="Name of the adapter to merge (as it was when the merge was asked for).")
    adapter_id: int = Field(description="The adapter's id: the merge follows the adapter through renames.")
    dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description=(
        "Dtype of the merged weights: bfloat16 (the usual), float16, or float32 (exact, twice the size)."))


RANGES: dict[str, tuple[float, float, str]] = {
    # field: (low, high, how the bounds read) — inclusive unless the text says otherwise
    "lora_r": (1, 1024, "a whole number from 1 to 1024"),
    "lora_alpha": (1e-6, 1e6, "greater than 0"),
    "lora_dropout": (0, 0.999999, "at least 0 and below 1"),
    "learning_rate": (1e-9, 1.0, "greater than 0 and at most 1"),
    "batch_size": (1, 4096, "a whole number from 1 to 4096"),
    "grad_accum": (1, 1024, "a whole number from 1 to 1024"),
    "max_length": (16, 131072, "a whole number from 16 to 131072"),
    "eval_fraction": (0, 0.499999, "at least 0 and below 0.5"),
    "eval_steps": (1, 10**7, "at least 1"),
    "logging_steps": (1, 10**7, "at least 1"),
    "save_steps": (1, 10**7, "at least 1"),
    "warmup_ratio": (0, 0.5, "from 0 to 0.5"),
    "num_epochs": (0.01, 1000, "greater than 0 and at most 1000"),
    "weight_decay": (0, 1, "from 0 to 1"),
    "max_grad_norm": (0, 1e6, "at least 0 (0: no clipping)"),
    "seed": (0, 2**32 - 1, "a whole number from 0 to 4294967295"),
    "sample_prompts": (0, 20, "a whole number from 0 to 20"),
    "dpo_beta": (1e-4, 100, "from 0.0001 to 100"),
    "early_stopping_patience": (0, 1000, "a whole number from 0 (never) to 1000"),
}
MAX_STEPS = 10_000_000
EMPTY_SPEC = ("is empty: name at least one field (each has a default; static/examples/demo_job.json is a full "
              "example)")
MAX_PRIORITY = 1_000_000


def _range_problems(spec: TrainSpec) -> list[Problem]:
    problems = []
    for name, (low, high, words) in RANGES.items():
        value = getattr(spec, name)
        if value is not None and not low <= value <= high:
            problems.append(Problem(field=name, message=f"must be {words} (got {value})"))
    if spec.max_steps == 0 or spec.max_steps < -1 or spec.max_steps > MAX_STEPS:
        problems.append(Problem(field="max_steps", message=(
            f"must be -1 (use num_epochs) or from 1 to {MAX_STEPS:,} (got {spec.max_steps})")))
    if spec.quantization in ("int8", "none") and spec.double_quant:
        problems.append(Problem(field="double_quant",
                                message="applies only to 4-bit quantization (nf4 or fp4); turn it off"))
    return problems


def _pydantic_problems(error: ValidationError) -> list[Problem]:
    """One problem per field, named by the spec field (not pydantic's path through union members)."""
    messages: dict[str, list[str]] = {}
    for item in error.errors():
        field = (str(item["loc"][0]) or '""') if item["loc"] else "spec"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not a spec field (check the spelling; see docs/api.md)"
        items = [str(part) for part in item["loc"][1:] if isinstance(part, int)]
        if items:
            message = f"item {items[0]}: {message}"
        if message not in messages.setdefault(field, []):
            messages[field].append(message)
    return [Problem(field=field, message=" or ".join(found)) for field, found in messages.items()]


def salvage_spec(raw: dict, problems: list[Problem]) -> TrainSpec:
    """A spec from the fields that did validate (defaults elsewhere), to keep checking the rest."""
    bad_fields = {p.field.split(".")[0] for p in problems}
    salvage = {k: v for k, v in raw.items() if k in TrainSpec.model_fields and k not in bad_fields}
    return TrainSpec.model_validate(salvage)


def priority_problem(priority: object) -> str | None:
    if not isinstance(priority, int) or isinstance(priority, bool):
        return "must be a whole number"
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        return f"must be from {-MAX_PRIORITY:,} to {MAX_PRIORITY:,} (got {priority})"
    return None


def parse_spec(raw: dict) -> TrainSpec:
    """Validate the shape and ranges of a spec. Raises SpecError listing every problem."""
    if not isinstance(raw, dict):
        raise SpecError([Problem(field="spec", message="must be a JSON object of field: value pairs")])
    try:
        spec = TrainSpec.model_validate(raw)
    except ValidationError as error:
        # Ranges are checked on a best-effort copy too, so one submit shows type and range errors together.
        problems = _pydantic_problems(error)
        problems += _range_problems(salvage_spec(raw, problems))
        raise SpecError(problems) from None
    problems = _range_problems(spec)
    if problems:
        raise SpecError(problems)
    return spec


def field_label(name: str) -> str:
    """The human label the UI shows for a spec field."""
    return TrainSpec.model_fields[name].title or name


def field_help(name: str) -> str:
    """The field's help text, ending with the spec field name (what the CLI, API and presets use)."""
    return f"{TrainSpec.model_fields[name].description or ''} Spec field: {name}."
