"""Pure views: ledger rows in, tables and chart data out. No gradio, no database access here."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from jobs.queue.gang import Gang
from jobs.spec import TrainSpec, field_label
from jobs.spec_store import load_stored_spec
from jobs.training.phases import PHASES
from storage.models import Adapter, Job, JobKind, JobStatus, Metric, Worker, utcnow

JOB_COLUMNS = ["id", "name", "status", "progress", "ETA", "loss", "eval loss", "attempt", "sweep", "created"]
ADAPTER_COLUMNS = ["name", "base model", "kind", "rank", "targets", "dataset", "steps", "eval loss", "size", "merged",
                   "gguf", "job", "created"]
PLOTTED = {"loss": "train loss", "eval_loss": "eval loss"}


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def human_size(size_bytes: int) -> str:
    size = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def progress_text(job: Job) -> str:
    if job.status == JobStatus.SUCCEEDED:
        return "100%"
    if job.status == JobStatus.QUEUED and job.pool:
        devices = (job.spec or {}).get("devices", 1)
        if isinstance(devices, int) and devices > 1:  # a gang's hosts, or one host with that many (jobs.queue.gang)
            return f"waits for {devices} devices in pool {job.pool}"
        return f"waits for pool {job.pool}"
    if not job.total_steps:
        return ""
    return f"{job.step}/{job.total_steps} ({100 * job.step / job.total_steps:.0f}%)"


@dataclass(frozen=True)
class Pace:
    """What an honest ETA is measured from: the first step this attempt logged, and how long recent jobs took from
    their last step to done."""

    first_step: int
    first_step_at: datetime
    finishing_s: float = 0.0


def eta_seconds(job: Job, pace: Pace | None = None, now: datetime | None = None) -> float | None:
    """Remaining time: the steps left at the seconds per step measured since this attempt's first logged step (so
    the evals, sample answers and checkpoints it has met count, and loading the base does not), plus what the end
    takes (final eval, save, registration) as recent jobs measured it. Measured from the attempt's start instead,
    the end was left out and the first eval's cost unknown: the ETA came out far too short. None before two steps
    are logged (no pace yet)."""
    if job.status != JobStatus.RUNNING or not job.total_steps or not job.step or pace is None:
        return None
    if job.step <= pace.first_step:
        return None
    seconds_per_step = ((now or utcnow()) - pace.first_step_at).total_seconds() / (job.step - pace.first_step)
    return seconds_per_step * (job.total_steps - job.step) + pace.finishing_s


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def job_row(job: Job, latest: dict[str, float], pace: Pace | None = None) -> list:
    return [job.id, job.name, job.status, progress_text(job), human_duration(eta_seconds(job, pace)),
            _fmt(latest.get("loss")), _fmt(latest.get("eval_loss")), job.attempt, job.group_name or "",
            job.created_at.strftime("%Y-%m-%d %H:%M:%S")]


def jobs_table(jobs: list[Job], latest_by_job: dict[int, dict[str, float]],
               paces: dict[int, Pace] | None = None) -> pd.DataFrame:
    rows = [job_row(job, latest_by_job.get(job.id, {}), (paces or {}).get(job.id)) for job in jobs]
    best = best_of_groups(jobs, latest_by_job)
    for row, job in zip(rows, jobs, strict=True):
        if best.get(job.group_name) == job.id:
            row[JOB_COLUMNS.index("sweep")] += BEST_MARK
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


BEST_MARK = " ★ best"


def best_of_groups(jobs: list[Job], latest_by_job: dict[int, dict[str, float]]) -> dict[str, int]:
    """Each sweep's or search's best run: the succeeded job with the lowest final held-out loss (a pruned search
    trial never is: it stopped before the end)."""
    best: dict[str, tuple[float, int]] = {}
    for job in jobs:
        loss = latest_by_job.get(job.id, {}).get("eval_loss")
        counts = job.group_name and job.status == "succeeded" and loss is not None
        if counts and (job.group_name not in best or loss < best[job.group_name][0]):
            best[job.group_name] = (loss, job.id)
    return {group: job_id for group, (_, job_id) in best.items()}


def loss_curve(metrics: list[Metric]) -> pd.DataFrame:
    """Long format for gr.LinePlot: step, value, series."""
    # gr.LinePlot builds its chart once, from its first value: later values only swap the data. So every series
    # is present from the start (a null row, not drawn; else a series that appears later gets no colour and stays
    # invisible) and the columns are numeric even when empty (else the axes stay nominal).
    rows = [(None, None, series) for series in PLOTTED.values()]
    rows += [(m.step, m.value, PLOTTED[m.name]) for m in metrics if m.name in PLOTTED]
    return pd.DataFrame(rows, columns=["step", "value", "series"]).astype({"step": "float64", "value": "float64"})


def adapters_table(rows: list[tuple[Adapter, Job | None]], eval_loss: dict[int, dict[str, float]],
                   gguf: dict[int, list[str]] | None = None) -> pd.DataFrame:
    """One line per adapter with what trained it: rank, targets, dataset, steps and final eval loss; `gguf`: the
    quantizations exported per adapter id."""
    table = []
    for adapter, job in rows:
        spec = job.spec if job is not None else {}
        targets = spec.get("target_modules", "")
        source = combination_text(spec) if job is not None and job.kind == JobKind.COMBINE else spec.get("dataset", "")
        if spec.get("method") == "reward" and job is not None and job.kind == JobKind.TRAIN:
            source = f"reward model on {source}"  # it scores answers; chat, merge and GGUF refuse it
        whole = spec.get("finetuning", "lora") != "lora"  # full or freeze fine-tuning: a model, no LoRA shape
        targets = "" if whole else targets
        table.append([adapter.name, adapter.base_model, kind_text(spec), "" if whole else spec.get("lora_r", ""),
                      ", ".join(targets) if isinstance(targets, list) else targets, source,
                      job.step if job is not None else "", _fmt(eval_loss.get(adapter.job_id, {}).get("eval_loss")),
                      human_size(adapter.size_bytes),
                      human_size(adapter.merged_size_bytes) if adapter.merged_path else "",
                      ", ".join((gguf or {}).get(adapter.id, [])), adapter.job_id,
                      adapter.created_at.strftime("%Y-%m-%d %H:%M")])
    return pd.DataFrame(table, columns=ADAPTER_COLUMNS)


def kind_text(spec: dict) -> str:
    """What an adapters-list entry is: a LoRA adapter, or a whole model from full or freeze fine-tuning."""
    finetuning = spec.get("finetuning", "lora")
    if finetuning == "full":
        return "model (full)"
    if finetuning == "freeze":
        return f"model (freeze, last {spec.get('freeze_trainable_layers', 2)} blocks)"
    return "adapter"


def combination_text(spec: dict) -> str:
    """A combine job's recipe in one line: "combined (ties, density 0.5): a ×0.7 + b ×0.3"."""
    settings = [f"{key.replace('_', ' ')} {spec[key]}" for key in ("density", "majority_sign_method", "svd_rank")
                if spec.get(key) is not None]
    parents = " + ".join(f"{parent['adapter']} ×{parent['weight']:g}" for parent in spec.get("parents", []))
    return f"combined ({', '.join([spec.get('combination_type', '?'), *settings])}): {parents}"


def job_summary(job: Job, pace: Pace | None = None) -> dict:
    """The API's view of a job."""
    return {
        "id": job.id, "name": job.name, "kind": job.kind, "group_name": job.group_name, "status": job.status,
        "owner": job.owner,
        "priority": job.priority,
        "attempt": job.attempt, "step": job.step, "total_steps": job.total_steps,
        "progress": progress_text(job), "eta_s": eta_seconds(job, pace), "error": job.error,
        "cancel_requested": job.cancel_requested, "worker": job.worker,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "spec": job.spec,
        "spec_problems": _spec_problems(job),
        "provenance": job.provenance,
        "overrides": job.overrides,
    }


def _spec_problems(job: Job) -> list[str]:
    """Why a stored training spec is not valid under today's rules (empty when it is): shown, never raised."""
    if job.kind != JobKind.TRAIN:
        return []
    return [str(problem) for problem in load_stored_spec(job.spec).problems]


def spec_changes(spec: dict, chosen: dict | None = None) -> tuple[list[str], list[str]]:
    """The job's spec as lines "label: value", split into the fields that differ from the defaults and the rest;
    `chosen`: the fields the default rule filled in at submit (jobs.step_plan), said so."""
    changed, same = [], []
    for name, field in TrainSpec.model_fields.items():
        if name not in spec:
            continue
        # A field whose default is made per spec (a list) has no `field.default`: read as such it showed as
        # "PydanticUndefined", and compared unequal to every value.
        value, default = spec[name], field.get_default(call_default_factory=True)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        shown = f"empty: {extra['empty']}" if value is None and "empty" in extra else _show(value)
        line = f"{field_label(name)} (`{name}`): {shown}"
        if name in (chosen or {}):
            changed.append(f"{line} (chosen for this job's data)")
        elif value == default:
            same.append(line)
        elif field.is_required():
            changed.append(line)
        else:
            changed.append(f"{line} (default {_show(default)})")
    return changed, same


def _show(value) -> str:
    if value == "" or value == []:
        return "(empty)"
    if value is None:
        return "empty: chosen per job"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def time_breakdown(job: dict) -> str | None:
    """A finished job's wall time by phase (jobs.training.phases), the queue wait first, and the share that was not
    training: what the studio costs around the training loop."""
    phases = job.get("phases_s") or {}
    if "training" not in phases or not job.get("started_at") or not job.get("finished_at"):
        return None
    created, started, finished = (datetime.fromisoformat(job[key]) for key in ("created_at", "started_at",
                                                                                "finished_at"))
    parts = [("queue", (started - created).total_seconds())]
    parts += [(words, phases[name]) for name, words in PHASES.items() if name in phases]
    total = (finished - created).total_seconds()
    others = max(0.0, total - phases["training"])
    shown = " · ".join(f"{words} {seconds:.1f} s" for words, seconds in parts)
    return f"{shown} — all but training: {others:.1f} s of {total:.1f} s ({others / total:.0%})" if total else shown


def timing_text(job: Job, now: datetime | None = None) -> str:
    """How long the job has waited, run, or took."""
    now = now or utcnow()
    if job.status == JobStatus.QUEUED:
        return f"waiting for {human_duration((now - job.created_at).total_seconds())}"
    if job.started_at is None:
        return ""
    if job.status == JobStatus.RUNNING:
        return f"running for {human_duration((now - job.started_at).total_seconds())}"
    if job.finished_at is not None:
        return f"took {human_duration((job.finished_at - job.started_at).total_seconds())}"
    return ""


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


WORKER_COLUMNS = ["worker", "device", "free for a job", "pool", "running job", "last heartbeat", "queued jobs"]


def worker_summary(worker: Worker) -> dict:
    return {"name": worker.name, "host": worker.host, "device": worker.device, "device_name": worker.device_name,
            "memory_bytes": worker.memory_bytes, "pool": worker.pool, "current_job_id": worker.current_job_id,
            "heartbeat_at": worker.heartbeat_at.isoformat(), "started_at": worker.started_at.isoformat(),
            # What it offers one job, and whether it may lead or join one across hosts (its address stays unshown).
            "device_count": worker.device_count, "spans_hosts": worker.address is not None}


def _device_text(worker: dict) -> str:
    offers = f", {worker['device_count']} for one job" if worker.get("device_count") else ""
    across = ", joins jobs across hosts" if worker.get("spans_hosts") else ""
    return f"{worker['device_name']} ({worker['device']}{offers}{across})"


def gang_node_text(job: Job, worker: str) -> str:
    """What a worker holding another worker's job is to it: a node of the job's running attempt (the gang the leader
    recorded for that attempt), or reserved for one that has not gathered yet."""
    gang = Gang.of(job.provenance, job.attempt) if job.status == JobStatus.RUNNING else None
    node = gang.node_of(worker) if gang is not None else None
    if node is None:
        return f"reserved for it by {job.worker}"
    return f"node {node} of {gang.nodes}, led by {job.worker}"


def _running_text(worker: dict) -> str:
    if worker["current_job_id"] is None:
        return "another person's job" if worker.get("busy") else "idle"
    node = f" ({worker['node_of']})" if worker.get("node_of") else ""
    return f"{worker['current_job_id']}{node}"


def workers_table(workers: list[dict], queued: int) -> pd.DataFrame:
    now = utcnow()
    rows = [[w["name"], _device_text(w), human_size(w["memory_bytes"]), w["pool"] or "", _running_text(w),
             human_duration((now - datetime.fromisoformat(w["heartbeat_at"])).total_seconds()) + " ago", queued]
            for w in workers]
    return pd.DataFrame(rows or [["no live worker", "", "", "", "", "", queued]], columns=WORKER_COLUMNS)


TIMELINES = {"loss curves": ("loss", "eval_loss"), "tokens/s": ("tokens_per_s",), "memory (GiB)": ("memory_bytes",),
             "learning rate": ("learning_rate",), "grad norm": ("grad_norm",),
             "reward margin (DPO, ORPO, SimPO, KTO)": ("rewards/margins", "eval_rewards/margins"),
             "KTO's KL estimate": ("kl", "eval_kl"),
             "ORPO's terms": ("nll_loss", "log_odds_ratio", "eval_nll_loss", "eval_log_odds_ratio"),
             "GRPO reward": ("reward",),
             "reward model's pairs": ("accuracy", "eval_accuracy", "margin", "eval_margin")}
SERIES = {"loss": "train loss", "eval_loss": "eval loss", "tokens_per_s": "tokens/s", "memory_bytes": "memory",
          "learning_rate": "learning rate", "grad_norm": "grad norm", "rewards/margins": "reward margin (train)",
          "eval_rewards/margins": "reward margin (eval)", "kl": "KL (train)", "eval_kl": "KL (eval)",
          "nll_loss": "SFT term (train)", "log_odds_ratio": "log odds ratio (train)",
          "eval_nll_loss": "SFT term (eval)", "eval_log_odds_ratio": "log odds ratio (eval)",
          "reward": "mean reward (weighted)", "accuracy": "pairwise accuracy (train)",
          "eval_accuracy": "pairwise accuracy (eval)", "margin": "score margin (train)",
          "eval_margin": "score margin (eval)"}
SCALES = {"memory_bytes": 1 / 2**30}


def run_curves(metrics: list[Metric], names: tuple[str, ...], x: str = "step") -> dict[str, list[tuple[float, float]]]:
    """The run's series as (x, y) points; x is the step or the tokens seen by then (the last count at or before the
    point's step, so eval points line up with the training tokens behind them)."""
    seen = sorted((m.step, m.value) for m in metrics if m.name == "tokens_seen")
    curves: dict[str, list[tuple[float, float]]] = {SERIES[name]: [] for name in names}
    for metric in metrics:
        if metric.name not in names:
            continue
        where = float(metric.step) if x == "step" else _tokens_at(seen, metric.step)
        if where is not None:
            curves[SERIES[metric.name]].append((where, metric.value * SCALES.get(metric.name, 1)))
    return curves


def _tokens_at(seen: list[tuple[int, float]], step: int) -> float | None:
    before = [tokens for at, tokens in seen if at <= step]
    return before[-1] if before else None


def spec_diff(specs: dict[str, dict], differences_only: bool) -> pd.DataFrame:
    """One row per spec field, one column per run; only the fields where the runs differ, when asked."""
    rows = []
    for name in TrainSpec.model_fields:
        values = [_show(spec.get(name, "")) for spec in specs.values()]
        if differences_only and len(set(values)) <= 1:
            continue
        rows.append([f"{field_label(name)} ({name})", *values])
    return pd.DataFrame(rows or [["(no difference)", *["" for _ in specs]]], columns=["field", *specs])


RANKING_COLUMNS = ["rank", "run", "sweep", "status", "eval loss", "train loss", "steps", "tokens/s (median)",
                   "peak memory"]


def ranking(jobs: list[Job], latest: dict[int, dict[str, float]], medians: dict[int, float | None]) -> pd.DataFrame:
    """The runs ranked by final eval loss (best first; runs without one last)."""
    def key(job):
        loss = latest.get(job.id, {}).get("eval_loss")
        return (loss is None, loss if loss is not None else 0.0, job.id)

    rows = []
    for rank, job in enumerate(sorted(jobs, key=key), start=1):
        values = latest.get(job.id, {})
        peak = values.get("peak_memory_bytes")
        rows.append([rank, f"{job.id} · {job.name}", job.group_name or "", job.status, _fmt(values.get("eval_loss")),
                     _fmt(values.get("loss")), job.step, f"{medians.get(job.id):.0f}" if medians.get(job.id) else "",
                     human_size(int(peak)) if peak else ""])
    return pd.DataFrame(rows, columns=RANKING_COLUMNS)


def samples_table(samples: list, held_out: bool = True) -> pd.DataFrame:
    """One row per prompt (held out, or a training row's in a run without an eval split); one column per step
    (step 0: the base model before training)."""
    steps = sorted({s.step for s in samples})
    prompts: dict[int, dict] = {}
    for sample in samples:
        row = prompts.setdefault(sample.prompt_index, {"prompt": sample.prompt})
        row[sample.step] = sample.answer
    first = "held-out prompt" if held_out else "training prompt (no eval split)"
    columns = [first, *[("base (step 0)" if step == 0 else f"step {step}") for step in steps]]
    rows = [[row["prompt"], *[row.get(step, "") for step in steps]] for _, row in sorted(prompts.items())]
    return pd.DataFrame(rows, columns=columns)
