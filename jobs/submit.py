"""The front door for jobs: validate a submission, write its ledger row, enqueue it; cancel.

A submission is checked in two passes that report together: the spec's own shape and ranges
(`jobs.spec.parse_spec`), then the things it names (dataset, base model, target modules)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from pydantic import ValidationError

from jobs import combine_rules
from jobs.data.formats import PREFERENCE, REFERENCE, UNPAIRED
from jobs.data.store import find_dataset
from jobs.models.budget import fit, free_memory_fit, start_adapter
from jobs.models.contents import OTHER, chat_template_text, is_whole_model, lora_targets
from jobs.models.fits import base_context, gang_problem, model_shape, verdicts
from jobs.models.resolve import (
    allowed_model_roots,
    base_model_problem,
    base_module_kinds,
    is_hub_id,
    looks_local,
    pin_hub_base,
)
from jobs.models.reward_adapters import is_reward_adapter, reward_refusal
from jobs.models.template_render import pasted_template_problem
from jobs.models.templates import NO_TRAINING_TEMPLATE, known_templates, template_problem, training_template
from jobs.planning import job_plan, longest_sequence
from jobs.queue import gang, routing
from jobs.queue.devices import describe_device, job_devices, most_devices, placement_words
from jobs.run_settings.lora import LOFTQ_NEEDS_CUDA, LoraSettings, lora_target_problem, read_adapter_lora
from jobs.run_settings.speed import rope_problems
from jobs.run_settings.tracking import tracking_problem
from jobs.spec import (
    ADAPTER_FIELDS,
    ALL_DEVICES,
    PAIRED_METHODS,
    REWARD_METHOD,
    STUDIO_BASE_MODELS,
    UNPAIRED_METHODS,
    CombinedParent,
    CombineSpec,
    ExportSpec,
    MergeSpec,
    Problem,
    SpecError,
    TrainSpec,
    name_problem,
    parse_spec,
    priority_problem,
    salvage_spec,
)
from jobs.step_plan import StepPlan, min_batch_size, pack_length_problem
from jobs.studio import Studio
from jobs.tracker_keys import wandb_key_problem
from storage import catalog, jobs_repo, users_repo, workers_repo
from storage.access import current_person, everyone
from storage.models import Dataset, Job, JobKind, JobStatus


def _dataset_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    dataset = find_dataset(studio, spec.dataset)
    if dataset is None:
        return [Problem(field="dataset", message=f"no dataset named '{spec.dataset}'; upload it first")]
    problems = _eval_dataset_problems(studio, spec, dataset)
    if (spec.eval_fraction or 0) > 0 and not spec.eval_dataset and dataset.rows < 2:
        problems.append(Problem(field="eval_fraction",
                                message=f"dataset '{spec.dataset}' has {dataset.rows} row; set eval_fraction to 0"))
    if dataset.format == "text" and spec.assistant_only_loss and spec.method == "sft":
        problems.append(Problem(field="assistant_only_loss", message=(
            f"dataset '{spec.dataset}' is raw text: it has no assistant turns and trains on every token; turn "
            f"assistant_only_loss off")))
    return problems + _method_problems(spec, dataset) + _batch_problems(spec) + _mix_problems(studio, spec, dataset)


METHOD_SHAPES = {PREFERENCE: ("a preference dataset (prompt, chosen, rejected)", PAIRED_METHODS),
                 UNPAIRED: ("an unpaired dataset (prompt, completion, label)", UNPAIRED_METHODS),
                 REFERENCE: ("a prompt/reference dataset (prompt, reference), whose prompts it answers and rewards",
                             ("grpo",))}
"""The data shape each preference method trains on, in words, with the methods that read it."""


def _mix_problems(studio: Studio, spec: TrainSpec, dataset: Dataset) -> list[Problem]:
    """The mix's datasets exist for the person asking (another person's is "no dataset named"), are of the dataset's
    kind, and the system prompt and last-turn loss have chats to work on."""
    problems = []
    for name, _ in spec.mix_parts() if spec.dataset_mix else []:
        other = dataset if name == spec.dataset else find_dataset(studio, name)
        if other is None:
            problems.append(Problem(field="dataset_mix", message=f"no dataset named '{name}'; upload it first"))
        elif data_kind(other.format) != data_kind(dataset.format):
            problems.append(Problem(field="dataset_mix", message=(
                f"'{name}' is {data_kind(other.format)} but '{spec.dataset}' is {data_kind(dataset.format)}; mix "
                f"datasets of one kind")))
    if dataset.format == "text":
        if spec.system_prompt:
            problems.append(Problem(field="system_prompt", message=(
                f"dataset '{spec.dataset}' is raw text: it has no chats to add a system message to; leave it empty")))
        if spec.loss_turns != "all":
            problems.append(Problem(field="loss_turns", message=(
                f"dataset '{spec.dataset}' is raw text: it has no assistant turns; leave it 'all'")))
    return problems


def _method_problems(spec: TrainSpec, dataset: Dataset) -> list[Problem]:
    """A method given data of another shape: refused naming both fields, the shape it needs and the methods that
    read the data it was given."""
    needed = next((shape for shape, (_, methods) in METHOD_SHAPES.items() if spec.method in methods), None)
    if needed is None and dataset.format not in METHOD_SHAPES or needed == dataset.format:
        return []
    have = (METHOD_SHAPES[dataset.format][0] if dataset.format in METHOD_SHAPES
            else f"a {dataset.format} dataset (chats or text)")
    readers = (", ".join(METHOD_SHAPES[dataset.format][1]) if dataset.format in METHOD_SHAPES else "sft")
    want = METHOD_SHAPES[needed][0] if needed else "chats or text"
    votes = " (the Chat tab exports blind votes as either)" if needed in (PREFERENCE, UNPAIRED) else ""
    message = (f"method {spec.method} trains on {want}{votes}, but dataset '{spec.dataset}' is {have}: choose "
               f"another dataset, or method {readers}")
    return [Problem(field="method", message=message), Problem(field="dataset", message=message)]


def data_shape_problem(studio: Studio, spec: TrainSpec) -> str | None:
    """Why the method cannot train on the dataset's shape (the plan says it before submit does), or None."""
    dataset = find_dataset(studio, spec.dataset)
    problems = _method_problems(spec, dataset) if dataset is not None else []
    return problems[0].message if problems else None


def _batch_problems(spec: TrainSpec) -> list[Problem]:
    if spec.batch_size is not None and spec.batch_size < min_batch_size(spec.method):
        return [Problem(field="batch_size", message=(
            f"kto needs at least {min_batch_size(spec.method)} rows a step (it estimates its KL term from the other "
            f"answers of the batch); set batch_size to 2 or more"))]
    return []


def wants_reward_model(field: str, method: str) -> bool:
    """Whether `field` of a `method` run names a reward model (a score head) rather than a generating adapter: a
    reward model and a generating one cannot continue each other, and GRPO scores with a reward model only."""
    return field == "grpo_reward_adapter" or method == REWARD_METHOD


def adapter_choices(studio: Studio, base_model: str, method: str, field: str) -> list[str]:
    """The adapters `field` may name in a `method` run on `base_model`, newest first: those the person may see, of
    that base, of the kind the field takes. The form offers these; adapter_problems checks a typed name the same way."""
    reward = wants_reward_model(field, method)
    with studio.db.read() as session:
        adapters = catalog.list_adapters(session, base_model)
    return [a.name for a in adapters if is_reward_adapter(studio.absolute(a.path)) == reward]


def adapter_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    """Why the adapters the spec names (ADAPTER_FIELDS) cannot be used by the person asking (none: they can)."""
    return [problem for field in ADAPTER_FIELDS for problem in _field_adapter_problems(studio, spec, field)]


def _field_adapter_problems(studio: Studio, spec: TrainSpec, field: str) -> list[Problem]:
    """Why the adapter `field` names cannot be used by the person asking (none: it can, or the field is empty): not
    theirs (not found, as another person's adapter is not), of another base, of the wrong kind, or (continued) with
    LoRA targets this studio refuses."""
    name = getattr(spec, field)
    if not name:
        return []
    reward = wants_reward_model(field, spec.method)
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, name)
    if adapter is None:
        hint = "; train one with method reward first" if field == "grpo_reward_adapter" else ""
        return [Problem(field=field, message=f"no adapter named '{name}'{hint}")]
    if adapter.base_model != spec.base_model:  # its LoRA (and score head) fit that base's layers only
        return [Problem(field=field, message=f"'{name}' was trained on '{adapter.base_model}', not on "
                                             f"'{spec.base_model}'")]
    if is_reward_adapter(studio.absolute(adapter.path)) != reward:
        return [Problem(field=field, message=_kind_mismatch(name, field, reward))]
    if field != "init_adapter":
        return []
    try:
        problem = lora_target_problem(read_adapter_lora(studio.absolute(adapter.path)))
    except (OSError, ValueError):
        problem = None  # a folder without its config fails to load in the child, saying so
    return [Problem(field=field, message=f"'{name}': {problem}")] if problem else []


def _kind_mismatch(name: str, field: str, wanted_reward: bool) -> str:
    if field == "grpo_reward_adapter":
        return f"'{name}' is not a reward model (it generates text): name an adapter trained with method reward"
    return (f"'{name}' generates text: method reward starts a new adapter or continues a reward one" if wanted_reward
            else f"'{name}' is a reward model: only method reward continues it")


def _eval_dataset_problems(studio: Studio, spec: TrainSpec, dataset: Dataset) -> list[Problem]:
    if not spec.eval_dataset:
        return []
    held_out = find_dataset(studio, spec.eval_dataset)
    if held_out is None:
        return [Problem(field="eval_dataset", message=f"no dataset named '{spec.eval_dataset}'; upload it first")]
    if held_out.sha256 == dataset.sha256:
        return [Problem(field="eval_dataset", message=(
            f"'{spec.eval_dataset}' is the training data itself; eval loss on rows the run trains on tells nothing "
            f"(leave it empty to hold out eval_fraction instead)"))]
    if data_kind(held_out.format) != data_kind(dataset.format):
        return [Problem(field="eval_dataset", message=(
            f"'{spec.eval_dataset}' is {data_kind(held_out.format)} but '{spec.dataset}' is "
            f"{data_kind(dataset.format)}; evaluate on data of the same kind"))]
    return []


def data_kind(format_name: str) -> str:
    return {"text": "raw text", PREFERENCE: "preference pairs", UNPAIRED: "unpaired answers",
            REFERENCE: "prompt/reference rows"}.get(format_name, "chat")


def _module_problems(spec: TrainSpec, kinds: dict[str, str] | None) -> list[Problem]:
    if kinds is None or spec.target_modules == "all-linear":
        return []
    wanted = spec.target_module_names()
    unknown = [name for name in wanted if name not in kinds]
    not_lora = [name for name in wanted if kinds.get(name) == OTHER]
    have = ", ".join(lora_targets(kinds))
    problems = []
    if unknown:
        where = (f"the '{spec.target_modules}' preset needs" if isinstance(spec.target_modules, str)
                 else "unknown module(s)")
        problems.append(Problem(field="target_modules",
                                message=f"{where} {', '.join(unknown)}; this base model has: {have}"))
    if not_lora:
        problems.append(Problem(field="target_modules", message=(
            f"{', '.join(not_lora)}: {OTHER} (a 1-D weight, such as a norm), so LoRA cannot adapt it; "
            f"LoRA-able modules of this base: {have}")))
    return problems


def _saved_module_problems(spec: TrainSpec, kinds: dict[str, str] | None) -> list[Problem]:
    if not spec.modules_to_save:
        return []
    problems = []
    unknown = [name for name in spec.modules_to_save if kinds is not None and name not in kinds]
    if unknown:
        problems.append(Problem(field="modules_to_save", message=(
            f"unknown module(s) {', '.join(unknown)}; this base model has: {', '.join(sorted(kinds))}")))
    targets = spec.target_module_names()
    both = [name for name in spec.modules_to_save if isinstance(targets, list) and name in targets]
    if both:
        problems.append(Problem(field="modules_to_save", message=(
            f"{', '.join(both)} is also a LoRA target; a module is either adapted by LoRA or trained in full")))
    return problems


def _chat_template_problem(model_dir: Path) -> str | None:
    template = chat_template_text(model_dir)
    if template is not None and training_template(template) is None:
        return NO_TRAINING_TEMPLATE
    return None


def _base_model_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    roots = allowed_model_roots(list(studio.settings.model_dirs), studio.settings.models_dir)
    problem = base_model_problem(spec.base_model, roots)
    if problem:
        return [Problem(field="base_model", message=problem)]
    kinds = base_module_kinds(spec.base_model, studio.settings.models_dir, studio.settings.model_dirs)
    problems = _module_problems(spec, kinds) + _saved_module_problems(spec, kinds)
    if spec.base_model in STUDIO_BASE_MODELS or not looks_local(spec.base_model):
        return problems  # studio bases have a known training template; a hub id's is checked by the worker
    model_dir = Path(spec.base_model).expanduser()
    # A chosen chat_template replaces the base's own (the spec checked it).
    template_problem = spec.assistant_only_loss and not spec.chat_template and _chat_template_problem(model_dir)
    if template_problem:
        problems.append(Problem(field="assistant_only_loss", message=template_problem))
    return problems


def _name_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    if not spec.name:
        return []
    with studio.db.read() as session, everyone():  # names are unique across everyone's adapters
        taken = (catalog.get_adapter_by_name(session, spec.name) is not None
                 or jobs_repo.active_job_named(session, spec.name))
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
    problems += _dataset_problems(studio, spec) + _base_model_problems(studio, spec)
    problems += adapter_problems(studio, spec)
    problems += _lora_problems(spec) + _start_problems(studio, spec)
    problems += _long_input_problems(studio, spec) + _device_count_problems(studio, spec)
    problems += grpo_problems(studio, spec)
    problems += _pack_length_problems(studio, spec, problems)
    problems += _memory_budget_problems(studio, spec, problems) + _gang_memory_problems(studio, spec, problems)
    if spec.chat_template and (template := template_problem(spec.chat_template, spec.assistant_only_loss)):
        problems.append(Problem(field="chat_template", message=template))
    elif spec.chat_template and spec.chat_template not in known_templates() \
            and (template := pasted_template_problem(spec.chat_template)):
        # A pasted template is tried on a sample conversation in a bounded process (jobs.models.template_render):
        # one that loops without end or writes without end is refused here, not found in chat later.
        problems.append(Problem(field="chat_template", message=template))
    if problems:
        raise SpecError(problems)
    return spec


def planned_job(studio: Studio, spec: TrainSpec, revision: str | None = None) -> StepPlan:
    """The job's plan (jobs.planning.job_plan), with a memory budget's levers chosen for the devices that may run it
    (jobs.models.budget): what submit stores and the plan, the memory verdict and the script show. Without a budget,
    the budget is the devices' free memory (what their workers report), which moves the levers only where the rule's
    plan does not fit under it. Without an estimate (the base's config is not here) or a device serving its pool, the
    plan is left as the rule made it."""
    if spec.devices == ALL_DEVICES:  # counted now, so the plan, the verdict and the stored spec say how many
        spec = spec.model_copy(update={"devices": max(1, most_devices(studio, spec.pool))})
        planned = job_plan(studio, spec, revision)
        planned = replace(planned, chosen=(*planned.chosen, "devices"))
    else:
        planned = job_plan(studio, spec, revision)
    shape = model_shape(spec.base_model, studio.settings.models_dir, studio.settings.model_dirs)
    devices = job_devices(studio, spec.pool, spec.devices)
    planned = replace(planned, placement=placement_words(spec.devices, spec.pool, devices))
    if shape is None or not devices:
        return planned
    fitted = fit if spec.memory_budget_gib is not None else free_memory_fit
    chosen_spec, memory, chosen = fitted(spec, planned.spec, shape, devices, longest_sequence(studio, planned.spec),
                                         start_adapter(studio, spec))
    return replace(planned, spec=chosen_spec, memory=memory,
                   chosen=tuple(dict.fromkeys((*planned.chosen, *chosen))))


def _pack_length_problems(studio: Studio, spec: TrainSpec, found: list[Problem]) -> list[Problem]:
    """A pack_length shorter than the data's longest row, which TRL would cut there (checked on sound data)."""
    if spec.pack_length is None or any(p.field in ("base_model", "dataset", "pack_length") for p in found):
        return []
    problem = pack_length_problem(spec, longest_sequence(studio, spec))
    return [Problem(field="pack_length", message=problem)] if problem else []


def _memory_budget_problems(studio: Studio, spec: TrainSpec, found: list[Problem]) -> list[Problem]:
    """A memory budget no choice of the plan's levers fits under, with the smallest budget that would work (checked
    when the base and data it is estimated for are sound: otherwise there is nothing to estimate yet)."""
    if spec.memory_budget_gib is None or any(p.field in ("base_model", "dataset", "memory_budget_gib") for p in found):
        return []
    memory = planned_job(studio, spec).memory
    if memory is None or (problem := memory.problem()) is None:
        return []
    return [Problem(field="memory_budget_gib", message=problem)]


def _gang_memory_problems(studio: Studio, spec: TrainSpec, found: list[Problem]) -> list[Problem]:
    """A job only a gang across its pool's hosts can run whose node's peak (with the levers the plan chose) fits in
    fewer of the hosts that may be its nodes than it needs (jobs.models.fits.gang_problem): refused, where a one-host
    job is not (free memory changes while it waits), because a gang holds several hosts each attempt, and past
    STUDIO_GANG_RESERVE_AFTER_S its pool's free hosts wait for it (docs/scale-out.md)."""
    if spec.devices == ALL_DEVICES or spec.devices <= 1 or not spec.pool or any(
            p.field in ("base_model", "dataset", "devices", "memory_budget_gib") for p in found):
        return []
    planned = planned_job(studio, spec).spec
    shape = model_shape(planned.base_model, studio.settings.models_dir, studio.settings.model_dirs)
    if shape is None:
        return []
    found_verdicts = verdicts(planned, shape, job_devices(studio, planned.pool, planned.devices),
                              longest_sequence(studio, planned), start_adapter(studio, planned))
    problem = gang_problem(found_verdicts)
    return [Problem(field="devices", message=problem)] if problem else []


def _long_input_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    """What the tracker and the base's context refuse of the spec: an uninstalled tracker; RoPE scaling where
    max_length fits the base's context, a factor that falls short of max_length, a max_length beyond it without."""
    problems = []
    # A wandb run needs the person's own key (never another's, nor the operator's): jobs.tracker_keys.
    problem = tracking_problem(spec.report_to) or (spec.report_to == "wandb" and wandb_key_problem(studio))
    if problem:
        problems.append(Problem(field="report_to", message=problem))
    context, rope_type = base_context(spec.base_model, studio.settings.models_dir, studio.settings.model_dirs)
    problems += [Problem(field=name, message=message) for name, message in
                 rope_problems(spec.rope_scaling, spec.rope_factor, spec.max_length, context, rope_type)]
    return problems


def grpo_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    """What a GRPO spec may not do here: run a person's code where the operator does not allow it for them
    (STUDIO_USER_CODE, docs/security.md), or hold out an eval split (GRPO's evaluation generates, and the studio
    keeps no eval loss for it)."""
    problems = []
    if spec.grpo_reward_code and not may_run_code(studio):
        problems.append(Problem(field="grpo_reward_code", message=(
            "this studio does not run reward code for you: the operator allows it per person with STUDIO_USER_CODE "
            "(docs/security.md); use the built-in rewards (reference, json, json_schema, regex, length) instead")))
    if spec.method == "grpo" and spec.max_completion_length >= spec.max_length:
        problems.append(Problem(field="max_completion_length", message=(
            f"must be below max_length ({spec.max_length}), which holds the prompt and its answer; raise max_length "
            f"or shorten the answers")))
    if spec.method == "grpo" and ((spec.eval_fraction or 0) > 0 or spec.eval_dataset):
        field = "eval_dataset" if spec.eval_dataset else "eval_fraction"
        problems.append(Problem(field=field, message=(
            "grpo keeps no eval split (its progress is the reward it logs); set eval_fraction to 0 and leave "
            "eval_dataset empty")))
    return problems


def may_run_code(studio: Studio) -> bool:
    """Whether the person asking may submit code that runs in a training process (STUDIO_USER_CODE)."""
    person = current_person()  # None: the operator's CLI
    return studio.settings.allows_code(person.name if person else None, person is None or person.admin)


def _lora_problems(spec: TrainSpec) -> list[Problem]:
    """What the trainers would refuse of the spec's LoRA once built (jobs.run_settings.lora), said at submit. A job
    that continues an adapter does not use the LoRA fields."""
    problem = None if spec.init_adapter else lora_target_problem(LoraSettings.from_spec(spec))
    return [Problem(field="target_modules", message=problem)] if problem else []


def _start_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    """LoftQ runs only where PEFT computes it (CUDA): refused when every device the job may run on is a CPU (the live
    workers of its pool, or this machine before any worker registers). The child refuses too (jobs.training.
    lora_init), for a GPU worker that left before the job ran."""
    if spec.init_lora_weights != "loftq" or spec.init_adapter:
        return []
    with studio.db.read() as session:
        workers = workers_repo.live_workers(session, studio.settings.lease_s)
    names = [w.device_name for w in workers if not spec.pool or w.pool == spec.pool]
    if not workers:
        names = [describe_device()[0]]
    if names and all(name.startswith("CPU") for name in names):
        return [Problem(field="init_lora_weights", message=LOFTQ_NEEDS_CUDA)]
    return []


def _device_count_problems(studio: Studio, spec: TrainSpec) -> list[Problem]:
    """A job on several devices runs on one worker's host (jobs.queue.ranks): refused when no live worker that may
    take it (its pool's, or any) has that many, or this machine before any worker registers. 'all' is that many."""
    if spec.devices == ALL_DEVICES or spec.devices <= 1:
        return []
    most = most_devices(studio, spec.pool)
    if not most:  # a named pool none of whose workers answers: its hosts are what the job is planned and placed on
        return [Problem(field="pool", message=(
            f"no live worker serves pool '{spec.pool}' (none sent a heartbeat in the last "
            f"{studio.settings.lease_s:g} s), so no host there can be counted for {spec.devices} devices: start its "
            f"workers (STUDIO_POOL={spec.pool}) first, or name a pool that has them"))]
    if spec.devices <= most:
        return []
    where = f"pool '{spec.pool}'" if spec.pool else "this studio"
    refused = f"asks for {spec.devices} devices, but the most one worker's host in {where} has is {most}"
    if not spec.pool:
        return [Problem(field="devices", message=f"{refused}; a job's devices must all be on one host, unless it "
                        "names a pool whose hosts it may span")]
    with studio.db.read() as session:
        offers = gang.pool_offers(session, spec.pool, studio.settings.lease_s)
    if gang.feasible(spec.devices, offers):
        return []  # a gang across the pool's hosts (jobs.queue.gang)
    hosts = ", ".join(f"{host} {count}" for host, count in sorted(offers.items()))
    return [Problem(field="devices", message=f"{refused}, and its hosts that may join a job across hosts (a worker "
                    f"with STUDIO_RDZV_ADDRESS) offer {hosts or 'none'}: no even split of {spec.devices} over them "
                    "(every host runs the same number of ranks)")]


def _order_problem(priority: int) -> str | None:
    if priority != 0 and users_repo.queue_order_locked():
        return "only an admin sets priorities (the queue is shared); your jobs run in the order you submit them"
    return None


def quota_problem(studio: Studio, adding: int) -> Problem | None:
    """A person's limit on jobs queued or running at once, when accounts exist (admins have none)."""
    with studio.db.read() as session:
        return quota_problem_in(session, studio, adding)


def quota_problem_in(session, studio: Studio, adding: int, lock: bool = False) -> Problem | None:
    """`quota_problem` inside the caller's transaction; `lock`: hold the person's row until it ends, so concurrent
    submits of one person count each other's jobs (SQLite's writers are serialized already)."""
    user = users_repo.limited_user(session, lock=lock)
    if user is None:
        return None
    active = len(jobs_repo.active_jobs(session, mine=True))
    limit = user.max_queued_jobs or studio.settings.max_queued_jobs
    if active + adding <= limit:
        return None
    return Problem(field="spec", message=f"you have {active} jobs queued or running and may have {limit} at once; "
                   f"this adds {adding}: wait for some to finish or cancel some")


def submit_job(studio: Studio, raw: dict, priority: int = 0) -> int:
    """Validate, write the ledger row, then enqueue its message. Returns the job id."""
    return submit_jobs(studio, [raw], priority)[0]


def submit_jobs(studio: Studio, raws: list[dict], priority: int = 0, group_name: str | None = None) -> list[int]:
    """Validate every spec (all problems at once, each naming its point when there are several), then write all the
    ledger rows in one transaction and enqueue them: a group is queued whole or not at all."""
    if problem := priority_problem(priority) or _order_problem(priority):
        raise SpecError.from_text("priority", problem)
    specs, problems = [], []
    for index, raw in enumerate(raws):
        try:
            specs.append(validate_submission(studio, raw))
        except SpecError as error:
            where = f"point {index + 1}: " if len(raws) > 1 else ""
            problems += [Problem(field=p.field, message=where + p.message) for p in error.problems]
    names = [spec.name for spec in specs if spec.name]
    if len(names) != len(set(names)):
        problems.append(Problem(field="name", message="each job of a group needs its own adapter name"))
    if quota := quota_problem(studio, len(raws)):
        problems.append(quota)
    hub_pins = _hub_pins(specs, problems)
    if problems:
        raise SpecError(problems)
    # The defaults left empty, chosen for each job's data and its base at the pinned revision.
    plans = [planned_job(studio, spec, hub_pins.get(spec.base_model, {}).get("revision")) for spec in specs]
    with studio.db.write() as session:
        # Again where the rows are written: submits racing past the check above must not all get in.
        if quota := quota_problem_in(session, studio, len(plans), lock=True):
            raise SpecError([quota])
        jobs = [_create(session, studio, p, priority, group_name, hub_pins) for p in plans]
        routes = [(job.id, job.pool) for job in jobs]
    for job_id, pool in routes:  # after the commit, so the worker finds the rows; a crash in between: resync
        routing.send(studio, job_id, priority, pool)
    return [job_id for job_id, _ in routes]


def _hub_pins(specs: list[TrainSpec], problems: list[Problem]) -> dict[str, dict]:
    """Each hub base's commit, asked once per base (jobs.models.resolve.pin_hub_base); a base that cannot be pinned
    is a problem of the submission, not a surprise at training time."""
    pins: dict[str, dict] = {}
    for hub_id in dict.fromkeys(spec.base_model for spec in specs if is_hub_id(spec.base_model)):
        try:
            pins[hub_id] = pin_hub_base(hub_id)
        except LookupError as error:
            problems.append(Problem(field="base_model", message=str(error)))
    return pins


def _create(session, studio: Studio, step_plan: StepPlan, priority: int, group_name: str | None,
            hub_pins: dict[str, dict]) -> Job:
    spec = step_plan.spec
    job = jobs_repo.create_job(session, name=spec.name or "pending", spec=spec.model_dump(mode="json"),
                               priority=priority, pool=spec.pool or None)
    job.provenance = {"pinned": _pins(studio, spec, hub_pins), "plan": {
        "chosen": {name: getattr(spec, name) for name in step_plan.chosen}, "steps": step_plan.steps,
        "tokens": step_plan.tokens, "tokens_counted": step_plan.counted,
        # What an out-of-memory retry's pack split must hold (jobs.queue.retries), so it never tokenizes the data again.
        "longest_row": step_plan.longest_row,
        **({"rows_taken": [asdict(taken) for taken in step_plan.taken]} if step_plan.taken else {})}}
    job.group_name = group_name
    if not spec.name:
        job.name = f"{Path(spec.base_model).name}-job{job.id}"
    return job


def _pins(studio: Studio, spec: TrainSpec, hub_pins: dict[str, dict]) -> dict:
    """What the job trains on, fixed at submit: the dataset by id and sha256, the base by where it resolves now (a hub
    base by its commit). A later upload or a new hub revision never changes what a queued or resumed job reads."""
    dataset = find_dataset(studio, spec.dataset)
    base: dict = {"name": spec.base_model}
    if looks_local(spec.base_model):
        # Not "path": the API returns the pins, and Gradio's client takes any dict with a string "path" for a file
        # to download (a 403 that broke the job list for everyone; migration 0014).
        base["local_path"] = str(Path(spec.base_model).expanduser().resolve())
    elif spec.base_model not in STUDIO_BASE_MODELS:
        base.update(hub_id=spec.base_model, **hub_pins[spec.base_model])
    pins = {"dataset": _pin(dataset), "base_model": base}
    if spec.eval_dataset:
        pins["eval_dataset"] = _pin(find_dataset(studio, spec.eval_dataset))
    if spec.dataset_mix:
        pins["dataset_mix"] = [_pin(find_dataset(studio, name)) for name, _ in spec.mix_parts()]
    for field in ADAPTER_FIELDS:  # by id: a rename or a later namesake changes nothing
        if name := getattr(spec, field):
            with studio.db.read() as session:
                adapter = catalog.get_adapter_by_name(session, name)
                pins[field] = {"id": adapter.id, "name": adapter.name}
    return pins


def _pin(dataset: Dataset) -> dict:
    return {"id": dataset.id, "name": dataset.name, "sha256": dataset.sha256}


def submit_merge(studio: Studio, adapter_name: str, dtype: str = "bfloat16", priority: int = 0) -> int:
    """Queue a merge of the named adapter into a 16-bit copy of its base. Raises SpecError naming the problem."""
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, (adapter_name or "").strip())
    if adapter is None:
        raise SpecError.from_text("adapter", f"no adapter named '{adapter_name}'")
    if is_whole_model(studio.absolute(adapter.path)):
        raise SpecError.from_text("adapter", f"'{adapter.name}' is a whole model (full or freeze fine-tuning), not an "
                                             "adapter: there is nothing to merge; download it as it is")
    if is_reward_adapter(studio.absolute(adapter.path)):
        raise SpecError.from_text("adapter", reward_refusal(adapter.name, "merge it into a model that generates"))
    try:
        spec = MergeSpec(adapter=adapter.name, adapter_id=adapter.id, dtype=dtype)
    except ValidationError as error:
        raise SpecError([Problem(field="dtype", message=e["msg"]) for e in error.errors()]) from None
    if quota := quota_problem(studio, 1):
        raise SpecError([quota])
    with studio.db.write() as session:
        job = jobs_repo.create_job(session, name=f"merge-{adapter.name}", spec=spec.model_dump(mode="json"),
                                   priority=priority, kind=JobKind.MERGE)
        job_id = job.id
    routing.send(studio, job_id, priority, None)
    return job_id


def submit_combine(studio: Studio, name: str, adapters: list[str], weights: list[float] | None = None,
                   combination_type: str = "linear", density: float = 0.5, majority_sign_method: str = "total",
                   svd_rank: int = 0, priority: int = 0) -> int:
    """Queue a job that makes the adapter `name` from `adapters` (all of one base), weighted by `weights` (empty: 1.0
    each), with PEFT's `combination_type`. Raises SpecError naming every problem at once."""
    name = (name or "").strip()
    wanted = [(adapter or "").strip() for adapter in adapters or []]
    weights = list(weights) if weights else [1.0] * len(wanted)
    problems, parents, found = [], [], []
    for adapter_name in dict.fromkeys(wanted):
        with studio.db.read() as session:  # scoped: another person's adapter is "no adapter named"
            adapter = catalog.get_adapter_by_name(session, adapter_name)
        if adapter is None:
            problems.append(Problem(field="adapters", message=f"no adapter named '{adapter_name}'"))
            continue
        if is_whole_model(studio.absolute(adapter.path)):
            problems.append(Problem(field="adapters", message=f"'{adapter_name}' is a whole model (full or freeze "
                                                              "fine-tuning), not an adapter: it cannot be combined"))
            continue
        try:
            config = json.loads((studio.absolute(adapter.path) / "adapter_config.json").read_text())
        except (OSError, ValueError) as error:
            problems.append(Problem(field="adapters", message=f"'{adapter_name}': its adapter_config.json is "
                                                              f"unreadable ({error})"))
            continue
        parents.append(combine_rules.Parent(adapter.name, adapter.base_model, config))
        found.append(adapter)
    problems += [Problem(field="adapters", message=f"'{n}' is listed more than once")
                 for n in sorted({n for n in wanted if wanted.count(n) > 1})]
    problems += combine_rules.combination_problems(name, parents, weights, combination_type, density,
                                                   majority_sign_method, svd_rank, requested=len(wanted))
    if name and not name_problem(name):
        with studio.db.read() as session, everyone():  # names are unique across everyone's adapters
            taken = catalog.get_adapter_by_name(session, name) is not None or jobs_repo.active_job_named(session, name)
        if taken:
            problems.append(Problem(field="name", message=f"an adapter or active job is already named '{name}'"))
    if order := _order_problem(priority) or priority_problem(priority):
        problems.append(Problem(field="priority", message=order))
    if quota := quota_problem(studio, 1):
        problems.append(quota)
    if problems:
        raise SpecError(problems)
    by_name = dict(zip(wanted, weights, strict=True))
    spec = CombineSpec(
        name=name, base_model=found[0].base_model, combination_type=combination_type,
        parents=[CombinedParent(adapter=a.name, adapter_id=a.id, weight=float(by_name[a.name])) for a in found],
        density=float(density) if combination_type in combine_rules.DENSITY_TYPES else None,
        majority_sign_method=majority_sign_method if combination_type in combine_rules.SIGN_TYPES else None,
        svd_rank=(svd_rank or None) if combination_type in combine_rules.SVD_TYPES else None)
    with studio.db.write() as session:
        job = jobs_repo.create_job(session, name=name, spec=spec.model_dump(mode="json"), priority=priority,
                                   kind=JobKind.COMBINE)
        job_id = job.id
    routing.send(studio, job_id, priority, None)
    return job_id


def submit_export(studio: Studio, adapter_name: str, quantization: str = "q8_0", priority: int = 0) -> int:
    """Queue a GGUF export of the named adapter (merged model, LoRA adapter, Ollama Modelfile). Raises SpecError
    naming every problem: no such adapter, an unknown quantization. Whether this machine can make q4_k_m is asked
    by the callers (jobs.training.gguf.quantizer_problem: submitting stays clear of the training room)."""
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, (adapter_name or "").strip())
    problems = [] if adapter is not None else [Problem(field="adapter", message=f"no adapter named '{adapter_name}'")]
    if adapter is not None and is_reward_adapter(studio.absolute(adapter.path)):
        problems.append(Problem(field="adapter", message=reward_refusal(adapter.name, "export it to GGUF")))
    try:
        spec = ExportSpec(adapter=adapter.name if adapter else "-", adapter_id=adapter.id if adapter else 0,
                          quantization=quantization)
    except ValidationError as error:
        problems += [Problem(field="quantization", message=e["msg"]) for e in error.errors()]
    if not problems and (quota := quota_problem(studio, 1)):
        problems.append(quota)
    if problems:
        raise SpecError(problems)
    with studio.db.write() as session:
        job = jobs_repo.create_job(session, name=f"export-{adapter.name}-{spec.quantization}",
                                   spec=spec.model_dump(mode="json"), priority=priority, kind=JobKind.EXPORT)
        job_id = job.id
    routing.send(studio, job_id, priority, None)
    return job_id


def cancel_job(studio: Studio, job_id: int) -> str:
    with studio.db.write() as session:
        job = jobs_repo.get_job(session, job_id)
        waiting_gang = job is not None and job.status == JobStatus.QUEUED and gang.job_devices(job) > 1
        status = jobs_repo.request_cancel(session, job_id)
    if status is None:
        raise LookupError(f"no job with id {job_id}")
    if waiting_gang:  # the workers that held for it consumed the messages of the jobs behind it: wake them now
        routing.resync(studio)
    return status

