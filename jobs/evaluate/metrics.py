"""Scores of answers against reference answers, from maintained libraries: ROUGE-L with Google's `rouge-score`
(F-measure, 0-1, Porter stemming as its README shows), BLEU and chrF with `sacrebleu` (0-100, its default
tokenizer and settings, so the numbers compare with papers that report sacrebleu). Exact match, JSON parse rate and
JSON field match are small enough to be plain code here. No torch: the API and tests import this freely.

Per row each answer gets its scores; per adapter the scores are summarized (BLEU and chrF at the corpus level, as
sacrebleu recommends, not the mean of sentence scores), with the loss and perplexity of the reference answers
(`loss`: mean negative log-likelihood per answer token, token-weighted over the set) when there are references."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import sacrebleu
from rouge_score import rouge_scorer

_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

# (name, label, higher is better); None: no better direction (lengths describe, they do not rank).
METRICS: tuple[tuple[str, str, bool | None], ...] = (
    ("loss", "loss (reference tokens)", False),
    ("perplexity", "perplexity", False),
    ("rouge_l", "ROUGE-L F", True),
    ("bleu", "BLEU", True),
    ("chrf", "chrF", True),
    ("exact_match", "exact match", True),
    ("json_parse_rate", "JSON parse rate", True),
    ("json_field_match", "JSON field match", True),
    ("answer_tokens", "answer tokens (mean)", None),
    ("answer_chars", "answer characters (mean)", None),
    ("seconds_per_answer", "seconds per answer", False),
)
HIGHER_IS_BETTER = {name: better for name, _, better in METRICS}
ROW_METRICS = ("rouge_l", "chrf", "bleu", "exact_match", "json_parsed", "json_field_match", "loss")


def normalized(text: str) -> str:
    """Whitespace collapsed and ends stripped: what exact match compares (case and punctuation count)."""
    return " ".join((text or "").split())


def exact_match(answer: str, reference: str) -> bool:
    return normalized(answer) == normalized(reference)


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F-measure of `answer` against `reference` (rouge-score's `score(target, prediction)`)."""
    return _ROUGE.score(reference, answer)["rougeL"].fmeasure


def sentence_bleu(answer: str, reference: str) -> float:
    return sacrebleu.sentence_bleu(answer, [reference]).score


def sentence_chrf(answer: str, reference: str) -> float:
    return sacrebleu.sentence_chrf(answer, [reference]).score


def corpus_bleu(answers: Sequence[str], references: Sequence[str], *more: Sequence[str]) -> float:
    """`more`: further reference streams (a second reference for each answer, ...), as sacrebleu takes them."""
    return sacrebleu.corpus_bleu(list(answers), [list(references), *map(list, more)]).score


def corpus_chrf(answers: Sequence[str], references: Sequence[str], *more: Sequence[str]) -> float:
    return sacrebleu.corpus_chrf(list(answers), [list(references), *map(list, more)]).score


def parse_json(text: str) -> tuple[bool, object]:
    """(parsed, value): the text as JSON, also when a model wrapped it in a ```json fence."""
    body = (text or "").strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        return True, json.loads(body)
    except (ValueError, RecursionError):
        return False, None


def json_reference(reference: str | None) -> dict | list | None:
    """The reference as JSON when it is a JSON object or array (a bare number or string is plain text here)."""
    if reference is None:
        return None
    parsed, value = parse_json(reference)
    return value if parsed and isinstance(value, dict | list) else None


def field_match(answer_value: object, reference_value: dict | list) -> float:
    """The share of the reference's top-level fields (keys of an object, positions of an array) the answer has with
    the same value."""
    if isinstance(reference_value, dict):
        if not reference_value:
            return float(answer_value == {})
        got = answer_value if isinstance(answer_value, dict) else {}
        return sum(key in got and got[key] == value for key, value in reference_value.items()) / len(reference_value)
    if not reference_value:
        return float(answer_value == [])
    got = answer_value if isinstance(answer_value, list) else []
    return sum(i < len(got) and got[i] == value for i, value in enumerate(reference_value)) / len(reference_value)


def row_scores(answer: str, reference: str | None, loss: float | None = None) -> dict[str, float]:
    """One answer's scores against its reference (empty without one); JSON scores only for a JSON reference."""
    if reference is None:
        return {}
    scores = {"rouge_l": rouge_l(answer, reference), "chrf": sentence_chrf(answer, reference),
              "bleu": sentence_bleu(answer, reference), "exact_match": float(exact_match(answer, reference))}
    if (wanted := json_reference(reference)) is not None:
        parsed, value = parse_json(answer)
        scores["json_parsed"] = float(parsed)
        scores["json_field_match"] = field_match(value, wanted) if parsed else 0.0
    if loss is not None:
        scores["loss"] = loss
    return scores


@dataclass(frozen=True)
class Answer:
    """One pane's answer to one row, with what scoring needs."""

    answer: str
    reference: str | None
    tokens: int
    seconds: float
    logprob_sum: float | None = None
    """Sum of the log-probabilities of the reference's tokens (None without a reference)."""
    reference_tokens: int = 0


def summary(answers: Sequence[Answer]) -> dict[str, float | None]:
    """One pane's metrics over the set: every name of METRICS, None where the set has nothing to measure it by."""
    found: dict[str, float | None] = dict.fromkeys(HIGHER_IS_BETTER)
    if not answers:
        return found
    found["answer_tokens"] = sum(a.tokens for a in answers) / len(answers)
    found["answer_chars"] = sum(len(a.answer) for a in answers) / len(answers)
    found["seconds_per_answer"] = sum(a.seconds for a in answers) / len(answers)
    scored = [a for a in answers if a.reference is not None]
    if not scored:
        return found
    texts, references = [a.answer for a in scored], [a.reference for a in scored]
    found["rouge_l"] = sum(rouge_l(a, r) for a, r in zip(texts, references, strict=True)) / len(scored)
    found["bleu"] = corpus_bleu(texts, references)
    found["chrf"] = corpus_chrf(texts, references)
    found["exact_match"] = sum(exact_match(a, r) for a, r in zip(texts, references, strict=True)) / len(scored)
    as_json = [(a, wanted) for a in scored if (wanted := json_reference(a.reference)) is not None]
    if as_json:
        parses = [parse_json(a.answer) for a, _ in as_json]
        found["json_parse_rate"] = sum(ok for ok, _ in parses) / len(as_json)
        matches = [field_match(value, wanted) if ok else 0.0
                   for (ok, value), (_, wanted) in zip(parses, as_json, strict=True)]
        found["json_field_match"] = sum(matches) / len(as_json)
    tokens = sum(a.reference_tokens for a in scored if a.logprob_sum is not None)
    if tokens:
        found["loss"] = -sum(a.logprob_sum for a in scored if a.logprob_sum is not None) / tokens
        found["perplexity"] = math.exp(min(found["loss"], 700.0))  # exp overflows a float past ~709
    return found


def best_panes(table: dict[str, dict[str, float | None]],
               directions: dict[str, bool | None] = HIGHER_IS_BETTER) -> dict[str, list[str]]:
    """For each metric with a better direction (`directions`: higher is better?), the pane(s) with the best value
    (ties all marked); none where every pane scored the same (nothing to choose between)."""
    best: dict[str, list[str]] = {}
    for name, higher in directions.items():
        values = {pane: row[name] for pane, row in table.items() if row.get(name) is not None}
        if higher is None or len(values) < 2 or len(set(values.values())) == 1:
            continue
        top = max(values.values()) if higher else min(values.values())
        best[name] = [pane for pane, value in values.items() if math.isclose(value, top, rel_tol=1e-9, abs_tol=1e-12)]
    return best


def disagreement(answers: Sequence[str], scores: Sequence[dict[str, float]]) -> float:
    """How much the panes disagree on one row, 0 (alike) to 1: with a reference, the spread of their chrF against it
    (best minus worst, /100); without one, 1 minus the mean ROUGE-L F between every two answers."""
    chrfs = [s["chrf"] for s in scores if "chrf" in s]
    if len(chrfs) >= 2:
        return (max(chrfs) - min(chrfs)) / 100.0
    pairs = list(combinations(answers, 2))
    if not pairs:
        return 0.0
    return 1.0 - sum(rouge_l(a, b) for a, b in pairs) / len(pairs)
