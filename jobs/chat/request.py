"""What a compare request is, checked before any model loads: the panes (adapters and "base") with the base variant
each one loads on, each pane's conversation, the generation settings every pane shares, how long its prompt may be,
and what it answers while it streams (`Replies`). No torch here: the web process imports it."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, replace
from pathlib import Path

from jobs.models.reward_adapters import is_reward_adapter, reward_refusal
from jobs.spec import STUDIO_BASE_MODELS, TrainSpec
from jobs.spec_store import read_spec_file
from jobs.studio import Studio
from storage import catalog

BASE_PANE = "base"
"""What users call the plain base model in the compare list."""
STEP_MARK = "@step-"
"""A checkpoint pane is named adapter@step-N: the adapter's run as it was at step N."""
CHECKPOINT_MARKER = "studio-complete.json"
"""jobs.training.checkpoints.COMPLETE_MARKER (a test ties them): only a fully written checkpoint is offered."""
CHARS_PER_TOKEN_BOUND = 8
"""A prompt of more than this many characters per token of its limit is refused before it is tokenized: ordinary
text runs 3-5 characters a token, and tokenizing a hostile 1 MB prompt pinned the CPU for minutes. A prompt of long
runs of one character could fit its token limit and still be refused here; it is told why."""


class ChatRequestError(ValueError):
    """Every problem with a compare request, each naming its field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class MemoryWait(Exception):  # noqa: N818 (not an error: the request waits, and its reader is told why)
    """A base does not fit in the device's free memory now, but would once the training job beside it ends: the
    scheduler tells the reader (the message has the numbers) and tries again later, for a bounded time."""


QUANTIZATIONS = typing.get_args(TrainSpec.model_fields["quantization"].annotation)
COMPUTE_DTYPES = typing.get_args(TrainSpec.model_fields["compute_dtype"].annotation)


@dataclass(frozen=True)
class BaseVariant:
    """How a pane's base is loaded: the way its adapter's training loaded it (the spec's `quantization`,
    `double_quant` and `compute_dtype`), since an adapter learned against those weights. The base pane, and an
    adapter folder without a training_spec.json, use the spec's defaults (NF4 + double quantization), what chat
    loaded before variants existed."""

    quantization: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"
    rope_scaling: str = "none"
    """The RoPE scaling the adapter trained with (rope_scaling, rope_factor): its positions were learned so."""
    rope_factor: float | None = None
    model_dir: str | None = None
    """A whole model (full or freeze fine-tuning): the pane loads this folder as a base of its own, unquantized as
    it trained, and applies no adapter; None: the request's base."""

    def spec(self, base_model: str) -> TrainSpec:
        """The spec fields that load the base this way (the loaders take a spec)."""
        four_bit = self.quantization in ("nf4", "fp4")
        return TrainSpec(base_model=base_model, quantization=self.quantization,
                         double_quant=self.double_quant and four_bit, compute_dtype=self.compute_dtype,
                         rope_scaling=self.rope_scaling, rope_factor=self.rope_factor)

    @property
    def label(self) -> str:
        if self.quantization == "none":
            label = "unquantized"
        elif self.quantization == "int8":
            label = "int8"
        else:
            label = self.quantization + (" + double quant" if self.double_quant else "")
        label = label if self.compute_dtype == "auto" else f"{label}, {self.compute_dtype} compute"
        if self.model_dir is not None:
            label = f"its own whole model, {label}"
        return label if self.rope_scaling == "none" else f"{label}, RoPE {self.rope_scaling} x{self.rope_factor:g}"


def variant_of(adapter_dir: Path, name: str) -> BaseVariant:
    """The base variant an adapter trained on, from its folder's training_spec.json, or for a combined adapter its
    combination.json (the variant its parents trained on); the defaults without either. Raises ChatRequestError
    naming the pane when the file says something chat cannot load."""
    path = adapter_dir / "training_spec.json"
    if path.is_file():
        stored = read_spec_file(path)  # migrated to today's version; one today's rules refuse still names its base
        spec = stored.fields
        if not spec:
            raise ChatRequestError([f"adapters: '{name}': {stored.problems[0].message}"])
    else:
        spec = _combined_base(adapter_dir / "combination.json")
    variant = BaseVariant(quantization=spec.get("quantization", "nf4"),
                          double_quant=bool(spec.get("double_quant", True)),
                          compute_dtype=spec.get("compute_dtype", "auto"),
                          rope_scaling=spec.get("rope_scaling", "none"), rope_factor=spec.get("rope_factor"))
    if spec.get("finetuning", "lora") != "lora":  # a whole model: its own base, loaded as it trained
        variant = replace(variant, quantization="none", double_quant=False, model_dir=str(adapter_dir))
    if variant.quantization not in QUANTIZATIONS or variant.compute_dtype not in COMPUTE_DTYPES:
        raise ChatRequestError([
            f"adapters: '{name}' was trained on a base loaded as {variant.quantization!r} with "
            f"{variant.compute_dtype!r} compute, which chat cannot load (quantization: {', '.join(QUANTIZATIONS)})"])
    return variant


def _combined_base(path: Path) -> dict:
    """A combined adapter's recorded base variant (jobs.training.combine.chat_base); {} for none or an unreadable one
    (an adapter folder is a person's upload too: what it says is checked like a spec's values above)."""
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("chat_base", {}).get("variant", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    rope_factor = recorded.get("rope_factor")
    known = {"quantization": str, "double_quant": bool, "compute_dtype": str, "rope_scaling": str}
    chosen = {key: recorded[key] for key, kind in known.items() if isinstance(recorded.get(key), kind)}
    if isinstance(rope_factor, int | float) and not isinstance(rope_factor, bool):
        chosen["rope_factor"] = float(rope_factor)
    try:  # the RoPE pair as the spec's own rules accept it, or none
        TrainSpec(rope_scaling=chosen.get("rope_scaling", "none"), rope_factor=chosen.get("rope_factor"))
    except ValueError:
        chosen.pop("rope_scaling", None)
        chosen.pop("rope_factor", None)
    return chosen


@dataclass(frozen=True)
class ChatFormat:
    """How an adapter's conversations are written: the chat template it trained with when its spec chose one (None:
    the base's), and the default system prompt it trained with ("" for none)."""

    template: str | None = None
    system_prompt: str = ""
    pasted: bool = False
    """The template is one a person pasted (not a known one): it renders in a bounded process of its own
    (jobs.models.template_render), never under the in-process render lock other people's chats wait on."""

    def conversation(self, messages: list[dict]) -> list[dict]:
        """`messages` with the default system prompt first where they have no system message, as the rows trained."""
        if not self.system_prompt or any(m.get("role") == "system" for m in messages):
            return messages
        return [{"role": "system", "content": self.system_prompt}, *messages]


def chat_format(adapter_dir: Path) -> ChatFormat:
    """The adapter's ChatFormat, from its folder: the spec it trained with (training_spec.json) and, where that chose
    a chat_template, the template its saved tokenizer holds (with the generation markers training needed; they
    render the same text)."""
    from jobs.models.contents import chat_template_text

    path = adapter_dir / "training_spec.json"
    spec = read_spec_file(path).fields if path.is_file() else {}
    from jobs.models.templates import known_templates

    chosen = spec.get("chat_template") or ""
    template = chat_template_text(adapter_dir) if chosen else None
    return ChatFormat(template=template or None, system_prompt=spec.get("system_prompt") or "",
                      pasted=bool(template) and chosen not in known_templates())


class Pane(tuple):
    """One compare pane. It unpacks as the (name, adapter folder) pair every caller reads (the folder None for the
    base; a checkpoint's for adapter@step-N) and carries `variant`, how its base loads: a checkpoint follows its
    adapter's. A plain pair becomes a Pane through `as_pane`, which reads the folder's own training_spec.json."""

    variant: BaseVariant

    def __new__(cls, name: str, adapter_dir: Path | None, variant: BaseVariant | None = None) -> Pane:
        pane = super().__new__(cls, (name, adapter_dir))
        if variant is None:
            variant = BaseVariant() if adapter_dir is None else variant_of(adapter_dir, name)
        pane.variant = variant
        return pane

    @property
    def name(self) -> str:
        return self[0]

    @property
    def adapter_dir(self) -> Path | None:
        return self[1]


def as_pane(pane: tuple[str, Path | None]) -> Pane:
    return pane if isinstance(pane, Pane) else Pane(*pane)


MAX_TOP_LOGPROBS = 20
"""The most alternatives a token's log-probabilities list (OpenAI's own bound on `top_logprobs`)."""


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    seed: int = 0
    top_k: int = 0
    """0: no top-k cut."""
    repetition_penalty: float = 1.0
    """1: none; above 1 makes a token already in the text less likely."""
    logprobs: int | None = None
    """None: no log-probabilities; k (0 to MAX_TOP_LOGPROBS): each new token's log-probability under the model
    (its raw logits, before penalties, temperature, top-k and top-p) and the k likeliest tokens' (OpenAI's
    `logprobs`/`top_logprobs`; jobs.chat.generation)."""

    def problems(self) -> list[str]:
        found = []
        if not 0 <= self.top_k <= 1000:
            found.append(f"top_k: must be from 0 (off) to 1000 (got {self.top_k})")
        if not 1.0 <= self.repetition_penalty <= 2.0:
            found.append(f"repetition_penalty: must be from 1 (none) to 2 (got {self.repetition_penalty})")
        if not 1 <= self.max_new_tokens <= 2048:
            found.append(f"max_new_tokens: must be from 1 to 2048 (got {self.max_new_tokens})")
        if not 0 <= self.temperature <= 5:
            found.append(f"temperature: must be from 0 to 5 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            found.append(f"top_p: must be above 0 and at most 1 (got {self.top_p})")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            found.append(f"top_logprobs: must be from 0 to {MAX_TOP_LOGPROBS} (got {self.logprobs})")
        return found

    @classmethod
    def from_controls(cls, max_new_tokens, temperature, top_p, seed, top_k=0,
                      repetition_penalty=1.0) -> GenerationSettings:
        """From a form's or an API call's loose values (numbers as floats or strings; None for an optional control
        left empty), in the order the chat tab shows its controls."""
        return cls(max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p),
                   seed=int(seed), top_k=int(top_k or 0), repetition_penalty=float(repetition_penalty or 1.0))


class Replies(list):
    """Every pane's reply so far (a list of strings), with each pane's token count and the seconds from the start of
    its generation to its last token: all panes share one batched pass, and each pane's rate runs until its own reply
    ended. `waiting_for`: while the generation has not had its first turn, how many others are running or waiting
    (0 once it runs). `note`: why it waits, when that is not a turn (device memory a training job holds). `ended`:
    which panes' replies reached their end-of-sequence token (the others in their batch may go on)."""

    def __init__(self, texts: list[str], token_counts: list[int], seconds: list[float], waiting_for: int = 0,
                 note: str = "", ended: list[bool] | None = None, logprobs: list[list[dict]] | None = None,
                 prompt_tokens: list[int] | None = None) -> None:
        super().__init__(texts)
        self.logprobs = logprobs
        """Where the settings asked for them: each pane's tokens so far, one entry a token (OpenAI's chat shape,
        `token`, `logprob`, `bytes`, `top_logprobs`, plus `text_offset`: where its text starts in the reply)."""
        self.prompt_tokens = prompt_tokens if prompt_tokens is not None else [0] * len(texts)
        """Each pane's prompt in tokens (its padding left out)."""
        self.token_counts = token_counts
        self.seconds = seconds
        self.waiting_for = waiting_for
        self.note = note
        self.ended = ended if ended is not None else [False] * len(texts)

    @classmethod
    def waiting(cls, panes: int, others: int, note: str = "") -> Replies:
        return cls([""] * panes, [0] * panes, [0.0] * panes, waiting_for=others, note=note)

    def tokens_per_s(self) -> list[float]:
        return [count / s if s > 0 else 0.0 for count, s in zip(self.token_counts, self.seconds, strict=True)]


def prompt_chars_problem(texts: list[str], max_prompt_tokens: int) -> str | None:
    """Why the longest of `texts` (each everything one pane sends) is refused unread, or None: more characters than
    any tokenizer makes into `max_prompt_tokens` tokens of ordinary text."""
    longest = max((len(text) for text in texts), default=0)
    if longest <= max_prompt_tokens * CHARS_PER_TOKEN_BOUND:
        return None
    return (f"prompt: {longest:,} characters, far over the limit of {max_prompt_tokens:,} tokens "
            f"(STUDIO_MAX_PROMPT_TOKENS); refused without reading it: shorten it or clear the conversation")


def conversation_text(messages: list[dict] | str) -> str:
    """Everything a conversation sends, for the character pre-check (the chat template adds a few tokens more); a
    plain completion's prompt is its text."""
    if isinstance(messages, str):
        return messages
    return "".join(str(m.get("content", "")) for m in messages)


def prompt_token_limit(context_tokens: int | None, new_tokens: int, max_prompt_tokens: int,
                       new_label: str = "max_new_tokens") -> tuple[int, str]:
    """(the most tokens a prompt may have, why in words): the base's context less the tokens to come after it
    (`new_label` names them), and at most STUDIO_MAX_PROMPT_TOKENS. `context_tokens` None: the config does not say."""
    if context_tokens is not None and context_tokens - new_tokens < max_prompt_tokens:
        return max(context_tokens - new_tokens, 0), (f"the base's context of {context_tokens:,} tokens minus "
                                                     f"{new_label} {new_tokens:,}")
    return max_prompt_tokens, "STUDIO_MAX_PROMPT_TOKENS"


def prompt_tokens_problem(tokens: int, limit: int, why: str) -> str | None:
    if tokens <= limit:
        return None
    return (f"prompt: {tokens:,} tokens with the conversation so far, the limit is {limit:,} ({why}); shorten it, "
            f"clear the conversation or lower max_new_tokens")


def conversation(prompt: str, history: list[dict] | None = None, system: str = "") -> list[dict]:
    """One pane's messages: the optional system prompt, the pane's earlier turns ({role, content} dicts), then the
    new user turn. The Chat tab and the `compare` endpoint both build their conversations here."""
    head = [{"role": "system", "content": system}] if system and system.strip() else []
    return head + list(history or []) + [{"role": "user", "content": prompt}]


def checkpoints(studio: Studio, adapter) -> dict[int, Path]:
    """step -> folder of each complete checkpoint the adapter's run kept (the Trainer keeps the newest two)."""
    if adapter.job_id is None:
        return {}
    found = {}
    for folder in (studio.run_dir(adapter.job_id) / "checkpoints").glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and (folder / CHECKPOINT_MARKER).is_file() and (
                folder / "adapter_model.safetensors").is_file():
            found[int(step)] = folder
    return dict(sorted(found.items()))


def checkpoint_names(studio: Studio, adapter) -> list[str]:
    return [f"{adapter.name}{STEP_MARK}{step}" for step in checkpoints(studio, adapter)]


def _pane(studio: Studio, session, base_model: str, name: str) -> tuple[Pane | None, str | None]:
    """(the pane, problem) for one pane name other than the base."""
    adapter_name, _, step = name.partition(STEP_MARK)
    adapter = catalog.get_adapter_by_name(session, adapter_name)
    if adapter is None:
        return None, f"adapters: no adapter named '{adapter_name}'"
    if adapter.base_model != base_model:
        return None, f"adapters: '{adapter_name}' was trained on '{adapter.base_model}', not '{base_model}'"
    if is_reward_adapter(studio.absolute(adapter.path)):
        return None, f"adapters: {reward_refusal(adapter_name, 'answer prompts')}"
    try:  # a checkpoint holds no spec: it trained on the base its adapter did
        variant = variant_of(studio.absolute(adapter.path), name)
    except ChatRequestError as error:
        return None, str(error)
    if not step:
        return Pane(name, studio.absolute(adapter.path), variant), None
    folder = checkpoints(studio, adapter).get(int(step)) if step.isdigit() else None
    if folder is None:
        kept = ", ".join(checkpoint_names(studio, adapter)) or "none"
        return None, f"adapters: '{adapter_name}' has no checkpoint at step {step} (kept: {kept})"
    return Pane(name, folder, variant), None


def resolve_panes(studio: Studio, base_model: str, names: list[str]) -> list[Pane]:
    """A Pane per name: the adapter's folder (None for the base, a checkpoint's folder for adapter@step-N) and the
    base variant it loads on. Raises ChatRequestError naming every problem."""
    problems, panes = [], []
    if not names:
        problems.append("adapters: pick at least one adapter or 'base'")
    if len(set(names)) != len(names):
        problems.append("adapters: each adapter may appear once")
    with studio.db.read() as session:
        for name in names:
            if name == BASE_PANE:
                panes.append(Pane(name, None))
                continue
            pane, problem = _pane(studio, session, base_model, name)
            if problem:
                problems.append(problem)
            else:
                panes.append(pane)
    if problems:
        raise ChatRequestError(problems)
    return panes


def base_problem(studio: Studio, base_model: str) -> str | None:
    """Why chat may not load this base, or None: a studio base, a local folder the studio may read, or a base some
    adapter here was trained on. Any other hub id is refused rather than downloaded by a chat request."""
    from jobs.models.resolve import allowed_model_roots, base_model_problem, looks_local

    if base_model in STUDIO_BASE_MODELS:
        return None
    roots = allowed_model_roots(list(studio.settings.model_dirs), studio.settings.models_dir)
    if looks_local(base_model):
        problem = base_model_problem(base_model, roots)
        return f"base_model: {problem}" if problem else None
    with studio.db.read() as session:
        if catalog.list_adapters(session, base_model):
            return None
    return (f"base_model: '{base_model}' is not a base this studio knows: pick a studio base, a local model folder, "
            f"or a base an adapter here was trained on")


def request_problems(settings: GenerationSettings, conversations: list[list[dict]]) -> list[str]:
    problems = settings.problems()
    if not any(c and c[-1].get("content", "").strip() for c in conversations):
        problems.append("prompt: type a message first")
    return problems
