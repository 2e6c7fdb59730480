"""The search driver: trials are ordinary queued jobs (owner, quota, priority, cancel, recovery); this loop, run by
the app beside its reaper (`drive_searches`), asks Optuna for the next trial, reports each trial's held-out loss at
every evaluation, and prunes the losers through the jobs' cancel path.

Every pass is idempotent: all the search's state is in Optuna's storage (storage/search_store.py) and the ledger, so
a restarted app simply carries on. A trial's job is found by its group and name before one is submitted, so a crash
between the two submits nothing twice."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from jobs.search.request import MIN_BUDGET_MINUTES, SearchRequest, _is_int_field, parse_request
from jobs.spec import Problem, SpecError, parse_spec
from jobs.studio import Studio
from jobs.submit import planned_job, quota_problem, submit_jobs, validate_submission
from storage import jobs_repo, users_repo
from storage.access import LOCAL_OWNER, Person, acting_as, everyone, new_owner, scope_owner
from storage.locks import try_hold
from storage.models import JobStatus
from storage.search_store import search_storage

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

RUNNING, DONE, CANCELLED = "running", "done", "cancelled"
ORIGIN = "origin"
"""A trial's user attribute: where its values came from ("plan", "first"), or absent where the sampler chose them."""
METRIC = "eval_loss"
_JSON = "json:"  # Optuna's categorical choices are plain scalars: a module list travels as JSON text


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def open_storage(studio: Studio) -> optuna.storages.RDBStorage:
    """Optuna's storage of this studio's searches, opened once per process (each opening checks its schema)."""
    url, engine_kwargs = search_storage(studio.settings)
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    return _STORAGES[url]


def _encode(choice: object) -> object:
    return choice if choice is None or isinstance(choice, bool | int | float | str) else _JSON + json.dumps(choice)


def _decode(value: object) -> object:
    return json.loads(value[len(_JSON):]) if isinstance(value, str) and value.startswith(_JSON) else value


def distributions(space: dict) -> dict:
    found = {}
    for name, rule in space.items():
        if "choices" in rule:
            found[name] = CategoricalDistribution([_encode(c) for c in rule["choices"]])
        elif _is_int_field(name):
            found[name] = IntDistribution(int(rule["low"]), int(rule["high"]), log=bool(rule.get("log")))
        else:
            found[name] = FloatDistribution(float(rule["low"]), float(rule["high"]), log=bool(rule.get("log")))
    return found


def _pruner(request: SearchRequest) -> optuna.pruners.BasePruner:
    spec = parse_spec({k: v for k, v in request.base.items() if k != "name"})
    # A rung is an evaluation: the first is after eval_steps; resources are training steps.
    if request.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.eval_steps, reduction_factor=2)
    return optuna.pruners.HyperbandPruner(min_resource=spec.eval_steps,
                                          max_resource=spec.max_steps if spec.max_steps > 0 else "auto",
                                          reduction_factor=3)


def _load(storage: optuna.storages.RDBStorage, name: str, request: SearchRequest) -> optuna.Study:
    done = len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    # Seeded by the trials so far: a sampler rebuilt each pass with one seed would draw the same point each time.
    sampler = optuna.samplers.TPESampler(seed=request.seed + done,
                                         n_startup_trials=min(10, max(3, request.budget_trials // 3)))
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=_pruner(request))


def _request_of(study: optuna.Study) -> SearchRequest:
    return SearchRequest(**study.user_attrs["request"])


def trial_spec(request: SearchRequest, params: dict, number: int) -> dict:
    """The trial's spec: the base with the chosen values, named after its search."""
    return {**request.base, **{name: _decode(value) for name, value in params.items()},
            "name": f"{request.name}-{number + 1}"}


# ---- starting --------------------------------------------------------------------------------------------------

def _run_problems(studio: Studio, request: SearchRequest) -> list[Problem]:
    """What the request names and what its trials need, checked before anything is queued (all at once)."""
    first = {name: (rule["choices"][0] if "choices" in rule else rule["low"]) for name, rule in request.space.items()}
    probe = {**request.base, **first, **(request.first[0] if request.first else {}), "name": f"{request.name}-1"}
    problems = []
    try:
        validate_submission(studio, probe)
    except SpecError as error:
        problems += [Problem(field=_field_of(p.field, request), message=p.message) for p in error.problems]
    try:
        spec = parse_spec(probe)
    except SpecError:
        spec = None  # its own problems are reported above
    if spec is not None and not spec.eval_dataset and spec.eval_fraction == 0:
        problems.append(Problem(field="base.eval_fraction", message=(
            "a search ranks trials by held-out loss: hold out rows (eval_fraction above 0) or name an eval_dataset")))
    if spec is not None and 0 < spec.max_steps < 2 * spec.eval_steps:
        problems.append(Problem(field="base.eval_steps", message=(
            f"trials train {spec.max_steps} steps and evaluate every {spec.eval_steps}: a trial is pruned between "
            f"evaluations, so it needs at least two (eval_steps at most {spec.max_steps // 2})")))
    if request.budget_minutes is not None:
        minimum_s, why = _one_job_s(studio, spec.base_model if spec else request.base.get("base_model", ""))
        if request.budget_minutes * 60 < minimum_s:
            problems.append(Problem(field="budget_minutes", message=(
                f"{request.budget_minutes:g} minutes is below one trial's minimum: {why} "
                f"({minimum_s / 60:.1f} minutes)")))
    if quota := quota_problem(studio, request.parallel):
        problems.append(Problem(field="parallel", message=quota.message))
    with studio.db.read() as session, everyone():
        taken = jobs_repo.group_taken(session, request.name)
    if taken or request.name in _study_names(open_storage(studio)):
        problems.append(Problem(field="name", message=f"a sweep or search named '{request.name}' exists already"))
    return problems


def _field_of(field: str, request: SearchRequest) -> str:
    if field == "name":
        return "name"  # the trials are named after the search
    return f"space.{field}" if field in request.space and field not in request.base else f"base.{field}"


def _one_job_s(studio: Studio, base_model: str) -> tuple[float, str]:
    with studio.db.read() as session:
        runs = [seconds for spec, seconds in jobs_repo.recent_run_seconds(session) if spec.get("base_model") ==
                base_model]
    if runs:
        return max(MIN_BUDGET_MINUTES * 60, min(runs)), f"the fastest recent job on {base_model} took {min(runs):.0f} s"
    return MIN_BUDGET_MINUTES * 60, f"a search's time budget is at least {MIN_BUDGET_MINUTES:g} minute"


def plan_point(studio: Studio, request: SearchRequest) -> dict:
    """The varied fields' values the studio's plan gives the base (its rule's learning rate where the base leaves it
    empty, the spec's defaults), each clamped into its range; a choice the space does not offer is left to the
    sampler (Optuna fills a point's missing fields)."""
    spec = planned_job(studio, parse_spec({**request.base, "name": f"{request.name}-1"})).spec
    point = {}
    for name, rule in request.space.items():
        value = getattr(spec, name)
        if "choices" in rule:
            if value in rule["choices"]:
                point[name] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            clamped = min(max(value, rule["low"]), rule["high"])
            point[name] = round(clamped) if _is_int_field(name) else float(clamped)
    return point


def _study_names(storage: optuna.storages.RDBStorage) -> set[str]:
    return {study.study_name for study in storage.get_all_studies()}


def start_search(studio: Studio, raw: object) -> str:
    """Check the whole request (every problem at once), record the search and queue its first trial(s). Returns the
    search's name, which is also its trials' group in the Runs tab. Raises SpecError."""
    request = parse_request(raw)
    if problems := _run_problems(studio, request):
        raise SpecError(problems)
    storage = open_storage(studio)
    study = optuna.create_study(study_name=request.name, storage=storage, direction="minimize")
    study.set_user_attr("request", request.as_dict())
    study.set_user_attr("owner", new_owner())
    study.set_user_attr("started_at", time.time())
    study.set_user_attr("state", RUNNING)
    plan = plan_point(studio, request) if request.start_from_plan else {}
    if plan and plan not in request.first:
        study.enqueue_trial({name: _encode(value) for name, value in plan.items()}, user_attrs={ORIGIN: "plan"})
    for point in request.first:
        study.enqueue_trial({name: _encode(value) for name, value in point.items()}, user_attrs={ORIGIN: "first"})
    drive_search(studio, request.name)
    return request.name


# ---- driving ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _alone(studio: Studio, name: str) -> Iterator[bool]:
    """One pass per search at a time: on this host (the app's reaper thread and a person's start may meet) by a file
    lock, and across the hosts of a PostgreSQL studio (each app's reaper drives every search) by the database's."""
    folder = studio.settings.data_dir / "search" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            with try_hold(studio.db.engine, f"search:{name}") as taken:
                yield taken
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def drive_searches(studio: Studio) -> None:
    """One pass over every running search (the app's reaper calls this)."""
    storage = open_storage(studio)
    for study in storage.get_all_studies():
        if study.user_attrs.get("state") == RUNNING:
            try:
                drive_search(studio, study.study_name)
            except Exception:  # one broken search must not stop the others
                log.exception("search %s: pass failed; retrying next pass", study.study_name)


def drive_search(studio: Studio, name: str) -> str:
    """Report, prune, settle and start trials of one search; returns its state."""
    with _alone(studio, name) as mine:
        storage = open_storage(studio)
        if not mine:
            return optuna.load_study(study_name=name, storage=storage).user_attrs["state"]
        request = _request_of(optuna.load_study(study_name=name, storage=storage))
        study = _load(storage, name, request)
        if study.user_attrs.get("state") != RUNNING:
            return study.user_attrs["state"]
        jobs = _trial_jobs(studio, name)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if trial.state == TrialState.RUNNING:
                _follow(studio, study, trial, jobs)
        _start_trials(studio, study, request, jobs)
        return study.user_attrs["state"]


@dataclass(frozen=True)
class _TrialJob:
    id: int
    status: str


def _trial_jobs(studio: Studio, name: str) -> dict[str, _TrialJob]:
    """The search's trial jobs by name (NAME-N), read once per pass."""
    with studio.db.read() as session:
        return {job.name: _TrialJob(job.id, job.status) for job in jobs_repo.group_jobs(session, name)}


def _follow(studio: Studio, study: optuna.Study, frozen: optuna.trial.FrozenTrial, jobs: dict) -> None:
    job = jobs.get(f"{study.study_name}-{frozen.number + 1}")
    if job is None:
        return  # asked but not yet submitted (a crash between): _start_trials submits it
    with studio.db.read() as session:
        curve = jobs_repo.eval_curves(session, [job.id], METRIC).get(job.id, [])
    trial = optuna.trial.Trial(study, frozen._trial_id)
    if job.status == JobStatus.SUCCEEDED:
        for step, value in curve:
            if step not in frozen.intermediate_values:
                trial.report(value, step)
        if curve:
            study.tell(frozen.number, curve[-1][1])
        else:
            study.tell(frozen.number, state=TrialState.FAIL)
        return
    if job.status in (JobStatus.PRUNED, JobStatus.FAILED, JobStatus.CANCELLED):
        study.tell(frozen.number, state=TrialState.PRUNED if job.status == JobStatus.PRUNED else TrialState.FAIL)
        return
    for step, value in curve:
        if step in frozen.intermediate_values:
            continue
        trial.report(value, step)
        if job.status == JobStatus.RUNNING and trial.should_prune():
            # Optuna hears "pruned" only once the job has ended pruned (the branch above, a later pass): a run may
            # finish its last step before it sees the request, and then it is a complete trial, not a pruned one.
            with studio.db.write() as session:
                jobs_repo.request_prune(session, job.id, f"held-out loss {value:.4f} at step {step} is behind the "
                                                         f"trials that reached that step first")
            return


def _out_of_time(study: optuna.Study, request: SearchRequest) -> bool:
    return (request.budget_minutes is not None
            and time.time() > study.user_attrs["started_at"] + request.budget_minutes * 60)


def _start_trials(studio: Studio, study: optuna.Study, request: SearchRequest, jobs: dict) -> None:
    trials = study.get_trials(deepcopy=False)
    unsubmitted = [t for t in trials if t.state == TrialState.RUNNING and f"{request.name}-{t.number + 1}" not in jobs]
    asked = [t for t in trials if t.state != TrialState.WAITING]
    in_flight = sum(t.state == TrialState.RUNNING for t in trials)
    out_of_budget = len(asked) >= request.budget_trials or _out_of_time(study, request)
    stopping = any(job.status in (JobStatus.QUEUED, JobStatus.RUNNING) for job in jobs.values())
    if out_of_budget and in_flight == 0:
        if not stopping:  # done once the last pruned trial's run has stopped too
            study.set_user_attr("state", DONE)
        return
    owner = study.user_attrs["owner"]
    with _acting_for(studio, owner) as person_ok:
        if not person_ok:
            study.set_user_attr("state", CANCELLED)  # its person's account was removed
            return
        for frozen in unsubmitted:
            _submit(studio, study, request, frozen.number, frozen.params)
        while not out_of_budget and in_flight < request.parallel:
            if quota_problem(studio, 1):
                return  # the person's quota is full: the next pass tries again
            trial = study.ask(distributions(request.space))
            _submit(studio, study, request, trial.number, trial.params)
            in_flight += 1
            out_of_budget = trial.number + 1 >= request.budget_trials


@contextlib.contextmanager
def _acting_for(studio: Studio, owner: str) -> Iterator[bool]:
    if owner == LOCAL_OWNER:
        with acting_as(None):
            yield True
        return
    with studio.db.read() as session:
        user = users_repo.get_user(session, owner)
        admin = bool(user and user.is_admin)
    if user is None:
        yield False
        return
    with acting_as(Person(name=owner, admin=admin)):
        yield True


def _submit(studio: Studio, study: optuna.Study, request: SearchRequest, number: int, params: dict) -> None:
    try:
        (job_id,) = submit_jobs(studio, [trial_spec(request, params, number)], group_name=request.name)
    except SpecError as error:
        log.warning("search %s: trial %s refused: %s", request.name, number + 1, error)
        study.tell(number, state=TrialState.FAIL)
        return
    log.info("search %s: trial %s is job %s", request.name, number + 1, job_id)


# ---- reading and stopping --------------------------------------------------------------------------------------

def _visible_study(studio: Studio, name: str) -> tuple[optuna.storages.RDBStorage, optuna.Study]:
    storage = open_storage(studio)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise LookupError(f"no search named '{name}'") from None
    if (owner := scope_owner()) is not None and study.user_attrs.get("owner") != owner:
        raise LookupError(f"no search named '{name}'")  # another person's search is simply not there
    return storage, study


def list_searches(studio: Studio) -> list[dict]:
    """The searches the asker may see, newest first: name, state, trials asked and budget."""
    owner = scope_owner()
    found = []
    for study in open_storage(studio).get_all_studies():
        attrs = study.user_attrs
        if "request" not in attrs or (owner is not None and attrs.get("owner") != owner):
            continue
        found.append({"name": study.study_name, "state": attrs.get("state"), "owner": attrs.get("owner"),
                      "started_at": attrs.get("started_at"), "budget_trials": attrs["request"]["budget_trials"],
                      "budget_minutes": attrs["request"]["budget_minutes"]})
    return sorted(found, key=lambda s: s["started_at"] or 0, reverse=True)


def cancel_search(studio: Studio, name: str) -> None:
    """Stop asking for trials and cancel the queued and running ones (they end cancelled: a person stopped them)."""
    from jobs.sweeps import cancel_sweep

    _, study = _visible_study(studio, name)
    study.set_user_attr("state", CANCELLED)
    with contextlib.suppress(LookupError):
        cancel_sweep(studio, name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)


def _importance(study: optuna.Study) -> tuple[dict[str, float], str]:
    """PED-ANOVA: sampler-independent and needs no scikit-learn (fANOVA does); it reads complete trials only, and
    with fewer than three every parameter looks equal, so it is not shown then. Its top set is about the best 2.5
    trials: a single trial on top ranked parameters by chance."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len(complete) < 3:
        return {}, f"parameter importance needs 3 finished trials ({len(complete)} so far)"
    if len(study.best_trial.params) < 2:
        return {}, "one parameter varies: nothing to compare it with"
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.1, min(0.5, 2.5 / len(complete))))
    try:
        return optuna.importance.get_param_importances(study, evaluator=evaluator), ""
    except (ValueError, RuntimeError) as error:
        return {}, f"parameter importance: {error}"


def search_result(studio: Studio, name: str) -> dict:
    """Everything the result view shows: trials (params, status, value, seconds), every trial's eval curve, the
    best trial, its spec, and the parameters' importance. Raises LookupError for a search the asker may not see."""
    _, study = _visible_study(studio, name)
    request = _request_of(study)
    with studio.db.read() as session:
        jobs = {job.name: job for job in jobs_repo.group_jobs(session, name)}
        curves = jobs_repo.eval_curves(session, [job.id for job in jobs.values()], METRIC)
        trials = []
        for trial in study.get_trials(deepcopy=False):
            job = jobs.get(f"{name}-{trial.number + 1}")
            seconds = ((job.finished_at or _now()) - job.started_at).total_seconds() if job and job.started_at else 0
            trials.append({"number": trial.number + 1, "state": trial.state.name.lower(),
                           "origin": trial.user_attrs.get(ORIGIN),
                           "params": {k: _decode(v) for k, v in trial.params.items()}, "value": trial.value,
                           "job_id": job.id if job else None, "job_status": job.status if job else None,
                           "steps": job.step if job else 0, "seconds": round(seconds, 1)})
    complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    best = min(complete, key=lambda t: t["value"]) if complete else None
    importance, note = _importance(study)
    return {"name": name, "state": study.user_attrs.get("state"), "owner": study.user_attrs.get("owner"),
            "request": request.as_dict(), "trials": trials, "best": best,
            "best_spec": trial_spec(request, best["params"], best["number"] - 1) | {"name": f"{name}-best"}
            if best else None,
            "curves": {str(job_id): curve for job_id, curve in curves.items()},
            "importance": importance, "importance_note": note,
            "compute": {"trials": len(trials), "steps": sum(t["steps"] for t in trials),
                        "seconds": round(sum(t["seconds"] for t in trials), 1)}}


def _now():
    from storage.models import utcnow

    return utcnow()


def train_best(studio: Studio, name: str) -> int:
    """Queue the best trial's spec as a job of its own ("train this"). Raises LookupError, SpecError."""
    result = search_result(studio, name)
    if result["best_spec"] is None:
        raise SpecError.from_text("search", f"search '{name}' has no finished trial yet")
    return submit_jobs(studio, [result["best_spec"]])[0]
