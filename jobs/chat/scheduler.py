"""The generation scheduler: every generation the studio serves goes through one `GenerationScheduler`, which alone
calls the `ChatEngine`: chat compares from the page and the API, blind rounds (they are compares), prompt suites
(their generations and reference log-likelihoods), the upkeep that runs suites on new adapters, and any later
evaluation or serving path. A 1 MB prompt once pinned the CPU for minutes while everyone else's chat waited on the
engine's one lock; these are the rules that replaced it.

- **One serving thread owns the engine.** Requests never touch the model themselves: they are queued, and one thread
  (started on demand, gone after a while idle) runs them. The engine therefore needs no lock, and tokenizers are
  never used from two threads at once.
- **Turns, round-robin between people.** Each person (`storage.access.current_person()`; no one signed in, as for the
  CLI and workers, is one more "person") has a line of requests; the thread serves the first person's oldest request
  for one slice, then moves that person to the back. A person's own requests take turns too.
- **Slices.** A slice is one `generate` call of at most `slice_s` seconds (always at least one token), continuing
  from the KV cache of the slice before (jobs.chat.engine.Generation); so one person's long generation holds the
  others for at most a slice. Greedy output is the same token for token however it is sliced, and seeded sampling
  too (tested). A prompt's prefill is one slice: its length is bounded by the prompt limit, not cut further. A
  reference log-likelihood is one slice (one forward pass); a suite asks for one prompt at a time, so its turns
  interleave with everyone's chats.
- **Limits, refused at once in words** (ChatRequestError, each naming its field): a prompt over
  `max_prompt_tokens` × 8 characters before it is tokenized (jobs.chat.request.CHARS_PER_TOKEN_BOUND); then, on its
  first turn, over min(the base's context less max_new_tokens, `max_prompt_tokens`) tokens; more than
  `per_person` generations of one person running or waiting; more than `waiting` generations of everyone. The cap
  on max_new_tokens stays where it was (GenerationSettings).
- **Stop.** When the reader goes away (the page's Stop, a closed page: Gradio closes the generator) the request is
  marked stopped: if it is waiting it leaves the line at once, if it runs its `generate` ends after the current
  token (tested: the next person's generation starts well within a second). While a request waits for a turn its
  reader still gets an update every `WAIT_UPDATE_S` (the replies so far, and how many others are in line), so a
  Stop can close it instead of waiting for its next token.
- **Device memory.** A base that does not fit in the device's free memory while a training job on this host holds
  the rest makes its request wait (jobs.chat.request.MemoryWait, raised by the engine in the request's turn): its
  reader is told why with the numbers, the request steps aside for `MEMORY_RETRY_S` while everyone else keeps their
  turns, and it tries again, for at most `memory_wait_s`, then is refused in words.
- Unloading bases (a training job needs the memory) is a chore the thread runs between slices.

No torch here (the engine, handed in, brings it)."""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.chat.request import (
    ChatRequestError,
    GenerationSettings,
    MemoryWait,
    Replies,
    conversation_text,
    prompt_chars_problem,
)
from jobs.models.template_render import renders_may_wait
from storage.access import current_person

if TYPE_CHECKING:
    from jobs.chat.engine import ChatEngine

WAIT_UPDATE_S = 0.5
"""A waiting reader gets an update at least this often: Gradio can close a generator only between its yields."""
IDLE_S = 30.0
"""The serving thread ends after this long without work (the next request starts another)."""
MEMORY_RETRY_S = 2.0
"""A request waiting for device memory tries again this often."""


@dataclass(frozen=True)
class GenerationLimits:
    max_prompt_tokens: int = 4096
    """At most this many prompt tokens (a base with a shorter context allows fewer)."""
    per_person: int = 2
    """Generations one person may have running or waiting at once."""
    waiting: int = 32
    """Generations everyone together may have running or waiting at once."""
    slice_s: float = 0.25
    """How long a generation runs before the next in line gets its turn."""
    slice_tokens: int | None = None
    """At most this many new tokens a slice (None: as many as fit in slice_s); tests and benches pin slices."""
    memory_wait_s: float = 300.0
    """How long a request may wait for device memory a training job on this host holds before it is refused."""

    @classmethod
    def from_settings(cls, settings) -> GenerationLimits:
        return cls(max_prompt_tokens=settings.max_prompt_tokens, per_person=settings.max_generations_per_person,
                   waiting=settings.max_waiting_generations, slice_s=settings.generation_slice_s)


class _Ticket:
    """One request in the scheduler: its work, and what its reader sees (the latest update, then a result or an
    error)."""

    def __init__(self, person: str | None, work, panes: int) -> None:
        self.person, self.work, self.panes = person, work, panes
        self.stopped = threading.Event()
        self.changed = threading.Condition()
        self.update: Replies | None = None
        self.version = 0
        self.finished = False
        self.retired = False
        self.result = None
        self.error: BaseException | None = None
        self.not_before = 0.0
        """(monotonic) Not served before then: it waits for device memory."""
        self.memory_wait_since: float | None = None

    def publish(self, update: Replies) -> None:
        with self.changed:
            self.update, self.version = update, self.version + 1
            self.changed.notify_all()

    def news(self, seen: int) -> bool:
        """(Holding `changed`.) Whether there is more than the reader's version `seen`."""
        return self.version != seen or self.finished

    def finish(self, result, error: BaseException | None) -> None:
        with self.changed:
            self.finished, self.result, self.error = True, result, error
            self.changed.notify_all()


class _Generating:
    """A compare as work: the first turn begins it (loads what it needs, checks the prompt's tokens), every turn
    advances it one slice."""

    def __init__(self, begin: Callable, slice_tokens: int | None) -> None:
        self.begin, self.slice_tokens = begin, slice_tokens
        self.generation = None

    def step(self, deadline: float, ticket: _Ticket) -> tuple[bool, Replies | None]:
        if self.generation is None:
            self.generation = self.begin()
        done = self.generation.advance(deadline, ticket.stopped, ticket.publish, self.slice_tokens)
        return done, self.generation.replies() if done else None


class _Once:
    """Work done in one turn (a reference log-likelihood: one forward pass)."""

    def __init__(self, call: Callable) -> None:
        self.call = call

    def step(self, deadline: float, ticket: _Ticket) -> tuple[bool, object]:
        return True, self.call()


class GenerationScheduler:
    """Serves every generation on `engine`, a slice at a time, in turns between people; see the module docstring.
    Offers what suites and the chat service call on an engine: `stream`, `compare`, `reference_logliks`,
    `release`, `resident_bytes`."""

    def __init__(self, engine: ChatEngine, limits: GenerationLimits | None = None) -> None:
        self.engine = engine
        self.limits = limits or GenerationLimits()
        self._lock = threading.Condition()
        self._lines: OrderedDict[str | None, deque[_Ticket]] = OrderedDict()
        """Each person's waiting requests, people in the order of their next turn."""
        self._admitted: dict[str | None, int] = {}
        """Each person's requests running or waiting."""
        self._chores: deque[_Ticket] = deque()
        self._server: threading.Thread | None = None

    # --- the generation paths ---------------------------------------------------------------------------------
    def stream(self, base_model: str, panes: list[tuple[str, Path | None]], conversations: list[list[dict]],
               settings: GenerationSettings) -> Iterator[Replies]:
        """Yield every pane's growing reply after each token (and, while waiting for a turn, every WAIT_UPDATE_S);
        the last yield is final. Closing the generator stops the generation. Raises ChatRequestError when refused."""
        refuse_long([conversation_text(c) for c in conversations], self.limits.max_prompt_tokens)
        begin = functools.partial(self.engine.begin, base_model, panes, conversations, settings,
                                  self.limits.max_prompt_tokens)
        ticket = self._admit(_Generating(begin, self.limits.slice_tokens), len(panes))
        try:
            yield from self._updates(ticket)
        finally:
            self._leave(ticket)

    def compare(self, base_model: str, panes: list[tuple[str, Path | None]], conversations: list[list[dict]],
                settings: GenerationSettings) -> Replies:
        final: Replies = Replies.waiting(len(panes), 0)
        for final in self.stream(base_model, panes, conversations, settings):  # noqa: B007 (keep the last)
            pass
        return final

    def reference_logliks(self, base_model: str, panes: list[tuple[str, Path | None]], prompt: list[dict],
                          reference: str) -> list[float]:
        """Each pane's mean log-likelihood per token of `reference` as the answer to `prompt` (one turn)."""
        refuse_long([conversation_text(prompt) + reference], self.limits.max_prompt_tokens)
        call = functools.partial(self.engine.reference_logliks, base_model, panes, prompt, reference,
                                 self.limits.max_prompt_tokens)
        ticket = self._admit(_Once(call), len(panes))
        try:
            return self._result(ticket)
        finally:
            self._leave(ticket)

    def release(self) -> list[str]:
        """Unload every loaded base, between two slices; returns their names."""
        ticket = _Ticket(None, _Once(self.engine.release), 0)
        with self._lock:
            self._chores.append(ticket)
            self._wake()
        return self._result(ticket)

    def resident_bytes(self) -> int:
        return self.engine.resident_bytes()

    # --- admission and leaving --------------------------------------------------------------------------------
    def _admit(self, work, panes: int) -> _Ticket:
        person = current_person()
        key = person.name if person is not None else None
        with self._lock:
            mine, everyone = self._admitted.get(key, 0), sum(self._admitted.values())
            if mine >= self.limits.per_person:
                raise ChatRequestError([
                    f"generations: you already have {mine} running or waiting, the most one person may have at "
                    f"once ({self.limits.per_person}, STUDIO_MAX_GENERATIONS_PER_PERSON): wait for one to end or "
                    f"stop it"])
            if everyone >= self.limits.waiting:
                raise ChatRequestError([
                    f"generations: {everyone} are running or waiting, the most the studio takes at once "
                    f"({self.limits.waiting}, STUDIO_MAX_WAITING_GENERATIONS): try again in a moment"])
            ticket = _Ticket(key, work, panes)
            self._admitted[key] = mine + 1
            self._lines.setdefault(key, deque()).append(ticket)
            self._wake()
        return ticket

    def _leave(self, ticket: _Ticket) -> None:
        """The reader is done or gone: a waiting request leaves its line now, a running one at the next token."""
        ticket.stopped.set()
        with self._lock:
            line = self._lines.get(ticket.person)
            if line is not None and ticket in line:
                line.remove(ticket)
                if not line:
                    del self._lines[ticket.person]
                self._retire(ticket, None, None)

    def _retire(self, ticket: _Ticket, result, error: BaseException | None) -> None:
        """(Holding the lock.) The request no longer counts against anyone's limits; its reader gets the end."""
        if not ticket.retired:
            ticket.retired = True
            self._admitted[ticket.person] -= 1
            if not self._admitted[ticket.person]:
                del self._admitted[ticket.person]
        ticket.finish(result, error)

    # --- the reader's side ------------------------------------------------------------------------------------
    def _updates(self, ticket: _Ticket) -> Iterator[Replies]:
        seen = 0
        while True:
            with ticket.changed:
                ticket.changed.wait_for(functools.partial(ticket.news, seen), timeout=WAIT_UPDATE_S)
                finished, version, update = ticket.finished, ticket.version, ticket.update
            if finished:
                if ticket.error is not None:
                    raise ticket.error
                yield ticket.result
                return
            if version == seen and update is None:  # no turn yet: say so, and let a Stop close the generator
                update = Replies.waiting(ticket.panes, self._others(ticket))
            seen = version
            yield update

    def _result(self, ticket: _Ticket):
        with ticket.changed:
            ticket.changed.wait_for(lambda: ticket.finished)
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def _others(self, ticket: _Ticket) -> int:
        with self._lock:
            return max(sum(self._admitted.values()) - 1, 0)

    # --- the serving thread -----------------------------------------------------------------------------------
    def _wake(self) -> None:
        """(Holding the lock.) Make sure a serving thread runs and sees the new work."""
        if self._server is None:
            self._server = threading.Thread(target=self._serve, daemon=True, name="generation-scheduler")
            self._server.start()
        self._lock.notify()

    def _next(self) -> tuple[_Ticket | None, bool, float | None]:
        """(Holding the lock.) The next chore, else the oldest ready request of the first person who has one, that
        person moved to the back; (None, _, seconds until a waiting request is ready, or None when nothing waits)."""
        if self._chores:
            return self._chores.popleft(), True, None
        now = time.monotonic()
        for person, line in self._lines.items():
            ticket = next((t for t in line if t.not_before <= now), None)
            if ticket is not None:
                line.remove(ticket)
                if line:
                    self._lines.move_to_end(person)
                else:
                    del self._lines[person]
                return ticket, False, None
        soonest = min((t.not_before for line in self._lines.values() for t in line), default=None)
        return None, False, None if soonest is None else max(soonest - now, 0.0)

    def _serve(self) -> None:
        renders_may_wait.set(True)  # a pasted template's slow render sets its request aside, not everyone's turns
        while True:
            with self._lock:
                idle = False
                while True:
                    ticket, chore, pause = self._next()
                    if ticket is not None:
                        break
                    if pause is not None:  # only requests waiting for memory: wake when the first may go on
                        idle = False
                        self._lock.wait(pause)
                    elif idle:
                        self._server = None
                        return
                    else:
                        idle = True
                        self._lock.wait(IDLE_S)
            deadline = time.monotonic() + self.limits.slice_s
            try:
                if ticket.stopped.is_set():  # its reader left as its turn came
                    done, result, error = True, None, None
                else:
                    done, result, error = *ticket.work.step(deadline, ticket), None
            except MemoryWait as wait:
                done, result, error = self._memory_wait(ticket, wait), None, None
                if done:
                    error = ChatRequestError([f"base_model: gave up after {self.limits.memory_wait_s:g} s {wait}: "
                                              f"try again when the training job ends"])
            except BaseException as raised:  # the request's reader raises it; the others go on
                done, result, error = True, None, raised
            if chore:
                ticket.finish(result, error)
                continue
            with self._lock:
                if done or ticket.stopped.is_set():
                    self._retire(ticket, result, error)
                else:  # the back of its person's line (the person is already behind the others)
                    self._lines.setdefault(ticket.person, deque()).append(ticket)

    def _memory_wait(self, ticket: _Ticket, wait: MemoryWait) -> bool:
        """Tell the reader why its request waits and set it aside for a while; returns whether it waited too long."""
        now = time.monotonic()
        if ticket.memory_wait_since is None:
            ticket.memory_wait_since = now
        if now - ticket.memory_wait_since >= self.limits.memory_wait_s:
            return True
        ticket.not_before = now + MEMORY_RETRY_S
        ticket.publish(Replies.waiting(ticket.panes, self._others(ticket), note=str(wait)))
        return False


def refuse_long(texts: list[str], max_prompt_tokens: int) -> None:
    """Raise ChatRequestError when a prompt is too long to be worth tokenizing."""
    if problem := prompt_chars_problem(texts, max_prompt_tokens):
        raise ChatRequestError([problem])
