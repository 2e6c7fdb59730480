"""A push to the hub says in words why it did not happen: no token, a bad repo id, no network."""

import os
import subprocess
import sys

import pytest

from jobs.training.hub import HubError, push_folder
from tests.conftest import REPO_ROOT


def test_without_a_token_nothing_is_tried(tmp_path, monkeypatch):
    for token in ("STUDIO_HF_TOKEN", "HF_TOKEN"):
        monkeypatch.delenv(token, raising=False)
    with pytest.raises(HubError, match="No hub token is configured: set STUDIO_HF_TOKEN"):
        push_folder(tmp_path, "me/adapter")
    with pytest.raises(HubError, match="repo_id: 'not a repo' is not of the form owner/name"):
        push_folder(tmp_path, "not a repo")


def test_an_unreachable_hub_is_explained(tmp_path):
    # A closed local port stands in for the hub: the real one cannot be reached from these machines either.
    code = ("from pathlib import Path; from jobs.training.hub import HubError, push_folder\n"
            "try:\n    push_folder(Path('.'), 'me/adapter')\nexcept HubError as error:\n    print(error)")
    env = {**os.environ, "STUDIO_HF_TOKEN": "hf_test", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert "The Hugging Face hub is unreachable from this machine" in result.stdout, result.stderr[-2000:]
