"""What an evaluation job is asked to do, validated once and stored verbatim as the job's spec (what it pinned at
submit, the adapters' and the dataset's ids, goes in the job's provenance, as for training)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from jobs.evaluate.judging import DEFAULT_JUDGE_PROMPT, JUDGE_MAX_TOKENS, MAX_PROMPT_CHARS, prompt_problems
from jobs.spec import unstorable_problem

TaskName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
TASK_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
SOURCES = ("held_out", "dataset", "suite", "benchmark")


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    adapters: list[str] = Field(default_factory=list, max_length=8, description=(
        "Adapters to evaluate, by name; all must be of one base. 'base' may be named too."))
    include_base: bool = Field(True, description="Also evaluate the base model alone, as the baseline.")
    base_model: str = Field("", max_length=500, description=(
        "The base the adapters were trained on; empty: theirs. Needed only to evaluate the base alone."))
    source: Literal["held_out", "dataset", "suite", "benchmark"] = Field("held_out", description=(
        "The eval set: the rows a training job held out (held_out, with train_job), a stored dataset (dataset), "
        "a saved prompt suite (suite), or lm-evaluation-harness tasks from the studio's task folder (benchmark)."))
    train_job: int | None = Field(None, ge=1, description="For held_out: the training job whose eval rows to use.")
    dataset: str = Field("", max_length=200, description="For dataset: its name (import it first, any format).")
    suite: str = Field("", max_length=200, description="For suite: the prompt suite's name.")
    tasks: list[TaskName] = Field(default_factory=list, max_length=16, description=(
        "For benchmark: lm-evaluation-harness tasks (or groups) by name, from the task folder the operator set "
        "(STUDIO_LM_EVAL_TASKS)."))
    num_fewshot: int | None = Field(None, ge=0, le=25, description=(
        "For benchmark: examples shown before each question; empty: each task's own setting."))
    max_rows: int = Field(200, ge=1, le=2000, description=(
        "Evaluate at most this many rows (the first ones); for benchmark, this many per task."))
    max_new_tokens: int = Field(64, ge=1, le=1024, description="Longest answer, in tokens.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy (the default); above 0: seeded sampling.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling's cut (with temperature above 0).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="The sampling seed: the same seed gives the same answers.")
    name: str = Field("", max_length=200, description="The job's name; empty: eval-<set>.")
    judge: str = Field("", max_length=300, description=(
        "Pairwise judging (optional): the model that judges every pair of adapters on every row, in both orders: "
        "'base' (this evaluation's base), or one of your adapters (of any base). Empty: no judging."))
    judge_max_tokens: int = Field(JUDGE_MAX_TOKENS, ge=1, le=512, description=(
        "The judge's reply (its reasons, then its verdict line), in tokens at most; greedy."))
    judge_prompt: str = Field(DEFAULT_JUDGE_PROMPT, min_length=1, max_length=MAX_PROMPT_CHARS, description=(
        "What the judge reads: {question}, {answer_a} and {answer_b} (and {reference}) are filled in; its reply "
        "must end with 'Verdict: A', 'Verdict: B' or 'Verdict: tie', else it counts as unparsed."))

    @field_validator("judge_prompt")
    @classmethod
    def usable_prompt(cls, value: str) -> str:
        problems = prompt_problems(value) + ([why] if (why := unstorable_problem(value)) else [])
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, value: list[str]) -> list[str]:
        if bad := [name for name in value if not TASK_NAME.fullmatch(name)]:
            raise ValueError(f"a task is named by letters, digits, '_', '-' and '.', not a path (got {bad[0]!r})")
        return value

    def panes(self) -> list[str]:
        """The panes in the order results show them: the adapters, then the base."""
        names = list(dict.fromkeys(self.adapters))
        if self.include_base and "base" not in names:
            names.append("base")
        return names

    def work(self, rows: int, panes: int) -> int:
        """The job's steps: an answer per row and pane, and with a judge two judgments per row per pair of panes."""
        return rows * panes + (rows * panes * (panes - 1) if self.judge.strip() else 0)
