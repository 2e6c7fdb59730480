"""GRPO's rewards a person picks without writing code, as plain functions TRL's GRPOTrainer calls
(`f(prompts, completions, **columns) -> list[float]`, one reward per completion), and the rules their settings follow.

Pure Python on purpose: the spec checks a pattern or a schema with the same code a run rewards with, and "show as
script" copies this module's source into the plain TRL script, so the script rewards exactly as the studio does.
It imports nothing of the studio (stdlib, `regex`, `jsonschema`, each lazily).

| reward | 1.0 when the answer (the completion's text, stripped) … |
|---|---|
| reference | equals the row's reference after collapsing whitespace and case (`exact`), or holds it (`contains`) |
| json | parses as JSON |
| json_schema | parses as JSON and validates against the pasted schema |
| regex | matches the regular expression (`regex.search`, with a time limit per answer) |
| length | is from min to max characters long |
| code | the operator-enabled Python function's own value (jobs.training.grpo loads it) |
| reward_model | (not 1.0 but a score) what the reward adapter grpo_reward_adapter gives the prompt with this answer |

The reward_model term is no function here: the run loads the reward adapter (grpo_reward_adapter) as a sequence
classifier and TRL scores with it (`reward_functions` puts it in its place, `processing_classes` its tokenizer).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

REWARDS = ("reference", "json", "json_schema", "regex", "length", "code", "reward_model")
MAX_REWARD_TERMS = 8
MAX_PATTERN_CHARS = 500
MAX_SCHEMA_CHARS = 20_000
MAX_CODE_CHARS = 50_000
REGEX_TIMEOUT_S = 0.5
"""Per answer: a catastrophic pattern (nested quantifiers) scores 0 after this instead of holding the worker."""
SCHEMA_PATTERN_KEYWORDS = ("pattern", "patternProperties")
"""jsonschema runs these through Python's `re`, which has no time limit: refused, the regex reward has one."""
CODE_FUNCTION = "reward"
"""The function a reward code file defines: reward(completions, **kwargs) -> list of numbers, one per completion."""

RewardFunc = Callable[..., list[float]]


class RewardError(TypeError):
    """A reward function returned something that is not one number per completion."""


def parse_terms(text: str) -> list[tuple[str, float]]:
    """'json, length:0.5' -> [('json', 1.0), ('length', 0.5)]. Raises ValueError naming what is wrong."""
    terms: list[tuple[str, float]] = []
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"name at least one reward: {', '.join(REWARDS)}")
    if len(parts) > MAX_REWARD_TERMS:
        raise ValueError(f"at most {MAX_REWARD_TERMS} rewards (got {len(parts)})")
    for part in parts:
        name, _, weight_text = part.partition(":")
        name = name.strip()
        if name not in REWARDS:
            raise ValueError(f"'{name}' is not a reward; use {', '.join(REWARDS)}, each optionally with ':weight'")
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
        except ValueError:
            raise ValueError(f"'{part}': the weight after ':' must be a number") from None
        if not math.isfinite(weight) or not -100 <= weight <= 100:
            raise ValueError(f"'{part}': the weight must be from -100 to 100")
        if name in (chosen for chosen, _ in terms):
            raise ValueError(f"'{name}' is named twice")
        terms.append((name, weight))
    return terms


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be the regex reward's pattern, or None."""
    import regex

    if len(pattern) > MAX_PATTERN_CHARS:
        return f"must be at most {MAX_PATTERN_CHARS} characters (got {len(pattern)})"
    try:
        regex.compile(pattern)
    except regex.error as error:
        return f"is not a regular expression: {error}"
    except (RecursionError, OverflowError, MemoryError):
        return "is too complex to compile"
    return None


def schema_problem(text: str) -> str | None:
    """Why `text` cannot be the json_schema reward's schema, or None."""
    from jsonschema import SchemaError, validators

    if len(text) > MAX_SCHEMA_CHARS:
        return f"must be at most {MAX_SCHEMA_CHARS:,} characters (got {len(text):,})"
    try:
        schema = json.loads(text)
    except ValueError as error:
        return f"is not JSON: {error}"
    except RecursionError:
        return "is nested too deeply"
    if not isinstance(schema, dict | bool):
        return "must be a JSON object (a JSON Schema)"
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as error:
        return f"is not a valid JSON Schema: {error.message}"
    except RecursionError:
        return "is nested too deeply"
    if keyword := _pattern_keyword(schema):
        return (f"uses '{keyword}', which runs without a time limit; check text patterns with the regex reward "
                f"instead")
    return None


def _pattern_keyword(node: object) -> str | None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SCHEMA_PATTERN_KEYWORDS:
                return key
            if found := _pattern_keyword(value):
                return found
    if isinstance(node, list):
        return next((found for item in node if (found := _pattern_keyword(item))), None)
    return None


def answer_text(completion: object) -> str:
    """A completion's text: conversational completions are message lists (the last message's content)."""
    if isinstance(completion, list):
        return str(completion[-1].get("content", "")) if completion else ""
    return str(completion)


def normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def reference_reward(match: str) -> RewardFunc:
    def reference(completions: list, reference: list[str], **_) -> list[float]:
        found = []
        for completion, wanted in zip(completions, reference, strict=True):
            answer, wanted = normalised(answer_text(completion)), normalised(wanted or "")
            found.append(float(answer == wanted if match == "exact" else bool(wanted) and wanted in answer))
        return found
    return reference


def parses(text: str) -> tuple[bool, object]:
    try:
        return True, json.loads(text.strip())
    except ValueError:
        return False, None


def json_reward() -> RewardFunc:
    def json_valid(completions: list, **_) -> list[float]:
        return [float(parses(answer_text(c))[0]) for c in completions]
    json_valid.__name__ = "json"
    return json_valid


def json_schema_reward(schema_text: str) -> RewardFunc:
    from jsonschema import validators

    schema = json.loads(schema_text)
    validator = validators.validator_for(schema)(schema)

    def json_schema(completions: list, **_) -> list[float]:
        found = []
        for completion in completions:
            ok, value = parses(answer_text(completion))
            found.append(float(ok and validator.is_valid(value)))
        return found
    return json_schema


def regex_reward(pattern: str) -> RewardFunc:
    import regex as regex_module

    compiled = regex_module.compile(pattern)

    def regex(completions: list, **_) -> list[float]:
        found = []
        for completion in completions:
            try:
                found.append(float(compiled.search(answer_text(completion), timeout=REGEX_TIMEOUT_S) is not None))
            except TimeoutError:
                found.append(0.0)  # too slow to decide: no reward, and the run goes on
        return found
    return regex


def length_reward(min_chars: int, max_chars: int) -> RewardFunc:
    def length(completions: list, **_) -> list[float]:
        return [float(min_chars <= len(answer_text(c).strip()) <= max_chars) for c in completions]
    return length


def checked(func: Callable) -> RewardFunc:
    """A person's reward function, held to one finite number per completion: anything else fails the run, saying
    what it returned (TRL alone would turn a wrong type into an unreadable tensor error)."""
    def code(prompts: list, completions: list, **kwargs) -> list[float]:
        values = func(prompts=prompts, completions=completions, **kwargs)
        if not isinstance(values, Sequence) or isinstance(values, str | bytes):
            raise RewardError(f"the reward function returned {type(values).__name__}; return a list of numbers, one "
                              f"per completion")
        if len(values) != len(completions):
            raise RewardError(f"the reward function returned {len(values)} values for {len(completions)} "
                              f"completions; return one number per completion")
        bad = next((value for value in values if isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value)), "ok")
        if bad != "ok":
            raise RewardError(f"the reward function returned {bad!r} ({type(bad).__name__}) among its values; "
                              f"return finite numbers")
        return [float(value) for value in values]
    return code


@dataclass(frozen=True)
class RewardSettings:
    """What a GRPO run rewards with: the chosen rewards with their weights, and each one's settings."""

    terms: tuple[tuple[str, float], ...]
    reference_match: str = "exact"
    json_schema: str = ""
    regex: str = ""
    min_chars: int = 0
    max_chars: int = 2000

    @property
    def weights(self) -> list[float]:
        return [weight for _, weight in self.terms]

    @property
    def uses_code(self) -> bool:
        return any(name == "code" for name, _ in self.terms)

    @property
    def uses_reference(self) -> bool:
        return any(name == "reference" for name, _ in self.terms)

    @property
    def uses_reward_model(self) -> bool:
        return any(name == "reward_model" for name, _ in self.terms)


def reward_functions(settings: RewardSettings, code: Callable | None = None,
                     reward_model: object | None = None) -> list[RewardFunc]:
    """The functions TRL calls, in the order of `settings.terms` (their weights: `settings.weights`). `code`: the
    person's loaded function, when the rewards name it; `reward_model`: the loaded reward adapter (a sequence
    classifier TRL runs itself), when they name reward_model."""
    made = {"reference": lambda: reference_reward(settings.reference_match), "json": json_reward,
            "json_schema": lambda: json_schema_reward(settings.json_schema),
            "regex": lambda: regex_reward(settings.regex),
            "length": lambda: length_reward(settings.min_chars, settings.max_chars)}
    functions = []
    for name, _ in settings.terms:
        if name == "code":
            if code is None:
                raise ValueError("the rewards name 'code' but no reward function was loaded")
            functions.append(checked(code))
        elif name == "reward_model":
            if reward_model is None:
                raise ValueError("the rewards name 'reward_model' but no reward model was loaded")
            functions.append(reward_model)
        else:
            functions.append(made[name]())
    return functions


def processing_classes(settings: RewardSettings, tokenizer: object | None) -> list | None:
    """TRL's reward_processing_classes: the reward model's tokenizer in its place, None for the functions; None
    when no term is a model."""
    if not settings.uses_reward_model:
        return None
    return [tokenizer if name == "reward_model" else None for name, _ in settings.terms]
