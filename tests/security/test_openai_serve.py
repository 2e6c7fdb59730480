"""The OpenAI-compatible endpoint through the real `openai` client against the running studio with accounts
(tests/security/conftest.py): carol's key lists and uses her adapters, plain and streamed, on two adapters at once;
n and stop are honoured; a wrong key is 401, an unknown model and another person's adapter 404, a prompt over the
base's context 400. Carol's two adapters are PEFT's own random init (init_lora_weights=False, so each changes the
answers), registered as hers: serving does not care how the weights were found, and training two would cost a minute."""

import concurrent.futures

import pytest
from openai import AuthenticationError, BadRequestError, NotFoundError, OpenAI

from storage.access import Person, acting_as
from tests.security.conftest import BASE, PASSWORD

pytestmark = pytest.mark.slow
HOT = [{"role": "user", "content": "What is the opposite of hot?"}]


def _adapter(team, owner: str, name: str, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from storage.models import Adapter

    studio = team.live.studio
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(studio.settings.models_dir / BASE, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False,
                                            task_type="CAUSAL_LM"))
    for name_, param in model.named_parameters():
        if "lora_B" in name_:
            param.data.mul_(20)  # a random init moves the tiny base's answers only a little; make them differ
    model.save_pretrained(studio.absolute(f"adapters/{name}"))
    with studio.db.write() as session:
        session.add(Adapter(name=name, base_model=BASE, path=f"adapters/{name}", size_bytes=1, owner=owner))


def _client(team, key: str) -> OpenAI:
    return OpenAI(base_url=team.url.rstrip("/") + "/v1", api_key=key, max_retries=0, timeout=300)


def _key(team, name: str) -> str:
    from jobs.secrets import new_api_key

    with acting_as(Person(name)):
        return new_api_key(team.live.studio)


def test_any_openai_client_lists_and_uses_its_own_adapters(team):
    team.add_person("carol")
    for name, seed in (("carol-one", 1), ("carol-two", 2)):
        _adapter(team, "carol", name, seed)
    carol, bob = _client(team, _key(team, "carol")), _client(team, _key(team, "bob"))

    listed = {model.id: model for model in carol.models.list().data}
    assert {"carol-one", "carol-two", BASE} <= set(listed) and listed["carol-one"].owned_by == "carol"
    assert not {"carol-one", "carol-two"} & {model.id for model in bob.models.list().data}

    def plain(model: str) -> tuple[str, str]:
        answer = carol.chat.completions.create(model=model, messages=HOT, max_tokens=8, temperature=0)
        return answer.choices[0].message.content, answer.choices[0].finish_reason

    def streamed(model: str) -> tuple[str, str]:
        text, reason = "", None
        for chunk in carol.chat.completions.create(model=model, messages=HOT, max_tokens=8, temperature=0,
                                                   stream=True):
            text += chunk.choices[0].delta.content or ""
            reason = chunk.choices[0].finish_reason or reason
        return text, reason

    calls = [(plain, "carol-one"), (plain, "carol-two"), (streamed, "carol-one"), (streamed, "carol-two")]
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:  # all at once: two adapters, one batch
        one, two, one_streamed, two_streamed = pool.map(lambda call: call[0](call[1]), calls)
    assert one == one_streamed and two == two_streamed and one[0] != two[0], (one, two)
    assert one[1] in ("stop", "length") and one[0]

    several = carol.chat.completions.create(model="carol-one", messages=HOT, max_tokens=8, temperature=0, n=3)
    assert [c.message.content for c in several.choices] == [one[0]] * 3 and [c.index for c in several.choices] == [
        0, 1, 2]
    stop = one[0].strip()[1:3]  # a piece of the greedy answer: the reply ends just before it
    cut = carol.chat.completions.create(model="carol-one", messages=HOT, max_tokens=8, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == one[0][:one[0].index(stop)] and cut.choices[0].finish_reason == "stop"
    completion = carol.completions.create(model="carol-two", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert completion.object == "text_completion" and completion.choices[0].text

    with pytest.raises(AuthenticationError):
        _client(team, "sk-studio-not-a-key").models.list()
    with pytest.raises(AuthenticationError):  # a password is not a key
        _client(team, PASSWORD).chat.completions.create(model=BASE, messages=HOT)
    with pytest.raises(NotFoundError) as unknown:
        carol.chat.completions.create(model="no-such-adapter", messages=HOT)
    assert unknown.value.body["code"] == "model_not_found"
    with pytest.raises(NotFoundError) as hers:  # Bob: as if it did not exist
        bob.chat.completions.create(model="carol-one", messages=HOT)
    assert "carol-one" in hers.value.message and hers.value.body["code"] == "model_not_found"
    long_prompt = [{"role": "user", "content": "hot cold " * 1500}]  # within the character bound, over 1,024 tokens
    with pytest.raises(BadRequestError) as too_long:
        carol.chat.completions.create(model="carol-one", messages=long_prompt, max_tokens=8, stream=True)
    assert too_long.value.body["code"] == "context_length_exceeded" and "tokens" in too_long.value.message
    with pytest.raises(BadRequestError) as unsupported:
        carol.chat.completions.create(model="carol-one", messages=HOT, top_logprobs=21, presence_penalty=0.5)
    assert "top_logprobs" in unsupported.value.message and "presence_penalty" in unsupported.value.message


def _consistent(entries, text: str, k: int) -> None:
    """Greedy: each chosen token is the top-1 of its alternatives; log-probabilities are <= 0, alternatives sorted;
    the tokens spell the reply."""
    assert entries and "".join(e.token for e in entries) == text
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == k and entry.bytes == list(entry.token.encode())
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)


def test_logprobs_and_usage_through_the_openai_client(team):
    """Requests with and without logprobs in one batch, plain and streamed: each gets what it asked, the texts agree,
    and usage counts the tokenizer's tokens."""
    from transformers import AutoTokenizer

    team.add_person("lena")  # the team is the session's: a name no other test adds
    _adapter(team, "lena", "lena-one", 3)
    lena = _client(team, _key(team, "lena"))

    def plain(logprobs: bool):
        return lena.chat.completions.create(model="lena-one", messages=HOT, max_tokens=8, temperature=0,
                                            logprobs=logprobs, top_logprobs=3 if logprobs else None)

    def streamed(_):
        text, entries, usage = "", [], None
        for chunk in lena.chat.completions.create(model="lena-one", messages=HOT, max_tokens=8, temperature=0,
                                                  logprobs=True, top_logprobs=3, stream=True,
                                                  stream_options={"include_usage": True}):
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                entries += choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
        return text, entries, usage

    calls = [(plain, True), (plain, False), (streamed, None)]
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:  # at once: one batch, with and without logprobs
        asked, not_asked, (text, entries, usage) = pool.map(lambda call: call[0](call[1]), calls)
    answer = asked.choices[0]
    assert not_asked.choices[0].logprobs is None and not_asked.choices[0].message.content == answer.message.content
    _consistent(answer.logprobs.content, answer.message.content, 3)
    _consistent(entries, text, 3)
    assert text == answer.message.content and [e.logprob for e in entries] == pytest.approx(
        [e.logprob for e in answer.logprobs.content], abs=1e-4)

    tokenizer = AutoTokenizer.from_pretrained(team.live.studio.settings.models_dir / BASE)
    prompt_tokens = len(tokenizer.apply_chat_template(HOT, add_generation_prompt=True, tokenize=True,
                                                      return_dict=True)["input_ids"])
    completion_tokens = len(tokenizer(answer.message.content, add_special_tokens=False)["input_ids"])
    for counted in (asked.usage, not_asked.usage, usage):
        assert (counted.prompt_tokens, counted.completion_tokens, counted.total_tokens) == (
            prompt_tokens, len(answer.logprobs.content), prompt_tokens + len(answer.logprobs.content))
    assert abs(completion_tokens - asked.usage.completion_tokens) <= 1  # re-tokenizing a reply may merge a pair

    completion = lena.completions.create(model=BASE, prompt="Once upon a time", max_tokens=6, temperature=0,
                                         logprobs=2)
    legacy = completion.choices[0].logprobs
    assert "".join(legacy.tokens) == completion.choices[0].text and len(legacy.top_logprobs[0]) == 2
    assert legacy.text_offset == [sum(len(t) for t in legacy.tokens[:i]) for i in range(len(legacy.tokens))]
    assert all(value <= 0 for value in legacy.token_logprobs)
    assert completion.usage.prompt_tokens == len(tokenizer("Once upon a time", add_special_tokens=False)["input_ids"])
