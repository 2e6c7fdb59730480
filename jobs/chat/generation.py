"""A compare in flight, advanced a slice at a time: its panes in one or more batches (`Batch`: one `generate` each;
jobs.chat.engine decides which panes share one), every batch going on from its own KV cache at each turn.

Each `advance` is one `generate` call per unfinished batch that goes on from the KV cache of the last (the full ids
and the extended mask, as transformers expects), so the scheduler can give other people turns in between. Greedy
output equals one unsliced generate token for token, and seeded sampling is the same however it is sliced: each
batch keeps its own RNG state, seeded alike, and keeps its shape (a row that reached its end is carried on and its
further tokens ignored), so every step draws the same random numbers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor
from transformers.generation.streamers import BaseStreamer

from jobs.chat.request import (
    ChatFormat,
    ChatRequestError,
    GenerationSettings,
    MemoryWait,
    Replies,
    prompt_token_limit,
    prompt_tokens_problem,
)
from jobs.models.template_render import PROCESSES, TemplateRenderError, render_pasted, renders_may_wait
from jobs.models.templates import render_chat


@dataclass
class LoadedBase:
    tokenizer: object
    model: object
    """The base as one variant loads it, wrapped as a PeftModel once the first adapter is loaded."""
    label: str = ""
    """The base and its variant in words (what `release` reports)."""
    context_tokens: int | None = None
    """The base's context (max_position_embeddings): a prompt and its new tokens must fit in it."""
    adapters: dict[tuple[str, int], str] = field(default_factory=dict)
    """(adapter folder, weights mtime) -> peft adapter key (peft keys cannot hold '.'). Not the user-facing name:
    names can be renamed or reused by a new adapter, and must never bring back another adapter's weights."""
    solo: set[str] = field(default_factory=set)
    """Keys of adapters peft cannot mix into a batch by `adapter_names` (DoRA): each runs with itself active."""
    formats: dict[str, ChatFormat] = field(default_factory=dict)
    """Adapter key -> how its conversations are written (its chosen template, its default system prompt); an adapter
    not here (and the base) writes them with the base's template as they are."""

    def render(self, key: str, messages: list[dict], **options):
        """`messages` rendered as the adapter `key` trained on them (jobs.chat.request.ChatFormat)."""
        chat = self.formats.get(key, ChatFormat())
        if chat.pasted:  # a person's template: bounded in time and size, in a process of its own
            options.pop("tokenize", None)  # callers ask for text: the render process renders text only
            return _pasted_render(chat.template, chat.conversation(messages), self.tokenizer.special_tokens_map,
                                  options)
        return render_chat(self.tokenizer, chat.conversation(messages), chat_template=chat.template, **options)


RENDER_WAIT_S = 0.2
"""How long the scheduler's thread waits for a pasted template's render before it sets the request aside (a warm
render process answers in milliseconds): a template that loops holds a render process, never the people's turns."""
_renders = ThreadPoolExecutor(max_workers=PROCESSES, thread_name_prefix="pasted-template")
_pending: dict[str, Future] = {}
_pending_lock = threading.Lock()


def _pasted_render(template: str, messages: list[dict], special: dict, options: dict) -> str:
    """The text of a pasted template's render (jobs.models.template_render), started on a thread of its own; while
    it runs the request waits as for memory (MemoryWait: the scheduler serves the others and tries it again), and
    its next try takes the finished render. A render past its budget is the request's ChatRequestError."""
    if not renders_may_wait.get():
        try:
            return render_pasted(template, messages, special, **options)
        except TemplateRenderError as error:
            raise ChatRequestError([f"{error} (the template an adapter of this chat trained with)"]) from None
    key = json.dumps([template, messages, special, options], sort_keys=True, default=str)
    with _pending_lock:
        future = _pending.get(key)
        if future is None:
            if len(_pending) > 64:  # finished renders whose reader left before taking them
                for done in [k for k, f in _pending.items() if f.done()]:
                    del _pending[done]
            future = _pending[key] = _renders.submit(render_pasted, template, messages, special, **options)
    try:
        text = future.result(timeout=RENDER_WAIT_S)
    except FutureTimeout:
        raise MemoryWait("while the adapter's pasted chat template renders") from None
    except TemplateRenderError as error:
        raise ChatRequestError([f"{error} (the template an adapter of this chat trained with)"]) from None
    finally:
        if future.done():
            with _pending_lock:
                _pending.pop(key, None)
    return text


@dataclass
class Group:
    """Panes one forward pass serves: on one loaded base, either the base and mixable adapters together (`keys`
    through peft's adapter_names, PEFT_BASE for the base), or one `solo` adapter made active for the pass."""

    loaded: LoadedBase
    rows: list[int] = field(default_factory=list)
    """Each row's pane index in the compare."""
    keys: list[str] = field(default_factory=list)
    solo: str | None = None

    def select_adapters(self) -> dict:
        """Make the model serve this group in its next pass; returns the keyword arguments that pass needs (set
        before every pass: other groups and compares share the model)."""
        model = self.loaded.model
        if not isinstance(model, PeftModel):  # no adapter loaded yet: the plain base
            return {}
        if self.solo is not None:
            model.set_adapter(self.solo, inference_mode=True)
            return {}
        return {"adapter_names": self.keys}


class SliceEnds(StoppingCriteria):
    """Ends the `generate` call for every row at the slice's deadline, or at once when `stopped` is set (the reader
    went away). A generation that is not done goes on from its KV cache at its next turn."""

    def __init__(self, deadline: float, stopped: threading.Event) -> None:
        self.deadline = deadline
        self.stopped = stopped

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        end = self.stopped.is_set() or time.monotonic() >= self.deadline
        return torch.full((input_ids.shape[0],), end, dtype=torch.bool, device=input_ids.device)


class RowStreamer(BaseStreamer):
    """Receives one token per row per step (TextIteratorStreamer refuses batches)."""

    def __init__(self, on_step: Callable[[torch.Tensor], None]) -> None:
        self.on_step = on_step
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # the first call carries the ids so far (the prompt, then the slices before)
            self._prompt_seen = True
            return
        self.on_step(value.reshape(-1))

    def end(self) -> None:
        pass


class RawLogprobs(LogitsProcessor):
    """Keeps each step's log-softmax of the model's raw logits, read by the streamer in the same step (it runs after
    the token is picked). Given to `generate` as its first custom processor, with the repetition penalty made ours
    and put after it, so what it sees is the model's own distribution: no penalty, temperature, top-k or top-p. That
    is what OpenAI reports (its logprobs do not move with temperature) and what vLLM returns by default
    (`logprobs_mode="raw_logprobs"`). It changes nothing in the scores."""

    def __init__(self) -> None:
        self.latest: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.latest = torch.log_softmax(scores.float(), dim=-1)
        return scores


def _piece(decode: Callable, before: list[int], token: int) -> str:
    """The text `token` adds after the tokens `before` (a few are enough: a tokenizer's spacing and merged bytes
    depend only on the neighbours), so the pieces of a reply add up to its decoded text."""
    start = decode(before, skip_special_tokens=True)
    text = decode([*before, token], skip_special_tokens=True)
    return text[len(start):] if text.startswith(start) else text


CONTEXT_TOKENS = 4
"""How many tokens before one `_piece` decodes with it."""


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), *(torch.cuda.get_rng_state(i) for i in _rng_devices(device))


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    for index, cuda_state in zip(_rng_devices(device), state[1:], strict=True):
        torch.cuda.set_rng_state(cuda_state, index)


def encode(group: Group, conversations: list[list[dict]], settings: GenerationSettings,
           max_prompt_tokens: int) -> tuple[dict, str | None]:
    """(the group's rows as one left-padded batch, why a prompt is over its limit in tokens or None)."""
    tokenizer = group.loaded.tokenizer
    # A conversation is chat messages (templated) or, for a plain completion (the OpenAI endpoint), the prompt text
    # itself, sent as it is.
    prompts = [conversations[row] if isinstance(conversations[row], str)
               else group.loaded.render(key, conversations[row], add_generation_prompt=True, tokenize=False)
               for row, key in zip(group.rows, group.keys, strict=True)]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    limit, why = prompt_token_limit(group.loaded.context_tokens, settings.max_new_tokens, max_prompt_tokens)
    return batch, prompt_tokens_problem(int(batch["attention_mask"].sum(dim=1).max()), limit, why)


class Batch:
    """One group's rows in flight: the ids so far (prompt and generated), the mask, the KV cache, its own RNG state
    and how many steps it made."""

    def __init__(self, group: Group, batch, settings: GenerationSettings) -> None:
        self.group, self.settings = group, settings
        self.ids, self.mask = batch["input_ids"], batch["attention_mask"]
        self.cache = None
        self.steps = 0
        self.finished = [False] * len(group.rows)
        with torch.random.fork_rng(devices=_rng_devices(self.ids.device)):
            torch.manual_seed(settings.seed)  # every pane samples under the same seed and settings
            self._rng = _rng_state(self.ids.device)
        tokenizer = group.loaded.tokenizer
        self.eos = tokenizer.eos_token_id
        self.logprobs = RawLogprobs() if settings.logprobs is not None else None
        self._kwargs = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                            repetition_penalty=settings.repetition_penalty, return_dict_in_generate=True)
        if self.logprobs is not None:
            # The penalty becomes ours, after the reader (generate puts custom processors after its own).
            processors = [self.logprobs]
            if settings.repetition_penalty != 1.0:
                processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
            self._kwargs.update(repetition_penalty=1.0, logits_processor=LogitsProcessorList(processors))
        if settings.temperature > 0:
            self._kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                                top_k=settings.top_k or None)
        else:
            self._kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)

    @property
    def done(self) -> bool:
        return all(self.finished) or self.steps >= self.settings.max_new_tokens

    def advance(self, deadline: float, stopped: threading.Event, on_step: Callable[[torch.Tensor], None],
                max_tokens: int | None) -> None:
        count = self.settings.max_new_tokens - self.steps
        kwargs = dict(self._kwargs, input_ids=self.ids, attention_mask=self.mask, past_key_values=self.cache,
                      max_new_tokens=count if max_tokens is None else min(count, max_tokens),
                      streamer=RowStreamer(on_step),
                      stopping_criteria=StoppingCriteriaList([SliceEnds(deadline, stopped)]))
        kwargs.update(self.group.select_adapters())  # read each slice: the first adapter loaded wraps the base
        with torch.random.fork_rng(devices=_rng_devices(self.ids.device)), torch.inference_mode():
            _set_rng_state(self._rng, self.ids.device)
            out = self.group.loaded.model.generate(**kwargs)
            self._rng = _rng_state(self.ids.device)
        new = out.sequences.shape[1] - self.ids.shape[1]
        self.ids, self.cache = out.sequences, out.past_key_values
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], new))], dim=1)
        self.steps += new


class Generation:
    """One compare in flight: its batches and each pane's reply tokens. Made by `ChatEngine.begin`, advanced by the
    scheduler one slice at a time; every batch advances each turn, so the reader sees every pane grow."""

    def __init__(self, batches: list[Batch], panes: int) -> None:
        self.batches = batches
        self.tokens: list[list[int]] = [[] for _ in range(panes)]
        self.started = time.monotonic()
        self.last_token_at = [self.started] * panes
        self.ended = [False] * panes
        """Each pane's reply reached its end-of-sequence token (others in its batch may go on)."""
        self._decode = [None] * panes
        self.prompt_tokens = [0] * panes
        for batch in batches:
            for index, row in enumerate(batch.group.rows):
                self._decode[row] = batch.group.loaded.tokenizer.decode
                self.prompt_tokens[row] = int(batch.mask[index].sum())
        self.logprobs: list[list[dict]] | None = (
            [[] for _ in range(panes)] if any(batch.logprobs is not None for batch in batches) else None)
        """Each pane's tokens' log-probabilities (Replies.logprobs), where the settings ask for them."""
        self._text_ends = [0] * panes

    @property
    def done(self) -> bool:
        return all(batch.done for batch in self.batches)

    def replies(self) -> Replies:
        return Replies([decode(t, skip_special_tokens=True) for decode, t in zip(self._decode, self.tokens,
                                                                                  strict=True)],
                       [len(t) for t in self.tokens], [t - self.started for t in self.last_token_at],
                       ended=list(self.ended), logprobs=self.logprobs, prompt_tokens=self.prompt_tokens)

    def advance(self, deadline: float, stopped: threading.Event, on_step: Callable[[Replies], None],
                max_tokens: int | None = None) -> bool:
        """Advance every unfinished batch: each until its share of the time left to `deadline` (at least one token),
        `max_tokens` more, its end, or `stopped`; call `on_step` with the replies after each token. Returns whether
        the generation is over."""
        live = [batch for batch in self.batches if not batch.done]
        for index, batch in enumerate(live):
            if stopped.is_set():
                break
            now = time.monotonic()
            share = now + max(deadline - now, 0.0) / (len(live) - index)
            batch.advance(share, stopped, lambda step, batch=batch: on_step(self._take(batch, step)), max_tokens)
        return self.done or stopped.is_set()

    def _take(self, batch: Batch, step: torch.Tensor) -> Replies:
        now = time.monotonic()
        chosen = top = None
        if batch.logprobs is not None and batch.logprobs.latest is not None:
            logprobs = batch.logprobs.latest
            chosen = logprobs.gather(1, step.reshape(-1, 1).to(logprobs.device)).squeeze(1).tolist()
            if batch.settings.logprobs:
                values, ids = logprobs.topk(batch.settings.logprobs, dim=-1)
                top = list(zip(ids.tolist(), values.tolist(), strict=True))
        for index, token in enumerate(step.tolist()):
            if batch.finished[index]:
                continue  # a row that ended is carried in the batch; what it makes after is ignored
            row = batch.group.rows[index]
            if token == batch.eos:
                batch.finished[index] = True
                self.ended[row] = True
            else:
                if chosen is not None:
                    self._note_logprobs(row, token, chosen[index], top[index] if top else ([], []))
                self.tokens[row].append(token)
                self.last_token_at[row] = now
        return self.replies()

    def _note_logprobs(self, row: int, token: int, logprob: float, top: tuple[list[int], list[float]]) -> None:
        """Record `token`'s entry in OpenAI's shape (before it joins the row's tokens)."""
        decode, before = self._decode[row], self.tokens[row][-CONTEXT_TOKENS:]

        def shaped(token_id: int, value: float) -> dict:
            piece = _piece(decode, before, token_id)
            # OpenAI's floor for a token that cannot come (JSON has no -Infinity).
            return {"token": piece, "logprob": max(value, -9999.0), "bytes": list(piece.encode("utf-8", "replace"))}

        entry = shaped(token, logprob)
        entry["top_logprobs"] = [shaped(i, v) for i, v in zip(*top, strict=True)]
        entry["text_offset"] = self._text_ends[row]
        self._text_ends[row] += len(entry["token"])
        self.logprobs[row].append(entry)
