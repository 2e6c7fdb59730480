"""The one error a dataset refusal raises: every problem in words, each naming its line, row or column."""

from __future__ import annotations

MAX_REPORTED_PROBLEMS = 20


class DatasetError(ValueError):
    """Every problem found in a dataset file, in words, each naming the row or column."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))

    def as_text(self) -> str:
        return "The dataset was not accepted:\n" + "\n".join(f"- {p}" for p in self.problems)


def capped(problems: list[str]) -> list[str]:
    """The first problems, and how many more of the same kinds there are."""
    if len(problems) <= MAX_REPORTED_PROBLEMS:
        return problems
    hidden = len(problems) - MAX_REPORTED_PROBLEMS
    return problems[:MAX_REPORTED_PROBLEMS] + [f"... and {hidden} more problem(s) of the same kinds"]
