"""Experiment tracking, local and offline: where each tracker writes inside the run's folder, and the environment
that points the Trainer's integration there (transformers reads TENSORBOARD_LOGGING_DIR, MLFLOW_TRACKING_URI and
TRACKIO_DIR). Nothing leaves the machine: MLflow gets a SQLite store (3.18 refuses its old file store, "in
maintenance mode"), trackio its local database, and no tracker is given a server or a hub Space. Read without
torch (the Runs tab shows where the output is)."""

from __future__ import annotations

import os
from pathlib import Path

from jobs.run_settings.speed import installed

TRACKING_DIR = "tracking"
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio", "wandb": "wandb"}
"""The module each tracker needs in the training process."""
PINS = {"tensorboard": "tensorboard==2.21.0", "mlflow": "mlflow-skinny", "trackio": "trackio==0.43.0",
        "wandb": "wandb==0.31.0"}
"""What to install for each (requirements.txt pins tensorboard, trackio and wandb; mlflow is left to the operator:
its full install pulls a server stack the studio does not need)."""
VIEWERS = {
    "tensorboard": "tensorboard --logdir {path}",
    "mlflow": "mlflow ui --backend-store-uri sqlite:///{path}/mlflow.db",
    "trackio": "TRACKIO_DIR={path} trackio show",
    "wandb": "wandb sync {path}/wandb/offline-run-*",  # an offline run; an online one is on wandb.ai, project studio
}


def tracking_dir(run_dir: Path, report_to: str) -> Path | None:
    """Where `report_to` writes for the run in `run_dir` (None: no tracker)."""
    if report_to == "none":
        return None
    return run_dir / TRACKING_DIR / report_to


def tracking_environment(report_to: str, run_dir: Path) -> dict[str, str]:
    """Point the Trainer's tracker at the run's folder, in this process's environment (one run per training
    process; each run sets its own), and return what was set."""
    values = tracking_environment_values(report_to, run_dir)
    if values:
        tracking_dir(run_dir, report_to).mkdir(parents=True, exist_ok=True)
        os.environ.update(values)
    return values


def tracking_environment_values(report_to: str, run_dir: Path) -> dict[str, str]:
    """The environment variables that point `report_to` at the run's folder (a relative `run_dir` stays relative:
    the plain script writes beside itself)."""
    path = tracking_dir(run_dir, report_to)
    if path is None:
        return {}
    uri = f"sqlite:///{path / 'mlflow.db'}"  # an absolute path gives four slashes, a relative one three
    return {
        "tensorboard": {"TENSORBOARD_LOGGING_DIR": str(path)},
        "mlflow": {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "studio"},
        "trackio": {"TRACKIO_DIR": str(path)},
        # W&B: its run folder here, project "studio"; never the key (the training process has it in WANDB_API_KEY,
        # jobs.tracker_keys) and never WANDB_MODE: online unless the operator sets WANDB_MODE=offline for workers.
        "wandb": {"WANDB_DIR": str(path), "WANDB_PROJECT": "studio"},
    }[report_to]


def finish_tracking(report_to: str) -> None:
    """End the run's W&B run, so it writes its history out: transformers' callback leaves that to W&B's atexit hook,
    which a training child never reaches (it leaves by os._exit, jobs.queue.child.exit_now), and a run ended
    that way had no loss in its run file. The other trackers end their runs at train end."""
    if report_to != "wandb":
        return
    import wandb

    if wandb.run is not None:
        wandb.finish()


def tracking_problem(report_to: str) -> str | None:
    """Why this studio cannot track with `report_to`, or None."""
    package = PACKAGES.get(report_to)
    if package is None or installed(package):
        return None
    return (f"{report_to} is not installed on this studio (pip install {PINS[report_to]}); choose tensorboard or "
            f"trackio, which are, or none")


def tracking_text(run_dir: Path, report_to: str) -> str | None:
    """Where a run's tracking output is and how to open it, for the run page (None: the run tracks nothing)."""
    path = tracking_dir(run_dir, report_to)
    if path is None:
        return None
    state = "" if path.exists() else " (not written yet)"
    return f"{report_to} output in `{path}`{state}; open it with `{VIEWERS[report_to].format(path=path)}`"
