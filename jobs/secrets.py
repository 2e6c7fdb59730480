"""Each person's secrets (their hub token, their API key), kept in one place: a hub token encrypted at rest with a key
that lives in the data dir (made once, readable by the studio's user only), never shown back. What a person sees of a
stored secret is its hint: at most its last 4 characters, so they can tell which one they stored.

An API key (for the OpenAI-compatible endpoint, app/web/openai_api.py) is only ever checked, never used again, so the
store keeps its SHA-256 and not the key: it is shown once, when made. The key is 256 random bits, so a plain hash is
as strong as a slow one here (a slow hash guards guessable passwords, not random keys), and it is looked up by that
hash. One key per person (the table is unique per owner and kind, no migration needed): a new key replaces the old.

The key sits beside the database rather than in it, so a copy of the database (a backup, a PostgreSQL dump) holds
no usable token. A secret is bound to its owner and kind inside the ciphertext: a row moved to another owner in the
database does not decrypt as theirs."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from secrets import token_urlsafe

from jobs.studio import Studio
from storage import secrets_repo
from storage.access import current_person, new_owner

KEY_FILE = ".secrets-key"
KEY_CHARS = 44  # a Fernet key: 32 random bytes, url-safe base64
HINT_CHARS = 4
API_KEY = "api_key"
API_KEY_PREFIX = "sk-studio-"
MAX_API_KEY_CHARS = 200


class SecretError(ValueError):
    """Why a secret cannot be stored or used, in words."""


def hint_for(value: str) -> str:
    """What may be shown of `value`: its last characters, never more than 4 and never more than a quarter of it."""
    shown = min(HINT_CHARS, len(value) // 4)
    return "…" + value[len(value) - shown:] if shown else "…"


def put_secret(studio: Studio, kind: str, value: str) -> str:
    """Store the acting person's secret of `kind` (replacing theirs); returns its hint."""
    owner = _owner()
    ciphertext = _fernet(studio).encrypt(json.dumps({"owner": owner, "kind": kind, "value": value}).encode())
    hint = hint_for(value)
    with studio.db.write() as session:
        secrets_repo.put_secret(session, owner, kind, ciphertext.decode(), hint)
    return hint


def drop_secret(studio: Studio, kind: str) -> bool:
    """Forget the acting person's secret of `kind`; whether they had one."""
    with studio.db.write() as session:
        return secrets_repo.delete_secret(session, _owner(), kind)


def secret_hint(studio: Studio, kind: str) -> str | None:
    """The hint of the acting person's secret of `kind`, or None when they have none."""
    with studio.db.read() as session:
        secret = secrets_repo.get_secret(session, _owner(), kind)
    return None if secret is None else (secret.hint or "…")


def secret_for_use(studio: Studio, kind: str) -> str | None:
    """The acting person's secret of `kind` in clear, to hand to the service it is for (never to show)."""
    from cryptography.fernet import InvalidToken

    owner = _owner()
    with studio.db.read() as session:
        secret = secrets_repo.get_secret(session, owner, kind)
    if secret is None:
        return None
    try:
        sealed = json.loads(_fernet(studio).decrypt(secret.ciphertext.encode()))
    except (InvalidToken, ValueError):
        sealed = None
    if not isinstance(sealed, dict) or (sealed.get("owner"), sealed.get("kind")) != (owner, kind):
        raise SecretError(f"your stored {kind.replace('_', ' ')} can no longer be read here (the data dir's key "
                          f"{KEY_FILE} changed or the row was altered): set it again")
    return sealed["value"]


def new_api_key(studio: Studio) -> str:
    """Make the acting person a new API key (replacing theirs) and return it: the only time it is seen."""
    key = API_KEY_PREFIX + token_urlsafe(32)
    with studio.db.write() as session:
        secrets_repo.put_secret(session, _owner(), API_KEY, _key_digest(key), hint_for(key))
    return key


def api_key_owner(studio: Studio, key: str | None) -> str | None:
    """Whose API key `key` is, or None (no such key, or not a key at all)."""
    if not key or not key.startswith(API_KEY_PREFIX) or len(key) > MAX_API_KEY_CHARS:
        return None
    with studio.db.read() as session:
        return secrets_repo.owner_of(session, API_KEY, _key_digest(key))


def _key_digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _owner() -> str:
    person = current_person()
    if person is not None and not person.name:
        # A request that slipped past the login runs as no one; it must not share a secret with another no one.
        raise SecretError("sign in to keep secrets")
    return new_owner()


def _fernet(studio: Studio):
    from cryptography.fernet import Fernet

    return Fernet(_key(studio.settings.data_dir))


def _key(data_dir: Path) -> bytes:
    """The data dir's key for secrets, made once (hosts sharing the dir share it)."""
    from cryptography.fernet import Fernet

    path = data_dir / KEY_FILE
    try:
        with path.open("xb") as handle:  # only one creator wins, on this host or another
            os.fchmod(handle.fileno(), 0o600)
            handle.write(Fernet.generate_key())
    except FileExistsError:
        pass
    for _ in range(50):  # a creator elsewhere may not have written its key yet
        key = path.read_bytes()
        if len(key) == KEY_CHARS:
            return key
        time.sleep(0.1)
    raise SecretError(f"{path} is damaged: delete it (every stored secret must then be set again) and restart")
