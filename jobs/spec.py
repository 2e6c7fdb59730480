"""The training spec: one typed config, validated once, stored verbatim in the ledger (with its version).

Everything about a field lives on it: default, range (`ge`/`gt`/`le`/`lt`, and a `special` value outside it),
choices (a Literal), label (`title`), help (`description`, the UI's help text) and its place in the Train tab's form
(`json_schema_extra`); rules between fields are validators here. So an invalid TrainSpec cannot be constructed, and
the form, the refusals' words, the CLI and docs/api.md read one source. `parse_spec` reports every problem at once,
each naming its field (docs/architecture.md, "How to add a spec option").
"""

from __future__ import annotations

import ast
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo

from jobs.rewards import MAX_CODE_CHARS, parse_terms, pattern_problem, schema_problem
from jobs.spec_versions import RETIRED_TARGET_PRESET, SPEC_VERSION, migrate
from jobs.spec_words import Problem, SpecError, problems_from, range_words, special
from storage.settings import check_pool_name

PAIRED_METHODS = ("dpo", "orpo", "simpo", "reward")
"""Methods that train on preference pairs (prompt, chosen, rejected)."""
REWARD_METHOD = "reward"
"""Reward-model training (TRL's RewardTrainer): the adapter scores a conversation with one number and generates
nothing, so chat, /v1, merge and GGUF refuse it (jobs.models.reward_adapters)."""
UNPAIRED_METHODS = ("kto",)
"""Methods that train on unpaired answers (prompt, completion, label)."""
PREFERENCE_METHODS = PAIRED_METHODS + UNPAIRED_METHODS
ADAPTER_FIELDS = ("init_adapter", "grpo_reward_adapter")
"""The spec fields that name an adapter: the one a run continues, the reward model a GRPO run scores with."""
REFERENCE_METHODS = ("dpo", "kto")
"""Preference methods that compare against a reference model (the others have none to hold)."""
TARGET_PRESETS: dict[str, list[str] | str] = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
    "all-linear": "all-linear",
    "embeddings": ["embed_tokens"],
}
"""Named target sets (Llama-style module names; 'all-linear' is peft's: every Linear but the output head). The output
head takes no LoRA (TRL's trainers read lm_head.weight directly): it trains fully through modules_to_save."""
PLAIN_INITS = ("default", "gaussian")
"""LoRA inits that start the adapter as a no-op (B zero) and leave the base as it is."""
CONVERTED_INITS = ("pissa", "olora")
"""LoRA inits that take their start out of the base's weights: the saved adapter is converted to apply to the original
base (jobs.training.lora_init)."""
LORA_ONLY_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "lora_bias", "use_rslora", "use_dora",
                    "modules_to_save", "init_lora_weights", "pissa_niter", "loraplus_lr_ratio")
"""Fields that shape the LoRA adapter only: a full or freeze run (finetuning) refuses them away from their defaults."""
DEMO_BASE_MODEL = "demo-tiny-llama"
SMOLLM2_BASE_MODEL = "smollm2-135m-instruct"
STUDIO_BASE_MODELS = (DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL)
"""Base models the studio provides offline, by name: the random demo, and a real instruct model."""
EXAMPLE_DATASET = "example"
PIRATE_DATASET = "pirate"
BUNDLED_DATASETS = (EXAMPLE_DATASET, PIRATE_DATASET)
"""Datasets that ship with the studio: keyword tasks for the demo base, a pirate voice for the real offline one."""


MAX_NAME_LENGTH = 100
MAX_MIX_DATASETS = 16
MAX_ROWS = 10_000_000
MAX_SYSTEM_PROMPT_CHARS = 4_000
MAX_TEMPLATE_CHARS = 32_000
"""A pasted chat template's bound: the longest TRL ships is under 16,000 characters."""
MIX_TOLERANCE = 0.01
"""How far a mix's ratios may add up from 1 (0.33 + 0.33 + 0.33 is a third each)."""
MAX_STEPS = 10_000_000
MAX_DEVICES = 64
"""The most devices one job may ask for: a node's GPUs (8 today, 64 leaves room)."""
ALL_DEVICES = "all"
"""devices' word for every device of the host: submit turns it into that number (jobs.submit.planned_job)."""
MAX_MEMORY_BUDGET_GIB = 16_384
"""A memory budget's bound: more than any one device holds."""
HEAD = "head"
"""The form's first row (name, base, dataset), laid out by the Train tab before the groups."""
COMMON, LORA, OPTIMISATION, DATA, METHOD, SPEED, TRACKING = (
    "Common", "LoRA", "Optimisation", "Data", "Method options", "Precision and speed", "Checkpoints and tracking")
FORM_GROUPS: dict[str, str] = {COMMON: "basic", LORA: "advanced", OPTIMISATION: "advanced", DATA: "advanced",
                               METHOD: "advanced", SPEED: "advanced", TRACKING: "advanced"}
"""The form's groups in order, each with its tier: the Train tab shows a basic group's knobs under the head row, and
folds the advanced groups away under "Advanced settings" (what every job needs, then the common knobs, then the rest:
a newcomer reads the tab in one glance)."""


REWARD_OF_FIELD = {"grpo_regex": "regex", "grpo_json_schema": "json_schema", "grpo_reward_code": "code"}
"""The GRPO reward each of these fields configures (jobs.rewards)."""


def code_problem(source: str) -> str | None:
    """Why `source` cannot be a reward code file, found without running it (compiling runs nothing)."""
    if len(source) > MAX_CODE_CHARS:
        return f"must be at most {MAX_CODE_CHARS:,} characters (got {len(source):,})"
    if problem := unstorable_problem(source):
        return problem
    try:
        tree = ast.parse(source, "reward_code.py")
    except SyntaxError as error:
        return f"is not valid Python: line {error.lineno}: {error.msg}"
    except (RecursionError, MemoryError, ValueError):
        return "is not valid Python: nested too deeply"
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    if "reward" not in defined:
        return "must define a function reward(completions, **kwargs) at its top level"
    return None


LORA_RUNS = ("lora",)
"""finetuning values that train an adapter: the LoRA fields (and the quantized base, init_adapter) apply to these."""
GRPO = ("grpo",)


def _at(group: str, row: int, *, methods: tuple[str, ...] = (), finetuning: tuple[str, ...] = ()) -> dict:
    """Where a field sits in the Train tab's form: its group (an accordion) and its row there; fields of one row keep
    their order in the class. `methods` / `finetuning`: the only runs that read the field (empty: every run); the
    form shows it for those alone (`applies`), and the spec validates it whatever they are."""
    place: dict = {"group": group, "row": row}
    if methods:
        place["methods"] = list(methods)
    if finetuning:
        place["finetuning"] = list(finetuning)
    return place


def applies(field: FieldInfo, method: str, finetuning: str) -> bool:
    """Whether a run of `method` and `finetuning` reads this field (what `_at` said of it): the Train tab hides a
    field that does not apply, keeping its value."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return method in extra.get("methods", [method]) and finetuning in extra.get("finetuning", [finetuning])


def conditional(field: FieldInfo) -> bool:
    """Whether only some runs read the field (`_at` named their methods or finetuning)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return "methods" in extra or "finetuning" in extra


def form_place(field: FieldInfo) -> tuple[str, int] | None:
    """Where `_at` put the field in the form (its group and row); None: the form does not show it."""
    extra = field.json_schema_extra
    if not isinstance(extra, dict) or "group" not in extra:
        return None
    return extra["group"], extra.get("row", 0)


def encodable(text: str) -> bool:
    """False for text holding an unpaired surrogate (JSON can write "\\ud800"; no UTF-8 can store it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unstorable_problem(text: str) -> str | None:
    """Why free text (a system prompt, a template, reward code) cannot be stored as UTF-8 and sent on, or None."""
    if "\x00" in text or not encodable(text):
        return "holds a NUL or an invalid (unpaired surrogate) character"
    return None


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


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # strict: a version is a whole number, never True or 1.0, so every valid one was migrated to SPEC_VERSION.
    spec_version: int = Field(SPEC_VERSION, title="Spec version", ge=1, le=SPEC_VERSION, strict=True, description=(
        "The rules this spec was written under; a spec written under older ones is migrated when read (a stored "
        "spec without it is version 1). Leave it out when writing a spec."))
    name: str = Field("", title="Adapter name", max_length=MAX_NAME_LENGTH,
                      json_schema_extra=_at(HEAD, 0), description=(
        "Name of the adapter this job produces (letters, digits, - _ .). Empty: derived from the job id."))
    base_model: str = Field(DEMO_BASE_MODEL, title="Base model", min_length=1,
                            json_schema_extra=_at(HEAD, 0), description=(
        f"Base model: '{SMOLLM2_BASE_MODEL}' (a real instruct model, prepared offline on first use), "
        f"'{DEMO_BASE_MODEL}' (random weights, built instantly), a local directory with safetensors weights, or a "
        "Hugging Face hub id (needs internet)."))
    dataset: str = Field(EXAMPLE_DATASET, title="Dataset", min_length=1, json_schema_extra=_at(HEAD, 0), description=(
        f"Name of an uploaded dataset, or a bundled one: '{EXAMPLE_DATASET}' (keyword tasks the demo base can "
        f"learn) or '{PIRATE_DATASET}' (a pirate voice for {SMOLLM2_BASE_MODEL})."))
    method: Literal["sft", "dpo", "orpo", "kto", "simpo", "grpo", "reward"] = Field(
        "sft", title="Method", json_schema_extra=_at(HEAD, 0), description=(
            "sft: supervised fine-tuning on chats or text. On a preference dataset (prompt, chosen, rejected), such "
            "as the Chat tab's blind votes exported: dpo (direct preference optimization, against a reference), orpo "
            "(odds-ratio preference optimization: SFT on the chosen answer plus a preference term, no reference) or "
            "simpo (simple preference optimization: length-normalized rewards with a target margin, no reference). "
            "On an unpaired dataset (prompt, completion, label): kto (Kahneman-Tversky optimization: each answer "
            "marked desirable or not, against a reference). On a prompt/reference dataset: grpo (reinforcement "
            "learning with verifiable rewards, TRL's GRPO: the adapter writes num_generations answers per prompt and "
            "learns from the rewards they get). On a preference dataset too: reward (a reward model, TRL's "
            "RewardTrainer: the base as a sequence classifier with one output, scoring the chosen answer above the "
            "rejected one; it scores conversations and does not chat)."))
    init_adapter: str = Field("", title="Start from adapter",
                              json_schema_extra=_at(METHOD, 0, finetuning=LORA_RUNS), description=(
        "An adapter of this base model to continue training (its rank, alpha, dropout and targets are kept and the "
        "LoRA fields are not used; for dpo and kto, a frozen copy of it is the reference); empty: a new adapter."))
    dpo_beta: float = Field(0.1, title="DPO beta", ge=1e-4, le=100,
                            json_schema_extra=_at(METHOD, 0, methods=("dpo",)), description=(
        "How strongly DPO keeps the adapter near its reference: higher stays closer (0.1 is usual). dpo only."))
    # --- full and freeze fine-tuning (issue 31, full slice): the base's own weights train, the result is a model
    finetuning: Literal["lora", "freeze", "full"] = Field("lora", title="Fine-tuning",
                                                         json_schema_extra=_at(METHOD, 6), description=(
        "What trains: lora (a small adapter on the frozen, quantized base: the usual), freeze (the base's last "
        "freeze_trainable_layers decoder blocks themselves, the rest frozen) or full (every weight of the base). "
        "freeze and full produce a whole model, not an adapter: the base loads unquantized (quantization and "
        "double_quant are not used), the LoRA fields must stay at their defaults, and only method sft trains this "
        "way (DPO and KTO would need a second full copy as their reference). For models small enough: weights, "
        "gradients and AdamW's two states take about 16 bytes per trained parameter."))
    freeze_trainable_layers: int = Field(2, title="Trainable blocks (freeze)", ge=1, le=1024,
                                         json_schema_extra=_at(METHOD, 6, finetuning=("freeze",)), description=(
        "For freeze: how many of the last decoder blocks train (the rest of the base stays frozen). A number above "
        "the base's block count trains them all. freeze only."))
    freeze_train_head: bool = Field(False, title="Train the output head (freeze)", validate_default=True,
                                    json_schema_extra=_at(METHOD, 6, finetuning=("freeze",)), description=(
        "For freeze: also train the final norm and the output head (lm_head; with tied embeddings that is the input "
        "embeddings too). freeze only."))
    # --- preference methods beyond DPO (issue 31, prefs slice): each read by its own method only
    orpo_lambda: float = Field(0.1, title="ORPO lambda", ge=1e-4, le=100,
                               json_schema_extra=_at(METHOD, 1, methods=("orpo",)),
                               description=(
        "Weight of ORPO's odds-ratio (preference) term next to its SFT loss on the chosen answer (the paper's lambda, "
        "TRL's beta; 0.1 is usual). orpo only."))
    simpo_beta: float = Field(2.0, title="SimPO beta", ge=1e-4, le=100,
                              json_schema_extra=_at(METHOD, 1, methods=("simpo",)),
                              description=(
        "Scale of SimPO's reward, the answer's mean log-probability per token (2.0-2.5 in the paper). simpo only."))
    simpo_gamma_ratio: float = Field(0.5, title="SimPO gamma / beta", ge=0, le=10,
                                     json_schema_extra=_at(METHOD, 1, methods=("simpo",)), description=(
        "SimPO's target reward margin between chosen and rejected, as a share of simpo_beta (the margin is "
        "gamma = this x beta; 0.5 is usual). simpo only."))
    kto_beta: float = Field(0.1, title="KTO beta", ge=1e-4, le=100, json_schema_extra=_at(METHOD, 1, methods=("kto",)),
                            description=(
        "How strongly KTO keeps the adapter near its reference: higher stays closer (0.1 is usual). kto only."))
    kto_desirable_weight: float = Field(1.0, title="KTO desirable weight", ge=0.01, le=100,
                                        json_schema_extra=_at(METHOD, 1, methods=("kto",)), description=(
        "Weight of the desirable answers' loss; raise it when they are fewer than the undesirable ones (keep "
        "desirable x weight about equal to undesirable x its weight, up to 4:3). kto only."))
    kto_undesirable_weight: float = Field(1.0, title="KTO undesirable weight", ge=0.01, le=100,
                                          json_schema_extra=_at(METHOD, 1, methods=("kto",)), description=(
        "Weight of the undesirable answers' loss; raise it when they are fewer than the desirable ones. kto only."))
    # GRPO (reinforcement learning with verifiable rewards): the rewards, and how many answers of what length.
    grpo_rewards: str = Field("reference", title="GRPO rewards", max_length=400,
                              json_schema_extra=_at(METHOD, 2, methods=GRPO),
                              description=(
        "What a GRPO answer is rewarded for, comma-separated, each optionally with ':weight' (default 1), e.g. "
        "'json, length:0.5'. reference: it matches the row's reference (grpo_reference_match); json: it is valid "
        "JSON; json_schema: it is JSON that grpo_json_schema accepts; regex: grpo_regex matches it; length: it is "
        "grpo_min_chars to grpo_max_chars characters long; code: the reward function in grpo_reward_code (only "
        "where the operator allows code, STUDIO_USER_CODE); reward_model: the score your reward adapter "
        "grpo_reward_adapter gives it. grpo only."))
    num_generations: int = Field(4, title="Answers per prompt", ge=2, le=64,
                                 json_schema_extra=_at(METHOD, 2, methods=GRPO),
                                 description=(
        "GRPO samples this many answers per prompt and compares their rewards with each other (a group). More "
        "compares better and costs memory and time in proportion. grpo only."))
    max_completion_length: int = Field(128, title="Max answer length (tokens)", ge=1, le=32768,
                                       json_schema_extra=_at(METHOD, 2, methods=GRPO), description=(
        "Longest GRPO answer in tokens; a longer one is cut here. A prompt and its answer fit in max_length: rows "
        "whose prompt is longer than max_length minus this are dropped (the log counts them). grpo only."))
    grpo_beta: float = Field(0.0, title="GRPO KL beta", ge=0, le=100, json_schema_extra=_at(METHOD, 2, methods=GRPO),
                             description=(
        "How strongly GRPO keeps the adapter near where it started (KL penalty). 0: no reference pass (less memory, "
        "faster; TRL's default); above 0, a frozen copy of the starting adapter is the reference. grpo only."))
    grpo_reference_match: Literal["exact", "contains"] = Field("exact", title="Reference match",
                                                               json_schema_extra=_at(METHOD, 3, methods=GRPO),
                                                               description=(
        "For the reference reward: the answer must equal the reference (exact) or hold it (contains), both after "
        "collapsing whitespace and ignoring case."))
    grpo_min_chars: int = Field(0, title="Length reward: min characters", ge=0, le=1_000_000,
                                json_schema_extra=_at(METHOD, 3, methods=GRPO), description=(
        "For the length reward: the shortest answer that earns it, in characters."))
    grpo_max_chars: int = Field(2000, title="Length reward: max characters", ge=1, le=1_000_000, validate_default=True,
                                json_schema_extra=_at(METHOD, 3, methods=GRPO), description=(
        "For the length reward: the longest answer that earns it, in characters."))
    grpo_regex: str = Field("", title="Regex reward pattern", validate_default=True,
                            json_schema_extra=_at(METHOD, 4, methods=GRPO), description=(
        "For the regex reward: a regular expression an answer must match somewhere (anchor it with ^ and $ for the "
        "whole answer), at most 500 characters; an answer it cannot decide within 0.5 s scores 0."))
    grpo_json_schema: str = Field("", title="JSON schema reward", validate_default=True,
                                  json_schema_extra=_at(METHOD, 4, methods=GRPO), description=(
        "For the json_schema reward: a JSON Schema, pasted as JSON (at most 20,000 characters; without 'pattern' "
        "keywords, which the regex reward checks with a time limit)."))
    grpo_reward_code: str = Field("", title="Reward function (Python)", validate_default=True,
                                  json_schema_extra=_at(METHOD, 5, methods=GRPO), description=(
        "For the code reward: the text of a Python file defining reward(completions, **kwargs) that returns one "
        "number per completion (kwargs hold prompts and the row's columns, such as reference). It runs in the "
        "training process, so it is refused unless the operator allows code for you (STUDIO_USER_CODE). A reward "
        "that raises or returns anything else fails the job with its traceback in the log."))
    # --- GRPO reward model (issue 31, grpo_rm slice): a reward adapter scores the answers as one reward term
    grpo_reward_adapter: str = Field("", title="Reward model (adapter)", max_length=MAX_NAME_LENGTH,
                                     validate_default=True, json_schema_extra=_at(METHOD, 3, methods=GRPO),
                                     description=(
        "For the reward_model reward: one of your reward adapters (method reward) of this base model; each answer "
        "is rewarded with the score it gives the prompt and the answer. It loads as a second copy of the base "
        "beside the one that trains (the memory estimate counts it). Needed when grpo_rewards names reward_model, "
        "refused otherwise."))

    lora_r: int = Field(8, title="LoRA rank (r)", ge=1, le=1024, json_schema_extra=_at(COMMON, 1, finetuning=LORA_RUNS),
        description="LoRA rank: size of the low-rank update. 8-64 is typical.")
    lora_alpha: float = Field(16, title="LoRA alpha", gt=0, le=1e6,
                              json_schema_extra=_at(LORA, 0, finetuning=LORA_RUNS),
                               description="LoRA alpha: the update is scaled by alpha / rank.")
    lora_dropout: float = Field(0.0, title="LoRA dropout", ge=0, lt=1,
                                json_schema_extra=_at(LORA, 0, finetuning=LORA_RUNS), description=(
        "Dropout on the LoRA input during training, in [0, 1). 0 by default: a mask per adapted layer cost a fifth "
        "of a CPU training step (docs/benchmarks.md); 0.05-0.1 may help a small dataset over many epochs."))
    target_modules: str | list[str] = Field("all-linear", title="Target modules",
                                            json_schema_extra=_at(LORA, 1, finetuning=LORA_RUNS), description=(
        "Which layers get LoRA: a preset ('attention': q,k,v,o; 'mlp': gate,up,down; 'all-linear': every Linear "
        "but the output head; 'embeddings': the token embeddings, with modules_to_save ['lm_head'] to train the head "
        "fully too, e.g. for new tokens) or a list of the base's Linear or embedding module names such as "
        "['q_proj', 'v_proj']."))
    lora_bias: Literal["none", "all", "lora_only"] = Field("none", title="LoRA bias",
                                                           json_schema_extra=_at(LORA, 2, finetuning=LORA_RUNS),
                                                           description=(
        "Which biases train too: none, all of the model's, or only those of the LoRA-adapted layers."))
    use_rslora: bool = Field(False, title="rsLoRA", json_schema_extra=_at(LORA, 2, finetuning=LORA_RUNS), description=(
        "Rank-stabilized LoRA: scale the update by alpha / sqrt(rank) instead of alpha / rank, so higher ranks "
        "keep learning."))
    use_dora: bool = Field(False, title="DoRA", json_schema_extra=_at(LORA, 2, finetuning=LORA_RUNS), description=(
        "Weight-decomposed LoRA: learn a magnitude per output as well as the direction update. Often better at low "
        "rank, about twice as slow on a 4-bit base (the weight is dequantized each step)."))
    modules_to_save: list[str] = Field(default_factory=list, title="Modules to train fully",
                                       json_schema_extra=_at(LORA, 2, finetuning=LORA_RUNS), description=(
        "Modules trained in full and saved with the adapter, e.g. ['lm_head'] (large: a full copy each)."))
    # LoRA variants and inits (issue 31): PEFT's own options, read in jobs.run_settings; NEFTune through the Trainer.
    init_lora_weights: Literal["default", "gaussian", "pissa", "olora", "loftq"] = Field(
        "default", title="LoRA init", json_schema_extra=_at(LORA, 3, finetuning=LORA_RUNS), description=(
            "How the new adapter starts. default: PEFT's own (A Kaiming-uniform, B zero: the adapter starts as a "
            "no-op); gaussian: the same with A drawn from a normal of std 1 / rank. pissa / olora: "
            "A and B start from the base's principal singular vectors (PiSSA) or its QR factors (OLoRA), taken out of "
            "the base while training; the saved adapter is converted to apply to the original base (twice the rank "
            "on disk). Both need quantization 'none' (PEFT cannot take them out of a 4-bit or 8-bit base exactly). "
            "loftq: A and B start as the low-rank part of the base's 4-bit quantization error (nf4 or fp4; needs "
            "a CUDA worker)."))
    pissa_niter: int = Field(0, title="PiSSA fast-SVD iterations", ge=0, le=64, validate_default=True,
                             json_schema_extra=_at(LORA, 3, finetuning=LORA_RUNS), description=(
        "For pissa: 0 takes the exact SVD; N > 0 a randomized low-rank SVD with N subspace iterations (PEFT's "
        "pissa_niter_N: seconds instead of minutes on a large base, about the same start)."))
    loraplus_lr_ratio: float | None = Field(None, title="LoRA+ ratio", ge=1, le=1024,
                                            json_schema_extra=_at(LORA, 3, finetuning=LORA_RUNS), description=(
        "LoRA+: train each B matrix at this many times the learning rate of A (PEFT's create_loraplus_optimizer; the "
        "paper suggests 16, with a learning rate about half the usual). Empty (null; 0 in the form): one learning "
        "rate for both."))
    neftune_noise_alpha: float | None = Field(None, title="NEFTune noise alpha", gt=0, le=100,
                                              json_schema_extra=_at(OPTIMISATION, 1), description=(
        "NEFTune: add uniform noise of scale alpha / sqrt(tokens × width) to the input embeddings while training "
        "(never at eval or in chat); the paper used 5 to 15. With packing a row is all the batch's tokens, so the "
        "noise per token is smaller. Empty (null; 0 in the form): no noise."))

    quantization: Literal["nf4", "fp4", "int8", "none"] = Field("nf4", title="Base quantization", validate_default=True,
                                                                json_schema_extra=_at(COMMON, 1, finetuning=LORA_RUNS),
                                                                description=(
        "How the frozen base is stored: 4-bit NormalFloat (QLoRA), 4-bit float, 8-bit, or unquantized."))
    double_quant: bool = Field(True, title="Double quantization", validate_default=True,
                               json_schema_extra=_at(SPEED, 0, finetuning=LORA_RUNS), description=(
        "Quantize the 4-bit scales too (about 0.37 bits per parameter saved). 4-bit only."))
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", title="Compute dtype",
                                                                             json_schema_extra=_at(SPEED, 0),
                                                                             description=(
        "Dtype for matmuls on the dequantized weights. 'auto': bfloat16 on GPUs that support it (else float16); "
        "on a CPU, bfloat16 where it multiplies bf16 natively (AVX512-BF16 or AMX) and the model is at least 512 "
        "wide (SmolLM2 trained 1.5x faster at the same loss; the tiny demo 5% slower), else float32 (without "
        "native bf16 it is emulated and slow). docs/benchmarks.md."))
    # Memory target (issue 34): the plan fits the job's estimated peak under this budget (jobs.models.budget).
    memory_budget_gib: float | None = Field(None, title="Memory budget (GiB)", gt=0, le=MAX_MEMORY_BUDGET_GIB,
                                            json_schema_extra={**_at(SPEED, 3), "empty": "no target"},
                                            description=(
        "The most memory the training process may peak at, in GiB (on a CPU its peak resident set, Python and torch "
        "included; on a GPU its peak reserved memory). The plan picks the levers you left empty or 'auto', fastest "
        "first: a smaller batch size with more gradient accumulation (the same effective batch), then packed "
        "sequences in two shorter forward passes (tokens per forward pass), then gradient checkpointing, so the "
        "estimated peak fits; the plan shows the choice, its peak and its relative speed. "
        "A budget below the smallest this job can peak at is refused with that smallest budget. Empty (null; 0 in "
        "the form): the device's free memory is the ceiling: the levers move only if the plan does not fit in it."))

    max_steps: int = Field(-1, title="Max steps", ge=1, le=MAX_STEPS, json_schema_extra={
        **_at(COMMON, 1), "special": {"value": -1, "means": "use num_epochs"}}, description=(
        "Optimizer steps to train; -1: train for num_epochs instead."))
    num_epochs: float | None = Field(None, title="Epochs", gt=0, le=1000,
                                     json_schema_extra=_at(COMMON, 0), description=(
        "Passes over the training data, used when max_steps is -1. Empty (null; 'auto' in the form): enough for at "
        "least 100 steps, from 1 to 10 epochs (the Train tab shows the plan)."))
    learning_rate: float | None = Field(None, title="Learning rate", gt=0, le=1,
                                       json_schema_extra=_at(COMMON, 0), description=(
        "Peak learning rate (cosine decay after a short warmup). Empty (null; 'auto' in the form): chosen from the "
        "base's size, 2e-4 at 7B parameters scaled by (7B / size)^0.7 within 1e-4 to 5e-3 (3.2e-3 for a 135M "
        "model, 5e-3 for the demo)."))
    optimizer: Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"] = Field(
        "adamw_torch", title="Optimizer", json_schema_extra=_at(OPTIMISATION, 0), description=(
            "AdamW in 32 bits (torch), or bitsandbytes' 8-bit AdamW (its two states in 8 bits: a quarter of the "
            "memory), optionally paged to CPU memory under GPU memory pressure. Paging needs CUDA: on a CPU worker a "
            "paged choice runs the same optimizer unpaged, and the run's log says so."))
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", title="LR schedule", json_schema_extra=_at(OPTIMISATION, 0),
        description="How the learning rate moves after warmup.")
    weight_decay: float = Field(0.0, title="Weight decay", ge=0, le=1,
                                json_schema_extra=_at(OPTIMISATION, 0), description=(
        "AdamW's decoupled weight decay on the trained weights, in [0, 1]."))
    max_grad_norm: float = Field(1.0, title="Max grad norm", ge=0, le=1e6,
                                 json_schema_extra=_at(OPTIMISATION, 0), description=(
        "Clip the gradient norm to this before each step; 0 turns clipping off."))
    batch_size: int | None = Field(None, title="Batch size", ge=1, le=4096,
                                   json_schema_extra=_at(COMMON, 0), description=(
        "Sequences per device step. With packing, each sequence is up to max_length tokens of whole rows. Empty "
        "(null; 'auto' in the form): chosen so an epoch makes at least 32 steps (the data's sequences / 32, from 1 "
        "to 8)."))
    grad_accum: int = Field(1, title="Gradient accumulation", ge=1, le=1024, json_schema_extra=_at(OPTIMISATION, 1),
        description="Steps to accumulate gradients over; effective batch = batch × this.")
    max_length: int = Field(512, title="Max length (tokens)", ge=16, le=131072, json_schema_extra=_at(COMMON, 1),
        description="Longest sequence in tokens; longer rows are truncated.")
    overlong: Literal["truncate", "drop"] = Field("truncate", title="Rows longer than max length",
                                                 json_schema_extra=_at(DATA, 0), description=(
        "Cut a row longer than max_length at it (its end is lost), or drop the row. The Datasets tab and the preview "
        "count them for the chosen base."))
    dedup: bool = Field(False, title="Drop exact duplicates", json_schema_extra=_at(DATA, 0), description=(
        "Train on each distinct row once (exact repeats removed; the log and the preview count them)."))
    warmup_ratio: float = Field(0.05, title="Warmup ratio", ge=0, le=0.5, json_schema_extra=_at(OPTIMISATION, 1),
        description="Share of steps spent warming up the learning rate.")
    packing: bool | None = Field(None, title="Packing", json_schema_extra=_at(DATA, 2, methods=("sft",)), description=(
        "Pack whole rows into sequences of up to max_length tokens, padding-free (position ids, no padding; "
        "padding was 62% of a padded batch on the example data). Empty (auto): on, unless the data packs into "
        "fewer than 10 sequences; then each row is its own sequence, so a small dataset still gets enough steps."))
    gradient_checkpointing: Literal["auto", "on", "off"] = Field("auto", title="Gradient checkpointing",
                                                                  json_schema_extra=_at(SPEED, 0), description=(
        "Recompute activations to save memory. 'auto': on for GPUs, off on CPU (measured 30% faster off)."))
    pack_length: int | None = Field(None, title="Tokens per forward pass", ge=16, le=131072,
                                    json_schema_extra=_at(SPEED, 0, methods=("sft",)), description=(
        "With packing, each packed sequence of max_length tokens trains in forward passes of this many tokens, "
        "gradients accumulated over them: a step trains the same tokens with a shorter pass's activations, so less "
        "memory for some speed (SmolLM2 on a 2-core CPU, two passes of 256: 0.4 GB lower, 0.85x the tokens/s). A "
        "divisor of max_length and at least the longest row (rows are cut at max_length, "
        "never shorter). Empty: max_length (one pass), unless a memory budget or the device's free memory needs "
        "less (the plan says). sft only."))
    assistant_only_loss: bool = Field(True, title="Assistant-only loss", json_schema_extra=_at(DATA, 2), description=(
        "Train only on assistant turns (needs a chat template with generation markers)."))
    # Data: mixing, template, system prompt, turns
    dataset_mix: list[str] = Field(default_factory=list, title="Dataset mix", max_length=MAX_MIX_DATASETS,
                                   json_schema_extra=_at(DATA, 1), description=(
        "Several datasets mixed by ratio, as 'name:ratio' entries (comma-separated in the form), e.g. ['example:0.7', "
        "'pirate:0.3']: the ratios add up to 1, the datasets are of one kind (chat, raw text or preference) and "
        "include the dataset field's. Rows are sampled with the seed (same spec, same rows); a ratio asking for more "
        "rows than its dataset has takes the dataset whole, never repeating a row, and the run log and the plan say "
        "how many rows came from each. Empty: the dataset alone."))
    max_rows: int | None = Field(None, title="Row budget", ge=1, le=MAX_ROWS,
                                 json_schema_extra={**_at(DATA, 1), "empty": "every row (a mix: all it can take)"},
                                 description=(
        "Total rows to train on (and hold out from), sampled with the seed: shared out by the mix's ratios, or taken "
        "from the one dataset. Empty (null; 0 in the form): with a mix, as many as the ratios allow using each row "
        "at most once; without one, every row."))
    loss_turns: Literal["all", "last"] = Field("all", title="Loss on turns", validate_default=True,
                                               json_schema_extra=_at(DATA, 1, methods=("sft",)), description=(
        "Which assistant turns of a chat carry loss: all of them, or only the last (the earlier turns are context, "
        "as at inference). sft only."))
    system_prompt: str = Field("", title="Default system prompt", max_length=MAX_SYSTEM_PROMPT_CHARS,
                               json_schema_extra={**_at(DATA, 3), "lines": 2}, description=(
        "A system message added first to every chat (and preference prompt) that has none of its own; empty: none "
        "added."))
    chat_template: str = Field("", title="Chat template", max_length=MAX_TEMPLATE_CHARS,
                               json_schema_extra={**_at(DATA, 3), "lines": 2}, description=(
        "The chat template the rows are rendered with, saved with the adapter's tokenizer so chat, evaluation and "
        "export render the same way: empty for the base's own, a known one by name ('chatml', 'smollm2', or one of "
        "TRL's: 'llama3', 'qwen2_5', 'qwen3', 'gemma', 'phi3', ...), or a pasted Jinja template (rendered sandboxed). "
        "With assistant_only_loss it needs {% generation %} ... {% endgeneration %} around the assistant's answer "
        "(a known template gets them from its training twin)."))
    seed: int = Field(42, title="Seed", ge=0, le=2**32 - 1,
                      json_schema_extra=_at(OPTIMISATION, 1),
                      description="Seed for LoRA init, data order and dropout; same seed, same run.")
    eval_fraction: float | None = Field(None, title="Eval fraction", ge=0, lt=0.5,
                                        json_schema_extra=_at(COMMON, 0), description=(
        "Share of rows held out for eval loss, early stopping, the best adapter and sample answers, in [0, 0.5); 0: "
        "none (unused with a validation dataset). Empty (null; 'auto' in the form): none below 500 rows, where "
        "every row is worth more in training (holding out a tenth of 320 rows cost 2-4% in held-out loss, "
        "bench/eval_split.py), and where those rows train 2 epochs or more the plan says they could be memorised, "
        "with a held-out tenth one click away in the Train tab; from 500 rows a tenth, at most 200 rows."))
    eval_dataset: str = Field("", title="Validation dataset", json_schema_extra=_at(DATA, 0), description=(
        "A stored dataset to evaluate on instead of a random eval_fraction of the training rows (all training rows "
        "then train); empty: hold out eval_fraction."))
    eval_steps: int = Field(25, title="Eval every (steps)", ge=1, le=MAX_STEPS,
                            json_schema_extra=_at(TRACKING, 0), description=(
        "Evaluate every this many steps (when there is an eval split; without one, the sample answers come this "
        "often)."))
    logging_steps: int = Field(5, title="Log every (steps)", ge=1, le=MAX_STEPS, json_schema_extra=_at(TRACKING, 0),
        description="Log loss, learning rate and throughput every this many steps.")
    save_steps: int = Field(50, title="Checkpoint every (steps)", ge=1, le=MAX_STEPS,
                            json_schema_extra=_at(TRACKING, 0),
        description="Save a resumable checkpoint every this many steps.")
    sample_prompts: int = Field(3, title="Sample answers", ge=0, le=20, json_schema_extra=_at(TRACKING, 0),
                                description=(
        "Prompts the run answers (greedy) at each eval and at the end, and the base model before training, shown "
        "side by side in the Runs tab so learning is visible: held-out rows' prompts, or in a run without an eval "
        "split the first training rows' (answered every eval_steps); 0: none."))
    early_stopping_patience: int = Field(3, title="Early stopping patience", ge=0, le=1000,
                                         json_schema_extra=_at(TRACKING, 1), description=(
        "Stop when eval loss has not improved for this many evals in a row; 0: never stop early. Needs an eval "
        "split."))
    keep_best: bool = Field(True, title="Keep the best adapter", json_schema_extra=_at(TRACKING, 1), description=(
        "Register the adapter as it was at its lowest eval loss rather than at the last step (the run records "
        "which step that was). Needs an eval split."))
    pool: str = Field("", title="Worker pool", max_length=63, json_schema_extra=_at(TRACKING, 1), description=(
        "Run only on workers of this pool (a worker's STUDIO_POOL, e.g. a100-80g); the memory verdict then checks "
        "that pool's devices. Empty: any worker."))

    # Tracking, speed, long inputs
    report_to: Literal["none", "tensorboard", "mlflow", "trackio", "wandb"] = Field(
        "none", title="Experiment tracking", json_schema_extra=_at(TRACKING, 1), description=(
            "Also log the run's metrics to an experiment tracker, locally and offline, in the run's folder "
            "(runs/job-N/tracking/...; the Runs tab shows where): tensorboard (event files), mlflow (a SQLite store; "
            "needs mlflow installed), trackio (its local database), wandb (Weights & Biases, project 'studio', with "
            "your own W&B API key from the Account tab; online unless the workers set WANDB_MODE=offline). none: "
            "the studio's own curves only."))
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", title="Attention implementation", json_schema_extra=_at(SPEED, 1), description=(
            "How attention is computed: auto (the library's pick, sdpa), eager (plain matmuls; keeps heads x T x T "
            "probabilities per layer), sdpa (PyTorch's fused attention), flash_attention_2 (CUDA with flash-attn "
            "installed; elsewhere the run uses sdpa and its log says so)."))
    torch_compile: bool = Field(False, title="torch.compile", json_schema_extra=_at(SPEED, 1), description=(
        "Compile the model with torch.compile: slower first steps, then possibly faster ones (docs/benchmarks.md). "
        "A worker that cannot compile (no compiler, or TORCHDYNAMO_DISABLE set) runs uncompiled and its log says "
        "so."))
    liger_kernel: bool = Field(False, title="Liger kernels", json_schema_extra=_at(SPEED, 1), description=(
        "Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy). CUDA with liger-kernel "
        "installed only; elsewhere the run goes without and its log says so."))
    rope_scaling: Literal["none", "linear", "dynamic", "yarn"] = Field(
        "none", title="RoPE scaling", json_schema_extra=_at(SPEED, 2), description=(
            "Stretch the base's rotary positions to train on max_length beyond its context "
            "(max_position_embeddings): linear (positions divided by the factor), dynamic (NTK-aware, grows with "
            "the length), yarn. Only when max_length exceeds the base's context; chat loads the adapter's base "
            "with the same scaling."))
    rope_factor: float | None = Field(None, title="RoPE factor", gt=1, le=32, validate_default=True,
                                      json_schema_extra=_at(SPEED, 2), description=(
        "How far rope_scaling stretches the context: the base's context x this must reach max_length. Needed with "
        "rope_scaling; empty without it."))
    # One job on several devices (issue 32, DDP slice): data parallel ranks launched by torchrun
    devices: int | Literal["all"] = Field(1, title="Devices", ge=1, le=MAX_DEVICES, json_schema_extra={
        **_at(SPEED, 3), "special": {"value": ALL_DEVICES, "means": "every device of one host that may take it"}},
        description=(
        "Devices this one job trains on at once, data parallel (DDP: each device holds the 4-bit base, only the "
        "LoRA gradients are averaged, tokens are averaged across devices). Above 1 it needs a host with that many "
        "devices: GPUs (nccl), or on a CPU host that many gloo processes sharing its cores; a job that names a pool "
        "may span several of its hosts, the same number of devices on each. 'all': as many as the "
        "most one live worker of its pool (or any) has, counted when it is queued (the plan says how many). "
        "batch_size is per device, so the effective batch is batch_size x grad_accum x devices. "
        "docs/scale-out.md."))

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
        if "\x00" in value or not value.isprintable() or not encodable(value):
            raise ValueError("holds a control character or an invalid (unpaired surrogate) character")
        return value

    @field_validator("dataset_mix", mode="before")
    @classmethod
    def _mix_text(cls, value: object) -> object:
        # The form and the CLI type 'a:0.7, b:0.3'; an empty box is no mix.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("dataset_mix")
    @classmethod
    def _mix(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value:
            return value
        problems, entries = [], []
        for entry in value:
            name, colon, ratio_text = entry.rpartition(":")
            name = name.strip()
            try:
                ratio = float(ratio_text)
            except ValueError:
                ratio = None
            if not colon or ratio is None:
                problems.append(f"'{entry[:60]}' is not 'dataset:ratio' (e.g. 'example:0.7')")
            elif name_problem(name):
                problems.append(f"'{name[:60]}': the dataset name {name_problem(name)}")
            elif not 0 < ratio <= 1:
                problems.append(f"'{entry}': the ratio must be above 0 and at most 1")
            else:
                entries.append((name, ratio))
        if problems:
            raise ValueError("; ".join(problems))
        names = [name for name, _ in entries]
        if twice := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"{', '.join(twice)} listed more than once")
        total = sum(ratio for _, ratio in entries)
        if abs(total - 1) > MIX_TOLERANCE:
            raise ValueError(f"the ratios add up to {total:g}, not 1: make them shares of the whole (e.g. 0.7 and 0.3)")
        dataset = info.data.get("dataset")
        if dataset and dataset not in names:
            raise ValueError(f"must include the dataset field's '{dataset}' with its ratio (e.g. '{dataset}:0.5'), or "
                             f"set the dataset field to one of the mix's datasets")
        return [f"{name}:{ratio:g}" for name, ratio in entries]

    @field_validator("loss_turns")
    @classmethod
    def _turns_need_sft(cls, value: str, info: ValidationInfo) -> str:
        if value != "all" and info.data.get("method", "sft") != "sft":
            raise ValueError("applies only to method sft (preference methods score whole answers); leave it 'all'")
        return value

    @field_validator("system_prompt")
    @classmethod
    def _system_text(cls, value: str) -> str:
        if problem := unstorable_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("chat_template")
    @classmethod
    def _template_text(cls, value: str) -> str:
        # What the template is (a known name, parseable Jinja with the markers it needs) is checked at submit
        # (jobs.submit, with jobs.models.templates): the spec only bounds the text.
        if problem := unstorable_problem(value):
            raise ValueError(problem)
        return value.strip() if "{" not in value else value  # a name typed with spaces; a template byte for byte

    @field_validator("name")
    @classmethod
    def _name_chars(cls, value: str) -> str:
        problem = value and name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("modules_to_save")
    @classmethod
    def _saved_modules(cls, value: list[str], info: ValidationInfo) -> list[str]:
        bad = [name for name in value if not name.replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise ValueError(f"not a module name: {', '.join(map(repr, bad))}")
        if "lm_head" in value and info.data.get("method") == REWARD_METHOD:
            raise ValueError("method reward has no lm_head (its output is the score head, which trains already): "
                             "leave lm_head out")
        return list(dict.fromkeys(value))

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            if value in TARGET_PRESETS:
                return value
            if value == RETIRED_TARGET_PRESET:
                raise ValueError(f"'{value}' is no longer a preset (LoRA cannot adapt lm_head): use 'embeddings' "
                                 f"with modules_to_save ['lm_head']")
            value = [part.strip() for part in value.split(",")]
        names = [name for name in value if name]
        if not names:
            raise ValueError("name at least one module, or use 'attention' or 'all-linear'")
        bad = [name for name in names if not name.replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise ValueError(f"not a module name: {', '.join(map(repr, bad))}")
        return names

    @field_validator("max_steps", "devices", mode="wrap")
    @classmethod
    def _special_value(cls, value: object, handler, info: ValidationInfo) -> object:
        # A field's `special` value (max_steps' -1, devices' 'all') lies outside its range, which the constraints
        # alone refuse.
        allowed = special(cls.model_fields[info.field_name])
        plain = isinstance(value, int | float | str) and not isinstance(value, bool)
        if allowed and plain and value == allowed["value"]:
            return allowed["value"]
        if allowed and isinstance(allowed["value"], str):  # a count or a word: one message, not pydantic's two
            try:
                return handler(value)
            except ValidationError:
                raise ValueError(f"must be {range_words(cls.model_fields[info.field_name])} (got {value!r})") from None
        return handler(value)

    @field_validator("finetuning")
    @classmethod
    def _whole_model_method(cls, value: str, info: ValidationInfo) -> str:
        # A whole-model run has no adapter to switch off for a reference (DPO, KTO) and no LoRA to continue; the
        # other methods are refused until they are tested this way.
        if value == "lora":
            return value
        problems = []
        if info.data.get("method", "sft") != "sft":
            problems.append(f"'{value}' trains with method sft only (got {info.data['method']!r}): set method to sft "
                            "or finetuning to lora")
        if info.data.get("init_adapter"):
            problems.append(f"'{value}' trains the base's own weights and cannot continue the adapter "
                            f"'{info.data['init_adapter']}': leave init_adapter empty or use lora")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("freeze_trainable_layers", "freeze_train_head")
    @classmethod
    def _freeze_only(cls, value: object, info: ValidationInfo) -> object:
        if info.data.get("finetuning", "lora") != "freeze" and value != cls.model_fields[info.field_name].default:
            raise ValueError("applies only to finetuning 'freeze'; leave it at its default "
                             f"({cls.model_fields[info.field_name].default!r})")
        return value

    @field_validator(*LORA_ONLY_FIELDS)
    @classmethod
    def _lora_only(cls, value: object, info: ValidationInfo) -> object:
        # A LoRA option set under full or freeze would silently do nothing: refused, naming the field.
        finetuning = info.data.get("finetuning", "lora")
        field = cls.model_fields[info.field_name]
        default = field.default if field.default_factory is None else field.default_factory()
        if finetuning != "lora" and value != default:
            raise ValueError(f"is a LoRA option and finetuning is '{finetuning}' (no adapter trains): leave it at "
                             f"its default ({default!r}) or set finetuning to lora")
        return value

    @field_validator("init_lora_weights")
    @classmethod
    def _init_fits_the_adapter(cls, value: str, info: ValidationInfo) -> str:
        # PiSSA and OLoRA are saved converted (PEFT's path_initial_model_for_weight_conversion), which keeps only the
        # LoRA matrices: whatever else the adapter holds would be lost, so those combinations are refused here.
        data = info.data
        if value != "default" and data.get("init_adapter"):
            raise ValueError(f"'{value}' starts a new adapter, but init_adapter continues '{data['init_adapter']}' "
                             "from its trained weights: use 'default' (unused then) or leave init_adapter empty")
        if value in PLAIN_INITS:
            return value
        if data.get("use_dora"):
            raise ValueError(f"'{value}' with use_dora: PEFT's {value} start does not carry DoRA's magnitudes; turn "
                             "use_dora off or use 'default'")
        if value in CONVERTED_INITS and data.get("method") in REFERENCE_METHODS:
            method = data["method"]
            raise ValueError(f"'{value}' with method {method}: a new adapter's {method} reference is the base with the "
                             f"adapter off, which a {value} start leaves as the residual, not the base; train an sft "
                             f"adapter with '{value}' first and continue it with {method} (init_adapter)")
        if value in CONVERTED_INITS:
            extras = [f"{name} {data[name]!r}" for name, off in (("modules_to_save", []), ("lora_bias", "none"))
                      if name in data and data[name] != off]
            if extras:
                raise ValueError(f"'{value}' adapters are saved converted to apply to the original base, and the "
                                 f"conversion keeps only the LoRA matrices: {' and '.join(extras)} would be lost; "
                                 "leave them at their defaults or use 'default'")
            targets = data.get("target_modules")
            names = TARGET_PRESETS.get(targets, []) if isinstance(targets, str) else targets or []
            if any(name in TARGET_PRESETS["embeddings"] for name in names):
                raise ValueError(f"'{value}' starts Linear layers only (PEFT has no {value} for embeddings); leave "
                                 "embed_tokens out of target_modules or use 'default'")
        return value

    @field_validator("pissa_niter")
    @classmethod
    def _niter_is_for_pissa(cls, value: int, info: ValidationInfo) -> int:
        if value and info.data.get("init_lora_weights") != "pissa":
            raise ValueError("applies only to init_lora_weights 'pissa'; set it to 0")
        return value

    @field_validator("quantization")
    @classmethod
    def _init_needs_quantization(cls, value: str, info: ValidationInfo) -> str:
        # Measured on the demo base: OLoRA on nf4 moved the logits by 2.2 at its start (PEFT re-quantizes the
        # residual) and its converted adapter missed the trained model by 2.5; PEFT refuses PiSSA on any bnb weight.
        init = info.data.get("init_lora_weights")
        if init in CONVERTED_INITS and value != "none":
            raise ValueError(f"init_lora_weights '{init}' needs quantization 'none': PEFT takes the {init} start out "
                             f"of the base's full-precision weights and cannot do it exactly on a base quantized as "
                             f"{value} (the adapter would not apply to the shared base). Set quantization to 'none', "
                             f"or init_lora_weights to 'loftq' (4-bit) or 'default'")
        if init == "loftq" and value not in ("nf4", "fp4"):
            raise ValueError(f"init_lora_weights 'loftq' fits the adapter to a 4-bit base's quantization error "
                             f"(PEFT's replace_lora_weights_loftq, 4-bit only), not to quantization '{value}'. "
                             "Set quantization to 'nf4' (or 'fp4'), or init_lora_weights to 'default'")
        return value

    @field_validator("double_quant")
    @classmethod
    def _double_quant_needs_4bit(cls, value: bool, info: ValidationInfo) -> bool:
        # Checked on the default too (validate_default): int8 with the default double_quant is refused, in words.
        if value and info.data.get("quantization") in ("int8", "none"):
            raise ValueError("applies only to 4-bit quantization (nf4 or fp4); turn it off")
        return value

    @field_validator("pack_length")
    @classmethod
    def _pack_length_divides_max_length(cls, value: int | None, info: ValidationInfo) -> int | None:
        # A divisor, so a packed sequence is whole forward passes and a step trains exactly the tokens it did.
        max_length = info.data.get("max_length")
        if value is not None and max_length is not None and (value > max_length or max_length % value):
            raise ValueError(f"must divide max_length ({max_length}) (half of it: two forward passes a packed "
                             "sequence); leave it empty for one")
        return value

    @field_validator("rope_factor")
    @classmethod
    def _rope_factor_with_scaling(cls, value: float | None, info: ValidationInfo) -> float | None:
        scaling = info.data.get("rope_scaling", "none")
        if value is None and scaling != "none":
            raise ValueError(f"rope_scaling {scaling} needs a factor: max_length / the base's context (e.g. 2)")
        if value is not None and scaling == "none":
            raise ValueError("applies only with rope_scaling (linear, dynamic or yarn): set one, or leave this empty")
        return value

    @field_validator("grpo_rewards")
    @classmethod
    def _reward_terms(cls, value: str) -> str:
        parse_terms(value)  # raises ValueError naming the bad term
        return value

    @field_validator("grpo_max_chars")
    @classmethod
    def _length_range(cls, value: int, info: ValidationInfo) -> int:
        if value < info.data.get("grpo_min_chars", 0):
            raise ValueError(f"must be at least grpo_min_chars ({info.data['grpo_min_chars']})")
        return value

    @field_validator("grpo_regex", "grpo_json_schema", "grpo_reward_code")
    @classmethod
    def _reward_settings(cls, value: str, info: ValidationInfo) -> str:
        # Checked whenever given; required only where a GRPO run rewards with it (validate_default: an empty one).
        reward = REWARD_OF_FIELD[info.field_name]
        try:
            terms = dict(parse_terms(info.data.get("grpo_rewards", "")))
            chosen = info.data.get("method") == "grpo" and reward in terms
        except ValueError:
            chosen = False  # grpo_rewards is refused on its own
        if not value:
            if chosen:
                raise ValueError(f"the {reward} reward is chosen in grpo_rewards: give it here")
            return value
        problem = {"grpo_regex": pattern_problem, "grpo_json_schema": schema_problem,
                   "grpo_reward_code": code_problem}[info.field_name](value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("grpo_reward_adapter")
    @classmethod
    def _reward_adapter(cls, value: str, info: ValidationInfo) -> str:
        # Which adapter it names is checked at submit (jobs.submit: yours, a reward model, of this base).
        try:
            chosen = info.data.get("method") == "grpo" and "reward_model" in dict(
                parse_terms(info.data.get("grpo_rewards", "")))
        except ValueError:
            return value  # grpo_rewards is refused on its own
        if chosen and not value.strip():
            raise ValueError("the reward_model reward is chosen in grpo_rewards: name your reward adapter here")
        if value and not chosen:
            raise ValueError("applies only when method is grpo and grpo_rewards names reward_model: add "
                             "'reward_model' there, or leave this empty")
        return value

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, raw: object) -> object:
        # A spec written under older rules is brought up to date before it is checked (jobs.spec_versions).
        return migrate(raw) if isinstance(raw, dict) else raw

    def mix_parts(self) -> list[tuple[str, float]]:
        """(dataset, ratio) of every dataset the rows come from: the mix, or the one dataset whole."""
        if not self.dataset_mix:
            return [(self.dataset, 1.0)]
        return [(name, float(ratio)) for name, _, ratio in (entry.rpartition(":") for entry in self.dataset_mix)]

    def forward_passes(self) -> int:
        """Forward passes a packed sequence of max_length tokens trains in: max_length / pack_length for packed SFT
        with a pack_length, else 1. The run settings (jobs.run_settings) and the plan (jobs.step_plan) read it."""
        if self.method != "sft" or not self.packing or self.pack_length is None:
            return 1
        return self.max_length // self.pack_length

    def ranks(self) -> int:
        """The data-parallel ranks that share each epoch: `devices` ('all' counts as one until submit stores the
        host's count in its place). The plan (jobs.step_plan) and an out-of-memory retry (jobs.queue.retries) read
        it."""
        return self.devices if isinstance(self.devices, int) else 1

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


class CombinedParent(BaseModel):
    """One adapter of a combination, pinned by id (a rename after submit does not matter) with its weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter: str = Field(description="The adapter's name when the combination was asked for.")
    adapter_id: int
    weight: float


class CombineSpec(BaseModel):
    """A combine job: a new adapter made from several adapters of one base by PEFT's `add_weighted_adapter`.
    Checked at submit (jobs.combine_rules), stored verbatim, built by a worker like training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The new adapter's name.")
    base_model: str = Field(description="The base every parent was trained on.")
    parents: list[CombinedParent]
    combination_type: str = Field(description="PEFT's combination_type (jobs.combine_rules.TYPES).")
    density: float | None = Field(None, description="Share of each task vector kept (TIES, DARE, magnitude "
                                                    "pruning); None for the types that keep everything.")
    majority_sign_method: str | None = Field(None, description="How TIES elects each weight's sign: 'total' "
                                                               "(summed magnitude) or 'frequency' (count).")
    svd_rank: int | None = Field(None, description="The svd types' new rank; None: the largest parent rank.")
    seed: int = Field(0, description="torch's seed before combining: DARE drops weights at random.")


class ExportSpec(BaseModel):
    """An export job: the adapter's merged model as GGUF (llama.cpp, Ollama, LM Studio), its LoRA as a GGUF
    adapter where llama.cpp takes one, and an Ollama Modelfile. Built by a worker, like training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter: str = Field(description="Name of the adapter to export (as it was when the export was asked for).")
    adapter_id: int = Field(description="The adapter's id: the export follows the adapter through renames.")
    quantization: Literal["f16", "q8_0", "q4_k_m"] = Field("q8_0", description=(
        "The GGUF's weights: f16 (16-bit, the reference), q8_0 (8-bit, about half the size, near f16), or q4_k_m "
        "(4-bit, the usual pick to run locally; needs llama.cpp's quantizer on the worker)."))


EMPTY_SPEC = ("is empty: name at least one field (each has a default; static/examples/demo_job.json is a full "
              "example)")
MAX_PRIORITY = 1_000_000


def salvage_spec(raw: dict, problems: list[Problem]) -> TrainSpec:
    """A spec from the fields that did validate (defaults elsewhere), to keep checking the rest. A field is kept only
    while the spec stays valid with it: a cross-field rule may refuse a kept field against another's default."""
    bad_fields = {p.field.split(".")[0] for p in problems}
    kept: dict = {}
    for name, value in raw.items():
        if name in TrainSpec.model_fields and name not in bad_fields:
            try:
                TrainSpec.model_validate({**kept, name: value})
            except ValidationError:
                continue
            kept[name] = value
    return TrainSpec.model_validate(kept)


def priority_problem(priority: object) -> str | None:
    if not isinstance(priority, int) or isinstance(priority, bool):
        return "must be a whole number"
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        return f"must be from {-MAX_PRIORITY:,} to {MAX_PRIORITY:,} (got {priority})"
    return None


def parse_spec(raw: dict) -> TrainSpec:
    """Validate a spec against its type. Raises SpecError listing every problem, each naming its field."""
    if not isinstance(raw, dict):
        raise SpecError([Problem(field="spec", message="must be a JSON object of field: value pairs")])
    try:
        return TrainSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(problems_from(error, TrainSpec.model_fields)) from None


def field_problem(name: str, value: object) -> str | None:
    """Why `value` cannot be the spec field `name` on its own (its type and range), in the spec's words, or None: for
    a control outside the spec that takes a spec value (the Datasets tab's max_length)."""
    try:
        parse_spec({name: value})
    except SpecError as error:
        return next((problem.message for problem in error.problems if problem.field == name), None)
    return None


def field_default(name: str) -> object:
    """A field's default, as the type states it: for code outside the spec that needs the same value (a preview's
    max_length, the CLI's), so no default is restated."""
    field = TrainSpec.model_fields[name]
    return field.default if field.default_factory is None else field.default_factory()


def field_label(name: str, spec_type: type[BaseModel] = TrainSpec) -> str:
    """The human label the UI shows for a spec field."""
    return spec_type.model_fields[name].title or name


def field_help(name: str, spec_type: type[BaseModel] = TrainSpec) -> str:
    """The field's help text, then its allowed numbers, ending with the spec field name (what the CLI, API and
    presets use): the form's info tooltip shows it whole."""
    field = spec_type.model_fields[name]
    allowed = range_words(field)
    allowed_text = f" Allowed: {allowed}." if allowed else ""
    return f"{field.description or ''}{allowed_text} Spec field: {name}."


_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<!etc)[.!?](?=\s|$)")
_CLAUSE_END = re.compile(r"; |: | \(|, | e\.g\. ")
SHORT_HELP_CHARS = 90
"""The most the form's one help line shows (one line at a third of a 1400 px page); the tooltip has the rest."""


def short_help(name: str, spec_type: type[BaseModel] = TrainSpec) -> str:
    """The help's first sentence, or where it runs long its longest opening clause that fits SHORT_HELP_CHARS (then
    '…'): the one line the form shows under a field; its tooltip shows the whole help, so the spec states each
    field's help once."""
    text = spec_type.model_fields[name].description or ""
    end = _SENTENCE_END.search(text)
    first = text[:end.end()] if end else text
    if len(first) <= SHORT_HELP_CHARS:
        return first
    cuts = [m.start() for m in _CLAUSE_END.finditer(first) if m.start() <= SHORT_HELP_CHARS]
    if not cuts:
        cuts = [first.rfind(" ", 0, SHORT_HELP_CHARS)]
    return first[:cuts[-1]].rstrip(" ,;:") + " …"
