"""Mixing datasets by ratio within a row budget, the default system prompt and last-turn rows: pure functions, and
the spec's refusals of a mix or template it cannot train on."""

import pytest

from jobs.data.mixing import last_turn_only, mix_counts, mix_indices, mixed, with_system_prompt
from jobs.models.templates import template_problem
from jobs.spec import SpecError, parse_spec


@pytest.mark.parametrize(("sizes", "ratios", "max_rows", "counts"), [
    ([400, 300], [0.7, 0.3], 200, [140, 60]),  # the budget shared by ratio
    ([400, 300], [0.5, 0.5], 7, [4, 3]),  # largest remainders: the counts add up to the budget
    ([400, 300], [0.7, 0.3], None, [400, 171]),  # no budget: as many as the ratios allow, no row twice
    ([400, 30], [0.5, 0.5], 200, [100, 30]),  # a ratio asking for more than the dataset has: capped, not repeated
    ([50], [1.0], None, [50]),
])
def test_rows_are_taken_by_ratio(sizes, ratios, max_rows, counts):
    assert mix_counts(sizes, ratios, max_rows) == counts


def test_the_mix_is_seeded_and_takes_each_row_once():
    picked = mix_indices([400, 300], [0.7, 0.3], 200, seed=7)
    assert picked == mix_indices([400, 300], [0.7, 0.3], 200, seed=7)  # same spec, same rows, same order
    assert picked != mix_indices([400, 300], [0.7, 0.3], 200, seed=8)
    assert len(set(picked)) == 200 and sum(position == 1 for position, _ in picked) == 60
    rows, taken = mixed([("a", 0.7), ("b", 0.3)], 10, 1, {"a": [f"a{i}" for i in range(40)], "b": ["b0", "b1"]})
    assert len(rows) == 9 and [(t.dataset, t.rows, t.available) for t in taken] == [("a", 7, 40), ("b", 2, 2)]
    assert "all of it" in taken[1].words()


def test_system_prompt_goes_first_only_where_there_is_none():
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    added = with_system_prompt(chat, "Be brief.")
    assert added["messages"][0] == {"role": "system", "content": "Be brief."} and added["messages"][1:] == chat[
        "messages"]
    assert with_system_prompt(added, "Other.") == added and with_system_prompt({"text": "x"}, "S") == {"text": "x"}
    pair = with_system_prompt({"prompt": [{"role": "user", "content": "q"}], "chosen": [], "rejected": []}, "S")
    assert pair["prompt"][0]["role"] == "system"


def test_last_turn_rows_train_only_the_last_answer():
    turns = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "a"},
             {"role": "user", "content": "2"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "3"}]
    row = last_turn_only({"messages": turns})
    assert row == {"prompt": turns[:3], "completion": [turns[3]]}


@pytest.mark.parametrize(("raw", "field", "words"), [
    ({"dataset_mix": "example:0.7, pirate:0.2"}, "dataset_mix", "add up to 0.9, not 1"),
    ({"dataset_mix": ["pirate:1"]}, "dataset_mix", "must include the dataset field's 'example'"),
    ({"dataset_mix": "example:0.5, example:0.5"}, "dataset_mix", "more than once"),
    ({"dataset_mix": "example, pirate:1"}, "dataset_mix", "not 'dataset:ratio'"),
    ({"chat_template": "{{ x }}" * 10_000}, "chat_template", "at most 32,000 characters"),
    ({"system_prompt": "x" * 4001}, "system_prompt", "at most 4000 characters"),
    ({"method": "dpo", "loss_turns": "last"}, "loss_turns", "method sft"),
    ({"max_rows": 0}, "max_rows", "from 1"),
])
def test_data_fields_are_refused_naming_the_field(raw, field, words):
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert words in {p.field: p.message for p in caught.value.problems}[field]


@pytest.mark.parametrize(("template", "words"), [
    ("{% for m in messages %}{{ m.content }}{% endfor %}", "no {% generation %}"),
    ("{% for m in messages %}", "not a valid Jinja template: Unexpected end of template"),
    ("no-such-template", "neither a known template (chatml, smollm2, "),
])
def test_a_template_that_cannot_train_is_refused_in_words(template, words):
    assert words in template_problem(template, assistant_only_loss=True)


def test_known_templates_and_marked_ones_are_accepted():
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert template_problem(template, assistant_only_loss=False) is None  # markers matter only for that loss
    assert template_problem("chatml", True) is None and template_problem("smollm2", True) is None  # a twin
    assert template_problem("llama3", True) is None  # one of TRL's, with its training twin
    assert parse_spec({"dataset_mix": "example:0.333, pirate:0.667"}).dataset_mix == ["example:0.333", "pirate:0.667"]
    assert parse_spec({"chat_template": " chatml "}).chat_template == "chatml"


def test_a_sweep_varies_the_mix_and_the_trained_turns():
    from jobs.sweeps import sweep_points

    axes = {"dataset_mix": ["example:0.5, pirate:0.5", "example:0.8, pirate:0.2"], "loss_turns": ["all", "last"]}
    specs = [parse_spec(point) for point in sweep_points({"max_rows": 100}, axes, "grid")]
    assert {(tuple(s.mix_parts()), s.loss_turns) for s in specs} == {
        ((("example", r), ("pirate", round(1 - r, 1))), turns) for r in (0.5, 0.8) for turns in ("all", "last")}
