"""A search request as a person writes it, checked whole before anything is queued:

    {"name": "which-rank", "base": {...spec fields...},
     "space": {"lora_r": {"low": 4, "high": 64, "log": true},
               "learning_rate": {"low": 1e-4, "high": 1e-2, "log": true},
               "target_modules": {"choices": ["attention", "all-linear"]}},
     "budget_trials": 12, "budget_minutes": 30, "parallel": 1, "pruner": "hyperband"}"""

from __future__ import annotations

import math
import time
import types
import typing
from dataclasses import asdict, dataclass, field

from jobs.spec import Problem, SpecError, TrainSpec, name_problem, parse_spec
from jobs.spec_versions import VERSION_KEY
from jobs.sweeps import MAX_AXIS_VALUES, MAX_POINTS

PRUNERS = ("hyperband", "successive_halving")
MAX_FIELDS = 8
MIN_BUDGET_MINUTES = 1.0
"""A floor for a time budget where the studio has no finished job of the base to measure one by."""
KEYS = ("name", "base", "space", "budget_trials", "budget_minutes", "parallel", "pruner", "first", "start_from_plan",
        "seed")


@dataclass(frozen=True)
class SearchRequest:
    name: str
    base: dict
    space: dict
    budget_trials: int
    budget_minutes: float | None = None
    parallel: int = 1
    pruner: str = "hyperband"
    first: list[dict] = field(default_factory=list)
    """Points tried before the sampler chooses (a known-good baseline, say): Optuna's enqueue_trial."""
    start_from_plan: bool = True
    """The first trial trains the varied fields at the values the studio's plan gives the base (the form's own
    choice, clamped into the space), so a search never ends behind what the form alone would have trained, and a best
    value at the span's edge, where a grid always looks and a sampler seldom does, is tried at once."""
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _is_int_field(name: str) -> bool:
    annotation = TrainSpec.model_fields[name].annotation
    kinds = set(typing.get_args(annotation)) if isinstance(annotation, types.UnionType) or typing.get_origin(
        annotation) is typing.Union else {annotation}
    return int in kinds and float not in kinds


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _dimension_problems(name: str, rule: object) -> list[Problem]:
    where = f"space.{name}"
    if name not in TrainSpec.model_fields or name in ("name", VERSION_KEY):
        return [Problem(field=where, message=f"'{name}' is not a spec field a search can vary")]
    if not isinstance(rule, dict):
        return [Problem(field=where, message='{"low": L, "high": H} (and "log": true), or {"choices": [...]}')]
    if "choices" in rule:
        choices = rule["choices"]
        if not isinstance(choices, list) or not choices:
            return [Problem(field=where, message="choices must be a non-empty list")]
        if len(choices) > MAX_AXIS_VALUES:
            return [Problem(field=where, message=f"{len(choices)} choices; at most {MAX_AXIS_VALUES}")]
        return []
    low, high = rule.get("low"), rule.get("high")
    if not (_number(low) and _number(high)):
        return [Problem(field=where, message=f"low and high must be numbers (got low={low!r}, high={high!r})")]
    if _is_int_field(name) and not (float(low).is_integer() and float(high).is_integer()):
        return [Problem(field=where, message=f"'{name}' takes whole numbers (got low={low}, high={high})")]
    if low >= high:
        word = "empty" if low == high else "inverted"
        return [Problem(field=where, message=f"the range is {word}: low {low} must be below high {high}")]
    if rule.get("log") and low <= 0:
        return [Problem(field=where, message=f"a log range needs low above 0 (got {low})")]
    return []


def _endpoint_problems(base: dict, space: dict) -> list[Problem]:
    """Each range's ends and each choice must be a value the spec takes (lora_r 0 is refused here, not in a trial)."""
    problems = []
    for name, rule in space.items():
        values = rule["choices"] if "choices" in rule else [rule["low"], rule["high"]]
        for value in values:
            value = int(value) if _is_int_field(name) and _number(value) else value
            try:
                parse_spec({**base, name: value})
            except SpecError as error:
                problems += [Problem(field=f"space.{name}", message=f"{value!r}: {p.message}")
                             for p in error.problems if p.field == name]
    return problems


def _int_problem(raw: dict, key: str, low: int, high: int, default: int | None = None) -> tuple[int, list[Problem]]:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return 0, [Problem(field=key, message=f"a whole number from {low} to {high} (got {value!r})")]
    return value, []


def parse_request(raw: object) -> SearchRequest:
    """The request's own shape and ranges (what it names, dataset and base, is checked by jobs.search.driver).
    Raises SpecError with every problem, each naming its field."""
    if not isinstance(raw, dict):
        raise SpecError.from_text("search", "a JSON object with name, base, space and budget_trials")
    problems = [Problem(field=key, message=f"unknown key; a search takes {', '.join(KEYS)}")
                for key in raw if key not in KEYS]
    name = raw.get("name") if isinstance(raw.get("name"), str | None) else "?"
    # Named by the time when left empty, as a sweep is.
    name = (name or "").strip() or time.strftime("search-%Y%m%d-%H%M%S")
    if problem := name_problem(name):
        problems.append(Problem(field="name", message=problem))
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        problems.append(Problem(field="base", message="a JSON object of spec fields"))
        base = {}
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        problems.append(Problem(field="space", message='a mapping of spec fields to ranges, e.g. '
                                                       '{"lora_r": {"low": 4, "high": 32}}'))
        space = {}
    elif len(space) > MAX_FIELDS:
        problems.append(Problem(field="space", message=f"{len(space)} fields; a search varies at most {MAX_FIELDS}"))
    for name_, rule in space.items():
        own = _dimension_problems(str(name_), rule)
        problems += own or _endpoint_problems({k: v for k, v in base.items() if k != "name"}, {name_: rule})
    if "budget_trials" not in raw:
        problems.append(Problem(field="budget_trials", message=f"how many trials at most (1 to {MAX_POINTS})"))
        trials = 1
    else:
        value = raw["budget_trials"]
        if _number(value) and float(value).is_integer() and value > MAX_POINTS:
            problems.append(Problem(field="budget_trials", message=(
                f"{int(value)} trials; a search is a sweep and a sweep runs at most {MAX_POINTS} jobs")))
            trials = 1
        else:
            trials, found = _int_problem(raw, "budget_trials", 1, MAX_POINTS)
            problems += found
    minutes = raw.get("budget_minutes")
    if minutes is not None and (not _number(minutes) or minutes <= 0):
        problems.append(Problem(field="budget_minutes", message=f"minutes above 0, or empty for none (got "
                                                                f"{minutes!r})"))
        minutes = None
    parallel, found = _int_problem(raw, "parallel", 1, max(1, trials), default=1)
    problems += found
    pruner = raw.get("pruner", "hyperband")
    if pruner not in PRUNERS:
        problems.append(Problem(field="pruner", message=f"one of {', '.join(PRUNERS)} (got {pruner!r})"))
    first = raw.get("first") or []
    if not isinstance(first, list) or not all(isinstance(p, dict) and set(p) <= set(space) for p in first):
        problems.append(Problem(field="first", message="a list of points, each giving values of the space's fields"))
        first = []
    start_from_plan = raw.get("start_from_plan", True)
    if not isinstance(start_from_plan, bool):
        problems.append(Problem(field="start_from_plan", message=f"true or false (got {start_from_plan!r})"))
        start_from_plan = False
    if first and len(first) + start_from_plan > trials:
        plus = " and the plan's own (start_from_plan)" if start_from_plan else ""
        problems.append(Problem(field="first", message=f"{len(first)} points to try first{plus} but a budget of "
                                                        f"{trials} trials"))
    seed, found = _int_problem(raw, "seed", 0, 2**31 - 1, default=0)
    problems += found
    if problems:
        raise SpecError(problems)
    return SearchRequest(name=name, base=base, space=space, budget_trials=trials,
                         budget_minutes=float(minutes) if minutes is not None else None, parallel=parallel,
                         pruner=pruner, first=first, start_from_plan=start_from_plan, seed=seed)
