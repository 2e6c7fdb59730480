"""Each person's Weights & Biases API key, for runs that report to wandb: kept in the one secret store
(jobs/secrets.py, encrypted at rest, never shown back but for its hint), never in the spec, the log or "show as
script". Only the training process of that person's own job reads it, into its own environment (WANDB_API_KEY,
jobs.queue.child), where transformers' W&B integration finds it."""

from __future__ import annotations

from jobs.secrets import SecretError, drop_secret, put_secret, secret_for_use, secret_hint
from jobs.studio import Studio
from storage.access import LOCAL_OWNER, Person, acting_as

WANDB_KEY = "wandb_api_key"
MAX_KEY_CHARS = 200
WHERE_TO_ADD = ("add your W&B API key (wandb.ai/authorize) in the Account tab (Weights & Biases key), with the API's "
                "set_wandb_key or the CLI's set-wandb-key")


class TrackerKeyError(ValueError):
    """Why a key was not stored, in words naming the field."""


def set_wandb_key(studio: Studio, key: str) -> dict:
    """Keep `key` as the acting person's W&B API key (replacing theirs); returns `wandb_key_status`."""
    key = (key or "").strip()
    if not key:
        raise TrackerKeyError("key: paste your W&B API key (wandb.ai/authorize)")
    if len(key) > MAX_KEY_CHARS:
        raise TrackerKeyError(f"key: {len(key)} characters; a W&B API key has at most {MAX_KEY_CHARS}")
    if any(char.isspace() or not char.isprintable() for char in key):
        raise TrackerKeyError("key: a W&B API key has no spaces, line breaks or control characters")
    try:
        put_secret(studio, WANDB_KEY, key)
    except SecretError as error:
        raise TrackerKeyError(str(error)) from None
    return wandb_key_status(studio)


def clear_wandb_key(studio: Studio) -> dict:
    """Forget the acting person's W&B API key; returns `wandb_key_status`."""
    try:
        drop_secret(studio, WANDB_KEY)
    except SecretError as error:
        raise TrackerKeyError(str(error)) from None
    return wandb_key_status(studio)


def wandb_key_status(studio: Studio) -> dict:
    """Whether the acting person keeps a W&B API key, and its hint (at most its last 4 characters)."""
    try:
        hint = secret_hint(studio, WANDB_KEY)
    except SecretError:
        hint = None
    return {"stored": hint is not None, "hint": hint}


def wandb_key_problem(studio: Studio) -> str | None:
    """Why the acting person cannot submit a run that reports to wandb (no key of their own), or None."""
    if wandb_key_status(studio)["stored"]:
        return None
    return f"wandb needs your own W&B API key, and you have none stored: {WHERE_TO_ADD}; or choose another tracker"


def owners_wandb_key(studio: Studio, owner: str | None) -> str:
    """The job owner's W&B key in clear, for their training process's environment only. Raises SecretError (in
    words) when they have none now: it is never another person's, nor the operator's."""
    person = None if owner in (None, LOCAL_OWNER) else Person(owner)
    with acting_as(person):
        key = secret_for_use(studio, WANDB_KEY)
    if key is None:
        raise SecretError(f"report_to: this run reports to wandb but its owner has no W&B API key now: {WHERE_TO_ADD}, "
                          "then retry the job")
    return key
