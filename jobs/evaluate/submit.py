"""Check an evaluation and queue it: every problem at once (the spec's shape, the adapters and their base, the eval
set's shape and size), and nothing written unless all is well. What it evaluates is pinned here: the adapters by
id, a dataset by id and sha256, a suite's prompts as they are now, so a later rename or edit changes nothing."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from jobs.chat.request import BASE_PANE, ChatRequestError, base_problem, resolve_panes
from jobs.data.store import find_dataset, load_rows, split_sizes
from jobs.evaluate.harness import task_names
from jobs.evaluate.reward_pairs import reward_adapters, reward_eval_problems
from jobs.evaluate.sets import rows_from_records
from jobs.evaluate.spec import EvalSpec
from jobs.queue import routing
from jobs.spec_store import load_stored_spec
from jobs.spec_words import Problem, SpecError, problems_from
from jobs.studio import Studio
from jobs.submit import _order_problem, quota_problem
from storage import catalog, jobs_repo, suites_repo
from storage.models import JobKind


def parse_eval_spec(raw: object) -> EvalSpec:
    spec, problems = _parsed(raw)
    if problems:
        raise SpecError(problems)
    return spec


def _parsed(raw: object) -> tuple[EvalSpec | None, list[Problem]]:
    """(the spec, its shape's problems); with problems, a spec of the fields that did validate (defaults elsewhere),
    so the things it names are still checked and every problem is said at once."""
    if not isinstance(raw, dict):
        return None, [Problem(field="spec", message="must be a JSON object of field: value pairs")]
    try:
        return EvalSpec.model_validate(raw), []
    except ValidationError as error:
        problems = problems_from(error, EvalSpec.model_fields)
    bad = {p.field for p in problems}
    try:
        return EvalSpec.model_validate({k: v for k, v in raw.items() if k not in bad}), problems
    except ValidationError:
        return None, problems


def _base_and_panes(studio: Studio, spec: EvalSpec) -> tuple[str, list, list[Problem]]:
    """(the base, the resolved panes, problems): the adapters must exist, be the caller's, and share one base."""
    names = spec.panes()
    if not names:
        return "", [], [Problem(field="adapters", message="name at least one adapter, or include the base")]
    base_model = spec.base_model.strip()
    adapter_names = [name for name in names if name != BASE_PANE]
    if not base_model:
        with studio.db.read() as session:
            found = [a for name in adapter_names if (a := catalog.get_adapter_by_name(session, name))]
        if not found:
            missing = ", ".join(f"'{n}'" for n in adapter_names)
            why = f"no adapter named {missing}" if adapter_names else "name the base_model to evaluate the base alone"
            return "", [], [Problem(field="adapters" if adapter_names else "base_model", message=why)]
        base_model = found[0].base_model
        bases = sorted({a.base_model for a in found})
        if len(bases) > 1:
            listing = "; ".join(f"'{b}': " + ", ".join(a.name for a in found if a.base_model == b) for b in bases)
            return base_model, [], [Problem(field="adapters", message=(
                f"the adapters are of different bases ({listing}); an evaluation compares adapters of one base"))]
    if problem := base_problem(studio, base_model):
        return base_model, [], [Problem(field="base_model", message=problem.removeprefix("base_model: "))]
    try:
        return base_model, resolve_panes(studio, base_model, names), []
    except ChatRequestError as error:
        return base_model, [], [Problem(field="adapters", message=p.removeprefix("adapters: "))
                                for p in error.problems]


def _set_problems(studio: Studio, spec: EvalSpec) -> tuple[dict, int, list[Problem]]:
    """(what the set pins, its row count, problems)."""
    if spec.source == "suite":
        if not spec.suite.strip():
            return {}, 0, [Problem(field="suite", message="name the prompt suite to evaluate on")]
        with studio.db.read() as session:
            suite = suites_repo.get_suite(session, spec.suite.strip())
        if suite is None:
            return {}, 0, [Problem(field="suite", message=f"no prompt suite named '{spec.suite}'")]
        return {"suite": {"id": suite.id, "name": suite.name, "prompts": suite.prompts}}, len(suite.prompts), []
    if spec.source == "benchmark":
        return _benchmark_problems(studio, spec)
    if spec.source == "dataset":
        if not spec.dataset.strip():
            return {}, 0, [Problem(field="dataset", message="name the dataset to evaluate on (import it first)")]
        dataset = find_dataset(studio, spec.dataset.strip())
        if dataset is None:
            return {}, 0, [Problem(field="dataset", message=f"no dataset named '{spec.dataset}'; import it first")]
        rows, problems = rows_from_records(load_rows(studio.absolute(dataset.path)), f"'{dataset.name}'")
        pin = {"dataset": {"id": dataset.id, "name": dataset.name, "sha256": dataset.sha256}}
        return pin, len(rows), [Problem(field="dataset", message=p) for p in problems]
    return _held_out_problems(studio, spec)


def _benchmark_problems(studio: Studio, spec: EvalSpec) -> tuple[dict, int, list[Problem]]:
    """The tasks must be in the operator's task folder; the job's progress counts tasks x panes."""
    folder = studio.settings.lm_eval_tasks
    if folder is None or not folder.is_dir():
        return {}, 0, [Problem(field="source", message=(
            "no benchmark task folder on this studio: its operator sets STUDIO_LM_EVAL_TASKS to a folder of "
            "lm-evaluation-harness task files (docs/api.md, 'Benchmarks')"))]
    if not spec.tasks:
        return {}, 0, [Problem(field="tasks", message="name at least one task of the studio's task folder")]
    known = set(task_names(folder))
    if unknown := [task for task in spec.tasks if task not in known]:
        listing = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "") or "none"
        return {}, 0, [Problem(field="tasks", message=(
            f"no task named {', '.join(repr(t) for t in unknown)} in the studio's task folder (it has: {listing})"))]
    return {"benchmark": {"tasks": list(dict.fromkeys(spec.tasks))}}, len(set(spec.tasks)), []


def _held_out_problems(studio: Studio, spec: EvalSpec) -> tuple[dict, int, list[Problem]]:
    if spec.train_job is None:
        return {}, 0, [Problem(field="train_job", message="name the training job whose held-out rows to use")]
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, spec.train_job)
        kind, raw, pins = (job.kind, job.spec, jobs_repo.pinned(job)) if job else (None, None, {})
    if job is None:
        return {}, 0, [Problem(field="train_job", message=f"no job with id {spec.train_job}")]
    if kind != JobKind.TRAIN:
        return {}, 0, [Problem(field="train_job", message=f"job {spec.train_job} is a {kind} job, not training")]
    stored = load_stored_spec(raw)
    if stored.spec is None:
        return {}, 0, [Problem(field="train_job", message=f"job {spec.train_job}'s spec: {stored.problems_text()}")]
    train_spec = stored.spec
    if train_spec.method != "sft":
        data = "prompts with references, holding none out" if train_spec.method == "grpo" else "preference data"
        return {}, 0, [Problem(field="train_job", message=f"job {spec.train_job} trained {train_spec.method} on "
                                                          f"{data}; evaluate on a dataset instead")]
    if train_spec.eval_dataset:
        held = find_dataset(studio, train_spec.eval_dataset)
        count = held.rows if held else 0
    else:
        dataset = find_dataset(studio, train_spec.dataset)
        count = split_sizes(dataset.rows, train_spec.eval_fraction or 0)[1] if dataset else 0
        if dataset is not None and dataset.format == "text":
            return {}, 0, [Problem(field="train_job", message=(
                f"job {spec.train_job} trained on raw text ('{dataset.name}'): its held-out rows have no prompt to "
                "answer; evaluate on a chat dataset instead"))]
    if count == 0:
        return {}, 0, [Problem(field="train_job", message=(
            f"job {spec.train_job} held out no rows (eval_fraction 0 and no eval_dataset): the eval set is empty"))]
    return {"train_job": {"id": spec.train_job, **{k: v for k, v in pins.items()
                                                     if k in ("dataset", "eval_dataset")}}}, count, []


def _judge_pin(studio: Studio, spec: EvalSpec, base_model: str, panes: list) -> tuple[dict | None, list[Problem]]:
    """(the judge as the job pins it, problems): a model the person may use (the base, or one of their own adapters
    on any base, looked up as the person: another person's is 'no adapter named'), and two panes at least."""
    judge = spec.judge.strip()
    if not judge:
        return None, []
    problems = []
    if len(spec.panes()) < 2:
        problems.append(Problem(field="judge", message="judging compares pairs: evaluate two adapters at least (the "
                                                       "base counts)"))
    if judge == BASE_PANE:
        return {"name": judge, "id": None, "base_model": base_model}, problems
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, judge.partition("@")[0])
        judge_base = adapter.base_model if adapter is not None else None
    if judge_base is None:
        return None, [*problems, Problem(field="judge", message=(
            f"no adapter named '{judge.partition('@')[0]}' (the judge is 'base' or one of your adapters)"))]
    try:
        pane = resolve_panes(studio, judge_base, [judge])[0]
    except ChatRequestError as error:
        return None, [*problems, *(Problem(field="judge", message=p.removeprefix("adapters: "))
                                   for p in error.problems)]
    pin = {"name": judge, "id": adapter.id, "folder": studio.relative(Path(pane.adapter_dir)),
           "base_model": judge_base}
    return pin, problems


def validate_eval(studio: Studio, raw: object) -> tuple[EvalSpec, str, list, dict, int]:
    """(spec, base, panes, pins, rows) or SpecError with every problem."""
    spec, problems = _parsed(raw)
    if spec is None:
        raise SpecError(problems)
    if rewards := reward_adapters(studio, spec):  # reward models score pairs (jobs.evaluate.reward_pairs)
        base_model, panes, pins, rows, found = reward_eval_problems(studio, spec, rewards)
        problems += found
        if not problems and rows == 0:
            problems.append(Problem(field=spec.source, message="the eval set is empty: it has no pairs to score"))
        if problems:
            raise SpecError(problems)
        return spec, base_model, panes, pins, rows
    base_model, panes, found = _base_and_panes(studio, spec)
    problems += found
    judge, judge_problems = _judge_pin(studio, spec, base_model, panes)
    problems += judge_problems
    pins, rows, set_problems = _set_problems(studio, spec)
    refused = {p.field.split(".")[0] for p in problems}  # a refused field was read as its default: say it once
    problems += [p for p in set_problems if p.field.split(".")[0] not in refused]
    if not set_problems and rows == 0:
        problems.append(Problem(field=spec.source, message="the eval set is empty: it has no rows to evaluate"))
    if problems:
        raise SpecError(problems)
    if judge is not None:
        pins["judge"] = judge
    return spec, base_model, panes, pins, rows


def submit_eval(studio: Studio, raw: object, priority: int = 0) -> int:
    """Validate, write the ledger row (with its pins) and enqueue it. Returns the job id."""
    problems: list[Problem] = []
    if problem := _order_problem(priority):
        problems.append(Problem(field="priority", message=problem))
    try:
        spec, base_model, panes, pins, rows = validate_eval(studio, raw)
    except SpecError as error:
        raise SpecError(problems + error.problems) from None
    if quota := quota_problem(studio, 1):
        problems.append(quota)
    if problems:
        raise SpecError(problems)
    pins.update(base_model=base_model, adapters=_adapter_pins(studio, panes))
    label = spec.suite or spec.dataset or ("+".join(spec.tasks[:3]) if spec.source == "benchmark" else
                                           f"job{spec.train_job}")
    with studio.db.write() as session:
        job = jobs_repo.create_job(session, name=spec.name or f"eval-{label}", spec=spec.model_dump(mode="json"),
                                   priority=priority, kind=JobKind.EVAL)
        job.total_steps = spec.work(min(rows, spec.max_rows), len(panes))
        job.provenance = {"pinned": pins}
        job_id = job.id
    routing.send(studio, job_id, priority, None)
    return job_id


def _adapter_pins(studio: Studio, panes: list) -> list[dict]:
    """Each pane by name and adapter id (None: the base); a checkpoint pane keeps its folder."""
    pins = []
    with studio.db.read() as session:
        for pane in panes:
            if pane.adapter_dir is None:
                pins.append({"name": pane.name, "id": None})
                continue
            adapter = catalog.get_adapter_by_name(session, pane.name.partition("@")[0])
            pins.append({"name": pane.name, "id": adapter.id, "folder": studio.relative(Path(pane.adapter_dir))})
    return pins

