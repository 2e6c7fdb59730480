"""Sweeps: one job per point of a grid (or list) of values over any spec fields, submitted as one group that the
Runs tab shows together, ranked by final eval loss.

    {"lora_r": [8, 16], "learning_rate": [1e-3, 5e-4]}   grid: 4 jobs;  list: zipped, 2 jobs"""

from __future__ import annotations

import itertools
import math
import time

import yaml

from jobs.spec import Problem, SpecError, TrainSpec, name_problem
from jobs.spec_versions import VERSION_KEY
from jobs.studio import Studio
from jobs.submit import submit_jobs
from storage import jobs_repo
from storage.models import JobStatus

MAX_POINTS = 64
# An axis longer than the cap can never fit in either mode, so it is refused by its length alone.
MAX_AXIS_VALUES = MAX_POINTS
# 64 points of long values (sample prompts, module lists) fit many times over; a bigger text is refused unparsed.
MAX_AXES_TEXT_BYTES = 64 * 1024
MODES = ("grid", "list")


def axes_from_text(text: str) -> object:
    """The axes a person typed (YAML or JSON), refused unparsed when longer than MAX_AXES_TEXT_BYTES. Raises
    SpecError."""
    text = text or ""
    # Characters first: a text of more characters than the cap has more bytes too, and is refused without encoding.
    if len(text) > MAX_AXES_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_AXES_TEXT_BYTES:
        raise SpecError.from_text("sweep", f"the values to sweep take at most {MAX_AXES_TEXT_BYTES} bytes")
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise SpecError.from_text("sweep", f"not valid YAML or JSON: {error}") from None


def sweep_points(base: dict, axes: object, mode: str = "grid") -> list[dict]:
    """The spec of every point: `base` with each combination of the axes' values. Raises SpecError naming each
    problem with the axes themselves (a point's own problems are found when it is validated)."""
    problems = _axes_problems(axes, mode)
    if problems:
        raise SpecError(problems)
    names, values = list(axes), [axes[name] for name in axes]
    # Counted from the axes' lengths before anything is expanded: 10^7 grid points once took 17 s and 2.4 GB to
    # build only to be refused.
    count = math.prod(map(len, values)) if mode == "grid" else len(values[0])
    if count > MAX_POINTS:
        raise SpecError.from_text("sweep", f"{count} points; a sweep has at most {MAX_POINTS}")
    combos = itertools.product(*values) if mode == "grid" else zip(*values, strict=True)
    return [{**base, **dict(zip(names, combo, strict=True))} for combo in combos]


def _axes_problems(axes: object, mode: str) -> list[Problem]:
    if mode not in MODES:
        return [Problem(field="mode", message=f"'grid' or 'list', not '{mode}'")]
    if not isinstance(axes, dict) or not axes:
        return [Problem(field="sweep", message="a mapping of spec fields to lists of values, e.g. "
                                               '{"lora_r": [8, 16]}')]
    problems = []
    for name, values in axes.items():
        if name not in TrainSpec.model_fields or name in ("name", VERSION_KEY):  # each point is named; one version
            problems.append(Problem(field="sweep", message=f"'{name}' is not a spec field a sweep can vary"))
        elif not isinstance(values, list) or not values:
            problems.append(Problem(field="sweep", message=f"'{name}' needs a non-empty list of values"))
        elif len(values) > MAX_AXIS_VALUES:
            problems.append(Problem(field="sweep", message=(
                f"'{name}' has {len(values)} values; an axis takes at most {MAX_AXIS_VALUES} values")))
    lengths = {len(v) for v in axes.values() if isinstance(v, list)}
    if mode == "list" and len(lengths) > 1:
        problems.append(Problem(field="sweep", message="a list sweep zips its values: give every list the same length"))
    return problems


def submit_sweep(studio: Studio, base: dict, axes: object, mode: str = "grid", name: str = "",
                 priority: int = 0) -> tuple[str, list[int]]:
    """Queue every point as one group (all or none). Returns (group name, job ids)."""
    group = (name or "").strip() or time.strftime("sweep-%Y%m%d-%H%M%S")
    if problem := name_problem(group):
        raise SpecError.from_text("sweep_name", problem)
    points = sweep_points(base, axes, mode)
    adapter = base.get("name") or group
    named = [{**point, "name": f"{adapter}-{index + 1}"} for index, point in enumerate(points)]
    return group, submit_jobs(studio, named, priority, group_name=group)


def cancel_sweep(studio: Studio, group: str) -> dict[int, str]:
    """Cancel every queued or running job of the group; returns each job's status afterwards."""
    with studio.db.write() as session:
        mine = jobs_repo.group_statuses(session, group)
        if not mine:
            raise LookupError(f"no sweep named '{group}'")
        active = [job_id for job_id, status in mine if status in (JobStatus.QUEUED, JobStatus.RUNNING)]
        return {job_id: jobs_repo.request_cancel(session, job_id) for job_id in active}
