"""The metric code on fixed strings, against the values the libraries document: sacrebleu's README example (BLEU
48.53, chrF 59.73 with two reference streams) and rouge-score's README pair, whose ROUGE-L is checked by hand (the
longest common subsequence 'the quick brown jumps the': 5 of 8 answer words, 5 of 9 reference words)."""

import math

import pytest

from jobs.evaluate import metrics
from jobs.evaluate.metrics import Answer

SYSTEM = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REFS_A = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]
REFS_B = ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]


def test_bleu_and_chrf_match_sacrebleus_readme():
    assert round(metrics.corpus_bleu(SYSTEM, REFS_A, REFS_B), 2) == 48.53
    assert round(metrics.corpus_chrf(SYSTEM, REFS_A, REFS_B), 2) == 59.73


def test_rouge_l_of_rouge_scores_readme_pair():
    score = metrics.rouge_l("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog")
    precision, recall = 5 / 8, 5 / 9
    assert score == pytest.approx(2 * precision * recall / (precision + recall))


def test_exact_match_ignores_only_whitespace():
    assert metrics.exact_match("  Paris\n", "Paris")
    assert not metrics.exact_match("paris", "Paris")


def test_json_scores_parse_and_field_match():
    scores = metrics.row_scores('```json\n{"city": "Paris", "n": 2}\n```', '{"city": "Paris", "n": 3, "x": null}')
    assert scores["json_parsed"] == 1.0 and scores["json_field_match"] == pytest.approx(1 / 3)
    broken = metrics.row_scores('{"city": "Paris"', '{"city": "Paris"}')
    assert broken["json_parsed"] == 0.0 and broken["json_field_match"] == 0.0
    assert "json_parsed" not in metrics.row_scores("42", "42")  # a bare number is plain text
    assert metrics.row_scores("anything", None) == {}


def test_summary_weights_loss_by_tokens_and_marks_the_best():
    good = [Answer("Paris", "Paris", 1, 0.5, logprob_sum=-1.0, reference_tokens=2),
            Answer('{"a": 1}', '{"a": 1}', 3, 1.5, logprob_sum=-2.0, reference_tokens=4)]
    bad = [Answer("Rome", "Paris", 1, 0.2, logprob_sum=-6.0, reference_tokens=2),
           Answer("nope", '{"a": 1}', 1, 0.2, logprob_sum=-8.0, reference_tokens=4)]
    table = {"a": metrics.summary(good), "b": metrics.summary(bad)}
    assert table["a"]["loss"] == pytest.approx(3 / 6) and table["a"]["perplexity"] == pytest.approx(math.exp(0.5))
    assert table["a"]["exact_match"] == 1.0 and table["b"]["exact_match"] == 0.0
    assert table["a"]["json_parse_rate"] == 1.0 and table["b"]["json_parse_rate"] == 0.0
    assert table["a"]["bleu"] == pytest.approx(metrics.corpus_bleu(["Paris", '{"a": 1}'], ["Paris", '{"a": 1}']))
    best = metrics.best_panes(table)
    assert best["loss"] == ["a"] and best["rouge_l"] == ["a"] and best["seconds_per_answer"] == ["b"]
    assert "answer_tokens" not in best  # lengths describe, they do not rank
    assert "loss" not in metrics.best_panes({"a": {"loss": 1.0}, "b": {"loss": 1.0}})  # all alike: no best


def test_summary_without_references_is_batch_prediction():
    found = metrics.summary([Answer("hi there", None, 2, 0.1)])
    assert found["answer_tokens"] == 2 and found["rouge_l"] is None and found["loss"] is None


def test_disagreement_with_and_without_references():
    same = [metrics.row_scores("Paris", "Paris"), metrics.row_scores("Paris", "Paris")]
    split = [metrics.row_scores("Paris", "Paris"), metrics.row_scores("Madrid", "Paris")]
    assert metrics.disagreement(["Paris", "Paris"], same) == 0.0
    assert metrics.disagreement(["Paris", "Madrid"], split) > 0.5
    assert metrics.disagreement(["a b c", "a b c"], [{}, {}]) == 0.0
    assert metrics.disagreement(["a b c", "x y z"], [{}, {}]) == 1.0
