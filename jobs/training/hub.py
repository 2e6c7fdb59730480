"""Pushing an adapter or its merged model to the Hugging Face hub, when the operator configured a write token
(STUDIO_HF_TOKEN, or the usual HF_TOKEN). Every failure comes back as a sentence: no token, no network, refused."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class HubError(RuntimeError):
    """Why a push did not happen, in words."""


def hub_token() -> str | None:
    return os.environ.get("STUDIO_HF_TOKEN") or os.environ.get("HF_TOKEN") or None


def push_folder(folder: Path, repo_id: str, private: bool = True) -> str:
    """Upload `folder` to the model repo `repo_id` (created if missing, private unless asked). Returns its URL."""
    if not REPO_ID.match(repo_id or ""):
        raise HubError(f"repo_id: '{repo_id}' is not of the form owner/name")
    token = hub_token()
    if token is None:
        raise HubError("No hub token is configured: set STUDIO_HF_TOKEN (a write token) where the studio runs.")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                          commit_message="Upload from the QLoRA studio")
    except HfHubHTTPError as error:
        raise HubError(f"The hub refused the push to {repo_id}: {error}") from None
    except Exception as error:  # connection refused, DNS, timeouts (the HTTP client's own error classes)
        raise HubError(f"The Hugging Face hub is unreachable from this machine ({type(error).__name__}: {error}); "
                       f"nothing was pushed. The files stay here to download.") from None
    return str(url)
