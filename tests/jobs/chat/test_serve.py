"""Serving batches (jobs.chat.serve): requests of one person for one base that arrive together become one batched
generation on the real scheduler and demo base, each greedy row what its adapter answers alone; stop strings cut a
reply and are never sent in part; a person's rows are bounded."""


import pytest

from jobs.chat.request import ChatRequestError, GenerationSettings, Pane, Replies
from jobs.chat.serve import ServeBatcher, ServeRequest, ServeTicket, _held_back
from storage.access import Person, acting_as

DEMO = "demo-tiny-llama"
GREEDY = GenerationSettings(max_new_tokens=6)


def _answers(ticket: ServeTicket, timeout_s: float = 300) -> list[tuple[str, str]]:
    assert ticket.done.wait(timeout_s), "no answer"
    assert ticket.error is None, ticket.error
    return [(choice.text, choice.finish_reason) for choice in ticket.choices]


@pytest.fixture
def scheduler(demo_models):
    from jobs.chat.engine import ChatEngine
    from jobs.chat.scheduler import GenerationScheduler

    return GenerationScheduler(ChatEngine(demo_models))


def test_requests_arriving_together_share_one_batch_and_answer_as_alone(scheduler, two_adapters):
    panes = [Pane("base", None), Pane("one", two_adapters[0]), Pane("two", two_adapters[1])]
    requests = [ServeRequest(DEMO, pane, [{"role": "user", "content": prompt}], GREEDY)
                for pane in panes for prompt in ("What is the opposite of hot?", "hi")]
    requests.append(ServeRequest(DEMO, panes[1], "Once upon a time", GREEDY, n=2))  # a plain completion, 2 choices
    together = ServeBatcher(lambda: scheduler, window_s=0.5, max_rows=16)
    with acting_as(Person("ann")):
        tickets = [together.submit(request) for request in requests]
    batched = [_answers(ticket) for ticket in tickets]
    assert together.batches_started == 1

    alone = ServeBatcher(lambda: scheduler, window_s=0.0)
    with acting_as(Person("ann")):
        singly = [_answers(alone.submit(request)) for request in requests]
    assert batched == singly
    assert len({answer[0][0] for answer in batched[:6:2]}) == 3, batched  # base and both adapters differ
    assert batched[-1][0] == batched[-1][1]  # greedy: both choices alike


def test_a_batch_right_after_another_waits_for_the_schedulers_count_not_a_refusal(demo_models):
    """A batch that just ended counts against its person in the scheduler until its slice is over: the next batch,
    started at once, is admitted when it is (one generation a person here, so each batch follows the last)."""
    from jobs.chat.engine import ChatEngine
    from jobs.chat.scheduler import GenerationLimits, GenerationScheduler

    scheduler = GenerationScheduler(ChatEngine(demo_models), GenerationLimits(per_person=1))
    batcher = ServeBatcher(lambda: scheduler, window_s=0.0, batches_per_person=1)
    with acting_as(Person("ann")):  # different max_tokens: different batches
        tickets = [batcher.submit(ServeRequest(DEMO, Pane("base", None), "hi", GenerationSettings(max_new_tokens=n)))
                   for n in (1, 2, 3, 4)]
    assert [len(_answers(ticket)) for ticket in tickets] == [1, 1, 1, 1]
    assert batcher.batches_started == 4


def _ticket(stops=(), n=1, max_new_tokens=8) -> ServeTicket:
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    return ServeTicket(ServeRequest(DEMO, Pane("base", None), "p", settings, n=n, stop=tuple(stops)), None)


def _sent(ticket: ServeTicket) -> list[tuple]:
    events = []
    while not ticket.events.empty():
        events.append(ticket.events.get())
    return events


def test_a_stop_string_cuts_the_reply_and_is_never_sent_in_part():
    ticket = _ticket(stops=("END",))
    ticket.take(Replies(["hello E"], [2], [0.0]), 0)
    assert _sent(ticket) == [("delta", 0, "hello ")]  # "E" may begin the stop string: held back
    ticket.take(Replies(["hello EN"], [3], [0.0]), 0)
    assert _sent(ticket) == []
    ticket.take(Replies(["hello ENDING"], [5], [0.0]), 0)
    assert _sent(ticket) == [("finish", 0, "stop"), ("done", None, None)]
    assert ticket.choices[0].text == "hello "


def test_each_choice_ends_on_its_own_eos_or_max_tokens():
    ticket = _ticket(n=2, max_new_tokens=3)
    ticket.take(Replies(["a", "b"], [1, 1], [0.0, 0.0], ended=[True, False]), 0)
    assert _sent(ticket) == [("delta", 0, "a"), ("finish", 0, "stop"), ("delta", 1, "b")]
    assert not ticket.done.is_set()
    ticket.take(Replies(["a", "bcd"], [1, 3], [0.0, 0.0], ended=[True, False], prompt_tokens=[5, 5]), 0)
    assert _sent(ticket) == [("delta", 1, "cd"), ("finish", 1, "length"), ("done", None, None)]
    assert ticket.usage == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}  # the prompt once


def test_a_character_still_being_decoded_is_held_back():
    assert _held_back("ab\ufffd", ()) == 1
    assert _held_back("abc", ("cd", "xy")) == 1
    assert _held_back("abc", ()) == 0


def test_a_persons_rows_and_a_requests_choices_are_bounded(scheduler):
    batcher = ServeBatcher(lambda: scheduler, window_s=30.0, max_rows=2, batches_per_person=1)  # nothing starts
    request = ServeRequest(DEMO, Pane("base", None), "hi", GREEDY, n=2)
    with acting_as(Person("ann")):
        held = [batcher.submit(request), batcher.submit(request)]  # a batch's rows running and as many waiting
        with pytest.raises(ChatRequestError, match="^generations: you already have 4"):
            batcher.submit(request)
        with pytest.raises(ChatRequestError, match="n: from 1 to 2"):
            batcher.submit(ServeRequest(DEMO, Pane("base", None), "hi", GREEDY, n=3))
        with pytest.raises(ChatRequestError, match="prompt: .* characters"):
            batcher.submit(ServeRequest(DEMO, Pane("base", None), "x" * 40_000, GREEDY))
    with acting_as(Person("bob")):  # another person's rows are his own
        held.append(batcher.submit(request))
    for ticket in held:
        ticket.cancel()


def _entries(pieces: list[str]) -> list[dict]:
    offsets = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
    return [{"token": p, "logprob": -1.0, "bytes": list(p.encode()), "text_offset": o,
             "top_logprobs": [{"token": p, "logprob": -1.0, "bytes": []}] * 3}
            for p, o in zip(pieces, offsets, strict=True)]


def test_logprobs_cover_the_text_sent_and_usage_counts_every_choice():
    settings = GenerationSettings(max_new_tokens=8)
    ticket = ServeTicket(ServeRequest(DEMO, Pane("base", None), "p", settings, n=1, stop=("END",), logprobs=1),
                         None)
    pieces = ["he", "llo", " ", "E"]
    ticket.take(Replies(["hello E"], [4], [0.0], logprobs=[_entries(pieces)], prompt_tokens=[7]), 0)
    (kind, _, sent), delta = _sent(ticket)  # "E" may begin the stop string: its token waits with its text
    assert kind == "logprobs" and [e["token"] for e in sent] == ["he", "llo", " "] and delta == ("delta", 0, "hello ")
    assert all(len(e["top_logprobs"]) == 1 for e in sent)  # the batch read 3 alternatives; this request asked 1
    pieces += ["ND", "ING"]  # the stop string: no token of it, nor after it, is sent
    ticket.take(Replies(["hello ENDING"], [6], [0.0], logprobs=[_entries(pieces)], prompt_tokens=[7]), 0)
    assert _sent(ticket) == [("finish", 0, "stop"), ("done", None, None)]
    assert ticket.usage == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
