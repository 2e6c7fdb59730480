"""Writing a file other processes may be writing at the same moment: hosts that share the data dir (NFS) each
prepare, cache and export into the same folders. Each writer fills its own partial file, then renames it over the
target, so a reader sees the old file or the new one, never half of one, and two writers never collide."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def private_partial(target: Path) -> Path:
    """A partial file beside `target` that no other process (on this host or another) will pick."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


def write_atomically(target: Path, data: bytes | str) -> Path:
    """Replace `target` with `data` in one rename."""
    partial = private_partial(target)
    try:
        if isinstance(data, str):
            partial.write_text(data, encoding="utf-8")
        else:
            partial.write_bytes(data)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
