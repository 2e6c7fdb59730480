"""Pairwise judging's pieces without a model: the verdict is read only from a verdict line (else "unparsed", never
guessed), the prompt is filled whatever braces the answers hold, every pair is judged in both orders and the totals
add up. The judge running in a real eval job: tests/jobs/evaluate/test_eval_job.py."""

from jobs.evaluate.judging import DEFAULT_JUDGE_PROMPT, UNPARSED, Judgment, judge_text, orders, parse_verdict, totals


def test_a_verdict_is_read_from_its_line_or_counted_unparsed():
    assert parse_verdict("A is closer to the reference.\nVerdict: A") == "A"
    assert parse_verdict("both fine. **Verdict:** tie") == "tie"  # Markdown emphasis around it is read through
    assert parse_verdict("Both fine.\nverdict = [TIE]") == "tie"
    assert parse_verdict("Verdict: B\nOn reflection... Verdict: A") == UNPARSED  # two different verdicts
    assert parse_verdict("A is better") == UNPARSED and parse_verdict("") == UNPARSED
    assert parse_verdict("Verdict: Apples") == UNPARSED


def test_the_prompt_is_filled_once_whatever_the_answers_hold():
    text = judge_text(DEFAULT_JUDGE_PROMPT, "q {x}", None, "say {answer_b}", "b}")
    assert "q {x}" in text and "Answer A:\nsay {answer_b}\n" in text and "Answer B:\nb}\n" in text
    assert "Reference answer (may be empty):\n\n" in text


def test_both_orders_of_every_pair_and_totals_that_add_up():
    panes = ["one", "two", "base"]
    assert sorted(orders(panes)) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    judged = [Judgment(0, "one", "two", "one", ""), Judgment(0, "two", "one", "one", ""),
              Judgment(1, "one", "two", "one", ""), Judgment(1, "two", "one", "two", ""),  # follows position
              Judgment(0, "one", "base", "tie", ""), Judgment(0, "base", "one", UNPARSED, "noise")]
    pairs = {(p["a"], p["b"]): p for p in totals(judged, panes)}
    assert pairs["one", "two"] == {"a": "one", "b": "two", "judgments": 4, "a_wins": 3, "b_wins": 1, "ties": 0,
                                   "unparsed": 0, "orders_agree": 1}
    assert pairs["one", "base"]["ties"] == 1 and pairs["one", "base"]["unparsed"] == 1
    assert pairs["two", "base"]["judgments"] == 0
    for pair in pairs.values():
        assert pair["a_wins"] + pair["b_wins"] + pair["ties"] + pair["unparsed"] == pair["judgments"]
