"""The generation scheduler: turns between people, slices that equal one unsliced generate, limits refused in words,
and a stop that frees the model within a second. The turn and limit rules run on a stand-in engine (fast); the
slicing, fairness, prompt limit and stop run on the real demo model."""

import math
import threading
import time

import pytest

from jobs.chat.request import ChatRequestError, GenerationSettings, Replies
from jobs.chat.scheduler import GenerationLimits, GenerationScheduler
from storage.access import Person, acting_as

DEMO = "demo-tiny-llama"
HELLO = [{"role": "user", "content": "hi"}]


# --- the rules of turns, on a stand-in engine -----------------------------------------------------------------
class _Tokens:
    """Stands in for jobs.chat.generation.Generation: one token a call of `advance` (slices of one token), each turn
    written down in `turns`."""

    def __init__(self, name: str, count: int, turns: list[str]) -> None:
        self.name, self.count, self.turns, self.made = name, count, turns, 0

    def replies(self) -> Replies:
        return Replies(["x" * self.made], [self.made], [0.0])

    def advance(self, deadline, stopped, on_step, max_tokens=None) -> bool:
        self.turns.append(self.name)
        self.made += 1
        on_step(self.replies())
        return self.made >= self.count or stopped.is_set()


class _StandIn:
    """An engine whose generations are named by their prompt; the one named 'gate' waits for `gate` to open, so a
    test can line everything up before the turns begin."""

    def __init__(self) -> None:
        self.turns: list[str] = []
        self.gate = threading.Event()
        self.begun: list[str] = []

    def begin(self, base_model, panes, conversations, settings, max_prompt_tokens):
        name = conversations[0][-1]["content"]
        self.begun.append(name)
        if name == "gate":
            self.gate.wait(10)
        if name == "broken":
            raise ChatRequestError(["prompt: broken on purpose"])
        return _Tokens(name, settings.max_new_tokens, self.turns)

    def resident_bytes(self) -> int:
        return 0


def _ask(scheduler, person: str, name: str, tokens: int = 3):
    """A stream admitted as `person` (its first update taken: a waiting one while the gate is shut)."""
    stream = scheduler.stream(DEMO, [("base", None)], [[{"role": "user", "content": name}]],
                              GenerationSettings(max_new_tokens=tokens))
    with acting_as(Person(person)):
        first = next(stream)
    return stream, first


@pytest.fixture
def quick_updates(monkeypatch):
    import jobs.chat.scheduler as scheduler

    monkeypatch.setattr(scheduler, "WAIT_UPDATE_S", 0.02)


def _wait_until(condition, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_turns_go_round_between_people_and_each_persons_requests(quick_updates):
    engine = _StandIn()
    scheduler = GenerationScheduler(engine)
    gate, _ = _ask(scheduler, "admin", "gate", tokens=1)
    _wait_until(lambda: engine.begun == ["gate"])  # the serving thread is held: the rest line up behind it
    streams = [_ask(scheduler, "ann", "ann-1"), _ask(scheduler, "ann", "ann-2"), _ask(scheduler, "bob", "bob-1"),
               _ask(scheduler, "cy", "cy-1")]
    assert [first.waiting_for for _, first in streams] == [1, 2, 3, 4]  # told how many are in line, no tokens yet
    assert all(first.token_counts == [0] for _, first in streams)
    engine.gate.set()
    _wait_until(lambda: len(engine.turns) == 1 + 4 * 3)
    assert engine.turns[:8] == ["gate", "ann-1", "bob-1", "cy-1", "ann-2", "bob-1", "cy-1", "ann-1"]
    for stream, _ in streams:
        assert list(stream)[-1].token_counts == [3]  # every request ran to its end
    gate.close()


def test_a_person_may_have_two_generations_and_everyone_thirty_two(quick_updates):
    engine = _StandIn()
    scheduler = GenerationScheduler(engine, GenerationLimits(per_person=2, waiting=4))
    held = [_ask(scheduler, "admin", "gate", tokens=1)[0]]  # kept: a generator dropped is closed, and stops
    first, _ = _ask(scheduler, "ann", "ann-1")
    held.append(_ask(scheduler, "ann", "ann-2")[0])
    with pytest.raises(ChatRequestError, match=r"generations: you already have 2 running or waiting, the most one "
                                               r"person may have at once \(2, STUDIO_MAX_GENERATIONS_PER_PERSON\)"):
        _ask(scheduler, "ann", "ann-3")
    held.append(_ask(scheduler, "bob", "bob-1")[0])
    with pytest.raises(ChatRequestError, match=r"generations: 4 are running or waiting, the most the studio takes at "
                                               r"once \(4, STUDIO_MAX_WAITING_GENERATIONS\)"):
        _ask(scheduler, "cy", "cy-1")
    first.close()  # a waiting request that is stopped leaves its line at once, and frees its place
    held.append(_ask(scheduler, "ann", "ann-3")[0])
    engine.gate.set()
    _wait_until(lambda: not scheduler._admitted)
    assert "ann-1" not in engine.begun  # never run: it was stopped while it waited


def test_a_refused_prompt_reaches_only_its_reader(quick_updates):
    engine = _StandIn()
    scheduler = GenerationScheduler(engine)
    fine, first = _ask(scheduler, "bob", "fine")
    broken = scheduler.stream(DEMO, [("base", None)], [[{"role": "user", "content": "broken"}]], GenerationSettings())
    with acting_as(Person("ann")), pytest.raises(ChatRequestError, match="broken on purpose"):
        list(broken)
    assert [first, *fine][-1].token_counts == [3]


def test_a_huge_prompt_is_refused_before_anything_reads_it():
    engine = _StandIn()
    scheduler = GenerationScheduler(engine, GenerationLimits(max_prompt_tokens=4096))
    huge = [[{"role": "user", "content": "x" * (1 << 20)}]]
    started = time.monotonic()
    with pytest.raises(ChatRequestError, match=r"prompt: 1,048,576 characters, far over the limit of 4,096 tokens "
                                               r"\(STUDIO_MAX_PROMPT_TOKENS\); refused without reading it"):
        next(scheduler.stream(DEMO, [("base", None)], huge, GenerationSettings()))
    with pytest.raises(ChatRequestError, match="prompt: 1,048,578 characters"):
        scheduler.reference_logliks(DEMO, [("base", None)], HELLO, "y" * (1 << 20))
    assert time.monotonic() - started < 0.5 and engine.begun == []  # never queued, never tokenized


# --- on the demo model -------------------------------------------------------------------------------------------
@pytest.fixture
def scheduler_on_demo(demo_models):
    from jobs.chat.engine import ChatEngine

    def make(**limits) -> GenerationScheduler:
        return GenerationScheduler(ChatEngine(demo_models), GenerationLimits(**limits))

    return make


@pytest.mark.slow
def test_a_sliced_generation_equals_one_unsliced_generate(scheduler_on_demo, two_adapters):
    panes = [("a1", two_adapters[0]), ("base", None)]
    conversations = [[{"role": "user", "content": "Reverse the words: apple owl key"}],  # different lengths: padding
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Spell the word: cat"}]]
    whole = scheduler_on_demo(slice_s=math.inf)
    sliced = scheduler_on_demo(slice_tokens=3)
    for settings in (GenerationSettings(max_new_tokens=40),
                     GenerationSettings(max_new_tokens=40, temperature=0.9, top_p=0.9, top_k=40, seed=5,
                                        repetition_penalty=1.2)):
        one = whole.compare(DEMO, panes, conversations, settings)
        many = sliced.compare(DEMO, panes, conversations, settings)
        assert list(many) == list(one) and many.token_counts == one.token_counts, settings
        assert max(one.token_counts) > 3  # several slices


@pytest.mark.slow
def test_a_short_request_gets_its_turn_while_a_long_one_runs(scheduler_on_demo):
    scheduler = scheduler_on_demo(slice_tokens=8)
    long = scheduler.stream(DEMO, [("base", None)], [[{"role": "user", "content": "Tell me a long story"}]],
                            GenerationSettings(max_new_tokens=300, temperature=1.0, seed=0))
    with acting_as(Person("ann")):
        while not next(long).token_counts[0]:  # ann's generation runs
            pass
    started = time.monotonic()
    short = scheduler.stream(DEMO, [("base", None)], [HELLO], GenerationSettings(max_new_tokens=4))
    with acting_as(Person("bob")):
        while not next(short).token_counts[0]:
            pass
        first_token_s = time.monotonic() - started
        bob = list(short)[-1]
    ann_when_bob_ended = next(long).token_counts[0]  # the newest update: where ann's generation was then
    ann = list(long)[-1]
    assert bob.token_counts == [4]
    assert ann_when_bob_ended < ann.token_counts[0] == 300, "bob's reply waited for ann's to end"
    print(f"bob's first token after {first_token_s:.3f} s, ann at {ann_when_bob_ended} of 300 tokens when bob ended")


@pytest.mark.slow
def test_a_prompt_over_its_token_limit_is_refused_in_words(scheduler_on_demo):
    scheduler = scheduler_on_demo()
    long = [[{"role": "user", "content": "apple owl key " * 400}]]  # ~1,200 tokens, ~5,600 characters
    with pytest.raises(ChatRequestError, match=r"prompt: [\d,]+ tokens with the conversation so far, the limit is 960 "
                                               r"\(the base's context of 1,024 tokens minus max_new_tokens 64\)"):
        scheduler.compare(DEMO, [("base", None)], long, GenerationSettings(max_new_tokens=64))
    small = scheduler_on_demo(max_prompt_tokens=20)
    with pytest.raises(ChatRequestError, match=r"the limit is 20 \(STUDIO_MAX_PROMPT_TOKENS\)"):
        small.compare(DEMO, [("base", None)], [[{"role": "user", "content": "apple owl key " * 10}]],
                      GenerationSettings(max_new_tokens=64))
    with pytest.raises(ChatRequestError, match=r"the limit is 20 \(STUDIO_MAX_PROMPT_TOKENS\)"):
        small.reference_logliks(DEMO, [("base", None)], [{"role": "user", "content": "apple owl key " * 10}], "5")
    assert scheduler.compare(DEMO, [("base", None)], [HELLO], GenerationSettings(max_new_tokens=2)).token_counts[0]


@pytest.mark.slow
def test_a_stop_frees_the_model_for_the_next_request_within_a_second(scheduler_on_demo):
    scheduler = scheduler_on_demo()
    stream = scheduler.stream(DEMO, [("base", None)], [HELLO],
                              GenerationSettings(max_new_tokens=900, temperature=1.0, seed=0))
    while next(stream).token_counts[0] < 3:
        pass
    stopped = time.monotonic()
    stream.close()  # what the page's Stop (or a closed page) does to the handler's generator
    follow = scheduler.stream(DEMO, [("base", None)], [HELLO], GenerationSettings(max_new_tokens=2))
    next(r for r in follow if r.token_counts[0])
    waited = time.monotonic() - stopped
    assert waited < 1.0, f"the next request began generating {waited:.2f} s after the stop"
    follow.close()


@pytest.mark.slow
def test_an_adapters_looping_pasted_template_is_refused_while_another_persons_chat_completes(
        scheduler_on_demo, two_adapters, tmp_path):
    """An adapter trained with a pasted template that never ends (written in by hand: submit refuses it now): its
    chat is refused naming chat_template, and bob's chat meanwhile completes (the render runs in a process of its
    own and the scheduler serves others while it waits)."""
    import json
    import shutil

    from tests.jobs.models.test_template_render import NESTED_LOOP

    adapter = tmp_path / "looping"
    shutil.copytree(two_adapters[0], adapter)
    for name in ("training_spec.json", "tokenizer_config.json"):
        stored = json.loads((adapter / name).read_text())
        stored.get("fields", stored)["chat_template"] = NESTED_LOOP
        (adapter / name).write_text(json.dumps(stored))
    (adapter / "chat_template.jinja").unlink(missing_ok=True)
    scheduler = scheduler_on_demo()
    ended: list[str] = []

    def ann() -> None:
        with acting_as(Person("ann")), pytest.raises(ChatRequestError) as caught:
            scheduler.compare(DEMO, [("looping", adapter)], [HELLO], GenerationSettings(max_new_tokens=4))
        ended.append(str(caught.value))

    refused = threading.Thread(target=ann)
    refused.start()
    with acting_as(Person("bob")):
        bob = scheduler.compare(DEMO, [("base", None)], [HELLO], GenerationSettings(max_new_tokens=4))
    ended.append("bob")
    refused.join()
    assert bob.token_counts == [4]
    assert ended[0] == "bob" and ended[1].startswith("chat_template: rendering took longer than 2 s")
