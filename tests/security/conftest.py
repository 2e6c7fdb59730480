"""One studio with accounts, attacked from outside: two people (alice, bob) and an admin (root), a real worker, the
real app with its front door (app/web/guard.py) on a free port, and gradio_client sessions signed in as each. The app
trusts 127.0.0.1 as a proxy, so a test can speak for other client addresses through X-Forwarded-For (the login
limits count per address)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from app.web.gate import PASSWORDS
from app.web.server import build_app, launch_options
from storage import users_repo
from tests.conftest import LiveStudio
from tests.servers import free_port

PASSWORD = "correct horse battery"
BASE = "demo-tiny-llama"
PEOPLE = {"alice": dict(admin=False), "bob": dict(admin=False, max_upload_bytes=4096), "root": dict(admin=True)}
APP_SETTINGS = {"STUDIO_TRUSTED_PROXIES": "127.0.0.1", "STUDIO_LOGIN_WINDOW_S": "60"}


@dataclass
class Team:
    live: LiveStudio
    url: str
    root: Path
    app_studio: object
    clients: dict[str, Client] = field(default_factory=dict)

    def client(self, name: str) -> Client:
        return self.clients[name]

    def http(self, name: str | None = None, address: str | None = None) -> httpx.Client:
        """A plain HTTP session, signed in as `name` (None: nobody), from `address` (X-Forwarded-For)."""
        headers = {"X-Forwarded-For": address} if address else {}
        session = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        if name is not None:
            answer = session.post("login", data={"username": name, "password": PASSWORD})
            assert answer.status_code == 200, answer.text
        return session

    def add_person(self, name: str, **limits) -> None:
        with self.live.studio.db.write() as session:
            users_repo.add_user(session, name, PASSWORDS.hash(PASSWORD), **limits)

    def wait(self, name: str, job_id: int, timeout_s: float = 300) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.client(name).predict(job_id, api_name="/get_job")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(1)
        raise AssertionError(f"job {job_id} did not finish:\n{self.live.worker_log()}")


@pytest.fixture(scope="session")
def team(tmp_path_factory, demo_model_dir) -> Iterator[Team]:
    from jobs.studio import open_studio
    from storage.settings import load_settings

    root = tmp_path_factory.mktemp("security")
    live = LiveStudio(root / "data", demo_model_dir, root / "worker.log")
    for name, limits in PEOPLE.items():
        with live.studio.db.write() as session:
            users_repo.add_user(session, name, PASSWORDS.hash(PASSWORD), **limits)
    live.start_worker()
    app_studio = open_studio(load_settings({**live.env, **APP_SETTINGS}))
    app = build_app(app_studio)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
               **launch_options(app_studio, app=app))
    team = Team(live, app.local_url, root, app_studio)
    team.clients = {name: Client(app.local_url, auth=(name, PASSWORD), verbose=False) for name in PEOPLE}
    yield team
    app.close()
    live.stop_worker()


def chat_rows(answer: str, count: int = 24) -> str:
    """A chat dataset whose every answer is `answer` (JSONL text)."""
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                            {"role": "assistant", "content": answer}]}) + "\n" for i in range(count))
