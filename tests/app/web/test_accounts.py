"""Accounts: the `python -m app users` commands, the hashes they store, sign-in, and the refusals at start-up. Each
command runs as a real process against a real data dir."""

import asyncio
import subprocess
import sys

import pytest

from app.web.accounts import SignInFirst, person_for
from app.web.gate import Gate
from jobs.data.errors import DatasetError
from jobs.data.store import import_dataset
from jobs.spec import SpecError
from jobs.submit import submit_job
from storage import users_repo
from storage.access import LOCAL_OWNER, Person, acting_as
from tests.conftest import FAST_JOB, REPO_ROOT, studio_environ


def _users(data_dir, *args: str, password: str = "a long enough password") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "users", *args], cwd=REPO_ROOT, input=password + "\n",
                          env=studio_environ(data_dir), capture_output=True, text=True, timeout=120)


def check_login(studio, name: str, password: str) -> bool:
    return asyncio.run(Gate(studio).sign_in(name, password, "127.0.0.1", "test")).token is not None


def test_users_are_added_listed_and_removed_with_salted_argon2_hashes(studio):
    data_dir = studio.settings.data_dir
    assert _users(data_dir, "list").stdout.startswith("no accounts")
    added = _users(data_dir, "add", "alice", "--admin", "--password-stdin")
    assert added.returncode == 0 and "added alice (admin)" in added.stdout, added.stderr
    assert _users(data_dir, "add", "bob", "--max-queued-jobs", "2", "--max-upload-mb", "1", "--max-storage-mb", "10",
                  "--max-datasets", "3").returncode == 0
    listed = _users(data_dir, "list").stdout
    assert "alice (admin)" in listed
    assert "bob (max 2 queued jobs, uploads up to 1 MB, datasets up to 10 MB, at most 3 datasets)" in listed
    with studio.db.read() as session:
        hashes = [u.password_hash for u in users_repo.active_users(session)]
    assert all(h.startswith("$argon2id$") for h in hashes) and hashes[0] != hashes[1]  # same password, own salt
    assert "a long enough password" not in "".join(hashes)

    assert check_login(studio, "alice", "a long enough password")
    assert not check_login(studio, "alice", "a wrong password!!")
    assert not check_login(studio, "nobody", "a long enough password")
    assert person_for(studio, "alice") == Person("alice", admin=True)
    assert person_for(studio, "bob") == Person("bob", admin=False)
    with pytest.raises(SignInFirst):  # accounts exist: a request naming nobody never runs (as nobody or anyone)
        person_for(studio, None)

    removed = _users(data_dir, "remove", "bob")
    assert removed.returncode == 0 and "their datasets and adapters stay" in removed.stdout
    assert not check_login(studio, "bob", "a long enough password")
    again = _users(data_dir, "add", "bob")
    assert again.returncode == 2 and "names are never reused" in again.stderr


def test_a_bad_add_names_every_problem_and_adds_nothing(studio):
    refused = _users(studio.settings.data_dir, "add", "Bad Name", "--max-queued-jobs", "0", password="short")
    assert refused.returncode == 2
    for words in ("name: a user name is", "--max-queued-jobs: at least 1", "password: at least 10 characters"):
        assert words in refused.stderr, refused.stderr
    with studio.db.read() as session:
        assert not users_repo.accounts_exist(session)


def test_without_accounts_the_one_local_person_owns_everything(studio):
    assert person_for(studio, None) == Person(LOCAL_OWNER, admin=True)


def _start(data_dir, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO_ROOT, env=studio_environ(data_dir, **env),
                          capture_output=True, text=True, timeout=120)


def test_any_address_but_loopback_is_refused_without_accounts(tmp_path):
    refused = _start(tmp_path / "data", "--host", "0.0.0.0", "--no-worker")
    assert refused.returncode != 0
    assert "refusing to listen on 0.0.0.0 without accounts" in refused.stderr
    assert "python -m app users add NAME --admin" in refused.stderr
    old_login = _start(tmp_path / "data", "--no-worker", STUDIO_AUTH="me:secret")
    assert old_login.returncode != 0 and "STUDIO_AUTH (one shared login) is gone" in old_login.stderr


def test_a_person_s_limits_hold_at_submit_and_upload(studio, tmp_path):
    with studio.db.write() as session:
        users_repo.add_user(session, "carol", "not-used", max_queued_jobs=1, max_upload_bytes=1 << 10)
        users_repo.add_user(session, "root", "not-used", admin=True)
    carol = Person("carol")
    with acting_as(carol):
        submit_job(studio, {**FAST_JOB, "name": "first"})
        with pytest.raises(SpecError) as caught:
            submit_job(studio, {**FAST_JOB, "name": "second"})
        assert "you have 1 jobs queued or running and may have 1 at once" in caught.value.as_text()
        with pytest.raises(SpecError, match="only an admin sets priorities"):
            submit_job(studio, {**FAST_JOB, "name": "urgent"}, priority=5)
        big = tmp_path / "big.jsonl"
        big.write_text('{"text": "' + "x" * 2000 + '"}\n')
        with pytest.raises(DatasetError, match="capped at 1,024 \\(the limit of carol's account\\)"):
            import_dataset(studio, big, "big")
    with acting_as(Person("root", admin=True)):  # an admin has no queue limit and may set priorities
        submit_job(studio, {**FAST_JOB, "name": "admin-1"}, priority=5)
        submit_job(studio, {**FAST_JOB, "name": "admin-2"})


def test_a_bug_shows_a_non_admin_an_incident_number_and_an_admin_the_error(studio, caplog):
    import gradio as gr

    from app.web.accounts import _as_person

    with studio.db.write() as session:
        users_repo.add_user(session, "dana", "not-used")
        users_repo.add_user(session, "root", "not-used", admin=True)

    def broken(name: str) -> str:
        raise RuntimeError(f"cannot open /srv/secret/{name}")

    guarded = _as_person(broken, studio)
    with pytest.raises(gr.Error) as caught:
        guarded(gr.Request(username="dana"), "x")
    assert "incident" in caught.value.message and "/srv/secret" not in caught.value.message
    incident = caught.value.message.split("incident ")[1].split(")")[0]
    assert any(incident in r.getMessage() and r.exc_info for r in caught_records(caplog))  # the log keeps the trace
    with pytest.raises(RuntimeError, match="/srv/secret/x"):
        guarded(gr.Request(username="root"), "x")


def caught_records(caplog):
    return [r for r in caplog.records if r.name == "app"]
