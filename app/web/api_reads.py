"""What the Train, Runs and Chat tabs show beside their forms, as plain data for the API: the step plan, the memory
verdict, the rows as the model sees them, the job as a script, runs compared, a run's curves and sample answers, a
suite's answers diffed. Each reads what its panel reads, through the panel's own functions, so they cannot drift."""

from __future__ import annotations

import math

from app.chat import suites_panel
from app.runs import compare_panel, run_view
from app.train import presets_panel
from app.train import tab as train_tab
from app.web.errors import user_error
from jobs.chat.suites import diff_html
from jobs.data.readers import parse_json_text
from jobs.data.store import find_dataset
from jobs.models.budget import MemoryFit, start_adapter
from jobs.models.fits import model_shape, verdicts
from jobs.planning import longest_sequence
from jobs.queue.devices import job_devices
from jobs.spec import SpecError, TrainSpec, parse_spec
from jobs.studio import Studio
from jobs.submit import adapter_problems, planned_job
from storage import jobs_repo

PREVIEW_FIELDS = ("base_model", "dataset", "eval_fraction", "max_length", "eval_dataset", "overlong", "dedup")


def spec_fields(spec: str) -> dict:
    """The spec's fields from its JSON text; a refusal names the `spec` argument."""
    try:
        raw = parse_json_text(spec) if (spec or "").strip() else {}
    except ValueError as error:
        raise user_error(f"spec: not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise user_error("spec: a JSON object of spec fields")
    return raw


def _planned(studio: Studio, spec: str):
    try:
        parsed = parse_spec(spec_fields(spec))
    except SpecError as error:
        raise user_error(error.as_text()) from None
    for field in ("dataset", "eval_dataset"):  # planned over no rows, another person's would read as empty
        name = getattr(parsed, field)
        if name and find_dataset(studio, name) is None:
            raise user_error(f"{field}: no dataset named '{name}'")
    if problems := adapter_problems(studio, parsed):
        raise user_error("\n".join(str(problem) for problem in problems))
    return planned_job(studio, parsed)


def plan(studio: Studio, spec: str) -> dict:
    """The step plan the Train tab shows, with the values the default rule chose for the empty fields."""
    planned = _planned(studio, spec)
    if not planned.sequences_per_epoch:
        raise user_error(f"dataset: no rows to plan over in '{planned.spec.dataset}'")
    return {"steps": planned.steps, "tokens": planned.tokens, "sequences_per_epoch": planned.sequences_per_epoch,
            "train_rows": planned.train_rows, "eval_rows": planned.eval_rows, "counted": planned.counted,
            "chosen": {name: getattr(planned.spec, name) for name in planned.chosen},
            "memory": memory_fit(planned.memory), "sentence": planned.sentence()}


def memory_fit(fit: MemoryFit | None) -> dict | None:
    """What the plan chose for the spec's memory budget, or without one for the devices' free memory (`free_on`:
    the device; None without an estimate for its base here or a device to run it)."""
    if fit is None:
        return None
    return {"budget_bytes": fit.budget_bytes, "free_on": fit.free_on or None, "peak_bytes": fit.peak_bytes,
            "fits": fit.fits, "relative_speed": fit.relative_speed, "smallest_budget_bytes": fit.smallest_bytes,
            "levers": {"batch_size": fit.levers.batch_size, "grad_accum": fit.levers.grad_accum,
                       "gradient_checkpointing": fit.levers.gradient_checkpointing,
                       "pack_length": fit.levers.pack_length}, "problem": fit.problem()}


def memory(studio: Studio, spec: str) -> list[dict]:
    """The memory verdict on every device the job may run on, each with its estimate's parts in bytes."""
    planned = _planned(studio, spec).spec  # an empty batch size is chosen for the data first, as in the panel
    shape = model_shape(planned.base_model, studio.settings.models_dir, studio.settings.model_dirs)
    if shape is None:
        raise user_error(f"base_model: no estimate for '{planned.base_model}' yet: its config is not on this "
                         "machine, or it is not a decoder's config")
    devices = job_devices(studio, planned.pool, planned.devices)
    if not devices and planned.pool and not job_devices(studio, planned.pool):
        raise user_error(f"pool: no live worker serves pool '{planned.pool}'")
    if not devices:
        raise user_error(f"devices: no live worker can run {planned.devices} devices")
    found = verdicts(planned, shape, devices, longest_sequence(studio, planned),
                     start_adapter(studio, planned))  # as memory_panel.verdict_text sizes it
    return [{"device": v.device.label, "device_name": v.device.name, "memory_bytes": v.device.memory_bytes,
             "peak_bytes": v.peak, "share": v.share if math.isfinite(v.share) else None,
             "verdict": v.word, "measured_profile": v.device.name.startswith("CPU"),
             "ranks_here": v.device.ranks or planned.devices, "nodes": v.device.nodes,
             "parts_bytes": {name: size for name, size in v.estimate.breakdown().items() if size}} for v in found]


def preview(studio: Studio, spec: str) -> str:
    """The Train tab's preview (Markdown): the split, what max_length and dedup do, the first rows as the model
    sees them. Reads only the spec's data fields; the rest need not be valid yet."""
    raw = spec_fields(spec)
    names = (*PREVIEW_FIELDS, *train_tab.PREVIEW_DATA_FIELDS)  # the rows a mix takes, as the form's preview
    values = [raw.get(name, TrainSpec.model_fields[name].get_default(call_default_factory=True)) for name in names]
    return train_tab.render_preview(studio, *values)


def script(studio: Studio, spec: str) -> dict:
    """The job as the `python -m jobs submit` spec and as a plain TRL script, as "Show as CLI / Python" does."""
    cli, trl = presets_panel.as_code(studio, spec_fields(spec))
    return {"cli": cli, "script": trl}


def compare_runs(studio: Studio, job_ids: list[int], sweep: str = "", differences_only: bool = True) -> dict:
    """Runs side by side: their specs (the differing fields only, when asked) and their final metrics ranked by
    eval loss, as the Runs tab's "Compare runs" shows them. `sweep` adds every run of that sweep."""
    ids = [run_view.checked_id(job_id) for job_id in job_ids or []]
    if sweep:
        found = compare_panel.group_runs(studio, sweep)
        if not found:
            raise user_error(f"sweep: no sweep named '{sweep}'")
        ids += [int(label.split("·")[0]) for label in found]
    _, specs, ranked = compare_panel.compare(studio, list(dict.fromkeys(ids)), "loss curves", "step",
                                             differences_only)
    return {"specs": _records(specs), "ranking": _records(ranked)}


def job_metrics(studio: Studio, job_id: int, names: list[str]) -> dict[str, list[list[float]]]:
    """A run's metric series as [step, value] points (every metric it logged when `names` is empty)."""
    run_view.checked_id(job_id)
    with studio.db.read() as session:
        if jobs_repo.get_job(session, job_id) is None:
            raise user_error(f"job_id: no job with id {job_id}")
        metrics = jobs_repo.metrics_for(session, job_id)
    series: dict[str, list[list[float]]] = {}
    for metric in metrics:
        if not names or metric.name in names:
            series.setdefault(metric.name, []).append([metric.step, metric.value])
    return series


def sample_answers(studio: Studio, job_id: int) -> list[dict]:
    """A run's sample answers, one row per prompt, one column per step (step 0: the base before training)."""
    with studio.db.read() as session:
        if jobs_repo.get_job(session, run_view.checked_id(job_id)) is None:
            raise user_error(f"job_id: no job with id {job_id}")
    return _records(run_view.samples(studio, job_id))


def suite_diff(studio: Studio, name: str, base_model: str, before: str, after: str) -> str:
    """Each prompt's answer from pane `before` against pane `after` (HTML: removed words struck through, added ones
    marked), as the Chat tab's "Diff answers" shows it."""
    grid = suites_panel.results(studio, name, base_model)
    for pane, role in ((before, "before"), (after, "after")):
        if pane not in grid.panes:
            raise user_error(f"{role}: '{pane}' has no answers in suite '{name}' on {base_model}")
    return diff_html(grid, before, after)


def _records(frame) -> list[dict]:
    """A table as JSON-safe rows (NaN as null)."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
