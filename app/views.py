"""Pure views: ledger rows in, tables and chart data out. No gradio, no database access here."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from storage.models import Adapter, Job, JobStatus, Metric, utcnow

JOB_COLUMNS = ["id", "name", "status", "progress", "ETA", "loss", "eval loss", "attempt", "created"]
ADAPTER_COLUMNS = ["name", "base model", "size", "job", "created"]
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
    if not job.total_steps:
        return ""
    return f"{job.step}/{job.total_steps} ({100 * job.step / job.total_steps:.0f}%)"


def eta_seconds(job: Job, now: datetime | None = None) -> float | None:
    """Remaining time from the pace so far in this attempt; None before the first step."""
    if job.status != JobStatus.RUNNING or not job.total_steps or not job.step or job.started_at is None:
        return None
    elapsed = ((now or utcnow()) - job.started_at).total_seconds()
    return elapsed / job.step * (job.total_steps - job.step)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def job_row(job: Job, latest: dict[str, float]) -> list:
    return [job.id, job.name, job.status, progress_text(job), human_duration(eta_seconds(job)),
            _fmt(latest.get("loss")), _fmt(latest.get("eval_loss")), job.attempt,
            job.created_at.strftime("%Y-%m-%d %H:%M:%S")]


def jobs_table(jobs: list[Job], latest_by_job: dict[int, dict[str, float]]) -> pd.DataFrame:
    rows = [job_row(job, latest_by_job.get(job.id, {})) for job in jobs]
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def loss_curve(metrics: list[Metric]) -> pd.DataFrame:
    """Long format for gr.LinePlot: step, value, series."""
    # gr.LinePlot builds its chart once, from its first value: later values only swap the data. So every series
    # is present from the start (a null row, not drawn; else a series that appears later gets no colour and stays
    # invisible) and the columns are numeric even when empty (else the axes stay nominal).
    rows = [(None, None, series) for series in PLOTTED.values()]
    rows += [(m.step, m.value, PLOTTED[m.name]) for m in metrics if m.name in PLOTTED]
    return pd.DataFrame(rows, columns=["step", "value", "series"]).astype({"step": "float64", "value": "float64"})


def adapters_table(adapters: list[Adapter]) -> pd.DataFrame:
    rows = [[a.name, a.base_model, human_size(a.size_bytes), a.job_id, a.created_at.strftime("%Y-%m-%d %H:%M")]
            for a in adapters]
    return pd.DataFrame(rows, columns=ADAPTER_COLUMNS)


def job_summary(job: Job) -> dict:
    """The API's view of a job."""
    return {
        "id": job.id, "name": job.name, "status": job.status, "priority": job.priority,
        "attempt": job.attempt, "step": job.step, "total_steps": job.total_steps,
        "progress": progress_text(job), "eta_s": eta_seconds(job), "error": job.error,
        "cancel_requested": job.cancel_requested, "worker": job.worker,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "spec": job.spec,
    }
