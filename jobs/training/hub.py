"""Pushing an adapter or its merged model to the Hugging Face hub as the person asking: with their own hub token
(admins, the local person and the operator's command line may use the operator's, jobs/hub_access.py), and only
into a namespace that token's account owns: its user name or one of its organisations, as the hub's whoami says.
A token that may write elsewhere (the operator's, say) still never writes outside them. Every push and every
refusal goes into the audit log. Every failure comes back as a sentence: no token, someone else's namespace, no
network, refused."""

from __future__ import annotations

from pathlib import Path

from jobs.hub_access import TokenChoice, may_use_operator_token, repo_id_problem, token_for_use
from jobs.secrets import SecretError
from jobs.studio import Studio
from storage import audit_repo
from storage.access import current_person


class HubError(RuntimeError):
    """Why a push did not happen, in words."""


def push_folder(studio: Studio, folder: Path, repo_id: str, private: bool = True) -> str:
    """Upload `folder` to the model repo `repo_id` (created if missing, private unless asked). Returns its URL."""
    person = current_person()
    actor = person.name if person is not None else None
    try:
        url, choice = _push(studio, Path(folder), repo_id, private)
    except HubError as error:
        _audit(studio, "hub_push_refused", actor, repo_id, {"reason": str(error)})
        raise
    _audit(studio, "hub_push", actor, repo_id, {"url": url, "token": choice.whose, "private": private,
                                                "folder": Path(folder).name})
    return url


def _push(studio: Studio, folder: Path, repo_id: str, private: bool) -> tuple[str, TokenChoice]:
    if problem := repo_id_problem(repo_id or "", "model"):
        raise HubError(f"repo_id: {problem}")
    try:
        choice = token_for_use(studio)
    except SecretError as error:
        raise HubError(str(error)) from None
    if choice.token is None:
        raise HubError(_no_token())
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=choice.token)
    try:
        allowed = _namespaces(api.whoami())
    except HfHubHTTPError as error:
        raise HubError(f"The hub did not accept {choice.whose} hub token ({error}); nothing was pushed.") from None
    except Exception as error:  # connection refused, DNS, timeouts (the HTTP client's own error classes)
        raise _unreachable(error) from None
    owner = repo_id.split("/")[0]
    if owner not in allowed:
        yours = " or ".join(f"'{name}/...'" for name in sorted(allowed)) or "nowhere (the hub names no account)"
        raise HubError(f"repo_id: '{repo_id}' is in the namespace '{owner}', which is not {choice.whose} hub "
                       f"account's: push to {yours}. Nothing was pushed.")
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                          commit_message="Upload from the QLoRA studio")
    except HfHubHTTPError as error:
        raise HubError(f"The hub refused the push to {repo_id}: {error}") from None
    except Exception as error:
        raise _unreachable(error) from None
    return str(url), choice


def _namespaces(account: dict) -> set[str]:
    """The token's user name and organisations: where it may create repos."""
    names = {account.get("name")} | {org.get("name") for org in account.get("orgs") or [] if isinstance(org, dict)}
    return {name for name in names if isinstance(name, str) and name}


def _no_token() -> str:
    if may_use_operator_token():
        return ("No hub token is configured: set your own hub token (a write token from "
                "huggingface.co/settings/tokens) or STUDIO_HF_TOKEN where the studio runs.")
    return ("No hub token is configured for you: set your own hub token (a write token from "
            "huggingface.co/settings/tokens); the studio's own token is for admins only.")


def _unreachable(error: Exception) -> HubError:
    return HubError(f"The Hugging Face hub is unreachable from this machine ({type(error).__name__}: {error}); "
                    f"nothing was pushed. The files stay here to download.")


def _audit(studio: Studio, action: str, actor: str | None, repo_id: str, detail: dict) -> None:
    with studio.db.write() as session:
        audit_repo.record(session, action, actor=actor, target=repo_id or None, detail=detail)
