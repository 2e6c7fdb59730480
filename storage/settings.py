"""Every setting the studio reads from the environment, in one place."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    """Root of everything the studio writes: database, queue file, models, datasets, runs, adapters."""
    database_url: str
    """SQLAlchemy URL of the app database (the job ledger). SQLite in the data dir unless set."""
    queue_url: str
    """Where Huey keeps its messages: `sqlite:///path` (default, in the data dir) or `redis://host:port/db`."""
    heartbeat_s: float = 5.0
    """How often a worker stamps the heartbeat of the job it runs."""
    cancel_grace_s: float = 6.0
    """How long a training process asked to cancel may take to stop by itself before its worker kills it
    (STUDIO_CANCEL_GRACE_S). With the worker's half-second look at the cancel flag and the kill's bookkeeping, a
    cancel ends within this plus about a second: 6 s keeps it under 10 s, and leaves time for a checkpoint save
    already under way on a small base (a cancelled run saves none of its own)."""
    lease_s: float = 60.0
    """A running job whose heartbeat is older than this is presumed dead and requeued by the reaper."""
    max_attempts: int = 3
    """A job that loses its worker this many times is marked failed instead of requeued."""
    reap_interval_s: float | None = None
    """Seconds between reaper passes (in the app and every worker); None: a third of the lease."""
    max_upload_bytes: int = 1 << 30
    """The largest dataset file accepted (far above any chat set; a bigger file is refused, not read)."""
    max_storage_bytes: int = 20 << 30
    """How much disk one person's stored datasets may take together (STUDIO_MAX_STORAGE_BYTES), unless their account
    says otherwise."""
    max_datasets: int = 200
    """How many datasets one person may keep (STUDIO_MAX_DATASETS), unless their account says otherwise."""
    max_line_bytes: int = 16 << 20
    """The longest line (JSONL) or cell (CSV) accepted, checked while reading."""
    max_rows: int = 2_000_000
    """The most rows one dataset may hold, checked while reading."""
    max_queued_jobs: int = 20
    """With accounts: how many jobs a person (not an admin) may have queued or running at once, unless their account
    says otherwise."""
    webhook_url: str | None = None
    """Where the app POSTs a JSON notice of each job event (succeeded, failed, requeued, cancelled)."""
    chat_memory_bytes: int | None = 8 << 30
    """How much memory the Chat tab's loaded bases may take together (least recently used unloaded first)."""
    max_prompt_tokens: int = 4096
    """The most tokens a generation's prompt may have (STUDIO_MAX_PROMPT_TOKENS): chat, suites and every other
    generation path. A base with a shorter context allows its context less max_new_tokens; a prompt of more than 8
    characters per token of this limit is refused before it is tokenized."""
    max_generations_per_person: int = 2
    """How many generations one person may have running or waiting at once (STUDIO_MAX_GENERATIONS_PER_PERSON); one
    more is refused in words."""
    max_waiting_generations: int = 32
    """How many generations everyone together may have running or waiting at once (STUDIO_MAX_WAITING_GENERATIONS);
    one more is refused until some end."""
    generation_slice_s: float = 0.25
    """How long one generation runs before the next person's gets a turn (STUDIO_GENERATION_SLICE_S); it goes on from
    its KV cache at its next turn."""
    serve_batch_window_s: float = 0.05
    """How long the OpenAI-compatible endpoint (app/web/openai_api.py) waits for more of one person's requests on one
    base before their batched generation starts (STUDIO_SERVE_BATCH_WINDOW_S)."""
    serve_batch_rows: int = 16
    """The most rows (choices) one batched generation of that endpoint holds (STUDIO_SERVE_BATCH_ROWS); a person may
    have STUDIO_MAX_GENERATIONS_PER_PERSON such batches running and as many rows again waiting."""
    model_dirs: tuple[Path, ...] = ()
    """Folders local base models may be loaded from (STUDIO_MODEL_DIRS, separated by ':'); empty: the models folder
    and the Hugging Face cache."""
    host_name: str = ""
    """This host's name in worker identities and locks (STUDIO_HOST_NAME, else the system's host name)."""
    scratch_dir: Path | None = None
    """This host's own folder (STUDIO_SCRATCH_DIR): device locks, which must never be shared between hosts. Default:
    `<data dir>/hosts/<host name>`, so hosts that share a data dir never share a lock file either."""
    shared_group: bool = False
    """Whether the data dir's group may read it too (STUDIO_SHARED_GROUP=1: folders 0750, files 0640), for workers on
    several hosts that share it under one group; off: only the studio's user (0700, 0600). Never anyone else."""
    spare_child: bool = True
    """Whether a worker keeps the next job's process started, its training libraries imported (STUDIO_SPARE_CHILD=0:
    each job starts its own interpreter when it begins)."""
    jemalloc: bool = True
    """Whether a worker's training processes run with jemalloc preloaded where libjemalloc is installed (STUDIO_JEMALLOC
    =0: glibc's malloc, which keeps each step's freed activations: jobs.queue.spare)."""
    session_idle_s: float = 8 * 3600.0
    """With accounts: a sign-in unused this long has ended (STUDIO_SESSION_IDLE_S)."""
    session_max_s: float = 7 * 86400.0
    """With accounts: a sign-in this old has ended, however busy (STUDIO_SESSION_MAX_S)."""
    login_window_s: float = 300.0
    """Failed sign-ins count against the limits below for this long (STUDIO_LOGIN_WINDOW_S)."""
    login_failures_per_pair: int = 5
    """Failed sign-ins one client address may make for one account within the window before it must wait
    (STUDIO_LOGIN_FAILURES)."""
    login_failures_per_client: int = 20
    """Failed sign-ins one client address may make for any accounts within the window (STUDIO_LOGIN_CLIENT_FAILURES)."""
    login_failures_per_account: int = 50
    """Failed sign-ins for one account from all addresses within the window (STUDIO_LOGIN_ACCOUNT_FAILURES): a
    spread-out guess at one password also waits, while one attacker alone cannot lock the person out."""
    login_threads: int = 1
    """Threads that check passwords (argon2 takes ~64 MiB and tens of ms each), off the web server's event loop
    (STUDIO_LOGIN_THREADS)."""
    login_backlog: int = 32
    """Sign-ins that may wait for a password check at once; more are refused with "busy, try again"
    (STUDIO_LOGIN_BACKLOG)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto the studio believes
    (STUDIO_TRUSTED_PROXIES, comma-separated). Empty: the connecting address is the client."""
    user_code: tuple[str, ...] = ()
    """Who may submit code that runs in a training process, a GRPO reward function (STUDIO_USER_CODE, comma-separated):
    account names, 'admins' (every admin, the person without accounts, and the operator's CLI), or empty (the
    default): nobody. The code runs as the worker's user with its access to the data dir (docs/security.md)."""
    lm_eval_tasks: Path | None = None
    """The folder of lm-evaluation-harness task YAML (and their local data) the eval job's `benchmark` source picks
    tasks from (STUDIO_LM_EVAL_TASKS). The operator's: task YAML may run Python from it. Unset: no benchmarks."""
    pool: str | None = None
    """The pool this host's workers serve (STUDIO_POOL, e.g. `a100-80g`): they run only jobs that ask for it. A worker
    without a pool runs only jobs that ask for none."""
    rdzv_address: str | None = None
    """The private address the pool's other hosts reach this host at (STUDIO_RDZV_ADDRESS), for one job across hosts
    (docs/scale-out.md); unset: this host's workers neither lead nor join such a job."""
    rdzv_ports: tuple[int, int] = (29500, 29599)
    """The ports (STUDIO_RDZV_PORTS, `first-last`) a job led from this host may listen on for its rendezvous: open them
    to the pool's other hosts."""
    gang_reserve_after_s: float = 300.0
    """How long a job that needs a gang across its pool's hosts may wait while smaller jobs pass it
    (STUDIO_GANG_RESERVE_AFTER_S); then the pool's workers that may be its nodes claim nothing behind it until it has
    its hosts (jobs.queue.gang, docs/scale-out.md). 0: nothing passes a gang job."""
    worker_devices: int | None = None
    """How many devices (ranks) one of this host's workers offers a job (STUDIO_WORKER_DEVICES); unset: its visible
    GPUs, or on a CPU its cores."""

    def allows_code(self, name: str | None, admin: bool) -> bool:
        """Whether this person may have code of theirs run in a training process (user_code). `name` None: the
        operator's own tools; `admin`: an admin, or the one person of a studio without accounts."""
        if name is None or admin:
            return "admins" in self.user_code or (name is not None and name in self.user_code)
        return name in self.user_code

    @property
    def locks_dir(self) -> Path:
        return (self.scratch_dir or self.data_dir / "hosts" / (self.host_name or "localhost")) / "locks"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def merged_dir(self) -> Path:
        return self.data_dir / "merged"

    @property
    def gguf_dir(self) -> Path:
        """GGUF exports: `adapter-<id>/<quantization>/` (model GGUF, LoRA GGUF, Modelfile, README)."""
        return self.data_dir / "gguf"


POOL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
"""A pool name: lowercase letters, digits, '.', '_' and '-' (it also names the pool's queue)."""


def check_pool_name(pool: str) -> str | None:
    """Why `pool` cannot name a pool, or None when it can."""
    if POOL_NAME.fullmatch(pool):
        return None
    return (f"'{pool}' is not a pool name: use 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit (e.g. a100-80g)")


def current_host(environ: dict[str, str] | None = None) -> str:
    """STUDIO_HOST_NAME, else the system's host name: how this host names itself in the ledger and its locks."""
    env = os.environ if environ is None else environ
    return env.get("STUDIO_HOST_NAME") or socket.gethostname()


def _pool(env) -> str | None:
    pool = env.get("STUDIO_POOL") or None
    if pool is not None and (problem := check_pool_name(pool)):
        raise ValueError(f"STUDIO_POOL: {problem}")
    return pool


def _ports(env) -> tuple[int, int]:
    text = env.get("STUDIO_RDZV_PORTS", "").strip() or "29500-29599"
    first, _, last = text.partition("-")
    if not (first.isdigit() and (last or first).isdigit()) or not 1024 <= int(first) <= int(last or first) <= 65535:
        raise ValueError(f"STUDIO_RDZV_PORTS: '{text}' is not a port range: write FIRST-LAST, e.g. 29500-29599, "
                         "within 1024-65535")
    return int(first), int(last or first)


def _positive(env, name: str) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name}: '{text}' is not a whole number of at least 1")
    return int(text)


def _switch(env, name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: '{value}' is neither on (1, true, yes, on) nor off (0, false, no, off)")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment (or the given mapping)."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("STUDIO_DATA_DIR", "./studio-data")).expanduser().resolve()
    database_url = env.get("STUDIO_DATABASE_URL") or f"sqlite:///{data_dir / 'studio.db'}"
    queue_url = env.get("STUDIO_QUEUE_URL") or f"sqlite:///{data_dir / 'queue.db'}"
    host = current_host(env)
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        queue_url=queue_url,
        heartbeat_s=float(env.get("STUDIO_HEARTBEAT_S", "5")),
        cancel_grace_s=float(env.get("STUDIO_CANCEL_GRACE_S", "6")),
        lease_s=float(env.get("STUDIO_LEASE_S", "60")),
        max_attempts=int(env.get("STUDIO_MAX_ATTEMPTS", "3")),
        reap_interval_s=float(env["STUDIO_REAP_S"]) if env.get("STUDIO_REAP_S") else None,
        max_upload_bytes=int(env.get("STUDIO_MAX_UPLOAD_BYTES", 1 << 30)),
        max_storage_bytes=int(env.get("STUDIO_MAX_STORAGE_BYTES", 20 << 30)),
        max_datasets=int(env.get("STUDIO_MAX_DATASETS", 200)),
        max_line_bytes=int(env.get("STUDIO_MAX_LINE_BYTES", 16 << 20)),
        max_rows=int(env.get("STUDIO_MAX_ROWS", 2_000_000)),
        max_queued_jobs=int(env.get("STUDIO_MAX_QUEUED_JOBS", 20)),
        webhook_url=env.get("STUDIO_WEBHOOK_URL") or None,
        chat_memory_bytes=int(env.get("STUDIO_CHAT_MEMORY_BYTES", 8 << 30)),
        max_prompt_tokens=int(env.get("STUDIO_MAX_PROMPT_TOKENS", 4096)),
        max_generations_per_person=int(env.get("STUDIO_MAX_GENERATIONS_PER_PERSON", 2)),
        max_waiting_generations=int(env.get("STUDIO_MAX_WAITING_GENERATIONS", 32)),
        generation_slice_s=float(env.get("STUDIO_GENERATION_SLICE_S", 0.25)),
        serve_batch_window_s=float(env.get("STUDIO_SERVE_BATCH_WINDOW_S", 0.05)),
        serve_batch_rows=int(env.get("STUDIO_SERVE_BATCH_ROWS", 16)),
        model_dirs=tuple(Path(part) for part in env.get("STUDIO_MODEL_DIRS", "").split(os.pathsep) if part),
        host_name=host,
        scratch_dir=Path(env.get("STUDIO_SCRATCH_DIR") or data_dir / "hosts" / host).expanduser().resolve(),
        pool=_pool(env),
        rdzv_address=env.get("STUDIO_RDZV_ADDRESS", "").strip() or None,
        rdzv_ports=_ports(env),
        gang_reserve_after_s=float(env.get("STUDIO_GANG_RESERVE_AFTER_S", 300)),
        worker_devices=_positive(env, "STUDIO_WORKER_DEVICES"),
        spare_child=_switch(env, "STUDIO_SPARE_CHILD", True),
        jemalloc=_switch(env, "STUDIO_JEMALLOC", True),
        shared_group=_switch(env, "STUDIO_SHARED_GROUP", False),
        session_idle_s=float(env.get("STUDIO_SESSION_IDLE_S", 8 * 3600)),
        session_max_s=float(env.get("STUDIO_SESSION_MAX_S", 7 * 86400)),
        login_window_s=float(env.get("STUDIO_LOGIN_WINDOW_S", 300)),
        login_failures_per_pair=int(env.get("STUDIO_LOGIN_FAILURES", 5)),
        login_failures_per_client=int(env.get("STUDIO_LOGIN_CLIENT_FAILURES", 20)),
        login_failures_per_account=int(env.get("STUDIO_LOGIN_ACCOUNT_FAILURES", 50)),
        login_threads=max(1, int(env.get("STUDIO_LOGIN_THREADS", 1))),
        login_backlog=max(1, int(env.get("STUDIO_LOGIN_BACKLOG", 32))),
        user_code=tuple(part.strip() for part in env.get("STUDIO_USER_CODE", "").split(",") if part.strip()),
        lm_eval_tasks=Path(env["STUDIO_LM_EVAL_TASKS"]).expanduser().resolve() if env.get("STUDIO_LM_EVAL_TASKS")
        else None,
        trusted_proxies=tuple(part.strip() for part in env.get("STUDIO_TRUSTED_PROXIES", "").split(",")
                              if part.strip()),
    )


def ensure_data_dirs(settings: Settings) -> None:
    for path in (settings.data_dir, settings.models_dir, settings.datasets_dir, settings.runs_dir,
                 settings.adapters_dir, settings.exports_dir, settings.merged_dir,
                 settings.gguf_dir):
        path.mkdir(parents=True, exist_ok=True)
