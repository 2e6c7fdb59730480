"""What a compare request is, checked before any model loads: the panes (adapters and "base"), each pane's
conversation, and the generation settings every pane shares. No torch here: the web process imports it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs.studio import Studio
from storage import catalog

BASE_PANE = "base"
"""What users call the plain base model in the compare list."""


class ChatRequestError(ValueError):
    """Every problem with a compare request, each naming its field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    seed: int = 0

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.max_new_tokens <= 2048:
            found.append(f"max_new_tokens: must be from 1 to 2048 (got {self.max_new_tokens})")
        if not 0 <= self.temperature <= 5:
            found.append(f"temperature: must be from 0 to 5 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            found.append(f"top_p: must be above 0 and at most 1 (got {self.top_p})")
        return found


def conversation(prompt: str, history: list[dict] | None = None, system: str = "") -> list[dict]:
    """One pane's messages: the optional system prompt, the pane's earlier turns ({role, content} dicts), then the
    new user turn. The Chat tab and the `compare` endpoint both build their conversations here."""
    head = [{"role": "system", "content": system}] if system and system.strip() else []
    return head + list(history or []) + [{"role": "user", "content": prompt}]


def resolve_panes(studio: Studio, base_model: str, names: list[str]) -> list[tuple[str, Path | None]]:
    """(name, adapter dir) per pane, the dir None for the base. Raises ChatRequestError naming every problem."""
    problems, panes = [], []
    if not names:
        problems.append("adapters: pick at least one adapter or 'base'")
    if len(set(names)) != len(names):
        problems.append("adapters: each adapter may appear once")
    with studio.db.read() as session:
        for name in names:
            if name == BASE_PANE:
                panes.append((name, None))
                continue
            adapter = catalog.get_adapter_by_name(session, name)
            if adapter is None:
                problems.append(f"adapters: no adapter named '{name}'")
            elif adapter.base_model != base_model:
                problems.append(f"adapters: '{name}' was trained on '{adapter.base_model}', not '{base_model}'")
            else:
                panes.append((name, studio.absolute(adapter.path)))
    if problems:
        raise ChatRequestError(problems)
    return panes


def request_problems(settings: GenerationSettings, conversations: list[list[dict]]) -> list[str]:
    problems = settings.problems()
    if not any(c and c[-1].get("content", "").strip() for c in conversations):
        problems.append("prompt: type a message first")
    return problems
