"""Many small requests on one base as few batched generations: what the OpenAI-compatible endpoint
(app/web/openai_api.py) serves with. Each request names one pane (an adapter or the base) and asks for `n` choices;
requests of one person for one base that arrive within `window_s` of each other, with the same max_tokens and
sampling settings, become the rows of ONE compare on the generation scheduler (jobs.chat.scheduler), so they share
its fair turns, slices and limits with chat, and peft serves their adapters in one `adapter_names` batch.

Decisions:
- **Batches are per person.** A batch is one scheduler generation in its person's line: turns between people stay
  exactly those of chat, and one person's burst never rides on another's turn. A person may have
  `STUDIO_MAX_GENERATIONS_PER_PERSON` batches running (each at most `max_rows` rows) and as many rows again waiting;
  more is refused ("generations: ...", HTTP 429).
- **No joining a running batch.** A batch in flight carries one KV cache for all its rows (jobs.chat.generation);
  adding a row between steps would mean re-padding that cache and the ids of every row mid-generation, which
  transformers' `generate` does not offer. A request that arrives while a batch runs joins the next one, which starts
  as soon as the person has a free batch slot (the scheduler then interleaves the two, a slice each).
- **A row ends on its own.** A request is answered as soon as each of its choices reached its end-of-sequence token,
  a stop string or max_tokens, even while other rows of its batch go on; once every request of a batch is answered
  (or its reader left), the batch's generation is closed.
- Greedy rows are what the adapter answers alone (fp32 compute, tested in jobs.chat); sampled rows share one seeded
  RNG per batch, so a seed repeats a result only for the same batch (OpenAI's `seed` is best-effort too).

No torch here: the scheduler's engine brings it."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from jobs.chat.request import (
    ChatRequestError,
    GenerationSettings,
    Pane,
    Replies,
    conversation_text,
    prompt_chars_problem,
)
from storage.access import Person, acting_as, current_person

log = logging.getLogger(__name__)
ADMIT_RETRY_S = 5.0
ADMIT_POLL_S = 0.05


@dataclass(frozen=True)
class ServeRequest:
    base_model: str
    pane: Pane
    prompt: list[dict] | str
    """Chat messages (templated by the base's chat template), or a plain completion's text, sent as it is."""
    settings: GenerationSettings
    n: int = 1
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    """None: none; k: each token's log-probability and its k likeliest alternatives. Requests that differ only here
    share a batch: it reads them for the largest k asked, and each request gets what it asked."""

    def batch_key(self, person: str | None) -> tuple:
        """Requests with equal keys may share a batch: one person, one base, one max_tokens, one way of sampling."""
        s = self.settings
        sampling = (s.temperature, s.top_p, s.top_k, s.seed) if s.temperature > 0 else ()
        return person, self.base_model, s.max_new_tokens, s.repetition_penalty, sampling


@dataclass
class Choice:
    text: str = ""
    """What its reader has been sent (cut at a stop string)."""
    tokens: int = 0
    finish_reason: str | None = None
    """None while it goes on; 'stop' (its end-of-sequence token or a stop string) or 'length' (max_tokens)."""
    logprobs_sent: int = 0
    """How many of its tokens' log-probabilities its reader has been sent."""


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [index for stop in stops if (index := text.find(stop)) >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of a growing reply not to send yet: a character still being decoded (a
    multi-byte one shows as U+FFFD until its last byte), or the start of a stop string that may complete."""
    held = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                held = max(held, size)
                break
    return held


class ServeTicket:
    """One request in the batcher: its choices, and what its reader reads (`events`: ("delta", choice, text),
    ("finish", choice, reason), then ("done", None, None) or ("error", None, the exception); where the request asks
    for log-probabilities, ("logprobs", choice, entries) before the delta whose text they cover). `usage` is set
    before "done"."""

    def __init__(self, request: ServeRequest, person: Person | None,
                 listener: Callable[[tuple], None] | None = None) -> None:
        self.request, self.person = request, person
        self.choices = [Choice() for _ in range(request.n)]
        self.events: queue.Queue = queue.Queue()
        self.listener = listener
        """Called with each event instead of queueing it (from the batch's thread: an event loop's reader hands it
        over with call_soon_threadsafe, so no waiting reader holds a thread)."""
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.prompt_tokens = 0
        self.usage: dict | None = None
        """OpenAI's usage (prompt_tokens once, completion_tokens of every choice), set when it is done."""

    @property
    def over(self) -> bool:
        return self.done.is_set() or self.cancelled.is_set()

    def cancel(self) -> None:
        """Its reader left: its rows no longer keep the batch going."""
        self.cancelled.set()

    def take(self, replies: Replies, first_row: int, last: bool = False) -> None:
        """Read this ticket's rows (from `first_row`) of the batch's latest replies; `last`: the batch ended."""
        request = self.request
        for index, choice in enumerate(self.choices):
            if choice.finish_reason is not None:
                continue
            row = first_row + index
            text, count = replies[row], replies.token_counts[row]
            cut = _first_stop(text, request.stop)
            if cut is not None:
                text, reason = text[:cut], "stop"
            elif replies.ended[row]:
                reason = "stop"
            elif count >= request.settings.max_new_tokens or last:  # `last`: its stream closed early; what there is
                reason = "length"
            else:
                reason = None
                text = text[:len(text) - _held_back(text, request.stop)]
            grows = len(text) > len(choice.text) and text.startswith(choice.text)
            if request.logprobs is not None and replies.logprobs is not None:
                self._send_logprobs(index, choice, replies.logprobs[row], len(text) if grows else len(choice.text),
                                    whole=reason is not None and cut is None)
            if grows:
                self._emit(("delta", index, text[len(choice.text):]))
                choice.text = text
            choice.tokens = count
            if reason is not None:
                choice.finish_reason = reason
                self._emit(("finish", index, reason))
        self.prompt_tokens = replies.prompt_tokens[first_row]
        if all(choice.finish_reason is not None for choice in self.choices):
            self._end(None)

    def _send_logprobs(self, index: int, choice: Choice, entries: list[dict], text_end: int, whole: bool) -> None:
        """Send the entries of the tokens whose text starts within what the reader will have (`text_end`), or of
        every token (`whole`: the choice ended on its own, not cut at a stop string), each with only the
        alternatives this request asked for."""
        ready = len(entries) if whole else next(
            (i for i in range(choice.logprobs_sent, len(entries)) if entries[i]["text_offset"] >= text_end),
            len(entries))
        if ready > choice.logprobs_sent:
            k = self.request.logprobs
            self._emit(("logprobs", index, [dict(entry, top_logprobs=entry["top_logprobs"][:k])
                                            for entry in entries[choice.logprobs_sent:ready]]))
            choice.logprobs_sent = ready

    def _emit(self, event: tuple) -> None:
        if self.listener is not None:
            self.listener(event)
        else:
            self.events.put(event)

    def fail(self, error: BaseException) -> None:
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        if self.done.is_set():
            return
        completion = sum(choice.tokens for choice in self.choices)
        self.usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                      "total_tokens": self.prompt_tokens + completion}
        self.error = error
        self._emit(("error", None, error) if error is not None else ("done", None, None))
        self.done.set()


class ServeBatcher:
    """Collects requests into batches (see the module docstring) and runs each batch on the scheduler that
    `scheduler()` returns, in a thread of its own that only reads the scheduler's stream."""

    def __init__(self, scheduler: Callable[[], object], window_s: float = 0.05, max_rows: int = 16,
                 batches_per_person: int = 2) -> None:
        self.scheduler = scheduler
        self.window_s, self.max_rows, self.batches_per_person = window_s, max_rows, max(1, batches_per_person)
        self._lock = threading.Condition()
        self._pending: dict[tuple, list[ServeTicket]] = {}
        self._running: Counter = Counter()
        """Each person's batches running."""
        self._rows: Counter = Counter()
        """Each person's rows waiting or running."""
        self.batches_started = 0
        """How many batches ran (the benchmark and tests read it)."""

    def submit(self, request: ServeRequest, listener: Callable[[tuple], None] | None = None) -> ServeTicket:
        """Queue a request as the acting person (`listener`: see ServeTicket); raises ChatRequestError naming the
        field when it is refused."""
        limits = self.scheduler().limits
        problems = []
        if not 1 <= request.n <= self.max_rows:
            problems.append(f"n: from 1 to {self.max_rows} choices a request (STUDIO_SERVE_BATCH_ROWS), "
                            f"got {request.n}")
        if problem := prompt_chars_problem([conversation_text(request.prompt)], limits.max_prompt_tokens):
            problems.append(problem)
        problems += request.settings.problems()
        if problems:
            raise ChatRequestError(problems)
        person = current_person()
        who = person.name if person is not None else None
        allowed = (self.batches_per_person + 1) * self.max_rows
        with self._lock:
            if self._rows[who] + request.n > allowed:
                raise ChatRequestError([
                    f"generations: you already have {self._rows[who]} choices running or waiting on the API, and "
                    f"{request.n} more would pass the {allowed} one person may have at once "
                    f"(STUDIO_MAX_GENERATIONS_PER_PERSON batches of STUDIO_SERVE_BATCH_ROWS, and as many waiting): "
                    f"wait for some to end"])
            ticket = ServeTicket(request, person, listener)
            key = request.batch_key(who)
            self._rows[who] += request.n
            if key in self._pending:
                self._pending[key].append(ticket)
            else:
                self._pending[key] = [ticket]
                threading.Thread(target=self._collect, args=(key, who, person), daemon=True,
                                 name="serve-batcher").start()
        return ticket

    # --- batching -----------------------------------------------------------------------------------------------
    def _collect(self, key: tuple, who: str | None, person: Person | None) -> None:
        """Wait out the window, then start batches of this key's requests while the person has a free slot."""
        time.sleep(self.window_s)
        while True:
            with self._lock:
                while self._running[who] >= self.batches_per_person:
                    self._lock.wait()
                waiting = self._pending.get(key, [])
                for gone in [t for t in waiting if t.over]:
                    waiting.remove(gone)
                    self._forget(who, gone.request.n)
                batch, rows = [], 0
                while waiting and (not batch or rows + waiting[0].request.n <= self.max_rows):
                    ticket = waiting.pop(0)
                    batch.append(ticket)
                    rows += ticket.request.n
                if not batch:
                    self._pending.pop(key, None)
                    return
                self._running[who] += 1
                self.batches_started += 1
            threading.Thread(target=self._run, args=(who, person, batch), daemon=True, name="serve-batch").start()

    def _forget(self, who: str | None, rows: int) -> None:
        """(Holding the lock.)"""
        self._rows[who] -= rows
        if self._rows[who] <= 0:
            del self._rows[who]

    def _run(self, who: str | None, person: Person | None, batch: list[ServeTicket]) -> None:
        try:
            with acting_as(person):
                self._generate(batch)
        finally:
            with self._lock:
                self._running[who] -= 1
                if self._running[who] <= 0:
                    del self._running[who]
                for ticket in batch:
                    self._forget(who, ticket.request.n)
                self._lock.notify_all()

    def _admitted(self, base_model: str, panes: list[Pane], prompts: list, settings: GenerationSettings):
        """The scheduler's stream for a batch, its first update already read (which admits it). A batch that just
        ended still counts against its person in the scheduler until its current slice is over, so a refusal for
        the person's generations is tried again for a moment before it stands."""
        deadline = time.monotonic() + ADMIT_RETRY_S
        while True:
            stream = self.scheduler().stream(base_model, panes, prompts, settings)
            try:
                first = next(stream)
            except ChatRequestError as error:
                if not error.problems[0].startswith("generations: you already") or time.monotonic() > deadline:
                    raise
                time.sleep(ADMIT_POLL_S)
                continue
            return itertools.chain([first], stream), stream

    def _generate(self, batch: list[ServeTicket]) -> None:
        first = batch[0].request
        asked = [ticket.request.logprobs for ticket in batch if ticket.request.logprobs is not None]
        settings = dataclasses.replace(first.settings, logprobs=max(asked) if asked else None)
        panes, prompts, starts = [], [], []
        for ticket in batch:
            starts.append(len(panes))
            panes += [ticket.request.pane] * ticket.request.n
            prompts += [ticket.request.prompt] * ticket.request.n
        try:
            updates, stream = self._admitted(first.base_model, panes, prompts, settings)
            replies = None
            try:
                for replies in updates:
                    for ticket, start in zip(batch, starts, strict=True):
                        if not ticket.over:
                            ticket.take(replies, start)
                    if all(ticket.over for ticket in batch):
                        break  # every request is answered or gone: closing the stream stops the generation
            finally:
                stream.close()
            for ticket, start in zip(batch, starts, strict=True):
                if not ticket.over and replies is not None:
                    ticket.take(replies, start, last=True)
                if not ticket.over:
                    ticket.fail(ChatRequestError(["generation: ended without a reply"]))
        except ChatRequestError as error:
            if len(batch) > 1 and any(p.startswith("prompt:") for p in error.problems):
                for ticket in batch:  # one request's prompt is too long: each alone, so only it is refused
                    if not ticket.over:
                        self._generate([ticket])
                return
            for ticket in batch:
                ticket.fail(error)
        except Exception as error:  # the readers get it; the batcher goes on
            log.exception("a served batch failed")
            for ticket in batch:
                ticket.fail(error)
