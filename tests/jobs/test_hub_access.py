"""Whose hub token a request uses: each person's own; the operator's only for admins, the local person and the
command line; nobody else's ever. A hub token is checked before it is kept, and never shown back."""

import pytest

from jobs.hub_access import (
    HubTokenError,
    clear_hub_token,
    hub_token_status,
    repo_id_problem,
    set_hub_token,
    token_for_use,
)
from jobs.studio import open_studio
from storage.access import Person, acting_as
from storage.settings import load_settings

OPERATOR_TOKEN = "hf_operator_0d1e2f3a4b"


@pytest.fixture
def studio(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HF_TOKEN", OPERATOR_TOKEN)
    opened = open_studio(load_settings({"STUDIO_DATA_DIR": str(tmp_path / "data")}))
    yield opened
    opened.db.dispose()


@pytest.mark.parametrize(("token", "words"), [
    ("", "paste your hub token"), (" \n", "paste your hub token"), ("hf_a b", "no spaces"), ("hf_a\nb", "no spaces"),
    ("hf_\tab", "no spaces"),
    ("hf_\x00ab", "control characters"), ("h" * 201, "201 characters; a hub token has at most 200"),
])
def test_a_token_that_cannot_be_one_is_refused(studio, token, words):
    with acting_as(Person("bob")), pytest.raises(HubTokenError, match=words):
        set_hub_token(studio, token)
    with acting_as(Person("bob")):
        assert hub_token_status(studio) == {"stored": False, "hint": None, "uses": "none"}


def test_set_status_and_clear_show_only_the_hint(studio):
    token = "hf_" + "k" * 193 + "WXYZ"
    with acting_as(Person("bob")):
        status = set_hub_token(studio, token)
        assert status == {"stored": True, "hint": "…WXYZ", "uses": "yours"} == hub_token_status(studio)
        assert token_for_use(studio).token == token
        assert set_hub_token(studio, f"  {token}\n")["hint"] == "…WXYZ"  # a paste's spaces and line break dropped,
        assert token_for_use(studio).token == token  # as for a W&B key (jobs/credentials.py)
    with acting_as(Person("alice")):
        assert hub_token_status(studio)["stored"] is False
    with acting_as(Person("bob")):
        assert clear_hub_token(studio) == {"stored": False, "hint": None, "uses": "none"}
        assert token_for_use(studio).token is None


@pytest.mark.parametrize(("person", "uses"), [
    (Person("bob"), "none"), (Person("root", admin=True), "the operator's"),
    (Person("local", admin=True), "the operator's"), (None, "the operator's"),
], ids=["person", "admin", "local", "cli"])
def test_the_operators_token_is_for_admins_the_local_person_and_the_command_line(studio, person, uses):
    with acting_as(person):
        choice = token_for_use(studio)
        assert hub_token_status(studio)["uses"] == uses
    assert choice.token == (OPERATOR_TOKEN if uses != "none" else None)


@pytest.mark.parametrize(("repo_id", "ok"), [
    ("bob/adapter", True), ("Org-1/my_model.v2", True), ("bob", False), ("bob/a/b", False), ("../x", False),
    ("bob/-x", False), ("bob/x.", False), ("b--b/x", False), ("bob/x..y", False), ("bob/" + "x" * 97, False),
    ("bob/x y", False), ("https://huggingface.co/bob/x", False), ("", False),
])
def test_a_repo_id_is_owner_slash_name_as_the_hub_accepts_it(repo_id, ok):
    assert (repo_id_problem(repo_id) is None) == ok
