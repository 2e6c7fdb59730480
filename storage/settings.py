"""Every setting the studio reads from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    """Root of everything the studio writes: database, queue file, models, datasets, runs, adapters."""
    database_url: str
    """SQLAlchemy URL of the app database (the job ledger). SQLite in the data dir unless set."""
    queue_url: str
    """Where Huey keeps its messages: `sqlite:///path` (default, in the data dir) or `redis://host:port/db`."""
    heartbeat_s: float = 5.0
    """How often a worker stamps the heartbeat of the job it runs."""
    lease_s: float = 60.0
    """A running job whose heartbeat is older than this is presumed dead and requeued by the reaper."""
    max_attempts: int = 3
    """A job that loses its worker this many times is marked failed instead of requeued."""
    reap_interval_s: float | None = None
    """Seconds between reaper passes (in the app and every worker); None: a third of the lease."""
    max_upload_bytes: int = 1 << 30
    """The largest dataset file accepted (far above any chat set; a bigger file is refused, not read)."""
    max_line_bytes: int = 16 << 20
    """The longest line (JSONL) or cell (CSV) accepted, checked while reading."""
    max_rows: int = 2_000_000
    """The most rows one dataset may hold, checked while reading."""
    webhook_url: str | None = None
    """Where the app POSTs a JSON notice of each job event (succeeded, failed, requeued, cancelled)."""
    chat_memory_bytes: int | None = 8 << 30
    """How much memory the Chat tab's loaded bases may take together (least recently used unloaded first)."""
    model_dirs: tuple[Path, ...] = ()
    """Folders local base models may be loaded from (STUDIO_MODEL_DIRS, separated by ':'); empty: the models folder
    and the Hugging Face cache."""

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def merged_dir(self) -> Path:
        return self.data_dir / "merged"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment (or the given mapping)."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("STUDIO_DATA_DIR", "./studio-data")).expanduser().resolve()
    database_url = env.get("STUDIO_DATABASE_URL") or f"sqlite:///{data_dir / 'studio.db'}"
    queue_url = env.get("STUDIO_QUEUE_URL") or f"sqlite:///{data_dir / 'queue.db'}"
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        queue_url=queue_url,
        heartbeat_s=float(env.get("STUDIO_HEARTBEAT_S", "5")),
        lease_s=float(env.get("STUDIO_LEASE_S", "60")),
        max_attempts=int(env.get("STUDIO_MAX_ATTEMPTS", "3")),
        reap_interval_s=float(env["STUDIO_REAP_S"]) if env.get("STUDIO_REAP_S") else None,
        max_upload_bytes=int(env.get("STUDIO_MAX_UPLOAD_BYTES", 1 << 30)),
        max_line_bytes=int(env.get("STUDIO_MAX_LINE_BYTES", 16 << 20)),
        max_rows=int(env.get("STUDIO_MAX_ROWS", 2_000_000)),
        webhook_url=env.get("STUDIO_WEBHOOK_URL") or None,
        chat_memory_bytes=int(env.get("STUDIO_CHAT_MEMORY_BYTES", 8 << 30)),
        model_dirs=tuple(Path(part) for part in env.get("STUDIO_MODEL_DIRS", "").split(os.pathsep) if part),
    )


def ensure_data_dirs(settings: Settings) -> None:
    for path in (settings.data_dir, settings.models_dir, settings.datasets_dir, settings.runs_dir,
                 settings.adapters_dir, settings.exports_dir, settings.merged_dir):
        path.mkdir(parents=True, exist_ok=True)
