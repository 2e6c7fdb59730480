"""A push to the hub goes out as the person asking: with their own hub token (the operator's is for admins only),
into their own namespace or one of their organisations' as the hub's whoami reports it, and the audit log records
each push and each refusal. Every failure is a sentence: no token, someone else's namespace, no network.

The hub cannot be reached from these machines: HfApi's whoami, create_repo and upload_folder are replaced at the
client's edge by stand-ins that answer as the hub would for each token and record what would have been sent."""

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from jobs.hub_access import set_hub_token
from jobs.studio import open_studio
from jobs.training.hub import HubError, push_folder
from storage import audit_repo
from storage.access import Person, acting_as
from storage.settings import load_settings

BOB_TOKEN, ALICE_TOKEN, OPERATOR_TOKEN = "hf_bob_4f9e1c2d7a", "hf_alice_88c1e0b3d2", "hf_operator_0d1e2f3a4b"
ACCOUNTS = {BOB_TOKEN: {"name": "bob", "orgs": [{"name": "bobs-lab"}]},
            ALICE_TOKEN: {"name": "alice", "orgs": []},
            OPERATOR_TOKEN: {"name": "studio-ops", "orgs": [{"name": "acme"}]}}
BOB, ALICE, ROOT = Person("bob"), Person("alice"), Person("root", admin=True)


@pytest.fixture
def studio(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HF_TOKEN", OPERATOR_TOKEN)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    opened = open_studio(load_settings({"STUDIO_DATA_DIR": str(tmp_path / "data")}))
    yield opened
    opened.db.dispose()


@pytest.fixture
def hub(monkeypatch) -> list[tuple]:
    """The hub's answers per token; returns the calls that reached it as (method, token, repo)."""
    calls: list[tuple] = []

    def whoami(self, token=None, **_):
        calls.append(("whoami", self.token, None))
        if self.token not in ACCOUNTS:
            request = httpx2.Request("GET", "https://huggingface.co/api/whoami-v2")
            raise HfHubHTTPError("401 Unauthorized: invalid token", response=httpx2.Response(401, request=request))
        return ACCOUNTS[self.token]

    def create_repo(self, repo_id, **_):
        calls.append(("create_repo", self.token, repo_id))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, **_):
        calls.append(("upload_folder", self.token, repo_id))

    for name, stand_in in (("whoami", whoami), ("create_repo", create_repo), ("upload_folder", upload_folder)):
        monkeypatch.setattr(HfApi, name, stand_in)
    return calls


def _uploads(calls) -> list[tuple]:
    return [call for call in calls if call[0] == "upload_folder"]


def _audit(studio) -> list[tuple]:
    with studio.db.read() as session:
        return [(e.action, e.actor, e.target, (e.detail or {}).get("token")) for e in audit_repo.recent(session, 20)]


def test_bob_cannot_push_into_alices_namespace_with_his_own_token(studio, hub, tmp_path):
    with acting_as(BOB):
        set_hub_token(studio, BOB_TOKEN)
        with pytest.raises(HubError, match="'alice/x' is in the namespace 'alice', which is not your hub account's: "
                                           "push to 'bob/...' or 'bobs-lab/...'. Nothing was pushed."):
            push_folder(studio, tmp_path, "alice/x")
        assert _uploads(hub) == [] and not [call for call in hub if call[0] == "create_repo"]
        assert push_folder(studio, tmp_path, "bobs-lab/x") == "https://huggingface.co/bobs-lab/x"
    assert _uploads(hub) == [("upload_folder", BOB_TOKEN, "bobs-lab/x")]
    assert _audit(studio) == [("hub_push", "bob", "bobs-lab/x", "your"), ("hub_push_refused", "bob", "alice/x", None)]


def test_bob_without_a_token_of_his_own_is_refused_though_the_operator_has_one(studio, hub, tmp_path):
    with acting_as(BOB), pytest.raises(HubError, match="No hub token is configured for you: set your own hub token"):
        push_folder(studio, tmp_path, "studio-ops/x")
    assert hub == [], "the operator's token was never sent"
    assert _audit(studio) == [("hub_push_refused", "bob", "studio-ops/x", None)]


@pytest.mark.parametrize("person", [ROOT, Person("local", admin=True), None], ids=["admin", "local", "cli"])
def test_an_admin_may_push_with_the_operators_token_into_its_namespaces_only(studio, hub, tmp_path, person):
    with acting_as(person):
        push_folder(studio, tmp_path, "acme/x")
        with pytest.raises(HubError, match="not the operator's hub account's: push to 'acme/...' or 'studio-ops/...'"):
            push_folder(studio, tmp_path, "alice/x")
    assert _uploads(hub) == [("upload_folder", OPERATOR_TOKEN, "acme/x")]
    actor = person.name if person else None
    assert _audit(studio) == [("hub_push_refused", actor, "alice/x", None), ("hub_push", actor, "acme/x",
                                                                             "the operator's")]


def test_an_admins_own_token_comes_before_the_operators(studio, hub, tmp_path):
    with acting_as(ROOT):
        set_hub_token(studio, ALICE_TOKEN)  # an admin who is also alice on the hub
        push_folder(studio, tmp_path, "alice/x")
    assert _uploads(hub) == [("upload_folder", ALICE_TOKEN, "alice/x")]


def test_a_token_the_hub_refuses_is_said_so_and_nothing_is_uploaded(studio, hub, tmp_path):
    with acting_as(BOB):
        set_hub_token(studio, "hf_revoked_000000")
        with pytest.raises(HubError, match="The hub did not accept your hub token"):
            push_folder(studio, tmp_path, "bob/x")
    assert _uploads(hub) == []


def test_without_any_token_or_with_a_bad_repo_id_nothing_is_tried(studio, hub, tmp_path, monkeypatch):
    monkeypatch.delenv("STUDIO_HF_TOKEN")
    with pytest.raises(HubError, match="No hub token is configured: set your own hub token .* or STUDIO_HF_TOKEN"):
        push_folder(studio, tmp_path, "me/adapter")
    with pytest.raises(HubError, match="repo_id: 'not a repo' is not a hub model id"):
        push_folder(studio, tmp_path, "not a repo")
    assert hub == []


def test_an_unreachable_hub_is_explained(studio, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # A closed local port stands in for the hub: the real one cannot be reached from these machines either.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubError, match="The Hugging Face hub is unreachable from this machine"):
        push_folder(studio, tmp_path, "acme/adapter")
