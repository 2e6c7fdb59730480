"""The OpenAI-compatible endpoint's own rules, without a model: who a key is (none needed without accounts; a
revoked key, a disabled or removed account: nobody), the bodies it refuses (every problem at once, a parameter the
engine cannot honour named), and how refusals map to OpenAI's status codes. The whole endpoint through the openai
client: tests/security/test_openai_serve.py."""

import json

import pytest
from starlette.testclient import TestClient

from app.web.openai_api import ChatCompletionRequest, OpenAIError, build, caller, parsed, refusal
from jobs import secrets as secret_store
from jobs.chat.request import ChatRequestError
from storage import users_repo
from storage.access import LOCAL_OWNER, Person, acting_as


def test_without_accounts_no_key_is_needed(studio):
    assert caller(studio, None) == Person(LOCAL_OWNER, admin=True)
    listed = TestClient(build(studio, lambda: None)).get("/v1/models")  # no Authorization header at all
    assert listed.status_code == 200
    assert {"demo-tiny-llama"} <= {model["id"] for model in listed.json()["data"]}


def test_with_accounts_a_key_names_its_person_until_revoked_or_disabled(studio):
    with studio.db.write() as session:
        users_repo.add_user(session, "ann", "x")
        users_repo.add_user(session, "ben", "x", admin=True)
    with acting_as(Person("ann")):
        key = secret_store.new_api_key(studio)
    with acting_as(Person("ben")):
        bens = secret_store.new_api_key(studio)
    assert caller(studio, key) == Person("ann") and caller(studio, bens) == Person("ben", admin=True)
    assert caller(studio, None) is None and caller(studio, key + "x") is None and caller(studio, "") is None
    with acting_as(Person("ann")):
        assert secret_store.new_api_key(studio) != key  # a new key replaces the old one at once
    assert caller(studio, key) is None
    with acting_as(Person("ann")):
        newer = secret_store.new_api_key(studio)
        assert secret_store.drop_secret(studio, secret_store.API_KEY)
    assert caller(studio, newer) is None
    with studio.db.write() as session:
        users_repo.set_disabled(session, "ben", True)
    assert caller(studio, bens) is None
    with studio.db.read() as session:  # the store keeps the key's hash, never the key
        from storage import secrets_repo

        kept = secrets_repo.get_secret(session, "ben", secret_store.API_KEY)
    assert bens not in kept.ciphertext and kept.ciphertext.startswith("sha256:")
    answer = TestClient(build(studio, lambda: None)).get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"


def test_a_body_is_refused_with_every_problem_named():
    body = {"model": "m", "messages": [], "temperature": 3, "top_logprobs": 21, "presence_penalty": 0.5, "tools": [],
            "frobnicate": 1, "user": "me", "frequency_penalty": 0}
    with pytest.raises(OpenAIError) as refused:
        parsed(ChatCompletionRequest, json.dumps(body).encode())
    message = refused.value.message
    for field in ("messages", "temperature", "top_logprobs", "presence_penalty", "frobnicate"):
        assert field in message, message
    for accepted in ("tools", "user", "frequency_penalty"):  # off values and bookkeeping fields pass
        assert f"{accepted}:" not in message, message
    assert refused.value.status == 400
    plain = parsed(ChatCompletionRequest, json.dumps({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stop": "x", "logprobs": False}).encode())
    assert plain.messages[0].content == "hi" and plain.stop == ["x"] and plain.settings().max_new_tokens == 64


def test_refusals_map_to_openai_status_codes():
    busy = refusal(ChatRequestError(["generations: you already have 2 running or waiting"]))
    assert (busy.status, busy.code) == (429, "rate_limit_exceeded")
    assert busy.response().headers["retry-after"] == "1"
    long = refusal(ChatRequestError(["prompt: 2,000 tokens with the conversation so far, the limit is 960"]))
    assert (long.status, long.code) == (400, "context_length_exceeded")
    assert refusal(ChatRequestError(["max_new_tokens: must be from 1 to 2048"])).param == "max_tokens"
