"""GRPO's rewards as the functions TRL calls (pure Python, no model), and the rules their settings follow."""

import time

import pytest

from jobs.rewards import (
    RewardError,
    RewardSettings,
    checked,
    parse_terms,
    pattern_problem,
    reward_functions,
    schema_problem,
)


def _answers(*texts):  # conversational completions, as TRL hands them to reward functions
    return [[{"role": "assistant", "content": text}] for text in texts]


def _reward(name: str, **settings):
    return reward_functions(RewardSettings(terms=((name, 1.0),), **settings))[0]


def test_the_reference_reward_matches_exactly_or_contains_after_normalising():
    exact, contains = _reward("reference"), _reward("reference", reference_match="contains")
    answers = _answers("  Paris\n", "paris is the capital", "Lyon")
    assert exact(completions=answers, reference=["PARIS"] * 3) == [1.0, 0.0, 0.0]
    assert contains(completions=answers, reference=["PARIS"] * 3) == [1.0, 1.0, 0.0]
    assert exact(completions=["New  York"], reference=["new york"]) == [1.0]  # plain-text completions too
    assert exact.__name__ == "reference"  # TRL logs rewards/<name>/mean


def test_the_json_rewards_parse_and_validate():
    schema = '{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}'
    answers = _answers('{"n": 3}', '{"n": "3"}', "n = 3", " [1, 2] ")
    assert _reward("json")(completions=answers) == [1.0, 1.0, 0.0, 1.0]
    assert _reward("json_schema", json_schema=schema)(completions=answers) == [1.0, 0.0, 0.0, 0.0]


def test_the_regex_reward_searches_and_gives_up_on_a_catastrophic_pattern():
    assert _reward("regex", regex=r"^\d{3}-\d{4}$")(completions=_answers("555-1234", "call 555-1234")) == [1.0, 0.0]
    started = time.monotonic()
    assert _reward("regex", regex=r"^(a+)+$")(completions=_answers("a" * 40 + "!")) == [0.0]
    assert time.monotonic() - started < 30  # bounded by the per-answer limit, not the pattern's 2^40 paths


def test_the_length_reward_counts_characters_in_range():
    length = _reward("length", min_chars=2, max_chars=5)
    assert length(completions=_answers("a", "abc", "abcde", "abcdef")) == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize(("returned", "words"), [
    ("high", "returned str"), ([1.0], "returned 1 values for 2 completions"), ([1.0, True], "True (bool)"),
    ([1.0, float("nan")], "nan (float)"), ([1.0, "2"], "'2' (str)")])
def test_a_persons_reward_must_return_one_finite_number_per_completion(returned, words):
    reward = checked(lambda **kwargs: returned)
    with pytest.raises(RewardError, match=words.replace("(", r"\(").replace(")", r"\)")):
        reward(prompts=["p", "p"], completions=["a", "b"])
    assert checked(lambda **kwargs: [1, 0.5])(prompts=["p", "p"], completions=["a", "b"]) == [1.0, 0.5]


def test_terms_and_weights():
    assert parse_terms("json, length:0.5") == [("json", 1.0), ("length", 0.5)]
    for bad, words in [("", "at least one"), ("jsn", "'jsn' is not a reward"), ("json:x", "must be a number"),
                       ("json,json", "named twice"), ("json:1e9", "from -100 to 100")]:
        with pytest.raises(ValueError, match=words):
            parse_terms(bad)


def test_patterns_and_schemas_are_checked_before_use():
    assert pattern_problem("(a") and "at most 500" in pattern_problem("a" * 501) and pattern_problem("a+") is None
    assert "not JSON" in schema_problem("{type: object}")
    assert "not a valid JSON Schema" in schema_problem('{"type": "nope"}')
    assert "'pattern'" in schema_problem('{"properties": {"a": {"type": "string", "pattern": "(a+)+$"}}}')
    assert schema_problem('{"type": "object"}') is None
