"""Rendering a person's pasted chat template with a time and an output budget.

Jinja's sandbox bounds what a template reaches, not how long it runs: `{% for i in range(100000) %}{% for j in
range(100000) %}{% endfor %}{% endfor %}` never ends and emits nothing, and a pure-Python loop cannot be stopped from
another thread. So a pasted template renders in a small long-lived process of its own (`python -m
jobs.models.template_render`, only jinja2 and transformers' chat-template module imported, no torch); past the
budget that process is killed (the next render starts a fresh one) and the render is refused naming
`chat_template`. Several such processes serve at once, so one person's stalled template never holds another's render,
and nothing here takes jobs.models.templates' in-process render lock. Templates the studio ships or a base model
brings keep rendering in-process (jobs.models.templates.render_chat).

The render is transformers' own (`render_jinja_template`, what `apply_chat_template(..., tokenize=False)` calls with
the tokenizer's special tokens), so the text is the same as the in-process one."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar

RENDER_SECONDS = 2.0
"""How long one render of a pasted template may take."""
RENDER_CHARS = 1_000_000
"""The most characters one render may produce (a 32k-token context is about 130,000)."""
RENDER_MEMORY_BYTES = 512 * 1024 * 1024
"""Address space a render process may grow by beyond what it holds after its imports: `{{ 'x' * 10**10 }}` is a
MemoryError there, not the machine's memory."""
PROCESSES = 4
"""Render processes at most at once; a fifth render waits for one (at most RENDER_SECONDS)."""
START_SECONDS = 120.0
"""A fresh process's start (imports) is not charged to the render; a machine this loaded is refused too."""


renders_may_wait: ContextVar[bool] = ContextVar("renders_may_wait", default=False)
"""Set by the chat scheduler's thread (jobs.chat.scheduler): there a pasted template's slow render sets its request
aside (jobs.chat.generation). Elsewhere (an eval job's own process) the render is waited for, within its budget."""


class TemplateRenderError(ValueError):
    """A pasted chat template failed to render, ran past its budget, or wrote too much; the message names
    chat_template and says which."""


class _Renderer:
    """One render process, used by one render at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "jobs.models.template_render"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=_ROOT)
        if self._reply(START_SECONDS) != {"ready": True}:
            self.close()
            raise TemplateRenderError("chat_template: the template render process did not start")

    def _reply(self, seconds: float) -> dict | None:
        """The process's next line as JSON, or None when it is not there within `seconds` (or the process died)."""
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        if not ready:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else None

    def render(self, request: dict, seconds: float) -> dict | None:
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        return self._reply(seconds)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_idle: list[_Renderer] = []
_idle_lock = threading.Lock()
_slots = threading.BoundedSemaphore(PROCESSES)


def render_pasted(template: str, messages: list[dict], special_tokens: dict | None = None,
                  seconds: float = RENDER_SECONDS, max_chars: int = RENDER_CHARS, **options) -> str:
    """`messages` rendered through the pasted `template` as `apply_chat_template(messages, tokenize=False,
    **options)` renders them with a tokenizer whose special tokens are `special_tokens`, within `seconds` and
    `max_chars`. Raises TemplateRenderError naming chat_template otherwise."""
    if not _slots.acquire(timeout=START_SECONDS):
        raise TemplateRenderError("chat_template: every template render process is busy; try again in a moment")
    try:
        with _idle_lock:
            renderer = _idle.pop() if _idle else None
        if renderer is None:
            renderer = _Renderer()
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]  # as apply_chat_template does
        request = {"template": template, "messages": messages, "special": special_tokens or {}, "options": options,
                   "max_chars": max_chars}
        try:
            reply = renderer.render(request, seconds)
        except (OSError, ValueError):
            reply = None
        if reply is None:  # over its time (or dead): it may still be looping, so it goes
            renderer.close()
            raise TemplateRenderError(
                f"chat_template: rendering took longer than {seconds:g} s, the most a pasted template may take; "
                "simplify its loops")
        with _idle_lock:
            _idle.append(renderer)
    finally:
        _slots.release()
    if "error" in reply:
        raise TemplateRenderError(f"chat_template: {reply['error']}")
    return reply["text"]


def close_renderers() -> None:
    """End the idle render processes (tests; a process exits with its parent's pipe anyway)."""
    with _idle_lock:
        while _idle:
            _idle.pop().close()


SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]
"""What a pasted template is tried on at submit: a system turn and two exchanges."""


def pasted_template_problem(template: str, special_tokens: dict | None = None,
                            seconds: float = RENDER_SECONDS) -> str | None:
    """Why a pasted template cannot be a run's (it overruns its budget or fails on a plain conversation), without
    the leading field name; None when it renders the sample conversation within the budget."""
    try:
        for prompt in (False, True):
            render_pasted(template, SAMPLE_CONVERSATION, special_tokens, seconds, add_generation_prompt=prompt)
    except TemplateRenderError as error:
        return str(error).removeprefix("chat_template: ")
    return None


# --- the render process ------------------------------------------------------------------------------------------
def _limit_memory() -> None:
    try:
        import resource

        with open("/proc/self/status") as status:
            size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (size + RENDER_MEMORY_BYTES, size + RENDER_MEMORY_BYTES))
    except (ImportError, OSError, ValueError, StopIteration):
        pass  # not Linux: the time budget still holds


def _serve(read: Callable[[], bytes], write: Callable[[bytes], None]) -> None:
    from transformers.utils.chat_template_utils import render_jinja_template

    _limit_memory()
    write(b'{"ready": true}\n')
    while line := read():
        request = json.loads(line)
        try:
            rendered, _ = render_jinja_template(conversations=[request["messages"]], chat_template=request["template"],
                                                **request["options"], **request["special"])
            text = rendered[0]
            reply = ({"text": text} if len(text) <= request["max_chars"] else
                     {"error": f"the rendered conversation has {len(text):,} characters, more than the "
                               f"{request['max_chars']:,} a pasted template may write"})
        except MemoryError:
            reply = {"error": "rendering needed more memory than a pasted template may use"}
        except Exception as error:  # noqa: BLE001 (a template's own error, e.g. raise_exception: said, not raised)
            reply = {"error": f"rendering a conversation failed: {type(error).__name__}: {str(error)[:300]}"}
        write(json.dumps(reply).encode() + b"\n")


def main() -> None:
    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    _serve(sys.stdin.buffer.readline, write)


if __name__ == "__main__":
    main()
