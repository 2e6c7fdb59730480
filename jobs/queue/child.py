"""The child process that trains one attempt of one job: `python -m jobs.queue.child JOB_ID ATTEMPT`.

It is the only place torch runs for a job. It streams metrics to the ledger, stops on SIGTERM (its worker stops: it
saves a checkpoint to resume from) or SIGUSR1 (the job was cancelled: it stops at once and keeps nothing), and on
success publishes the adapter and records it in one transaction. It leads its own process group, so a kill reaches
whatever it started too."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from setproctitle import setproctitle

from jobs.data.store import find_dataset
from jobs.failures import explain_failure, is_out_of_memory
from jobs.models.resolve import fetch_hub_base, resolve_base_model
from jobs.queue.gang import Gang, parent_worker
from jobs.queue.lifecycle import signal_when_parent_dies
from jobs.queue.ranks import EXIT_RANK_LOST, RANK_FLAG, peer_lost
from jobs.queue.retries import override_fields
from jobs.queue.run_files import run_dir_for, train_log_path
from jobs.queue.spare import SPARE_FLAG, parse_handoff
from jobs.run_settings.allocator import allocator_in_use
from jobs.run_settings.tracking import finish_tracking
from jobs.spec import CombineSpec, ExportSpec, MergeSpec, TrainSpec
from jobs.spec_store import load_stored_spec
from jobs.studio import Studio, open_studio
from jobs.tracker_keys import owners_wandb_key
from jobs.training import phases
from jobs.training.distributed import is_main, world_size
from jobs.training.phases import phase
from jobs.training.registry import (
    free_adapter_name,
    publish_adapter,
    publish_combined,
    publish_export,
    publish_merged,
)
from storage import catalog, jobs_repo, users_repo
from storage.access import LOCAL_OWNER
from storage.models import Dataset, JobKind

# The child's contract with its supervisor: besides 0 (adapter registered) and 1 (failed, error.txt written),
EXIT_INTERRUPTED = 75  # stopped early without a cancel request: requeue and resume from the checkpoint
EXIT_CANCELLED = 3  # stopped because the user cancelled; the child recorded it
EXIT_OUT_OF_MEMORY = 76  # the device ran out of memory: the worker retries with a smaller footprint
CANCEL_POLL_S = 2.0
SPAWNED_AT_ENV = "STUDIO_CHILD_SPAWNED_AT"
"""The supervisor's clock when it started this child (seconds since the epoch), so the child's start is timed."""


class LedgerSink:
    """Callbacks from `train` into the ledger: metrics, progress, and the stop signal."""

    def __init__(self, studio: Studio, job_id: int, attempt: int) -> None:
        self.studio, self.job_id, self.attempt = studio, job_id, attempt
        self.signalled = threading.Event()
        self.cancel_requested = False
        self.lost_ownership = False
        self._next_poll = 0.0

    def on_metrics(self, step: int, values: dict[str, float], total_steps: int | None) -> None:
        with self.studio.db.write() as session:
            jobs_repo.record_metrics(session, self.job_id, step, values)
            beat = jobs_repo.heartbeat(session, self.job_id, self.attempt, step=step, total_steps=total_steps)
        self._note(beat)

    def on_progress(self, step: int, total_steps: int) -> None:
        """Progress of a job that logs no metrics (an export): the heartbeat carries it."""
        with self.studio.db.write() as session:
            self._note(jobs_repo.heartbeat(session, self.job_id, self.attempt, step=step, total_steps=total_steps))

    def on_samples(self, step: int, answers: list[tuple[str, str]]) -> None:
        with self.studio.db.write() as session:
            if jobs_repo.heartbeat(session, self.job_id, self.attempt).still_owner:
                jobs_repo.record_samples(session, self.job_id, step, answers)

    def should_stop(self) -> bool | str:
        """CANCEL when nothing of the run is wanted any more (cancelled, or another attempt owns the job); True when
        it stops to resume later (the worker stops). Called often (between eval batches and generated tokens too),
        so the ledger is read at most every CANCEL_POLL_S; the worker's signals come in between."""
        from jobs.training.callbacks import CANCEL  # imported with training, the only caller

        if not (self.cancel_requested or self.lost_ownership) and time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + CANCEL_POLL_S
            self.refresh()
        if self.cancel_requested or self.lost_ownership:
            return CANCEL
        return self.signalled.is_set()

    def on_cancel_signal(self, *_) -> None:
        self.cancel_requested = True

    def refresh(self) -> None:
        """Read the cancel flag and ownership from the ledger now."""
        with self.studio.db.write() as session:
            self._note(jobs_repo.heartbeat(session, self.job_id, self.attempt))

    def _note(self, beat: jobs_repo.Beat) -> None:
        self.cancel_requested |= beat.cancel_requested
        self.lost_ownership |= not beat.still_owner


def _print_preparation(phase: str, percent: float) -> None:
    print(f"preparing the base model: {phase} ({percent:.0f}%)", flush=True)


SUBMITTED_KEYS = ("pinned", "plan", "gang")  # the gang: what the claim recorded for this attempt's nodes


def _train(studio: Studio, job_id: int, attempt: int, spec: TrainSpec, job_name: str, run_dir: Path,
           sink: LedgerSink, submitted: dict) -> int:
    """`submitted`: what submit recorded (the pins, the step plan), kept in the run's provenance."""
    with phase("imports"):  # torch, transformers, peft, trl, bitsandbytes
        from jobs.models.loading import pick_device
        from jobs.training.train import quiet_libraries, train

    quiet_libraries()
    print(f"memory allocator: {allocator_in_use()}", flush=True)  # jemalloc where installed (jobs.queue.spare)
    pinned = submitted.get("pinned", {})
    with phase("base_prepare"):
        base_path = pinned_base(studio, spec.base_model, pinned.get("base_model", {}))
    dataset = pinned_dataset(studio, spec, pinned)
    device = pick_device()
    kept = {key: submitted[key] for key in SUBMITTED_KEYS if key in submitted}  # a retry re-records the rest
    start = pinned_adapter(studio, pinned)
    scorer = pinned_adapter(studio, pinned, "grpo_reward_adapter")
    estimate = _memory_estimate(studio, spec, base_path, run_dir, dataset, start,
                                pinned.get("base_model", {}).get("revision"))
    record = {**_provenance(studio, dataset, spec, base_path, device), **kept, "memory_estimate_bytes": estimate}
    if spec.devices > 1:
        record["devices"] = spec.devices
    if is_main():  # rank 0 of several records the run; the others only train
        with studio.db.write() as session:
            jobs_repo.record_provenance(session, job_id, attempt, record)
    held_out = pinned_dataset(studio, spec, pinned, "eval_dataset")
    files = mix_files(studio, spec, pinned) if spec.dataset_mix else studio.absolute(dataset.path)
    # Another rank stops only when its agent passes on a SIGTERM; rank 0 reads the ledger, and the ranks agree.
    should_stop = sink.should_stop if is_main() else sink.signalled.is_set
    try:
        result = train(spec, run_dir, base_path, files, sink.on_metrics, should_stop,
                       sink.on_samples, eval_path=studio.absolute(held_out.path) if held_out else None,
                       init_adapter=start, reward_adapter=scorer)
    finally:
        finish_tracking(spec.report_to)  # before exit_now's os._exit, which skips the tracker's own atexit
    if not is_main():
        return 0  # rank 0's exit code tells the supervisor what happened
    if result.stopped:
        if not sink.cancel_requested:
            sink.refresh()
        if not sink.cancel_requested:
            return EXIT_INTERRUPTED  # the worker requeues it; the next attempt resumes from the checkpoint
        with studio.db.write() as session:
            jobs_repo.cancel_running_job(session, job_id, attempt)
        return EXIT_CANCELLED
    (result.adapter_dir / "provenance.json").write_text(json.dumps(record, indent=2))
    with phase("registration"):
        name = free_adapter_name(studio, job_name, job_id)
        published = publish_adapter(studio, job_id, attempt, spec, name, result.adapter_dir)
    print(f"adapter {name!r} {'registered' if published else 'discarded (stale attempt)'}", flush=True)
    if published:
        with studio.db.write() as session:  # after the fact, so registration is timed too
            jobs_repo.record_metrics(session, job_id, int(result.final_metrics.get("steps", 0)), phases.take())
    return 0


def _memory_estimate(studio: Studio, spec: TrainSpec, base_path: str, run_dir: Path, dataset: Dataset,
                     init_adapter: Path | None, revision: str | None) -> int | None:
    """The estimated peak for this run, recorded beside the measured one (None for a shape it cannot model): from
    the settings training resolves here (a resumed run keeps its dtype; a continued adapter trains with its own
    LoRA), and a padded batch as long as the data's longest sequence, as the Train tab's verdict sizes it."""
    from jobs.models.fits import settings_estimate
    from jobs.models.memory_inputs import ModelShape
    from jobs.planning import longest_sequence
    from jobs.training.prepare import settings_here

    try:
        shape = ModelShape.from_dir(base_path)
        settings = settings_here(spec, run_dir, base_path, init_adapter)
        # A packed sequence is filled to its length: the data's longest row sizes only a padded batch.
        longest = 0 if settings.packing else longest_sequence(studio, spec, dataset, revision)
        found = settings_estimate(settings, shape, longest)
    except (OSError, KeyError, TypeError, ValueError):
        return None
    print(f"estimated peak memory {found.peak / 2**30:.2f} GiB (on {settings.device} in {settings.compute_dtype}"
          + (f", rows up to {longest} tokens" if longest else "") + ")", flush=True)
    return found.peak


def pinned_base(studio: Studio, base_model: str, pin: dict) -> str:
    """Where the base is, as submit pinned it: a local folder as it resolved then, a hub base at its pinned commit
    (downloaded once, safetensors only), a studio base built or prepared on first use."""
    if pin.get("local_path"):
        return pin["local_path"]
    if pin.get("hub_id") and pin.get("revision"):
        print(f"base {pin['hub_id']} at commit {pin['revision']} (pinned at submit from the {pin['revision_from']})",
              flush=True)
        return str(fetch_hub_base(pin["hub_id"], pin["revision"]))
    return resolve_base_model(base_model, studio.settings.models_dir, report=_print_preparation)


def pinned_adapter(studio: Studio, pinned: dict, role: str = "init_adapter") -> Path | None:
    """The folder of the adapter the job continues from (`role` "init_adapter"), or scores its answers with
    ("grpo_reward_adapter"), by id: a rename since submit does not matter."""
    pin = pinned.get(role)
    if pin is None:
        return None
    with studio.db.read() as session:
        adapter = catalog.get_adapter(session, pin["id"])
    if adapter is None:
        what = "the adapter to start from" if role == "init_adapter" else "the reward model"
        raise LookupError(f"{what}, {pin['name']!r}, was deleted after the job was submitted")
    return studio.absolute(adapter.path)


def pinned_dataset(studio: Studio, spec: TrainSpec, pinned: dict, role: str = "dataset") -> Dataset | None:
    """The dataset (`role`: "dataset" or "eval_dataset") the job was submitted with, by id with its content
    checked; by name for a job from before pins; None for no validation dataset."""
    pin = pinned.get(role)
    if pin is None:
        name = getattr(spec, role)
        return find_dataset(studio, name) if name else None
    with studio.db.read() as session:
        dataset = catalog.get_dataset(session, pin["id"])
    if dataset is None or dataset.sha256 != pin["sha256"]:
        raise LookupError(f"the dataset '{pin['name']}' this job was submitted with (sha256 {pin['sha256'][:12]}…) "
                          f"is gone; it was deleted or replaced after the job was queued")
    return dataset


def mix_files(studio: Studio, spec: TrainSpec, pinned: dict) -> dict[str, Path]:
    """Each dataset of the spec's mix as submit pinned it (by id, its content checked): a resumed or recovered run
    mixes the same contents, so with the seed it takes the same rows."""
    pins = {pin["name"]: pin for pin in pinned.get("dataset_mix", [])}
    files = {}
    for name, _ in spec.mix_parts():
        dataset = pinned_dataset(studio, spec, {"dataset": pins[name]}) if name in pins else find_dataset(studio, name)
        if dataset is None:
            raise LookupError(f"the mix's dataset '{name}' is gone; it was deleted after the job was queued")
        files[name] = studio.absolute(dataset.path)
    return files


def _provenance(studio: Studio, dataset: Dataset, spec: TrainSpec, base_path: str, device: str) -> dict:
    from jobs.run_settings.cpu_dtype import base_positions
    from jobs.run_settings.speed import rope_parameters
    from jobs.training.provenance import base_model_record, provenance

    base = base_model_record(spec.base_model, base_path, studio.settings.models_dir)
    context, base_rope = base_positions(base_path)
    if rope := rope_parameters(spec.rope_scaling, spec.rope_factor, base_rope, context):
        base["rope_parameters"] = rope  # loaded with these, not its config's: chat and merge load it so too
    return provenance(base, {"name": dataset.name, "sha256": dataset.sha256, "rows": dataset.rows,
                             "format": dataset.format}, device)


def _merge(studio: Studio, job_id: int, attempt: int, spec: MergeSpec, run_dir: Path) -> int:
    from jobs.training.merge import merge_adapter

    with studio.db.read() as session:
        adapter = catalog.get_adapter(session, spec.adapter_id)
        trained_by = jobs_repo.get_job(session, adapter.job_id) if adapter and adapter.job_id else None
        pin = jobs_repo.pinned(trained_by).get("base_model", {}) if trained_by else {}  # at the revision it trained on
    if adapter is None:
        raise LookupError(f"adapter {spec.adapter!r} was deleted before it could be merged")
    base_path = pinned_base(studio, adapter.base_model, pin)
    merged = merge_adapter(base_path, studio.absolute(adapter.path), run_dir / "merged", spec.dtype)
    published = publish_merged(studio, job_id, attempt, adapter.id, merged)
    print(f"merged model of {adapter.name!r} {'registered' if published else 'discarded (stale attempt)'}", flush=True)
    return 0


def _combine(studio: Studio, job_id: int, attempt: int, spec: CombineSpec, run_dir: Path, sink: LedgerSink) -> int:
    """Make the adapter from its parents (pinned by id at submit) and register it like a trained one."""
    from jobs.training.combine import STEPS, CombineStopped, ParentFolder, combine_adapters

    parents, pin = [], {}
    with studio.db.read() as session:
        for parent in spec.parents:
            adapter = catalog.get_adapter(session, parent.adapter_id)
            if adapter is None:
                raise LookupError(f"adapters: '{parent.adapter}' was deleted before it could be combined")
            parents.append(ParentFolder(adapter.name, studio.absolute(adapter.path), parent.weight))
            trained_by = jobs_repo.get_job(session, adapter.job_id) if adapter.job_id else None
            pin = pin or (jobs_repo.pinned(trained_by).get("base_model", {}) if trained_by else {})

    def on_step(done: int) -> None:
        with studio.db.write() as session:
            jobs_repo.heartbeat(session, job_id, attempt, step=done, total_steps=STEPS)

    def should_stop() -> bool:
        return bool(sink.should_stop())

    base_path = pinned_base(studio, spec.base_model, pin)  # at the revision its first trained parent trained on
    try:
        combined = combine_adapters(base_path, parents, spec, run_dir / "combined", on_step, should_stop)
    except CombineStopped:
        if not sink.cancel_requested:
            return EXIT_INTERRUPTED  # the worker stops: the next attempt combines again from the start
        with studio.db.write() as session:
            jobs_repo.cancel_running_job(session, job_id, attempt)
        return EXIT_CANCELLED
    record = json.loads((combined / "combination.json").read_text())
    with studio.db.write() as session:
        jobs_repo.record_provenance(session, job_id, attempt, {**record, "device": "cpu"})
    (combined / "provenance.json").write_text(json.dumps({**record, "device": "cpu"}, indent=2))
    name = free_adapter_name(studio, spec.name, job_id)
    published = publish_combined(studio, job_id, attempt, spec.base_model, name, combined)
    print(f"combined adapter {name!r} {'registered' if published else 'discarded (stale attempt)'}", flush=True)
    return 0


def _evaluate(studio: Studio, job_id: int, attempt: int, raw_spec: dict, provenance: dict, run_dir: Path,
              sink: LedgerSink) -> int:
    from jobs.evaluate.run import evaluate
    from jobs.evaluate.spec import EvalSpec

    pins = provenance.get("pinned", {})
    base_path = pinned_base(studio, pins["base_model"], {})
    outcome = evaluate(studio, job_id, attempt, EvalSpec.model_validate(raw_spec), pins, run_dir, sink, base_path)
    if outcome != "done":
        print(f"evaluation {outcome}: nothing kept", flush=True)
    if outcome == "interrupted":
        return EXIT_INTERRUPTED  # requeued: the next attempt starts the evaluation over
    if outcome == "cancelled":
        with studio.db.write() as session:
            jobs_repo.cancel_running_job(session, job_id, attempt)
        return EXIT_CANCELLED
    return 0


class _Stopped(Exception):
    """Raised out of an export's progress callback when the job is cancelled or its worker stops."""


def _export(studio: Studio, job_id: int, attempt: int, spec: ExportSpec, run_dir: Path, sink: LedgerSink) -> int:
    """Merge (in float32, unless the adapter already has a merged model), convert to GGUF, write the Modelfile."""
    import shutil

    from jobs.models.contents import is_whole_model
    from jobs.training.gguf import ExportError
    from jobs.training.gguf_export import build_export, export_problems
    from jobs.training.merge import merge_adapter

    with studio.db.read() as session:
        adapter = catalog.get_adapter(session, spec.adapter_id)
        trained_by = jobs_repo.get_job(session, adapter.job_id) if adapter and adapter.job_id else None
        pin = jobs_repo.pinned(trained_by).get("base_model", {}) if trained_by else {}
    if adapter is None:
        raise LookupError(f"adapter {spec.adapter!r} was deleted before it could be exported")
    base_path = pinned_base(studio, adapter.base_model, pin)
    if problems := export_problems(base_path):
        raise ExportError("; ".join(problems))  # before a merge that would be thrown away
    merged = studio.absolute(adapter.merged_path) if adapter.merged_path else None
    if is_whole_model(studio.absolute(adapter.path)):
        merged = studio.absolute(adapter.path)  # full or freeze fine-tuning: already a plain model, nothing to merge
    scratch = run_dir / "export-merged"
    try:
        if merged is None or not merged.is_dir():
            print("merging the adapter into a float32 copy of its base for the export", flush=True)
            merged = merge_adapter(base_path, studio.absolute(adapter.path), scratch, "float32")

        def progress(what: str, done: int, total: int) -> None:
            sink.on_progress(done, total)
            if sink.should_stop():
                raise _Stopped

        record = build_export(merged, studio.absolute(adapter.path), run_dir / "gguf", spec.quantization,
                              adapter.name, progress)
    except _Stopped:
        if not sink.cancel_requested:
            return EXIT_INTERRUPTED  # the worker stops: the next attempt starts the export again
        with studio.db.write() as session:
            jobs_repo.cancel_running_job(session, job_id, attempt)
        return EXIT_CANCELLED
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for part in ("modelfile", "lora"):
        if record[part]:
            print(f"no {part}: {record[part]}", flush=True)
    published = publish_export(studio, job_id, attempt, adapter.id, spec.quantization, run_dir / "gguf")
    outcome = "registered" if published else "discarded (stale attempt)"
    print(f"GGUF ({spec.quantization}) of {adapter.name!r} {outcome}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == [SPARE_FLAG]:
        return spare_main()
    if argv[:1] == [RANK_FLAG]:
        return rank_main(int(argv[1]), int(argv[2]))
    job_id, attempt = int(argv[0]), int(argv[1])
    if spawned := os.environ.get(SPAWNED_AT_ENV):
        phases.add("child_start", max(0.0, time.time() - float(spawned)))  # interpreter and this module's imports
    lead_own_process_group()
    if not signal_when_parent_dies():  # an unsupervised child would train on with nobody to record it
        return EXIT_INTERRUPTED
    return run_attempt(open_studio(migrate=False), job_id, attempt)


def rank_main(job_id: int, attempt: int) -> int:
    """One rank of a job on several devices (jobs.queue.ranks), started by the job's child through torchrun's agent.
    It stays in the session the agent gave it and dies with the agent: a rank whose launcher was killed must not
    train on."""
    if not signal_when_parent_dies(signal.SIGKILL):
        return EXIT_INTERRUPTED
    return run_attempt(open_studio(migrate=False), job_id, attempt)


def spare_main() -> int:
    """A spare (jobs.queue.spare): import what training needs, wait for one job on stdin, then be its child."""
    lead_own_process_group()
    if not signal_when_parent_dies():
        return EXIT_INTERRUPTED
    started = time.perf_counter()
    import jobs.training.train  # noqa: F401  (torch, transformers, peft, TRL, bitsandbytes: the slow part)

    imported_s = time.perf_counter() - started
    print(f"spare training process {os.getpid()} ready for the next job (imports took {imported_s:.1f} s)", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the worker stopped (or gave no job): nothing to do
    job_id, attempt, handed_at = parse_handoff(line)
    phases.add("child_start", max(0.0, time.time() - handed_at))  # the imports still running when it came, if any
    # Named like a child started for this attempt, so `ps`, `pgrep -f` and an operator find the job's process.
    setproctitle(f"{sys.executable} -m jobs.queue.child {job_id} {attempt} (spare)")
    studio = open_studio(migrate=False)
    write_output_to(train_log_path(studio, job_id))
    print(f"started before the job: its libraries were imported in {imported_s:.1f} s while the worker waited",
          flush=True)
    return run_attempt(studio, job_id, attempt)


def lead_own_process_group() -> None:
    """One process group per job: the worker's kill after a cancel's grace reaches anything this process started, and
    a terminal's Ctrl-C reaches only the worker, which stops the job in order."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)


def write_output_to(log_path: Path) -> None:
    """Send this process's stdout and stderr (and its children's) to the end of `log_path` from now on."""
    sys.stdout.flush()
    sys.stderr.flush()
    # The umask open_studio set decides who else may read it: no one, or the shared group (never everyone).
    descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)


def run_attempt(studio: Studio, job_id: int, attempt: int) -> int:
    """Train (or merge, or combine) one attempt of one job; the exit code is the contract with the supervisor."""
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id)
        kind, raw_spec, job_name, overrides, provenance = job.kind, job.spec, job.name, job.overrides, job.provenance
        owner = job.owner
    run_dir = run_dir_for(studio, job_id)
    gang = Gang.of(provenance, attempt) if world_size() == 1 else None  # the ranks' own processes have WORLD_SIZE
    if gang is not None and gang.node_of(parent_worker()):
        return _join(studio, job_id, attempt, raw_spec, overrides, provenance, gang)
    error_file = run_dir / "error.txt"
    error_file.unlink(missing_ok=True)
    sink = LedgerSink(studio, job_id, attempt)
    signal.signal(signal.SIGTERM, lambda *_: sink.signalled.set())
    signal.signal(signal.SIGUSR1, sink.on_cancel_signal)
    try:
        if kind == JobKind.MERGE:
            return _merge(studio, job_id, attempt, MergeSpec.model_validate(raw_spec), run_dir)
        if kind == JobKind.COMBINE:
            return _combine(studio, job_id, attempt, CombineSpec.model_validate(raw_spec), run_dir, sink)
        if kind == JobKind.EVAL:
            return _evaluate(studio, job_id, attempt, raw_spec, provenance or {}, run_dir, sink)
        if kind == JobKind.EXPORT:
            return _export(studio, job_id, attempt, ExportSpec.model_validate(raw_spec), run_dir, sink)
        changed = override_fields(overrides)
        # Stored under the rules of its day: migrated, and refused in words (not a traceback) when no longer valid.
        spec = load_stored_spec(raw_spec, changed).require()  # what a retry changed, on top of the spec
        if changed:
            print(f"this attempt changes the spec: {changed} ({'; '.join(overrides.get('why', []))})", flush=True)
        if spec.method == "grpo" and spec.grpo_reward_code and not _owner_may_run_code(studio, owner):
            raise PermissionError("this job's reward code may no longer run: the operator no longer allows code for "
                                  f"'{owner}' (STUDIO_USER_CODE); nothing of it ran")
        if spec.report_to == "wandb":  # the owner's own key, in this training process's environment only
            os.environ["WANDB_API_KEY"] = owners_wandb_key(studio, owner)
        if spec.devices > 1 and world_size() == 1:  # the job's child: it launches the ranks, rank 0 does the rest
            return _launch(studio, job_id, attempt, spec, (provenance or {}).get("pinned", {}), gang)
        return _train(studio, job_id, attempt, spec, job_name, run_dir, sink, provenance or {})
    except Exception as error:  # everything the user must read goes to error.txt
        error_file.write_text(explain_failure(error), encoding="utf-8")
        traceback.print_exc()
        if world_size() > 1 and peer_lost(error):
            print("another rank of this job is gone (its collective failed): the attempt is lost", flush=True)
            return EXIT_RANK_LOST
        return EXIT_OUT_OF_MEMORY if is_out_of_memory(error) else 1


def _launch(studio: Studio, job_id: int, attempt: int, spec: TrainSpec, pinned: dict, gang: Gang | None = None,
            node: int = 0) -> int:
    """Check this host has the devices, prepare the base once (not once per rank), then run the ranks: all of them,
    or with a gang this host's node's share (jobs.queue.gang)."""
    import torch

    from jobs.models.loading import pick_device
    from jobs.queue.ranks import device_problem, launch_ranks

    device = pick_device()
    here = gang.per_host if gang is not None else spec.devices
    if problem := device_problem(here, device, torch.cuda.device_count() if device != "cpu" else 0):
        raise ValueError(problem)
    with phase("base_prepare"):
        pinned_base(studio, spec.base_model, pinned.get("base_model", {}))
    return launch_ranks(job_id, attempt, here, EXIT_INTERRUPTED, run_dir_for(studio, job_id), gang, node)


def _join(studio: Studio, job_id: int, attempt: int, raw_spec: dict, overrides: dict | None, provenance: dict,
          gang: Gang) -> int:
    """A follower node's child: launch this host's ranks into the leader's rendezvous. It records nothing (the
    leader's child does, error.txt included); a problem here shows in this node's log and ends the group."""
    node = gang.node_of(parent_worker())
    print(f"node {node} of job {job_id}'s gang (attempt {attempt}), leader {gang.members[0]['worker']}", flush=True)
    try:
        spec = load_stored_spec(raw_spec, override_fields(overrides)).require()
        return _launch(studio, job_id, attempt, spec, provenance.get("pinned", {}), gang, node)
    except Exception:  # the leader's agent then loses this node and the attempt is requeued as lost
        traceback.print_exc()
        return 1


def _owner_may_run_code(studio: Studio, owner: str | None) -> bool:
    """Checked again when the job starts, not only at submit: the operator may have turned user code off since (a
    retry or recovery of an old job must not run it then). Without accounts the local person counts as an admin."""
    with studio.db.read() as session:
        user = users_repo.get_user(session, owner) if owner else None
        account = (user.name, user.is_admin) if user is not None else None
    if account is None:  # the local person (or the operator's CLI); anyone else was removed since
        return owner in (None, LOCAL_OWNER) and studio.settings.allows_code(None, admin=True)
    return studio.settings.allows_code(*account)


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: the outcome is in the ledger and the log flushed, and unloading torch
    and its threads took over 2.5 s on a loaded CPU, during which a cancelled job's process lingered."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
