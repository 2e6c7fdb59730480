"""The front door for jobs: validate a submission, write its ledger row, enqueue it; cancel.

A submission is checked in two passes that report together: the spec's own shape and ranges
(`jobs.spec.parse_spec`), then the things it names (dataset, base model, target modules)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from jobs.data.store import find_dataset
from jobs.models.contents import chat_template_text, linear_module_names
from jobs.models.demo import DEMO_MODULES
from jobs.models.resolve import base_model_problem, looks_local
from jobs.queue.transport import enqueue_job
from jobs.spec import (
    DEMO_BASE_MODEL,
    Problem,
    SpecError,
    TrainSpec,
    parse_spec,
    salvage_spec,
)
from jobs.studio import Studio
from storage import catalog, jobs_repo
from storage.models import Job, JobStatus


def _dataset_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    dataset = find_dataset(studio, spec.dataset)
    if dataset is None:
        return [Problem(field="dataset", message=f"no dataset named '{spec.dataset}'; upload it first")]
    if spec.eval_fraction > 0 and dataset.rows < 2:
        return [Problem(field="eval_fraction",
                        message=f"dataset '{spec.dataset}' has {dataset.rows} row; set eval_fraction to 0")]
    return []


def _module_problems(spec: TrainSpec, available: set[str] | None) -> list[Problem]:
    if available is None or spec.target_modules == "all-linear":
        return []
    wanted = spec.target_module_names()
    unknown = [name for name in wanted if name not in available]
    if not unknown:
        return []
    have = ", ".join(sorted(available - {"embed_tokens", "lm_head"}))
    where = "the 'attention' preset needs" if spec.target_modules == "attention" else "unknown module(s)"
    return [Problem(field="target_modules",
                    message=f"{where} {', '.join(unknown)}; this base model has: {have}")]


def _chat_template_problem(model_dir: Path) -> str | None:
    template = chat_template_text(model_dir)
    if template is not None and "generation" not in template:
        return ("the base model's chat template has no {% generation %} markers, so assistant turns cannot "
                "be told apart; turn assistant_only_loss off")
    return None


def _base_model_problems(spec: TrainSpec) -> list[Problem]:
    problem = base_model_problem(spec.base_model)
    if problem:
        return [Problem(field="base_model", message=problem)]
    if spec.base_model == DEMO_BASE_MODEL:
        return _module_problems(spec, DEMO_MODULES)
    if not looks_local(spec.base_model):
        return []  # a hub id: checked by the worker when it downloads the model
    model_dir = Path(spec.base_model).expanduser()
    problems = _module_problems(spec, linear_module_names(model_dir))
    template_problem = spec.assistant_only_loss and _chat_template_problem(model_dir)
    if template_problem:
        problems.append(Problem(field="assistant_only_loss", message=template_problem))
    return problems


def _name_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    if not spec.name:
        return []
    with studio.db.read() as session:
        taken = catalog.get_adapter_by_name(session, spec.name) is not None or session.scalars(
            select(Job.id).where(Job.name == spec.name, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        ).first() is not None
    if taken:
        return [Problem(field="name", message=f"an adapter or active job is already named '{spec.name}'")]
    return []


def validate_submission(studio: Studio, raw: dict) -> TrainSpec:
    """The full check: shape, ranges, and the things the spec names. Raises SpecError with every problem."""
    problems: list[Problem] = []
    try:
        spec = parse_spec(raw)
    except SpecError as error:
        problems += error.problems
        if not isinstance(raw, dict):
            raise
        spec = salvage_spec(raw, problems)  # still check the named resources, from whatever fields parsed
    else:
        problems += _name_problems(studio, spec)
    problems += _dataset_problems(studio, spec) + _base_model_problems(spec)
    if problems:
        raise SpecError(problems)
    return spec


def submit_job(studio: Studio, raw: dict, priority: int = 0) -> int:
    """Validate, write the ledger row, then enqueue its message. Returns the job id."""
    spec = validate_submission(studio, raw)
    with studio.db.write() as session:
        job = jobs_repo.create_job(session, name=spec.name or "pending", spec=spec.model_dump(mode="json"),
                                   priority=priority)
        if not spec.name:
            job.name = f"{Path(spec.base_model).name}-job{job.id}"
        job_id = job.id
    # After the commit, so the worker finds the row; a crash in between is repaired by the queue resync.
    enqueue_job(studio.settings, job_id, priority)
    return job_id


def cancel_job(studio: Studio, job_id: int) -> str:
    with studio.db.write() as session:
        status = jobs_repo.request_cancel(session, job_id)
    if status is None:
        raise LookupError(f"no job with id {job_id}")
    return status

