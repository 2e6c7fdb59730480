"""A submitted job's step plan (jobs.step_plan) from the spec, the base and the data only, never from what happens to
be on disk: the base's size comes from its config, and the rows are counted with its tokenizer, both known before its
weights are there (a studio base: jobs.models.known_bases; a hub base: its config and tokenizer at the commit submit
pinned, fetched then; a local folder: its own). Rows are estimated from characters only when the base's tokenizer
cannot be had at all (a hub base not pinned yet, such as the Train tab's plan before submit)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

from jobs.data.mixing import mixed, mixes
from jobs.data.preview import row_lengths
from jobs.data.stats import PLAIN, Counting
from jobs.data.store import find_dataset, load_rows
from jobs.models.known_bases import known_config, known_tokenizer
from jobs.models.memory_inputs import ModelShape
from jobs.models.resolve import hub_cache_snapshot, is_hub_id, looks_local
from jobs.spec import PAIRED_METHODS, TrainSpec
from jobs.step_plan import DataSize, StepPlan, estimated_lengths, plan
from jobs.studio import Studio
from storage.models import Dataset

LENGTH_CACHE = 32
_lengths: OrderedDict[tuple, list[int]] = OrderedDict()
_longest: OrderedDict[tuple, int] = OrderedDict()
"""The longest sequence per (dataset content, base, revision, method): counted once, not on every change of the
form."""
_hub_tokenizers: dict[Path, object] = {}
_LOCK = threading.Lock()


def base_params(studio: Studio, base_model: str, revision: str | None = None) -> int | None:
    """The base's parameter count from its config alone (None when no config is known, or it is no Llama-style
    decoder); `revision`: a hub base's pinned commit."""
    config = known_config(base_model)
    if config is None:
        folder = _base_folder(base_model, revision)
        try:
            config = json.loads((folder / "config.json").read_text()) if folder else None
        except (OSError, ValueError):
            config = None
    try:
        return ModelShape.from_config(config).total_params if config else None
    except (KeyError, TypeError):
        return None


def _base_folder(base_model: str, revision: str | None) -> Path | None:
    if looks_local(base_model):
        return Path(base_model).expanduser()
    return hub_cache_snapshot(base_model, revision) if is_hub_id(base_model) else None


def data_size(studio: Studio, spec: TrainSpec, revision: str | None = None) -> DataSize:
    """The rows the spec trains on in tokens of its base: its dataset's, or its mix's as the run takes them
    (jobs.data.mixing, the same seeded sample); empty when a dataset is missing."""
    parts = spec.mix_parts()
    datasets = {name: find_dataset(studio, name) for name, _ in parts}
    if any(dataset is None for dataset in datasets.values()):
        return DataSize(lengths=[], counted=False)
    counting = counting_of(spec)
    sizes = {name: dataset_size(studio, dataset, spec.base_model, revision, counting)
             for name, dataset in datasets.items()}
    if not mixes(parts, spec.max_rows):
        return sizes[spec.dataset]
    lengths, taken = mixed(parts, spec.max_rows, spec.seed, {name: size.lengths for name, size in sizes.items()})
    return DataSize(lengths=lengths, counted=all(size.counted for size in sizes.values()), taken=tuple(taken))


def counting_of(spec: TrainSpec) -> Counting:
    """What the spec's run adds to each row before training on it (its system prompt, its chosen known template)."""
    return Counting.of(spec.system_prompt, spec.chat_template)


def dataset_size(studio: Studio, dataset: Dataset, base_model: str, revision: str | None = None,
                 counting: Counting = PLAIN) -> DataSize:
    """A stored dataset's rows in tokens of `base_model` with what `counting` adds (estimated from characters without
    its tokenizer)."""
    counted = _counted(studio, dataset, base_model, revision, counting)
    if counted is not None:
        return DataSize(lengths=counted, counted=True)
    return DataSize(lengths=estimated_lengths(counting.rows(load_rows(studio.absolute(dataset.path)))), counted=False)


def longest_sequence(studio: Studio, spec: TrainSpec, dataset: Dataset | None = None,
                     revision: str | None = None) -> int:
    """The data's longest sequence in the base's tokens, which bounds a padded batch (DPO's pairs, or rows without
    packing) in the memory estimate (packing fills every sequence to max_length: the estimate does not read it), and
    the shortest pack_length that cuts no row (jobs.models.budget); 0 without the dataset. `dataset`: the row the job
    pinned (default: the spec's dataset by name). A pair counts its prompt with the longer answer: the chosen side is
    counted, the rejected one scaled from it by characters."""
    if mixes(spec.mix_parts(), spec.max_rows):  # a mix's longest row is among the rows it takes
        return max(data_size(studio, spec, revision).lengths, default=0)
    dataset = dataset or find_dataset(studio, spec.dataset)
    if dataset is None:
        return 0
    counting = counting_of(spec)
    key = (dataset.sha256, spec.base_model, revision, spec.method, counting)
    with _LOCK:
        if key in _longest:
            return _longest[key]
    lengths = dataset_size(studio, dataset, spec.base_model, revision, counting).lengths
    if spec.method in PAIRED_METHODS and lengths:
        rows = counting.rows(load_rows(studio.absolute(dataset.path)))
        chosen = estimated_lengths(rows)
        rejected = estimated_lengths([{"prompt": row.get("prompt", []), "chosen": row.get("rejected", [])}
                                      for row in rows])
        lengths = [round(n * max(1.0, r / c)) for n, c, r in zip(lengths, chosen, rejected, strict=False)]
    with _LOCK:
        _longest[key] = max(lengths, default=0)
        while len(_longest) > LENGTH_CACHE:
            _longest.popitem(last=False)
        return _longest[key]


def _counted(studio: Studio, dataset: Dataset, base_model: str, revision: str | None,
             counting: Counting) -> list[int] | None:
    if looks_local(base_model):  # the folder's own tokenizer, where the studio may read it
        return row_lengths(studio, dataset, base_model, counting)
    key = (dataset.sha256, base_model, revision, counting)
    with _LOCK:
        if key in _lengths:
            return _lengths[key]
    tokenizer = known_tokenizer(base_model) or _hub_tokenizer(base_model, revision)
    if tokenizer is None:
        return None
    lengths = counting.lengths(tokenizer, load_rows(studio.absolute(dataset.path)))
    with _LOCK:
        _lengths[key] = lengths
        while len(_lengths) > LENGTH_CACHE:
            _lengths.popitem(last=False)
    return lengths


def _hub_tokenizer(base_model: str, revision: str | None):
    folder = hub_cache_snapshot(base_model, revision) if is_hub_id(base_model) else None
    if folder is None or not (folder / "tokenizer_config.json").is_file():
        return None
    with _LOCK:
        if folder not in _hub_tokenizers:
            from jobs.models.tokenizer_only import load_tokenizer_only

            try:
                _hub_tokenizers[folder] = load_tokenizer_only(str(folder))
            except (OSError, ValueError):
                return None
        return _hub_tokenizers[folder]


def job_plan(studio: Studio, spec: TrainSpec, revision: str | None = None) -> StepPlan:
    """The steps, tokens and chosen defaults of `spec` on this studio's data; `revision`: the commit submit pinned a
    hub base to (None: the one the local cache's main ref names)."""
    return plan(spec, data_size(studio, spec, revision), base_params(studio, spec.base_model, revision))
