"""The OpenAI-compatible endpoint on the studio's own server: `GET /v1/models`, `POST /v1/chat/completions` and
`POST /v1/completions`, with `model` naming an adapter (or a base). app/web/guard.py hands every `/v1/` request here
before any cookie is read: this API signs in by key alone.

- **Who.** With accounts, `Authorization: Bearer <key>`, the person's own API key (made and revoked in the Account
  tab; jobs/secrets.py keeps its hash); a missing, wrong or revoked key, or one of a disabled or removed account, is
  401. Each request then runs as the key's person: `model` resolves among their own adapters (an admin: everyone's),
  another person's adapter is 404 as if it did not exist. Without accounts the studio listens on 127.0.0.1 only
  (app/__main__.py refuses any other address) and its one person needs no key: any key, or none, is accepted.
- **Work.** Every request goes through the generation scheduler chat uses (its prompt limits, fair turns between
  people, per-person and studio-wide limits), batched by jobs.chat.serve. Bodies are bounded before they are parsed.
- **Errors** in OpenAI's format (`{"error": {"message", "type", "param", "code"}}`): a bad body 400 naming every
  field at once, a prompt too long 400 (`context_length_exceeded`), an unknown model 404 (`model_not_found`), a bad
  key 401 (`invalid_api_key`), over a limit 429 (`rate_limit_exceeded`). A parameter the engine cannot honour
  (OpenAI's penalties, tools, ...) is a 400 naming it, never silently ignored.
- **Log-probabilities and usage.** `logprobs`/`top_logprobs` (at most 20) report each token's log-probability under
  the model's raw logits (jobs.chat.generation.RawLogprobs says why), in OpenAI's shapes; `usage` is on every whole
  answer and, with `stream_options.include_usage`, on a last chunk of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.choices import base_models
from jobs.chat.request import (
    BASE_PANE,
    MAX_TOP_LOGPROBS,
    ChatRequestError,
    GenerationSettings,
    Pane,
    resolve_panes,
)
from jobs.chat.serve import ServeBatcher, ServeRequest, ServeTicket
from jobs.models.reward_adapters import is_reward_adapter
from jobs.secrets import api_key_owner
from jobs.studio import Studio
from storage import catalog, users_repo
from storage.access import LOCAL_OWNER, Person, acting_as

log = logging.getLogger("app")
MAX_BODY_BYTES = 1 << 20
"""A body larger than this is refused unread (a prompt at the token limit is far smaller)."""
MAX_STOPS = 4
MAX_STOP_CHARS = 256
FIRST_EVENT_WAIT_S = 900.0
"""How long a request waits for its first token or refusal (a turn, a base loading, device memory) before giving up."""
KEEP_ALIVE_S = 5.0
UNSUPPORTED = {  # parameter: (why, its values that ask for nothing)
    "echo": ("the prompt is not echoed back", (False,)),
    "best_of": ("best_of is not offered: ask for n choices", (1,)),
    "suffix": ("insertion (suffix) is not offered", ("",)),
    "logit_bias": ("logit_bias is not offered", ({},)),
    "presence_penalty": ("use repetition_penalty (1 = none) instead", (0,)),
    "frequency_penalty": ("use repetition_penalty (1 = none) instead", (0,)),
    "tools": ("tool calls are not offered", ([],)), "tool_choice": ("tool calls are not offered", ("none",)),
    "functions": ("function calls are not offered", ([],)),
    "function_call": ("function calls are not offered", ("none",)),
    "response_format": ("structured output is not offered", ({"type": "text"},)),
    "audio": ("audio is not offered", ()), "modalities": ("only text is offered", (["text"],)),
    "prediction": ("predicted outputs are not offered", ()),
}
"""Parameters the engine cannot honour, with why: refused when set to anything that asks for them."""


def _asks(field: str, value) -> bool:
    """Whether `value` of an unsupported parameter asks for something (None and its 'off' values do not; True is not
    taken for 1)."""
    return value is not None and not any(value == off and isinstance(value, bool) == isinstance(off, bool)
                                         for off in UNSUPPORTED[field][1])


IGNORED = {"user", "store", "metadata", "service_tier", "parallel_tool_calls"}
"""Accepted and without effect here (bookkeeping fields)."""


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> JSONResponse:
        headers = {"retry-after": "1"} if self.status == 429 else None
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status, headers=headers)


# --- request bodies -----------------------------------------------------------------------------------------------
class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict]

    @field_validator("content")
    @classmethod
    def text_only(cls, content):
        if isinstance(content, list):
            if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in content):
                raise ValueError("only text parts ({'type': 'text', 'text': ...}) are offered")
            return "".join(part["text"] for part in content)
        return content


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    """The last streamed chunk carries `usage` (its `choices` empty), as OpenAI sends it."""


class Sampling(BaseModel):
    """What both endpoints share."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=300)
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2048)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, le=1000)
    repetition_penalty: float = Field(default=1.0, ge=1, le=2)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    n: int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def asked_logprobs(self) -> int | None:
        """None: no log-probabilities; k: each token's and its k likeliest alternatives'."""
        return None

    @field_validator("stop")
    @classmethod
    def few_stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"at most {MAX_STOPS} stop strings of 1 to {MAX_STOP_CHARS} characters")
        return stops

    def settings(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
                                  temperature=self.temperature, top_p=self.top_p, seed=self.seed or 0,
                                  top_k=self.top_k, repetition_penalty=self.repetition_penalty)


DEFAULT_MAX_TOKENS = GenerationSettings().max_new_tokens


class ChatCompletionRequest(Sampling):
    messages: list[Message] = Field(min_length=1, max_length=1000)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="after")
    def top_needs_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs set to true")
        return self

    def asked_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Sampling):
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    """The legacy endpoint's one number: each token's log-probability and this many likeliest alternatives'."""

    def asked_logprobs(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def one_prompt(cls, prompt):
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("one prompt a request (send several requests at once: they are batched)")
            return prompt[0]
        return prompt


def parsed(model: type[Sampling], body: bytes) -> Sampling:
    """The validated body, or a 400 naming every problem at once (unknown and unsupported fields too)."""
    try:
        raw = json.loads(body or b"null")
    except ValueError as error:
        raise OpenAIError(400, f"body: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise OpenAIError(400, "body: must be a JSON object")
    problems: list[tuple[str, str]] = []
    try:
        request = model.model_validate(raw)
    except ValidationError as error:
        request = None
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"]) or "body"
            problems.append((field, item["msg"]))
    known = set(model.model_fields)
    for field, value in raw.items():
        if field in UNSUPPORTED and _asks(field, value):
            problems.append((field, f"not supported here: {UNSUPPORTED[field][0]}"))
        elif field not in known and field not in UNSUPPORTED and field not in IGNORED:
            problems.append((field, "not a parameter this endpoint knows"))
    if problems:
        raise OpenAIError(400, "; ".join(f"{field}: {message}" for field, message in problems), param=problems[0][0])
    return request


# --- the app ------------------------------------------------------------------------------------------------------
def build(studio: Studio, scheduler) -> FastAPI:
    """The /v1 app; `scheduler` returns the web process's generation scheduler (ChatService.scheduler)."""
    settings = studio.settings
    batcher = ServeBatcher(scheduler, settings.serve_batch_window_s, settings.serve_batch_rows,
                           settings.max_generations_per_person)
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    api.state.batcher = batcher

    @api.exception_handler(OpenAIError)
    async def openai_error(request: Request, error: OpenAIError):
        return error.response()

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return OpenAIError(error.status_code, str(error.detail), code="not_found" if error.status_code == 404
                           else None).response()

    @api.get("/v1/models")
    async def list_models(request: Request):
        person = await _caller(studio, request)
        return await run_in_threadpool(_models, studio, person)

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        person = await _caller(studio, request)
        body = parsed(ChatCompletionRequest, await _body(request))
        prompt = [{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                  for m in body.messages]
        return await _complete(studio, batcher, person, body, prompt, chat=True)

    @api.post("/v1/completions")
    async def completions(request: Request):
        person = await _caller(studio, request)
        body = parsed(CompletionRequest, await _body(request))
        return await _complete(studio, batcher, person, body, body.prompt, chat=False)

    return api


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise OpenAIError(413, f"body: over {MAX_BODY_BYTES:,} bytes", code="request_too_large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OpenAIError(413, f"body: over {MAX_BODY_BYTES:,} bytes", code="request_too_large")
    return body


async def _caller(studio: Studio, request: Request) -> Person:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    person = await run_in_threadpool(caller, studio, key.strip() if scheme.lower() == "bearer" else None)
    if person is None:
        raise OpenAIError(401, "Incorrect API key provided: make one in the studio's Account tab and send it as "
                               "`Authorization: Bearer <key>`.", code="invalid_api_key")
    return person


def caller(studio: Studio, key: str | None) -> Person | None:
    """Whom a request with API key `key` runs as: without accounts, the one local person (no key needed: the studio
    then listens on loopback only); with accounts, the key's person while their account is active; else None."""
    with studio.db.read() as session:
        if not users_repo.accounts_exist(session):
            return Person(LOCAL_OWNER, admin=True)
    owner = api_key_owner(studio, key)
    if owner is None:
        return None
    with studio.db.read() as session:
        user = users_repo.get_user(session, owner)
        if user is None or user.disabled_at is not None:
            return None
        return Person(user.name, admin=user.is_admin)


def _models(studio: Studio, person: Person) -> dict:
    with acting_as(person):
        bases = base_models(studio)
        with studio.db.read() as session:
            # A reward model generates nothing: it is not a model /v1 serves (a request naming it is refused why).
            adapters = [(a.name, a.base_model, a.owner, a.created_at) for a in catalog.list_adapters(session)
                        if not is_reward_adapter(studio.absolute(a.path))]
    rows = [{"id": base, "object": "model", "created": 0, "owned_by": "studio", "kind": "base"} for base in bases]
    rows += [{"id": name, "object": "model", "created": int(created.timestamp()) if created else 0,
              "owned_by": owner or LOCAL_OWNER, "kind": "adapter", "parent": base}
             for name, base, owner, created in adapters]
    return {"object": "list", "data": rows}


def resolve_model(studio: Studio, person: Person, model: str) -> tuple[str, Pane]:
    """(base model, pane) for a request's `model`: a base the person may chat with (as listed by /v1/models), or one
    of their adapters (adapter@step-N: a kept checkpoint); else 404, as if another person's did not exist."""
    with acting_as(person):
        if model in base_models(studio):
            return model, Pane(BASE_PANE, None)
        with studio.db.read() as session:
            adapter = catalog.get_adapter_by_name(session, model.partition("@step-")[0])
            base = adapter.base_model if adapter is not None else None
        if base is not None:
            try:
                return base, resolve_panes(studio, base, [model])[0]
            except ChatRequestError:
                pass
    raise OpenAIError(404, f"The model `{model}` does not exist or you do not have access to it.", param="model",
                      code="model_not_found")


def refusal(error: ChatRequestError) -> OpenAIError:
    """A scheduler or batcher refusal as its HTTP answer: over a limit 429, a long prompt 400, else 400."""
    message = str(error)
    first = error.problems[0] if error.problems else message
    field = first.split(":", 1)[0]
    if first.startswith("generations:"):
        return OpenAIError(429, message, code="rate_limit_exceeded", kind="rate_limit_error")
    if first.startswith("prompt:"):
        return OpenAIError(400, message, param="messages", code="context_length_exceeded")
    return OpenAIError(400, message, param={"max_new_tokens": "max_tokens"}.get(field, field))


async def _complete(studio: Studio, batcher: ServeBatcher, person: Person, body: Sampling, prompt, chat: bool):
    base, pane = await run_in_threadpool(resolve_model, studio, person, body.model)
    request = ServeRequest(base, pane, prompt, body.settings(), n=body.n, stop=tuple(body.stop or ()),
                           logprobs=body.asked_logprobs())
    loop, events = asyncio.get_running_loop(), asyncio.Queue()

    def submit() -> ServeTicket:  # the batch's thread hands each event to this loop: no reader holds a thread
        with acting_as(person):
            return batcher.submit(request, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))

    try:
        ticket = await run_in_threadpool(submit)
    except ChatRequestError as error:
        raise refusal(error) from None
    # The first event (a token, or a refusal such as a prompt over its token limit) comes before any answer, so a
    # refusal has its own status code in a stream too.
    try:
        first = await asyncio.wait_for(events.get(), FIRST_EVENT_WAIT_S)
    except TimeoutError:
        ticket.cancel()
        raise OpenAIError(503, "generation: no turn came in time; try again", code="timeout") from None
    except asyncio.CancelledError:  # the server is closing, or the client left
        ticket.cancel()
        raise
    if first[0] == "error":
        raise _as_openai(first[2])
    answer = Answer(body.model, chat, body.n, ticket, logprobs=request.logprobs is not None,
                    usage=bool(body.stream_options and body.stream_options.include_usage))
    if body.stream:
        return StreamingResponse(answer.stream(ticket, events, first), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})
    try:
        return JSONResponse(await answer.whole(events, first))
    finally:
        ticket.cancel()


def _as_openai(error: BaseException) -> OpenAIError:
    if isinstance(error, ChatRequestError):
        return refusal(error)
    incident = secrets.token_hex(4)
    log.error("incident %s (openai endpoint)", incident, exc_info=error)
    return OpenAIError(500, f"Something went wrong (incident {incident}); an admin can find the details in the "
                            f"studio's log.", kind="server_error")


class Answer:
    """What one request answers, whole or as server-sent events in OpenAI's chunk format. `logprobs`: the request
    asked for them; `usage`: a streamed answer ends with a usage chunk (a whole one always has it)."""

    def __init__(self, model: str, chat: bool, n: int, ticket: ServeTicket, logprobs: bool = False,
                 usage: bool = False) -> None:
        self.model, self.chat, self.n, self.ticket = model, chat, n, ticket
        self.logprobs, self.usage = logprobs, usage
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    @staticmethod
    async def _events(events: asyncio.Queue, first: tuple) -> AsyncIterator[tuple | None]:
        """The request's events from `first` on; None every KEEP_ALIVE_S while nothing comes."""
        event = first
        while True:
            yield event
            if event is not None and event[0] in ("done", "error"):
                return
            try:
                event = await asyncio.wait_for(events.get(), KEEP_ALIVE_S)
            except TimeoutError:
                event = None

    def _logprobs(self, entries: list[dict] | None) -> dict | None:
        """Entries (jobs.chat.generation) in OpenAI's shape: chat's `content` list, or the legacy completion's
        parallel lists (`top_logprobs` as token -> logprob maps, `text_offset` from the reply's start)."""
        if not self.logprobs or entries is None:
            return None
        if self.chat:
            return {"content": [{key: value for key, value in entry.items() if key != "text_offset"}
                                for entry in entries], "refusal": None}
        return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
                "text_offset": [e["text_offset"] for e in entries]}

    async def whole(self, events: asyncio.Queue, first: tuple) -> dict:
        texts, reasons = [""] * self.n, [None] * self.n
        entries: list[list[dict]] = [[] for _ in range(self.n)]
        async for event in self._events(events, first):
            if event is None:
                continue
            kind, index, value = event
            if kind == "delta":
                texts[index] += value
            elif kind == "logprobs":
                entries[index] += value
            elif kind == "finish":
                reasons[index] = value
            elif kind == "error":
                raise _as_openai(value)
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                        "logprobs": self._logprobs(entries[i])}
                       for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))]
        else:
            choices = [{"index": i, "text": text, "finish_reason": reason, "logprobs": self._logprobs(entries[i])}
                       for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))]
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices, "usage": self.ticket.usage}

    def _chunk(self, index: int, text: str | None = None, reason: str | None = None, role: bool = False,
               entries: list[dict] | None = None) -> str:
        logprobs = self._logprobs(entries) if entries else None
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": logprobs}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": reason, "logprobs": logprobs}
        return self._send({"choices": [choice]})

    def _send(self, fields: dict) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                 "created": self.created, "model": self.model, **fields}
        if self.usage:
            chunk.setdefault("usage", None)  # OpenAI: null on every chunk but the last
        return f"data: {json.dumps(chunk)}\n\n"

    async def stream(self, ticket: ServeTicket, events: asyncio.Queue, first: tuple) -> AsyncIterator[str]:
        pending: dict[int, list[dict]] = {}
        """Log-probabilities not sent yet: they ride on their choice's next delta."""
        try:
            if self.chat:
                for index in range(self.n):
                    yield self._chunk(index, role=True)
            async for event in self._events(events, first):
                if event is None:
                    yield ": waiting\n\n"  # a comment line: clients skip it, and a reader who left is noticed
                    continue
                kind, index, value = event
                if kind == "logprobs":
                    pending.setdefault(index, []).extend(value)
                elif kind == "delta":
                    yield self._chunk(index, text=value, entries=pending.pop(index, None))
                elif kind == "finish":
                    if index in pending:  # tokens whose text was all held back or cut
                        yield self._chunk(index, text="", entries=pending.pop(index))
                    yield self._chunk(index, reason=value)
                elif kind == "error":
                    error = _as_openai(value)
                    yield "data: " + json.dumps({"error": {"message": error.message, "type": error.kind,
                                                           "param": error.param, "code": error.code}}) + "\n\n"
                    return
            if self.usage:
                yield self._send({"choices": [], "usage": ticket.usage})
            yield "data: [DONE]\n\n"
        finally:
            ticket.cancel()  # a reader who left stops holding its rows of the batch
