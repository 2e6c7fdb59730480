"""Who may read the data dir: the studio's own user alone (folders 0700, files 0600), or with STUDIO_SHARED_GROUP=1
also its group (0750, 0640), for hosts whose workers share the data dir under one group. Never anyone else: it
holds people's datasets and adapters, the database (password hashes, sign-in sessions) and the export key.

Every process that writes there (the app, workers, the training child, the CLI) opens the studio through
`jobs.studio.open_studio`, which sets the process's umask first, so everything made afterwards, by the process or
the children it starts, gets these modes whatever code makes it."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from storage.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileModes:
    umask: int
    folder: int
    file: int


PRIVATE = FileModes(umask=0o077, folder=0o700, file=0o600)
GROUP = FileModes(umask=0o027, folder=0o750, file=0o640)


def file_modes(settings: Settings) -> FileModes:
    return GROUP if settings.shared_group else PRIVATE


def restrict_new_files(settings: Settings) -> None:
    """From now on, this process and its children make files and folders no one else may read."""
    os.umask(file_modes(settings).umask)


def current_umask() -> int:
    """This process's umask, read without changing it where Linux shows it, else set and put back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def open_to_allowed_readers(root: Path) -> None:
    """Let every file and folder under `root` be read by whom the umask allows (the shared group, or no one else).
    safetensors writes its files 0600 whatever the umask; called on a folder just before it is published."""
    readable = 0o444 & ~current_umask()
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        # Folders need the search bit with the read bit to be entered.
        wanted = readable | (readable >> 2 if stat.S_ISDIR(info.st_mode) else 0)
        if stat.S_IMODE(info.st_mode) & wanted != wanted:
            os.chmod(path, stat.S_IMODE(info.st_mode) | wanted)


def tighten_data_dir(settings: Settings) -> list[Path]:
    """Take away what the umask forbids from the data dir and its first-level entries (the database, the queue,
    the export key, and the folders everything else lives in). Deeper files made before this (0644 in a 0755 tree)
    keep their modes, but sit in folders no one else may enter any more; so a start never walks a tree of
    checkpoints and datasets. Returns what changed."""
    forbidden = file_modes(settings).umask
    changed = []
    for path in [settings.data_dir, *_entries(settings.data_dir)]:
        try:
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                continue  # a link's target is not the studio's to change
            mode = stat.S_IMODE(info.st_mode)
            if mode & forbidden:
                os.chmod(path, mode & ~forbidden)  # setgid and the owner's bits stay as they are
                changed.append(path)
        except OSError as error:  # another user's file (a shared host), or gone meanwhile
            log.warning("could not restrict %s to the studio's user: %s", path, error)
    return changed


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []
