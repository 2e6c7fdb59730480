"""Signing in, staying signed in, and being signed out, attacked over HTTP: pages and API calls refuse nobody,
failed sign-ins are limited per address and account with "try again in N s", a removed or disabled account or a
changed password ends sessions on the very next request, cookies and headers are what a browser needs to keep a
session from scripts and other sites."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import pytest
from gradio_client import Client

from app.account.users_cli import users_command
from app.web.gate import COOKIE, Gate
from storage import sessions_repo
from storage.models import SignInSession, utcnow
from tests.conftest import FAST_JOB
from tests.security.conftest import PASSWORD

pytestmark = pytest.mark.slow


def test_nobody_reaches_a_page_an_api_call_or_a_file(team):
    nobody = team.http()
    page = nobody.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("login")
    login_page = nobody.get("/login")
    assert login_page.status_code == 200 and 'name="password"' in login_page.text
    for path in ("/config", "/gradio_api/info", "/gradio_api/queue/data?session_hash=x"):
        assert nobody.get(path).status_code == 401, path
    assert nobody.post("/gradio_api/queue/join", json={}).status_code == 401
    assert nobody.post("/gradio_api/upload", files={"files": ("a.jsonl", b"{}")}).status_code == 401
    forged = team.http()
    forged.cookies.set(COOKIE, "forged-token")
    assert forged.get("/config").status_code == 401


def test_cookies_and_headers_keep_a_session_from_scripts_and_other_sites(team):
    answer = team.http().post("/login", data={"username": "alice", "password": PASSWORD})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # plain http here
    behind_tls = team.http().post("/login", data={"username": "alice", "password": PASSWORD},
                                  headers={"X-Forwarded-Proto": "https"})  # from the trusted proxy
    assert "Secure" in behind_tls.headers["set-cookie"]
    assert "max-age=" in behind_tls.headers.get("strict-transport-security", "")
    page = team.http("alice").get("/")
    assert page.status_code == 200
    headers = page.headers
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert "'unsafe-inline'" not in policy["script-src"] and "frame-ancestors" in policy
    assert policy["object-src"] == "'none'" and "*" not in policy["script-src"]
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
    assert len(inline) == policy["script-src"].count("'sha256-")  # each inline script of the page, and no other


def test_failed_sign_ins_wait_per_address_and_account_and_others_are_not_stalled(team):
    team.add_person("cora")
    attacker = team.http(address="203.0.113.7")
    for _ in range(5):
        assert attacker.post("/login", data={"username": "cora", "password": "guess"}).status_code == 401
    refused = attacker.post("/login", data={"username": "cora", "password": PASSWORD})  # right, but too late
    assert refused.status_code == 429 and "try again in" in refused.json()["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    browser = attacker.post("/login", data={"username": "cora", "password": PASSWORD}, headers={"Accept": "text/html"},
                            follow_redirects=False)
    assert browser.status_code == 303 and "wait=" in browser.headers["location"]
    wait_page = attacker.get("/" + browser.headers["location"].lstrip("/"))
    assert "Too many failed sign-ins: try again in" in wait_page.text
    # Cora herself, from her own address, is not locked out by the attacker...
    assert team.http(address="198.51.100.2").post("/login", data={"username": "cora",
                                                                  "password": PASSWORD}).status_code == 200
    # ...and every failure is in the audit log an admin reads.
    events = team.client("root").predict(500, api_name="/audit_log")
    failures = [e for e in events if e["action"] == "login_failed" and e["actor"] == "cora"]
    assert len(failures) == 5 and {e["client"] for e in failures} == {"203.0.113.7"}
    with pytest.raises(Exception, match="only an admin"):
        team.client("alice").predict(api_name="/audit_log")


def test_an_address_that_guesses_many_names_waits_too(team):
    spray = team.http(address="203.0.113.9")
    for index in range(20):
        spray.post("/login", data={"username": f"nobody{index}", "password": "guess"})
    assert spray.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 429


def test_removing_an_account_ends_its_sessions_at_once_and_cancels_its_queued_jobs(team):
    team.add_person("dave")
    dave = Client(team.url, auth=("dave", PASSWORD), verbose=False)
    browser = team.http("dave")
    job_id = dave.predict(json.dumps({**FAST_JOB, "name": "daves", "max_steps": 400}), 0, api_name="/submit_job")
    assert users_command(team.live.studio, ["remove", "dave"]) == 0
    with pytest.raises(Exception):  # noqa: B017 - the next call is refused, whatever the client makes of it
        dave.predict(json.dumps({**FAST_JOB, "name": "more"}), 0, api_name="/submit_job")
    assert browser.get("/config").status_code == 401
    assert browser.get("/", follow_redirects=False).status_code == 303
    job = team.client("root").predict(job_id, api_name="/get_job")
    assert job["owner"] == "dave" and (job["status"] == "cancelled" or job["cancel_requested"])
    assert team.http().post("/login", data={"username": "dave", "password": PASSWORD}).status_code == 401
    # No job anyone can see has an empty owner.
    assert all(j.get("owner") for j in team.client("root").predict(api_name="/list_jobs"))


def test_disabling_ends_sessions_and_enabling_lets_the_person_back(team):
    team.add_person("erin")
    session = team.http("erin")
    assert session.get("/config").status_code == 200
    assert users_command(team.live.studio, ["disable", "erin"]) == 0
    assert session.get("/config").status_code == 401
    assert team.http().post("/login", data={"username": "erin", "password": PASSWORD}).status_code == 401
    assert users_command(team.live.studio, ["enable", "erin"]) == 0
    assert team.http("erin").get("/config").status_code == 200


def test_a_new_password_ends_the_persons_other_sessions_but_not_this_one(team):
    team.add_person("fay")
    elsewhere = team.http("fay")
    here = Client(team.url, auth=("fay", PASSWORD), verbose=False)
    assert "1 other session" in here.predict(PASSWORD, "a brand new password", api_name="/change_password")
    assert elsewhere.get("/config").status_code == 401
    assert here.predict(api_name="/my_account")["name"] == "fay"  # the session that changed it goes on
    assert team.http().post("/login", data={"username": "fay", "password": PASSWORD}).status_code == 401
    fresh = team.http()
    assert fresh.post("/login", data={"username": "fay", "password": "a brand new password"}).status_code == 200


def test_sessions_end_after_their_idle_and_absolute_limits(studio):
    from storage import users_repo

    with studio.db.write() as session:
        users_repo.add_user(session, "gus", "unused-hash")
        token = sessions_repo.start(session, "gus", "127.0.0.1", "test")
    gate = Gate(studio)
    assert gate.identify(token).name == "gus"
    with studio.db.write() as session:  # unused for longer than the idle limit
        row = session.query(SignInSession).one()
        row.last_seen_at = utcnow() - timedelta(seconds=studio.settings.session_idle_s + 5)
    assert gate.identify(token).name is None
    with studio.db.write() as session:  # busy, but older than the absolute limit
        row = session.query(SignInSession).one()
        row.last_seen_at = utcnow()
        row.created_at = utcnow() - timedelta(seconds=studio.settings.session_max_s + 5)
    assert gate.identify(token).name is None
    assert asyncio.run(gate.sign_in("gus", "x" * 5000, "127.0.0.1", "test")).status == 401  # never hashed
