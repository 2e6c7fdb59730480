"""The studio's shared handle: settings + database, opened the same way by the app, workers and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from storage.db import Database, check_sqlite_location, sqlite_version_warning
from storage.schema import upgrade_database
from storage.settings import Settings, ensure_data_dirs, load_settings

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DATASET_FILE = REPO_ROOT / "static" / "examples" / "chat.jsonl"


@dataclass
class Studio:
    settings: Settings
    db: Database

    def relative(self, path: Path) -> str:
        """Paths stored in the database are relative to the data dir."""
        return str(Path(path).resolve().relative_to(self.settings.data_dir))

    def absolute(self, stored: str) -> Path:
        path = (self.settings.data_dir / stored).resolve()
        # A stored path can never lead outside the data dir, whatever a row says.
        path.relative_to(self.settings.data_dir)
        return path


def open_studio(settings: Settings | None = None, migrate: bool = True, warn: bool = True) -> Studio:
    """Open (and on first use create) the data dir and database. Call after fork: engines are per process."""
    settings = settings or load_settings()
    ensure_data_dirs(settings)
    if settings.database_url.startswith("sqlite") or settings.queue_url.startswith("sqlite"):
        check_sqlite_location(settings.data_dir)
        warning = sqlite_version_warning()
        if warning and warn:
            log.warning(warning)
    db = Database(settings.database_url)
    if migrate:
        upgrade_database(db)
    return Studio(settings=settings, db=db)
