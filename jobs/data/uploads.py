"""Gradio's copies of uploaded files: removed once the store holds its own copy, and the stale ones at start.

Gradio (6.x, gradio/utils.py get_upload_folder and route_utils.upload_fn) keeps each upload as
`<cache>/<sha256 of its bytes>/<file name>`, and a request it did not finish as a top-level `tmpXXXXXXXX` file;
`<cache>` is GRADIO_TEMP_DIR, else the system temp folder's `gradio`. Nothing else in that folder (Gradio's own
`deep_links`, another app's files) and nothing outside it is ever removed, and no link is followed."""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from pathlib import Path

UPLOAD_FOLDER = re.compile(r"[0-9a-f]{64}")
UNFINISHED_UPLOAD = re.compile(r"tmp[a-z0-9_]{8}")  # tempfile.NamedTemporaryFile's names


def upload_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where Gradio keeps uploads, found as Gradio finds it (without importing gradio)."""
    env = os.environ if environ is None else environ
    return Path(env.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def remove_upload(path: Path, cache_dir: Path) -> bool:
    """Remove one upload's file (and its folder, once empty) if it is Gradio's copy in `cache_dir`; a file anywhere
    else (the CLI imports a person's own file) is left alone. True: removed."""
    folder = Path(os.path.abspath(path)).parent
    try:
        folder = folder.resolve(strict=True)
        inside = folder.parent == Path(cache_dir).resolve(strict=True) and UPLOAD_FOLDER.fullmatch(folder.name)
        if not inside:
            return False
        os.unlink(folder / Path(path).name)  # a link is removed as a link, never followed
    except OSError:
        return False
    try:
        folder.rmdir()
    except OSError:
        pass  # another file of the same bytes, or Gradio still writing: the next start's clean-up takes it
    return True


def clean_upload_cache(cache_dir: Path, max_age_s: float) -> list[Path]:
    """Remove uploads older than `max_age_s` from Gradio's cache (imported ones are already gone: these were
    previewed, refused or abandoned). Call it before the app builds its pages: Gradio also reuses cached copies of
    the pages' own files. The folder itself is made this user's alone: uploads are people's data, and only the web
    process reads them. Returns what was removed."""
    try:
        cache = Path(cache_dir).resolve(strict=True)
        info = cache.stat()
    except OSError:
        return []
    # Pointed at the system temp folder itself (or another shared one, sticky like /tmp), the folder is not
    # Gradio's alone: neither its mode nor a `tmpXXXXXXXX` in it (any program's) is the studio's to change.
    own_folder = (cache != Path(tempfile.gettempdir()).resolve() and cache.parent != cache
                  and not info.st_mode & stat.S_ISVTX)
    if own_folder and info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        try:
            os.chmod(cache, stat.S_IMODE(info.st_mode) & 0o700)
        except OSError:
            pass
    take_unfinished = own_folder
    cutoff = time.time() - max_age_s
    removed = []
    with os.scandir(cache) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and UPLOAD_FOLDER.fullmatch(entry.name):
                removed += _clean_folder(Path(entry.path), cutoff)
            elif (take_unfinished and UNFINISHED_UPLOAD.fullmatch(entry.name)
                  and _old_file(entry, cutoff) and _unlink(Path(entry.path))):
                removed.append(Path(entry.path))
    return removed


def _clean_folder(folder: Path, cutoff: float) -> list[Path]:
    with os.scandir(folder) as entries:
        removed = [Path(e.path) for e in entries if _old_file(e, cutoff) and _unlink(Path(e.path))]
    try:
        if folder.lstat().st_mtime < cutoff or removed:
            folder.rmdir()  # only when empty: a fresh upload's folder is made just before its file
    except OSError:
        pass
    return removed


def _old_file(entry: os.DirEntry, cutoff: float) -> bool:
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    return not stat.S_ISDIR(info.st_mode) and info.st_mtime < cutoff


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except OSError:
        return False
    return True
