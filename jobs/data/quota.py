"""How much more a person may store: the largest file they may upload, the disk their datasets may still take, and
how many more datasets they may keep.

A person with an account (not an admin) gets their account's limits where set (users.max_upload_bytes,
max_storage_bytes, max_datasets), else the studio's (STUDIO_MAX_UPLOAD_BYTES, STUDIO_MAX_STORAGE_BYTES,
STUDIO_MAX_DATASETS). Admins, the local person (no accounts) and the CLI get the studio's alone. The web server asks
while an upload streams in, so this costs two small queries and a stat per stored dataset, and never imports gradio."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from jobs.studio import Studio
from storage import catalog, users_repo
from storage.access import LOCAL_OWNER, Person
from storage.models import User


@dataclass(frozen=True)
class Allowance:
    max_file_bytes: int
    """The largest single file this person may upload."""
    storage_left_bytes: int
    """How many more bytes their stored datasets may take."""
    datasets_left: int
    """How many more datasets they may keep."""
    max_storage_bytes: int
    max_datasets: int
    max_file_set_by: str = "STUDIO_MAX_UPLOAD_BYTES"
    """Where each limit comes from, for the refusal: the setting, or the person's account."""
    storage_set_by: str = "STUDIO_MAX_STORAGE_BYTES"
    datasets_set_by: str = "STUDIO_MAX_DATASETS"

    def problem(self, upload_bytes: int = 0) -> str | None:
        """Why an upload of `upload_bytes` may not become a dataset, in words; None: it may (so far). Counts the raw
        bytes against what is left; the import counts the stored copy again (`storing_problem`)."""
        if upload_bytes > self.max_file_bytes:
            return (f"the file has {upload_bytes:,} bytes; uploads are capped at {self.max_file_bytes:,} "
                    f"({self.max_file_set_by})")
        return self.storing_problem(upload_bytes)

    def storing_problem(self, stored_bytes: int) -> str | None:
        """Why one more dataset of `stored_bytes` may not be stored; None: it may."""
        if self.datasets_left <= 0:
            return (f"you keep {self.max_datasets:,} datasets, as many as allowed ({self.datasets_set_by}); delete "
                    f"one first")
        if stored_bytes > self.storage_left_bytes:
            return (f"storing it takes {stored_bytes:,} bytes and your datasets may take {self.storage_left_bytes:,} "
                    f"more bytes of {self.max_storage_bytes:,} ({self.storage_set_by}); delete one first")
        return None


def allowance(studio: Studio, person: Person | None) -> Allowance:
    """What `person` (None: the CLI or a worker) may still store."""
    with studio.db.read() as session:
        return allowance_in(session, studio, person)


def allowance_in(session: Session, studio: Studio, person: Person | None) -> Allowance:
    """`allowance` inside the caller's transaction (an import checks again inside the one that registers it, so two
    imports at once cannot both take the last room)."""
    settings = studio.settings
    # An account's own limits bind only a person who is not an admin; everyone else has the studio's.
    user = None if person is None or person.admin else users_repo.get_user(session, person.name)
    max_file, file_by = _limit(user, "max_upload_bytes", settings.max_upload_bytes, "STUDIO_MAX_UPLOAD_BYTES")
    max_storage, storage_by = _limit(user, "max_storage_bytes", settings.max_storage_bytes, "STUDIO_MAX_STORAGE_BYTES")
    max_datasets, datasets_by = _limit(user, "max_datasets", settings.max_datasets, "STUDIO_MAX_DATASETS")
    used_bytes, count = _use(session, studio, person.name if person is not None else LOCAL_OWNER)
    return Allowance(max_file_bytes=max_file, storage_left_bytes=max(0, max_storage - used_bytes),
                     datasets_left=max(0, max_datasets - count), max_storage_bytes=max_storage,
                     max_datasets=max_datasets, max_file_set_by=file_by, storage_set_by=storage_by,
                     datasets_set_by=datasets_by)


def disk_use(studio: Studio, owner: str) -> tuple[int, int]:
    """(bytes, datasets) that `owner`'s stored datasets take, from their rows and the files they name."""
    with studio.db.read() as session:
        return _use(session, studio, owner)


def _use(session: Session, studio: Studio, owner: str) -> tuple[int, int]:
    paths = catalog.dataset_paths_of(session, owner)
    return sum(_size(studio, path) for path in set(paths)), len(paths)


def _size(studio: Studio, path: str) -> int:
    try:
        return studio.absolute(path).stat().st_size
    except OSError:  # a file a crashed delete already removed takes no room
        return 0


def _limit(user: User | None, column: str, studio_wide: int, setting: str) -> tuple[int, str]:
    """The account's own limit where it sets one (0 included), else the studio's; and where it comes from."""
    own = getattr(user, column) if user is not None else None
    return (own, f"the limit of {user.name}'s account") if own is not None else (studio_wide, setting)
