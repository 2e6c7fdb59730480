"""Side-by-side chat: each pane's base loaded the way its adapter trained, every adapter loaded onto it by name, and
as few `generate` calls as peft allows, so N panes cost about one pass (measured 1.8x faster than N calls).

Panes are grouped (`ChatEngine._groups`):
- **by base variant.** An adapter learned against its base as its training loaded it (`quantization`,
  `double_quant`, `compute_dtype`: its training_spec.json, jobs.chat.request.BaseVariant). Each distinct (base,
  variant) is loaded once and kept while the chat memory budget allows; panes on different variants are
  different batches.
- **by what peft can mix.** On one variant the base and every LoRA / rsLoRA adapter share ONE batch through peft's
  `adapter_names` (rows left-padded; with fp32 compute each row equals that adapter's output alone, tested). peft
  refuses DoRA there ("Cannot pass `adapter_names` when DoRA is enabled"; it checks only the adapters named, so a
  DoRA adapter may stay loaded beside the batch): each DoRA pane is a batch of its own, run with its adapter set
  active.
Every batch advances each turn (jobs.chat.generation), so every pane streams.

Before a base loads, its estimated size is checked against the budget (a cap) and against the device's free memory
now: when a training job on this host holds what is missing, the request waits (MemoryWait; the scheduler tells the
reader and retries, bounded); when it could never fit, it is refused in words.

The engine has no lock and is not thread-safe: only the generation scheduler (jobs.chat.scheduler) calls it, one
call at a time."""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from peft import PeftModel

from jobs.chat.generation import Batch, Generation, Group, LoadedBase, encode
from jobs.chat.request import (
    BaseVariant,
    ChatFormat,
    ChatRequestError,
    GenerationSettings,
    MemoryWait,
    Pane,
    as_pane,
    chat_format,
    prompt_token_limit,
    prompt_tokens_problem,
)
from jobs.models.loading import compute_dtype, load_base_model, load_tokenizer, pick_device
from jobs.models.resolve import resolve_base_model

PEFT_BASE = "__base__"  # what peft calls the plain base in adapter_names
GiB = 2**30
log = logging.getLogger(__name__)
# bitsandbytes' int8 matmul logs this at every layer of every step on a CPU (measured: it runs, casting to fp16 inside).
logging.getLogger("bitsandbytes.autograd._functions").addFilter(
    lambda record: not record.getMessage().startswith("MatMul8bitLt: inputs will be cast"))


def _log_preparation(phase: str, percent: float) -> None:
    log.info("preparing a base model for chat: %s (%.0f%%)", phase, percent)


def device_memory(device: str) -> tuple[int, int] | None:
    """(free, total) bytes of the device chat loads onto, now: CUDA's own count; on a CPU the kernel's MemAvailable
    and MemTotal (psutil where there is no /proc/meminfo); None where neither can be read."""
    if device == "cuda":
        return torch.cuda.mem_get_info()
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return int(fields["MemAvailable"].split()[0]) * 1024, int(fields["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    memory = psutil.virtual_memory()
    return memory.available, memory.total


def resident_estimate(path: str, base_model: str, device: str, variant: BaseVariant | None = None) -> int:
    """Bytes a base takes loaded for chat in `variant` (quantized weights with their scales and the unquantized
    parts), from its config and safetensors headers: known before loading, so a base that cannot fit is refused, not
    loaded."""
    from jobs.models.memory import weight_bytes
    from jobs.models.memory_inputs import CPU, CUDA_BF16, ModelShape, TrainShape

    profile = CPU if device == "cpu" else CUDA_BF16
    spec = (variant or BaseVariant()).spec(base_model)
    stored = TrainShape(quantization=spec.quantization, double_quant=spec.double_quant)  # only the weights count
    return sum(weight_bytes(ModelShape.from_dir(path), stored, profile).values())


def load_dtype(variant: BaseVariant, base_model: str, device: str) -> torch.dtype:
    """What the base computes in for chat: the variant's own dtype on a GPU; fp32 on a CPU, whatever it trained in,
    because bf16 rounding makes heavily left-padded rows drift from their unbatched output."""
    if device == "cpu":
        return torch.float32
    return compute_dtype(variant.spec(base_model), device)


def variant_problem(variant: BaseVariant, device: str) -> str | None:
    """Why this machine cannot load a base as `variant`, or None. Measured on this project's CPUs with
    bitsandbytes 0.50: nf4, fp4 (with or without double quant), int8 and unquantized all load and generate."""
    if variant.quantization != "none":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return "bitsandbytes, which quantizes it, is not installed here"
    if device == "cuda" and variant.compute_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return "it computes in bfloat16, which this GPU lacks"
    return None


def _share_saved_modules(model, keys: list[str]) -> None:
    """Let every adapter pass through the modules another adapter trained in full (`modules_to_save`, e.g. lm_head).
    peft wraps such a module for all adapters, and in a mixed batch (adapter_names) looks up each row's adapter in
    the wrapper: a row of an adapter that did not save it raised KeyError (peft 0.21), and not only in the batch that
    holds the saving adapter. Each other adapter gets the original module under its key, shared, not copied: what its
    rows compute without the wrapper."""
    from peft.utils.other import ModulesToSaveWrapper

    for wrapper in [m for m in model.modules() if isinstance(m, ModulesToSaveWrapper)]:
        for key in keys:
            if key not in wrapper.modules_to_save:
                wrapper.modules_to_save[key] = wrapper.original_module
                wrapper.update(key)  # known to the wrapper now; update() copies nothing for a key it already holds


def _names(panes: list[Pane]) -> str:
    return ", ".join(f"'{pane.name}'" for pane in panes)


class ChatEngine:
    """Loads (base, variant) pairs lazily and keeps the most recently used within `budget_bytes` (None: no limit),
    unloading the least recently used. `device_memory` reads (free, total) bytes of a device and `training_bytes`
    what training jobs on this host hold (0: none runs; None: one runs whose size is not known yet): seams, so tests
    inject readings. Called only by the generation scheduler, one call at a time (it has no lock)."""

    def __init__(self, models_dir: Path, budget_bytes: int | None = None,
                 device_memory: Callable[[str], tuple[int, int] | None] = device_memory,
                 training_bytes: Callable[[], int | None] = lambda: 0) -> None:
        self.models_dir = models_dir
        self.budget_bytes = budget_bytes
        self.device_memory = device_memory
        self.training_bytes = training_bytes
        self._bases: OrderedDict[tuple, LoadedBase] = OrderedDict()
        self._sizes: dict[tuple, int] = {}

    def resident_bytes(self) -> int:
        """What the loaded bases take, by their estimates."""
        return sum(self._sizes.values())

    def loaded(self) -> list[str]:
        """The loaded bases in words, least recently used first."""
        return [loaded.label for loaded in self._bases.values()]

    def release(self) -> list[str]:
        """Unload every base (a training job needs the device); returns them in words."""
        evicted = [self._evict_one(keep=set()) for _ in range(len(self._bases))]
        self._collect(evicted)
        return evicted

    def _evict_one(self, keep: set[tuple]) -> str | None:
        """Unload the least recently used base not in `keep`; returns it in words, None when there is none."""
        key = next((key for key in self._bases if key not in keep), None)
        if key is None:
            return None
        self._sizes.pop(key, None)
        return self._bases.pop(key).label

    @staticmethod
    def _collect(evicted: list[str | None]) -> None:
        if any(evicted):
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.info("chat: unloaded %s", ", ".join(e for e in evicted if e))

    # --- bases -------------------------------------------------------------------------------------------------
    def _bases_for(self, base_model: str, panes: list[Pane]) -> dict[BaseVariant, LoadedBase]:
        """Each variant the panes need, loaded (within the budget and the device's free memory) and marked used."""
        device = pick_device()
        by_variant: dict[BaseVariant, list[Pane]] = {}
        for pane in panes:
            by_variant.setdefault(pane.variant, []).append(pane)
        problems = [f"adapters: {_names(some)} trained on a base loaded as {variant.label}, which cannot load on "
                    f"this machine ({why}): leave {'it' if len(some) == 1 else 'them'} out of the compare"
                    for variant, some in by_variant.items()
                    if any(p.adapter_dir is not None for p in some) and (why := variant_problem(variant, device))]
        if problems:
            raise ChatRequestError(problems)
        keys = {variant: (base_model, variant.quantization, variant.spec(base_model).double_quant,
                          str(load_dtype(variant, base_model, device)), variant.rope_scaling, variant.rope_factor,
                          variant.model_dir) for variant in by_variant}
        for key in keys.values():
            if key in self._bases:
                self._bases.move_to_end(key)
        missing = {variant: key for variant, key in keys.items() if key not in self._bases}
        if missing:
            self._load_missing(base_model, device, missing, set(keys.values()), by_variant)
        return {variant: self._bases[key] for variant, key in keys.items()}

    def _load_missing(self, base_model: str, device: str, missing: dict[BaseVariant, tuple], needed: set[tuple],
                      by_variant: dict[BaseVariant, list[Pane]]) -> None:
        # A whole model (full or freeze fine-tuning) is a base of its own: its folder, its own room in the budget.
        shared = None if all(variant.model_dir for variant in missing) else resolve_base_model(
            base_model, self.models_dir, report=_log_preparation)
        paths = {variant: variant.model_dir or shared for variant in missing}
        needs = {variant: resident_estimate(paths[variant], base_model, device, variant) for variant in missing}
        kept = sum(self._sizes[key] for key in needed if key in self._sizes)
        if self.budget_bytes is not None and kept + sum(needs.values()) > self.budget_bytes:
            parts = " and ".join(f"about {need / GiB:.2f} GiB as {variant.label}" for variant, need in needs.items())
            raise ChatRequestError([
                f"base_model: '{base_model}' needs {parts} loaded for chat"
                + (f" beside {kept / GiB:.2f} GiB already loaded for this compare" if kept else "")
                + f", more than the chat memory budget of {self.budget_bytes / GiB:.2f} GiB "
                  f"(STUDIO_CHAT_MEMORY_BYTES)" + ("; compare fewer base variants at once" if len(needed) > 1 else "")])
        evicted = []
        while self.budget_bytes is not None and self.resident_bytes() + sum(needs.values()) > self.budget_bytes:
            evicted.append(self._evict_one(keep=needed))  # least recently used first
            if evicted[-1] is None:
                break  # cannot happen: what this compare keeps fits, checked above
        self._collect(evicted)
        for variant, key in missing.items():
            label = base_model if variant == BaseVariant() else f"{base_model} ({variant.label})"
            path = paths[variant]
            self._make_room(needs[variant], device, needed, label)
            try:
                model = load_base_model(variant.spec(base_model), path, device,
                                        load_dtype(variant, base_model, device))
            except (ImportError, RuntimeError, ValueError, NotImplementedError) as error:
                raise ChatRequestError([
                    f"adapters: {_names(by_variant[variant])} need{'s' if len(by_variant[variant]) == 1 else ''} "
                    f"the base loaded as {variant.label}, which cannot load on this machine ({error})"]) from None
            tokenizer = load_tokenizer(path)
            tokenizer.padding_side = "left"
            context = getattr(model.config, "max_position_embeddings", None)
            if context and variant.rope_factor:  # the adapter trained on the stretched context
                context = int(context * variant.rope_factor)
            self._bases[key] = LoadedBase(tokenizer=tokenizer, model=model.eval(), label=label,
                                          context_tokens=context)
            self._sizes[key] = needs[variant]

    def _make_room(self, need: int, device: str, needed: set[tuple], label: str) -> None:
        """Check the device's free memory for `need` bytes more: unload chat's other bases if that helps; wait
        (MemoryWait) when a training job on this host holds the rest; refuse when it could never fit."""
        reading = self.device_memory(device)
        if reading is None:
            return  # nothing to read on this platform: the budget alone decides
        free, total = reading
        if need > total:
            raise ChatRequestError([f"base_model: {label} needs about {need / GiB:.2f} GiB loaded for chat, more "
                                    f"than this {device}'s {total / GiB:.2f} GiB in all"])
        if need > free and self._bases.keys() - needed:
            self._collect([self._evict_one(keep=needed) for _ in range(len(self._bases))])
            free, total = self.device_memory(device) or (free, total)
        if need <= free:
            return
        held = self.training_bytes()
        if held is None or (held > 0 and need <= free + held):
            holds = "memory (its estimate is not recorded yet)" if held is None else f"{held / GiB:.2f} GiB"
            raise MemoryWait(f"waiting for {need / GiB:.2f} GiB free to load {label} ({free / GiB:.2f} GiB free "
                             f"now); a training job on this host holds {holds}")
        raise ChatRequestError([
            f"base_model: {label} needs about {need / GiB:.2f} GiB loaded for chat and only {free / GiB:.2f} GiB of "
            f"this {device}'s {total / GiB:.2f} GiB are free" + (f", even once the training job here ends (it holds "
                                                                 f"{held / GiB:.2f} GiB)" if held else "")
            + ": close what else holds it, or try again later"])

    # --- adapters and groups -----------------------------------------------------------------------------------
    def _ensure_adapter(self, loaded: LoadedBase, pane: Pane) -> str:
        adapter_dir = pane.adapter_dir
        identity = (str(adapter_dir), (adapter_dir / "adapter_model.safetensors").stat().st_mtime_ns)
        if identity in loaded.adapters:
            return loaded.adapters[identity]
        key = f"adapter_{len(loaded.adapters)}"
        if isinstance(loaded.model, PeftModel):
            loaded.model.load_adapter(str(adapter_dir), adapter_name=key, is_trainable=False)
        else:
            loaded.model = PeftModel.from_pretrained(loaded.model, str(adapter_dir), adapter_name=key,
                                                     is_trainable=False)
        loaded.model.eval()  # peft refuses adapter_names outside eval mode
        loaded.adapters[identity] = key
        if getattr(loaded.model.peft_config[key], "use_dora", False):
            loaded.solo.add(key)
        if (written := chat_format(adapter_dir)) != ChatFormat():
            # Its own template or system prompt: its prompts are its own, so it serves a pass of its own (a
            # reference score's one context per pass stays one text).
            loaded.formats[key] = written
            loaded.solo.add(key)
        _share_saved_modules(loaded.model, list(loaded.adapters.values()))
        return key

    def _groups(self, base_model: str, panes: list[tuple[str, Path | None]]) -> list[Group]:
        """The panes as groups one forward pass each can serve: per variant, one group of the base and the adapters
        peft can mix, and a group per DoRA adapter."""
        panes = [as_pane(pane) for pane in panes]
        bases = self._bases_for(base_model, panes)
        groups: list[Group] = []
        mixed: dict[BaseVariant, Group] = {}
        for index, pane in enumerate(panes):
            loaded = bases[pane.variant]
            own_base = pane.adapter_dir is None or pane.variant.model_dir is not None  # a whole model is its base
            key = PEFT_BASE if own_base else self._ensure_adapter(loaded, pane)
            if key in loaded.solo:
                groups.append(Group(loaded, [index], [key], solo=key))
                continue
            if pane.variant not in mixed:
                mixed[pane.variant] = Group(loaded)
                groups.append(mixed[pane.variant])
            mixed[pane.variant].rows.append(index)
            mixed[pane.variant].keys.append(key)
        return groups

    # --- what the scheduler calls ------------------------------------------------------------------------------
    def begin(self, base_model: str, panes: list[tuple[str, Path | None]], conversations: list[list[dict]],
              settings: GenerationSettings, max_prompt_tokens: int) -> Generation:
        """A compare ready to advance: `panes` are Panes or (name, adapter dir) pairs, adapter dir None for the
        base; `conversations[i]` is pane i's messages ending with the new user turn. Raises ChatRequestError when a
        prompt is over its limit in tokens (the base's context less max_new_tokens, and at most
        `max_prompt_tokens`), MemoryWait when a base must wait for device memory."""
        batches = []
        for group in self._groups(base_model, panes):
            batch, problem = encode(group, conversations, settings, max_prompt_tokens)
            if problem:
                raise ChatRequestError([problem])
            batches.append(Batch(group, batch.to(group.loaded.model.device), settings))
        return Generation(batches, len(panes))

    def reference_logliks(self, base_model: str, panes: list[tuple[str, Path | None]], prompt: list[dict],
                          reference: str, max_prompt_tokens: int) -> list[float]:
        """Each pane's mean log-likelihood per token of `reference` as the answer to `prompt`, teacher-forced: one
        forward pass per group (see the module docstring), a row per pane. Higher is better; it says how likely
        each adapter finds the answer a person wrote, whatever it would have sampled."""
        return [total / count for total, count in self.reference_scores(base_model, panes, prompt, reference,
                                                                          max_prompt_tokens)]

    def reference_scores(self, base_model: str, panes: list[tuple[str, Path | None]], prompt: list[dict],
                         reference: str, max_prompt_tokens: int) -> list[tuple[float, int]]:
        """Each pane's (sum of the log-probabilities of the reference's tokens, how many tokens): what the suites'
        mean log-likelihood and an eval job's token-weighted loss are both made of (the answer's tokens only, its
        end-of-sequence token included)."""
        scores = [(0.0, 0)] * len(panes)
        for group in self._groups(base_model, panes):
            for row, score in zip(group.rows, self._logliks(group, prompt, reference, max_prompt_tokens),
                                  strict=True):
                scores[row] = score
        return scores

    @staticmethod
    def _logliks(group: Group, prompt: list[dict], reference: str, max_prompt_tokens: int) -> list[tuple[float, int]]:
        loaded = group.loaded
        tokenizer = loaded.tokenizer
        context = loaded.render(group.keys[0], prompt, add_generation_prompt=True, tokenize=False)
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        # Tokenized apart, so the answer's tokens never merge with the context's across the boundary.
        answer_ids = tokenizer(reference + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
        limit, why = prompt_token_limit(loaded.context_tokens, len(answer_ids), max_prompt_tokens,
                                        "the reference answer's")
        if problem := prompt_tokens_problem(len(context_ids), limit, why):
            raise ChatRequestError([problem])
        answer_start = len(context_ids)
        ids = torch.tensor([context_ids + answer_ids] * len(group.rows), device=loaded.model.device)
        kwargs = group.select_adapters()
        with torch.inference_mode():
            logits = loaded.model(input_ids=ids, **kwargs).logits.float()
        logprobs = torch.log_softmax(logits[:, answer_start - 1:-1], dim=-1)
        targets = ids[:, answer_start:].unsqueeze(-1)
        sums = logprobs.gather(-1, targets).squeeze(-1).sum(dim=-1).tolist()
        return [(total, len(answer_ids)) for total in sums]
