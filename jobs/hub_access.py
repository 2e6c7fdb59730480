"""Who reaches the Hugging Face hub with which token, and what a hub repo id may look like.

Each person uses their own hub token (jobs/secrets.py). The operator's token (STUDIO_HF_TOKEN, or the usual
HF_TOKEN) is for admins only: with no accounts the local person is one, and so is the operator's own command line.
Everyone else without a token of their own reaches the hub anonymously, never with the operator's: it could read the
operator's private repos and write to them."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from jobs.credentials import Credential
from jobs.secrets import secret_for_use
from jobs.studio import Studio
from storage.access import current_person

HUB_TOKEN = "hub_token"
MAX_TOKEN_CHARS = 200
REPO_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
"""An owner or a repo name as the hub accepts it: letters, digits, '-', '_', '.', not at either end."""
MAX_PART_CHARS = 96


class HubTokenError(ValueError):
    """Why a hub token was not stored, in words."""


HUB_CREDENTIAL = Credential(HUB_TOKEN, "token", "hub token",
                            "huggingface.co/settings/tokens; a write token to push", HubTokenError, MAX_TOKEN_CHARS)


@dataclass(frozen=True)
class TokenChoice:
    token: str | None
    """The token to send; None: reach the hub anonymously (never the token huggingface_hub would find itself)."""
    whose: str
    """'your' or "the operator's" (for messages and the audit log), or 'no' when there is none."""


def repo_id_problem(repo_id: str, what: str = "repo") -> str | None:
    """Why `repo_id` is not a hub repo id `owner/name`, or None when it is (`what`: 'dataset', 'model' in words)."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(REPO_PART.fullmatch(part) and len(part) <= MAX_PART_CHARS for part in parts):
        return (f"'{repo_id}' is not a hub {what} id: owner/name, each letters, digits, '-', '_' or '.', not "
                f"starting or ending with '-' or '.', at most {MAX_PART_CHARS} characters")
    if any("--" in part or ".." in part for part in parts):
        return f"'{repo_id}' is not a hub {what} id: the hub refuses '--' and '..' in names"
    return None


def operator_token() -> str | None:
    return os.environ.get("STUDIO_HF_TOKEN") or os.environ.get("HF_TOKEN") or None


def may_use_operator_token() -> bool:
    person = current_person()
    return person is None or person.admin


def token_for_use(studio: Studio) -> TokenChoice:
    """The acting person's own hub token, else the operator's where they may use it, else none."""
    own = secret_for_use(studio, HUB_TOKEN)
    if own is not None:
        return TokenChoice(own, "your")
    if may_use_operator_token() and (operator := operator_token()) is not None:
        return TokenChoice(operator, "the operator's")
    return TokenChoice(None, "no")


def set_hub_token(studio: Studio, token: str) -> dict:
    """Keep `token` as the acting person's hub token (replacing theirs); returns `hub_token_status`."""
    HUB_CREDENTIAL.set(studio, token)
    return hub_token_status(studio)


def clear_hub_token(studio: Studio) -> dict:
    """Forget the acting person's hub token; returns `hub_token_status`."""
    HUB_CREDENTIAL.clear(studio)
    return hub_token_status(studio)


def hub_token_status(studio: Studio) -> dict:
    """Whether the acting person keeps a hub token (and its hint), and whose token their hub calls would use."""
    hint = HUB_CREDENTIAL.hint(studio)
    if hint is not None:
        uses = "yours"
    elif may_use_operator_token() and operator_token() is not None:
        uses = "the operator's"
    else:
        uses = "none"
    return {"stored": hint is not None, "hint": hint, "uses": uses}
