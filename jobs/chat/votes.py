"""Blind A/B in the Chat tab: panes shown without names in a shuffled order, a verdict (one best, a tie, or all
bad), a leaderboard per base model, and the votes exported as training data: preference pairs (DPO, ORPO, SimPO) or
unpaired labelled answers (KTO).

No torch here: the web process imports it. The leaderboard's score is a Bradley–Terry strength fitted to the pairs a
vote implies (the best answer beat each other answer; a tie or "all bad" is half a win each way), shown on the Elo
scale (400 points: 10-to-1 odds)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import combinations

from jobs.chat.request import BASE_PANE, STEP_MARK, ChatRequestError
from jobs.data.errors import DatasetError
from jobs.data.formats import PREFERENCE, UNPAIRED, ParsedDataset
from jobs.data.store import Imported, new_name_problems, register_parsed
from jobs.studio import Studio
from storage import catalog, votes_repo
from storage.models import Vote

OUTCOMES = ("best", "tie", "all_bad")
ELO_BASE, ELO_SCALE = 1000.0, 400.0
PRIOR_GAMES = 1.0
"""Each player also ties this many games against a fixed 1000-rated opponent: an unbeaten player gets a finite
score, and one vote cannot swing it to infinity."""
BT_ITERATIONS = 200


def shuffled(names: list[str], seed: int | None = None) -> list[str]:
    """The panes in a fresh random order for one blind round (each prompt gets its own)."""
    order = list(names)
    random.Random(seed).shuffle(order)
    return order


def pane_letter(index: int) -> str:
    return chr(ord("A") + index)


@dataclass(frozen=True)
class Verdict:
    outcome: str
    best: int | None = None
    """Index of the winning pane (in the order shown) when outcome is best."""


def _verdict_problems(answers: list[dict], verdict: Verdict) -> list[str]:
    problems = []
    if len(answers) < 2:
        problems.append("answers: a blind vote needs at least two panes")
    if verdict.outcome not in OUTCOMES:
        problems.append(f"outcome: must be one of {', '.join(OUTCOMES)} (got {verdict.outcome!r})")
    elif verdict.outcome == "best" and not (verdict.best is not None and 0 <= verdict.best < len(answers)):
        problems.append(f"best: name the winning pane, from A to {pane_letter(max(len(answers), 1) - 1)}")
    return problems  # an empty reply is an answer: the model ended at once, and the person may judge that


def record_vote(studio: Studio, base_model: str, prompt: list[dict], answers: list[dict], verdict: Verdict,
                settings: dict) -> Vote:
    """Store one blind round. `answers`: [{"adapter", "reply"}] in the order shown. Raises ChatRequestError."""
    if problems := _verdict_problems(answers, verdict):
        raise ChatRequestError(problems)
    with studio.db.write() as session:
        ids = {a.name: a.id for a in catalog.list_adapters(session, base_model)}
        owner = {a["adapter"]: a["adapter"].partition(STEP_MARK)[0] for a in answers}  # a checkpoint's adapter
        unknown = [name for name, adapter in owner.items() if name != BASE_PANE and adapter not in ids]
        if unknown:
            raise ChatRequestError([f"answers: no adapter of '{base_model}' named {', '.join(map(repr, unknown))}"])
        stored = [{"adapter": a["adapter"], "adapter_id": ids.get(owner[a["adapter"]]), "reply": a["reply"]}
                  for a in answers]
        chosen = answers[verdict.best]["adapter"] if verdict.outcome == "best" else None
        return votes_repo.add_vote(session, base_model=base_model, prompt=prompt, answers=stored,
                                   outcome=verdict.outcome, chosen=chosen, settings=settings)


# --- leaderboard --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Standing:
    name: str
    rounds: int
    wins: int
    ties: int
    score: float

    @property
    def win_rate(self) -> float:
        return self.wins / self.rounds if self.rounds else 0.0


def pairwise(votes: list[Vote]) -> dict[tuple[str, str], float]:
    """(a, b) -> wins of a over b, a tie counting half to each."""
    wins: dict[tuple[str, str], float] = {}
    for vote in votes:
        names = [a["adapter"] for a in vote.answers]
        for first, second in combinations(names, 2):
            if vote.outcome == "best":
                if vote.chosen in (first, second):
                    loser = second if vote.chosen == first else first
                    wins[(vote.chosen, loser)] = wins.get((vote.chosen, loser), 0.0) + 1
            else:
                for a, b in ((first, second), (second, first)):
                    wins[(a, b)] = wins.get((a, b), 0.0) + 0.5
    return wins


def bradley_terry(names: list[str], wins: dict[tuple[str, str], float]) -> dict[str, float]:
    """Strengths on the Elo scale by the MM algorithm (Hunter 2004), each player with PRIOR_GAMES ties against a
    fixed opponent of strength 1."""
    strength = dict.fromkeys(names, 1.0)
    for _ in range(BT_ITERATIONS):
        updated = {}
        for i in names:
            won = PRIOR_GAMES / 2 + sum(wins.get((i, j), 0.0) for j in names if j != i)
            games = PRIOR_GAMES / (strength[i] + 1.0) + sum(
                (wins.get((i, j), 0.0) + wins.get((j, i), 0.0)) / (strength[i] + strength[j])
                for j in names if j != i)
            updated[i] = won / games
        strength = updated
    return {name: ELO_BASE + ELO_SCALE * math.log10(value) for name, value in strength.items()}


def leaderboard(votes: list[Vote]) -> list[Standing]:
    """Every adapter (and the base) that took part in a vote, best score first."""
    rounds: dict[str, int] = {}
    wins: dict[str, int] = {}
    ties: dict[str, int] = {}
    for vote in votes:
        for answer in vote.answers:
            name = answer["adapter"]
            rounds[name] = rounds.get(name, 0) + 1
            wins[name] = wins.get(name, 0) + (vote.outcome == "best" and vote.chosen == name)
            ties[name] = ties.get(name, 0) + (vote.outcome == "tie")
    scores = bradley_terry(sorted(rounds), pairwise(votes))
    standings = [Standing(name, rounds[name], wins[name], ties[name], scores[name]) for name in rounds]
    return sorted(standings, key=lambda s: (-s.score, s.name))


def base_leaderboard(studio: Studio, base_model: str) -> tuple[list[Standing], int]:
    """(standings, number of votes) for one base model."""
    with studio.db.read() as session:
        votes = votes_repo.votes_for(session, base_model)
    return leaderboard(votes), len(votes)


# --- votes as training data ------------------------------------------------------------------------------------
def preference_rows(votes: list[Vote]) -> list[dict]:
    """A conversational preference row per (winner, loser) pair of every decided vote: the prompt, the winning
    answer as chosen, the other as rejected. Ties and all-bad votes carry no preference; equal answers neither, nor
    an empty answer on either side (there is no turn to train toward or away from)."""
    rows = []
    for vote in votes:
        winner = next((a for a in vote.answers if a["adapter"] == vote.chosen), None)
        if vote.outcome != "best" or not winner["reply"].strip():
            continue
        for answer in vote.answers:
            if answer is winner or answer["reply"].strip() in ("", winner["reply"].strip()):
                continue
            rows.append({"prompt": vote.prompt, "chosen": [{"role": "assistant", "content": winner["reply"]}],
                         "rejected": [{"role": "assistant", "content": answer["reply"]}]})
    return rows


def unpaired_rows(votes: list[Vote]) -> list[dict]:
    """KTO's rows, one per judged answer: a vote's winner labelled desirable (with any answer equal to it), and every
    answer of an "all bad" vote undesirable. The other answers of a decided vote were only worse than the winner, not
    judged bad, and a tie judges nothing: neither gives a row, nor does an empty answer."""
    rows = []
    for vote in votes:
        if vote.outcome == "best":
            winner = next(a for a in vote.answers if a["adapter"] == vote.chosen)["reply"].strip()
            judged = [(a, True) for a in vote.answers if a["reply"].strip() == winner]
        elif vote.outcome == "all_bad":
            judged = [(a, False) for a in vote.answers]
        else:
            continue
        rows += [{"prompt": vote.prompt, "completion": [{"role": "assistant", "content": answer["reply"]}],
                  "label": label} for answer, label in judged if answer["reply"].strip()]
    return rows


class NoPreferences(ValueError):
    pass


VOTE_SHAPES = {PREFERENCE: (preference_rows, "ties and all-bad votes say nothing about which answer is better, and "
                                             "a pair with an empty answer has nothing to train toward or away from"),
               UNPAIRED: (unpaired_rows, "ties judge no answer, a best or an all-bad vote does; an empty answer "
                                         "gives no row")}
"""Each shape the votes export as: the rows it makes of them, and why a base with votes may still have none."""


def export_votes(studio: Studio, base_model: str, name: str, shape: str = PREFERENCE) -> Imported:
    """Store the base model's votes under `name` as `shape`: preference pairs (DPO, ORPO, SimPO) or unpaired labelled
    answers (KTO). The same content again is reused. A person exports the votes they may see: their own (votes_repo)."""
    if problems := new_name_problems(name):
        raise DatasetError(problems)
    if shape not in VOTE_SHAPES:
        raise DatasetError([f"shape: one of {', '.join(VOTE_SHAPES)} (got {shape!r})"])
    make_rows, why_none = VOTE_SHAPES[shape]
    with studio.db.read() as session:
        rows = make_rows(votes_repo.votes_for(session, base_model))
    if not rows:
        raise NoPreferences(f"votes: no decided blind vote for '{base_model}' yet ({why_none})")
    return register_parsed(studio, name, ParsedDataset(shape, rows), {"votes": base_model})
