"""Each person's Weights & Biases API key, for runs that report to wandb: kept in the one secret store
(jobs/secrets.py, encrypted at rest, never shown back but for its hint), never in the spec, the log or "show as
script". Only the training process of that person's own job reads it, into its own environment (WANDB_API_KEY,
jobs.queue.child), where transformers' W&B integration finds it."""

from __future__ import annotations

from jobs.credentials import Credential
from jobs.secrets import SecretError, secret_for_use
from jobs.studio import Studio
from storage.access import LOCAL_OWNER, Person, acting_as

WANDB_KEY = "wandb_api_key"
MAX_KEY_CHARS = 200
WHERE_TO_ADD = ("add your W&B API key (wandb.ai/authorize) in the Account tab (Weights & Biases key), with the API's "
                "set_wandb_key or the CLI's set-wandb-key")


class TrackerKeyError(ValueError):
    """Why a key was not stored, in words naming the field."""


WANDB_CREDENTIAL = Credential(WANDB_KEY, "key", "W&B API key", "wandb.ai/authorize", TrackerKeyError, MAX_KEY_CHARS)


def set_wandb_key(studio: Studio, key: str) -> dict:
    """Keep `key` as the acting person's W&B API key (replacing theirs); returns `wandb_key_status`."""
    WANDB_CREDENTIAL.set(studio, key)
    return wandb_key_status(studio)


def clear_wandb_key(studio: Studio) -> dict:
    """Forget the acting person's W&B API key; returns `wandb_key_status`."""
    WANDB_CREDENTIAL.clear(studio)
    return wandb_key_status(studio)


def wandb_key_status(studio: Studio) -> dict:
    """Whether the acting person keeps a W&B API key, and its hint (at most its last 4 characters)."""
    hint = WANDB_CREDENTIAL.hint(studio)
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
