"""What the model will see: stored rows rendered through the base model's chat template.

Only a tokenizer is loaded (never weights), cached per base model, and only when a preview is asked for."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache

from jobs.data.mixing import Taken, mixed, mixes, with_system_prompt
from jobs.data.stats import PLAIN, Counting, DatasetStats, TokenizedRow, dataset_stats, tokenize_row
from jobs.data.store import dataset_path, find_dataset, load_rows
from jobs.models.known_bases import known_tokenizer
from jobs.models.resolve import allowed_model_roots, base_model_problem, looks_local, prepared_path
from jobs.models.template_render import TemplateRenderError, render_pasted
from jobs.models.templates import known_templates, render_chat, template_problem, template_text
from jobs.models.tokenizer_only import load_tokenizer_only
from jobs.spec import STUDIO_BASE_MODELS, TrainSpec
from jobs.studio import Studio
from storage.models import Dataset

_TOKENIZER_LOAD = threading.Lock()
_CACHES = threading.Lock()
"""Guards the view and length caches: requests fill and trim them from several threads."""


@cache
def _tokenizer(model_path: str):
    return load_tokenizer_only(model_path)


_shipped_in_use: set[str] = set()
"""Studio bases whose shipped tokenizer a preview has used (it stays in memory, as a prepared one does)."""


def tokenizer_loaded() -> bool:
    """Whether any tokenizer is in memory already (so following the form costs nothing new)."""
    return _tokenizer.cache_info().currsize > 0 or bool(_shipped_in_use)


def preview_tokenizer(studio: Studio, base_model: str):
    """The base model's tokenizer when it is on this machine, else None (the preview then shows plain turns): a
    preview never downloads or prepares a model. A studio base not prepared yet has the tokenizer the studio ships
    for it (jobs.models.known_bases), the same ids its prepared folder gives."""
    roots = allowed_model_roots(list(studio.settings.model_dirs), studio.settings.models_dir)
    if base_model not in STUDIO_BASE_MODELS and (base_model_problem(base_model, roots) or not looks_local(base_model)):
        return None  # a hub id cannot be fetched offline; a folder must be one the studio may read
    path = prepared_path(base_model, studio.settings.models_dir)
    if path is None:
        _shipped_in_use.add(base_model)
        return known_tokenizer(base_model)
    try:
        with _TOKENIZER_LOAD:
            return _tokenizer(path)
    except (OSError, ValueError):
        return None


class Pasted(str):
    """A person's pasted template: render_row renders it in a bounded process (jobs.models.template_render)."""


def render_row(tokenizer, row: dict, chat_template: str | None = None) -> str:
    """A stored row as the model reads it: a chat through the base's template (or `chat_template`), raw text as it
    is, a preference pair as its prompt with the chosen answer, then the rejected one; an unpaired answer as its
    prompt with the answer, marked desirable or undesirable; a prompt/reference row as its prompt, then the
    reference."""
    if "text" in row:
        return row["text"]
    if "label" in row:
        verdict = "desirable" if row["label"] else "undesirable"
        return f"{verdict}:\n{render_row(tokenizer, {'messages': row['prompt'] + row['completion']}, chat_template)}"
    if "chosen" in row:
        return "\n".join(f"{label}:\n{render_row(tokenizer, {'messages': row['prompt'] + row[label]}, chat_template)}"
                         for label in ("chosen", "rejected"))
    if "reference" in row:  # GRPO: the prompt the model answers, then what its answer is checked against
        prompt = render_row(tokenizer, {"messages": row["prompt"]})
        return f"{prompt}\nreference:\n{row['reference']}"
    if isinstance(chat_template, Pasted):  # bounded, in a process of its own; raises TemplateRenderError
        return render_pasted(chat_template, row["messages"], tokenizer.special_tokens_map if tokenizer else None)
    if tokenizer is not None:
        return render_chat(tokenizer, row["messages"], tokenize=False, chat_template=chat_template)
    return "\n".join(f"[{m['role']}] {m['content']}" for m in row["messages"])


def preview_rows(studio: Studio, base_model: str, dataset: str, count: int) -> list[str] | None:
    """The first `count` rows as the model will see them, or None when there is no such dataset."""
    path = dataset_path(studio, dataset) if dataset else None
    if path is None:
        return None
    tokenizer = preview_tokenizer(studio, base_model)
    return [render_row(tokenizer, row) for row in load_rows(path)[:count]]


@dataclass(frozen=True)
class RunPreview:
    """The first rows a run trains on as the model sees them, and what its mix took from each dataset."""

    texts: list[str]
    rows: int
    """Rows the run takes in all (before dedup, drop and the eval split)."""
    taken: list[Taken]
    """Per dataset of a mix or row budget; empty: every row of the one dataset."""
    template_note: str = ""


def run_preview(studio: Studio, spec: TrainSpec, count: int) -> RunPreview | None:
    """The rows `spec` trains on, as training takes them (jobs.data.mixing: the same seeded mix, the default system
    prompt added), the first `count` rendered through its chat template; None when a dataset is missing. A pasted
    template renders in a bounded process of its own (a template may loop without end); past its budget the rows
    show through the base's template, and the note says why."""
    parts = spec.mix_parts()
    datasets = {name: find_dataset(studio, name) for name, _ in parts}
    if any(dataset is None for dataset in datasets.values()):
        return None
    loaded = {name: load_rows(studio.absolute(dataset.path)) for name, dataset in datasets.items()}
    rows, taken = (mixed(parts, spec.max_rows, spec.seed, loaded) if mixes(parts, spec.max_rows)
                   else (loaded[parts[0][0]], []))
    shown = [with_system_prompt(row, spec.system_prompt) for row in rows[:count]]
    template, note = template_text(spec.chat_template), ""
    if spec.chat_template and (problem := template_problem(spec.chat_template, spec.assistant_only_loss)):
        template, note = None, f"chat_template {problem}; shown here through the base's template"
    elif spec.chat_template and spec.chat_template not in known_templates():
        template = Pasted(spec.chat_template)
    tokenizer = preview_tokenizer(studio, spec.base_model)
    try:
        texts = [render_row(tokenizer, row, template) for row in shown]
    except TemplateRenderError as error:  # a pasted template past its budget: said, and the base's shown instead
        texts, note = [render_row(tokenizer, row) for row in shown], f"{error}; shown here through the base's template"
    return RunPreview(texts, len(rows), taken, note)


class NoTokenizer(Exception):
    """The base's tokenizer is not on this machine (a hub model not fetched, a folder without one). Not a
    LookupError: that one means the dataset is unknown, and a base without a tokenizer was once reported as that."""


_views: OrderedDict = OrderedDict()
VIEW_CACHE = 16


def dataset_view(studio: Studio, name: str, base_model: str, max_length: int, assistant_only_loss: bool,
                 shown: int, start: int = 0) -> tuple[DatasetStats, list[tuple[int, TokenizedRow]], object]:
    """(stats, `shown` rows from row `start` (0-based) tokenized, tokenizer) of a dataset for a base model, cached
    per content and settings. Raises LookupError for an unknown dataset, NoTokenizer when the base's tokenizer is
    not here."""
    dataset = find_dataset(studio, name)
    if dataset is None:
        raise LookupError(name)
    tokenizer = preview_tokenizer(studio, base_model)
    if tokenizer is None:
        raise NoTokenizer(base_model)
    key = (dataset.sha256, base_model, max_length, assistant_only_loss)
    with _CACHES:
        view = _views.get(key)
    if view is None:  # kept in hand: another request may push it out of the cache before this one is done
        rows = load_rows(studio.absolute(dataset.path))
        view = (dataset_stats(rows, tokenizer, max_length, assistant_only_loss), rows)
        with _CACHES:
            _views[key] = view
            _lengths[(dataset.sha256, base_model, PLAIN)] = view[0].lengths
            while len(_views) > VIEW_CACHE:
                _views.popitem(last=False)
    stats, rows = view
    start = max(0, min(start, len(rows) - 1))
    shown_rows = [(i + 1, tokenize_row(tokenizer, rows[i], assistant_only_loss))
                  for i in range(start, min(start + shown, len(rows)))]
    return stats, shown_rows, tokenizer


_lengths: OrderedDict = OrderedDict()
LENGTH_CACHE = 32


def row_lengths(studio: Studio, dataset: Dataset, base_model: str, counting: Counting = PLAIN) -> list[int] | None:
    """Each row's tokens through the base's chat template (loss mask aside), with what `counting` adds, counted once
    per content, base and counting; None when the base's tokenizer is not on this machine."""
    key = (dataset.sha256, base_model, counting)
    with _CACHES:
        lengths = _lengths.get(key)
    if lengths is None:
        tokenizer = preview_tokenizer(studio, base_model)
        if tokenizer is None:
            return None
        lengths = counting.lengths(tokenizer, load_rows(studio.absolute(dataset.path)))
        with _CACHES:
            _lengths[key] = lengths
            while len(_lengths) > LENGTH_CACHE:
                _lengths.popitem(last=False)
    return lengths


def dataset_tokens(studio: Studio, name: str, sha256: str, base_model: str) -> int | None:
    """A dataset's tokens for a base model, counted once per content and base; None while no tokenizer is in
    memory yet (counting never loads one: the table stays cheap until the person inspects a dataset)."""
    if (sha256, base_model, PLAIN) not in _lengths and not tokenizer_loaded():
        return None
    dataset = find_dataset(studio, name)
    lengths = row_lengths(studio, dataset, base_model) if dataset is not None else None
    return sum(lengths) if lengths is not None else None
