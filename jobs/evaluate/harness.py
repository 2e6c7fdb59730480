"""Standard benchmarks through lm-evaluation-harness (lm_eval), run by the eval job on each pane (an adapter on its
base, loaded as chat loads it, or the base alone), offline, from the studio's task folder.

The task folder is the operator's (STUDIO_LM_EVAL_TASKS), never a person's: lm_eval task YAML may run Python from
the folder (`!function utils.x`) and may name any file to read as its data, so people pick tasks by name from it and
name no path. Its YAML is read here without running anything (tags kept as text) to list the task names; lm_eval's
own TaskManager reads it in the eval job's child process. No hub: a task's data must be local files (e.g.
`dataset_path: json` with `data_files`, relative to the task folder, where the tasks run); HF_HUB_OFFLINE and
HF_DATASETS_OFFLINE are set for the run."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path

import yaml

MAX_TASK_FILES = 2000
"""A folder with more YAML files than this is listed only this far (the listing runs at submit)."""
MAX_TASK_FILE_BYTES = 1 << 20


class _TagsAsText(yaml.SafeLoader):
    """lm_eval's YAML tags (`!function utils.process_docs`) read as plain text: listing names runs nothing."""


_TagsAsText.add_multi_constructor("!", lambda loader, suffix, node: None)


def task_names(folder: Path | None) -> list[str]:
    """The tasks and groups a task folder defines (their `task:` / `group:` names), sorted."""
    if folder is None or not folder.is_dir():
        return []
    names: set[str] = set()
    files = sorted(p for pattern in ("*.yaml", "*.yml") for p in folder.rglob(pattern))[:MAX_TASK_FILES]
    for path in files:
        try:
            if path.stat().st_size > MAX_TASK_FILE_BYTES:
                continue
            config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagsAsText)  # noqa: S506 (safe loader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(config, dict):
            names.update(value for key in ("task", "group") if isinstance(value := config.get(key), str))
    return sorted(names)


def run_pane(model, tokenizer, device: str, tasks: list[str], folder: Path, limit: int, num_fewshot: int | None,
             seed: int) -> tuple[dict[str, float], dict[str, bool | None]]:
    """Every task on one loaded model (a PeftModel or the base): ({"<task> <metric>": value}, the metrics lm_eval
    reports (stderr left out), finite values only; {"<task> <metric>": higher is better?} as each task declares)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"  # a task's data is local, or it fails
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, device=device, batch_size=8)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    with contextlib.chdir(folder):  # a task's relative data_files are the folder's own (this process is the job's)
        out = lm_eval.simple_evaluate(model=wrapped, tasks=tasks, task_manager=manager, limit=limit,
                                      num_fewshot=num_fewshot, random_seed=seed, numpy_random_seed=seed,
                                      torch_random_seed=seed, fewshot_random_seed=seed, log_samples=False,
                                      bootstrap_iters=0)
    directions = {f"{task} {metric}": better for task, declared in (out.get("higher_is_better") or {}).items()
                  for metric, better in declared.items()}
    found = flatten(out["results"])
    return found, {name: directions.get(name.split(" (")[0]) for name in found}


def flatten(results: dict) -> dict[str, float]:
    """lm_eval's {task: {"acc,none": 0.5, "acc_stderr,none": ..., "alias": ...}} as {"task acc": 0.5}."""
    flat = {}
    for task, values in results.items():
        for key, value in values.items():
            metric, _, kind = key.partition(",")
            if metric.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                flat[f"{task} {metric}" + (f" ({kind})" if kind and kind != "none" else "")] = float(value)
    return flat


def benchmark(panes: list, base_model: str, base_path: str, tasks: list[str], folder: Path, limit: int,
              num_fewshot: int | None, seed: int, should_stop: Callable[[], bool | str],
              on_pane: Callable[[int], None]) -> tuple[dict[str, dict[str, float]], dict[str, bool | None]] | None:
    """({pane: metrics} for every pane, each on its base loaded as chat loads it, one resident base per variant with
    the pane's adapter active (jobs.evaluate.resident), {metric: higher is better?}); None when `should_stop()`
    asked to stop between panes (a benchmark pane is not interrupted midway)."""
    import torch

    from jobs.chat.engine import load_dtype
    from jobs.evaluate.resident import ResidentBases
    from jobs.models import loading

    device = loading.pick_device()

    def load(pane):
        return loading.load_base_model(pane.variant.spec(base_model), pane.variant.model_dir or base_path, device,
                                       load_dtype(pane.variant, base_model, device))

    bases = ResidentBases(load)
    table: dict[str, dict[str, float]] = {}
    directions: dict[str, bool | None] = {}
    for done, pane in enumerate(panes):
        if should_stop():
            return None
        tokenizer = loading.load_tokenizer(pane.variant.model_dir or base_path)  # a whole model is its own base
        print(f"benchmark: {pane.name} on {', '.join(tasks)}", flush=True)
        with bases.active(pane) as model, torch.inference_mode():
            table[pane.name], declared = run_pane(model, tokenizer, device, tasks, folder, limit, num_fewshot, seed)
        directions.update(declared)
        on_pane(done + 1)
    return table, directions
