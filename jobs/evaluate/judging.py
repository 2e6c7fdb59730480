"""Pairwise judging in an eval job: a model the person picked (one of their adapters, or a base) reads the question,
the reference and two panes' answers through a visible prompt, gives its reasons and a verdict. Every pair of panes
is judged on every row in BOTH orders (A/B, then B/A), so a judge that prefers whatever comes first gains nothing:
its two verdicts disagree and split. The totals count judgments (two a row a pair): wins of each side, ties, and
"unparsed" (a reply with no verdict line, or two different ones), which is shown and never guessed.

The judge's replies are model output: they are stored as text and reach a browser only as the Evaluate tab's table
cells (plain text) like every answer."""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass

from jobs.chat.request import ChatRequestError, GenerationSettings, Pane

DEFAULT_JUDGE_PROMPT = """You are judging two answers to the same question. Decide which answer is better: correct, \
helpful, and close to the reference answer where one is given.

Question:
{question}

Reference answer (may be empty):
{reference}

Answer A:
{answer_a}

Answer B:
{answer_b}

Give your reasons in one or two sentences, then end with one last line that is exactly one of:
Verdict: A
Verdict: B
Verdict: tie"""
PLACEHOLDERS = ("{question}", "{reference}", "{answer_a}", "{answer_b}")
REQUIRED = ("{question}", "{answer_a}", "{answer_b}")
MAX_PROMPT_CHARS = 4000
JUDGE_MAX_TOKENS = 128
"""The judge's reply, reasons and verdict, in tokens at most (greedy), unless the spec says otherwise."""
MAX_REASON_CHARS = 2000
BATCH_JUDGMENTS = 16
VERDICT = re.compile(r"verdict\s*[:=]\s*[*\"'\[(]*\s*(a|b|tie)\b", re.IGNORECASE)
UNPARSED = "unparsed"


def prompt_problems(template: str) -> list[str]:
    """Why a judging prompt cannot be used, each in words (empty: fine)."""
    missing = [p for p in REQUIRED if p not in template]
    return [f"must contain {', '.join(missing)} (where the question and the two answers go)"] if missing else []


def judge_text(template: str, question: str, reference: str | None, answer_a: str, answer_b: str) -> str:
    """The prompt with its placeholders filled in one pass (an answer that itself holds '{answer_b}' stays as it is:
    str.format would also choke on any brace a model writes)."""
    values = dict(zip(PLACEHOLDERS, (question, reference or "", answer_a, answer_b), strict=True))
    return re.sub("|".join(re.escape(p) for p in PLACEHOLDERS), lambda m: values[m.group(0)], template)


def parse_verdict(reply: str) -> str:
    """"A", "B", "tie", or UNPARSED when the reply has no verdict line or two different ones."""
    found = {match.lower() for match in VERDICT.findall(reply)}
    if len(found) != 1:
        return UNPARSED
    verdict = found.pop()
    return verdict if verdict == "tie" else verdict.upper()


@dataclass(frozen=True)
class Judgment:
    row: int
    a: str
    b: str
    verdict: str
    """The winner's pane name, "tie" or "unparsed"."""
    reason: str

    def as_dict(self) -> dict:
        return {"row": self.row, "a": self.a, "b": self.b, "verdict": self.verdict, "reason": self.reason}


def orders(panes: list[str]) -> list[tuple[int, int]]:
    """Every pair of panes in both orders, as (A index, B index)."""
    return [order for i, j in itertools.combinations(range(len(panes)), 2) for order in ((i, j), (j, i))]


def judge_rows(engine, base_model: str, judge: Pane, questions: list[str], references: list[str | None],
               answers: list[list[str]], panes: list[str], template: str, max_prompt_tokens: int, check_stop,
               on_progress, advance_s: float = 2.0, max_tokens: int = JUDGE_MAX_TOKENS) -> list[Judgment]:
    """Every row's every pair in both orders, judged by `judge` in batches; a judging prompt over the prompt limit is
    an unparsed judgment saying so. `check_stop()` is called between slices and raises to stop (the eval job's
    Stopped)."""
    work = [(row, i, j) for row in range(len(questions)) for i, j in orders(panes)]
    settings = GenerationSettings(max_new_tokens=max_tokens, temperature=0.0)
    judged: list[Judgment] = []
    for start in range(0, len(work), BATCH_JUDGMENTS):
        chunk = work[start:start + BATCH_JUDGMENTS]
        prompts = [[{"role": "user", "content": judge_text(template, questions[row], references[row],
                                                           answers[row][i], answers[row][j])}]
                   for row, i, j in chunk]
        for (row, i, j), reply in zip(chunk, _replies(engine, base_model, judge, prompts, settings,
                                                      max_prompt_tokens, check_stop, advance_s), strict=True):
            if isinstance(reply, Judgment):  # refused before it ran: its reason says why
                judged.append(Judgment(row, panes[i], panes[j], UNPARSED, reply.reason))
                continue
            verdict = parse_verdict(reply)
            winner = {"A": panes[i], "B": panes[j]}.get(verdict, verdict)
            judged.append(Judgment(row, panes[i], panes[j], winner, reply[:MAX_REASON_CHARS]))
        on_progress(len(judged))
        check_stop()
    return judged


def _replies(engine, base_model: str, judge: Pane, prompts: list, settings: GenerationSettings,
             max_prompt_tokens: int, check_stop, advance_s: float) -> list:
    """The judge's reply to each prompt (one batched generate); where the batch is refused for a prompt's length,
    each prompt alone, a refused one as a Judgment carrying the refusal."""
    import threading

    try:
        generation = engine.begin(base_model, [judge] * len(prompts), prompts, settings, max_prompt_tokens)
    except ChatRequestError as error:
        if len(prompts) == 1:
            return [Judgment(0, "", "", UNPARSED, f"not judged: {error}")]
        return [reply for prompt in prompts for reply in _replies(engine, base_model, judge, [prompt], settings,
                                                                  max_prompt_tokens, check_stop, advance_s)]
    stopped = threading.Event()
    while not generation.advance(time.monotonic() + advance_s, stopped, lambda replies: None):
        check_stop()
    return list(generation.replies())


def totals(judgments: list[Judgment], panes: list[str]) -> list[dict]:
    """Per pair (in the panes' order): judgments, each side's wins, ties, unparsed, and rows where the two orders
    agree (a judge that follows position agrees on none)."""
    out = []
    for first, second in itertools.combinations(panes, 2):
        mine = [j for j in judgments if {j.a, j.b} == {first, second}]
        by_row: dict[int, list[str]] = {}
        for judgment in mine:
            by_row.setdefault(judgment.row, []).append(judgment.verdict)
        out.append({"a": first, "b": second, "judgments": len(mine),
                    "a_wins": sum(j.verdict == first for j in mine), "b_wins": sum(j.verdict == second for j in mine),
                    "ties": sum(j.verdict == "tie" for j in mine), "unparsed": sum(j.verdict == UNPARSED for j in mine),
                    "orders_agree": sum(len(v) == 2 and v[0] == v[1] != UNPARSED for v in by_row.values())})
    return out
