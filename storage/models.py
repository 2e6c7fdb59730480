"""The ledger's tables. The database is the only state the UI, workers and CLI share."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Naive UTC: SQLite has no time zones, so every timestamp is stored and compared as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"
    """A search trial its search stopped early (held-out loss behind the others'): neither a failure nor a person's
    cancel. The column is a plain string, so this needs no migration."""
    FINISHED = (SUCCEEDED, FAILED, CANCELLED, PRUNED)
    ALL = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, PRUNED)


class JobKind:
    TRAIN = "train"
    MERGE = "merge"
    """Merge an adapter into a 16-bit copy of its base (the spec names the adapter)."""
    COMBINE = "combine"
    """A new adapter from several of one base, by PEFT's weighted combination (the spec names parents and weights)."""
    EVAL = "eval"
    """Adapters of one base and the base answering an eval set; results in the run folder (jobs.evaluate)."""
    EXPORT = "export"
    """Convert an adapter's merged model to GGUF (llama.cpp, Ollama, LM Studio) with an Ollama Modelfile."""
    ALL = (TRAIN, MERGE, COMBINE, EVAL, EXPORT)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.TRAIN, server_default=JobKind.TRAIN)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.QUEUED)
    spec: Mapped[dict] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    queue_rank: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    group_name: Mapped[str | None] = mapped_column(String(100), index=True)
    pool: Mapped[str | None] = mapped_column(String(63), index=True)
    """The worker pool the job asked for; None: any worker."""
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    """The sweep this job belongs to (jobs submitted together over a grid of spec values), if any."""
    """Place in line among queued jobs of the same priority (lower first); starts as the job's id."""
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lost_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Times a worker vanished while running it; planned requeues (worker shutdown) do not count."""
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime())
    provenance: Mapped[dict | None] = mapped_column(JSON)
    """What the job ran on: library versions, the base model's revision or content hash, the dataset's sha256."""
    overrides: Mapped[dict | None] = mapped_column(JSON)
    """Spec fields a retry changed, e.g. a halved micro-batch after running out of memory; the spec stays verbatim."""


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("job_id", "step", "name", name="uq_metrics_job_step_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)


class Adapter(Base):
    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    base_model: Mapped[str] = mapped_column(String(500), index=True)
    path: Mapped[str] = mapped_column(String(500))
    """Relative to the data dir, so the data dir can move without breaking rows."""
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    merged_path: Mapped[str | None] = mapped_column(String(500))
    """The adapter merged into a 16-bit copy of its base (relative to the data dir), once a merge job built it."""
    merged_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner", "sha256", name="uq_datasets_owner_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(500))
    """Relative to the data dir: a normalized JSONL copy the studio owns."""
    format: Mapped[str] = mapped_column(String(32))
    rows: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    mapping: Mapped[dict | None] = mapped_column(JSON)
    """{"format", "columns": {role: column}}: how the file's columns were read."""
    source: Mapped[dict | None] = mapped_column(JSON)
    """Where it came from: {"file": name} or {"hub": id, "config", "split", "revision"}."""
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    """Who imported it; None: bundled with the studio, everyone's."""


class Worker(Base):
    """A worker process, as it registered itself: a row is live while its heartbeat is fresh."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    """host:pid, as jobs.worker names it."""
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(100))
    """The device label the worker locks (cuda-0, default)."""
    device_name: Mapped[str] = mapped_column(String(200))
    """What it is: a GPU model, or "CPU (N cores)"."""
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    """The memory a job may use there now: the GPU's free memory, or on a CPU worker the host's available memory
    within its limit (jobs.queue.devices); refreshed by the heartbeat while the worker holds no job."""
    pool: Mapped[str | None] = mapped_column(String(100))
    current_job_id: Mapped[int | None] = mapped_column(Integer)
    """The job it runs, or the job of another host's worker that reserved it as a node of a gang (jobs.queue.gang)."""
    started_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    address: Mapped[str | None] = mapped_column(String(255))
    """The private address the pool's other hosts reach this host at (STUDIO_RDZV_ADDRESS); None: it neither leads
    nor joins a job across hosts."""
    rdzv_ports: Mapped[str | None] = mapped_column(String(32))
    """The port range its firewall opens for a gang's rendezvous and collectives (STUDIO_RDZV_PORTS, `29500-29599`)."""
    device_count: Mapped[int | None] = mapped_column(Integer)
    """How many devices (ranks) it offers one job: STUDIO_WORKER_DEVICES, else its visible GPUs or its cores."""


class Event(Base):
    """A job's state change, written with it (an outbox): webhooks deliver it, the open page shows it."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """succeeded, failed, requeued or cancelled."""
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime())
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_delivery_at: Mapped[datetime | None] = mapped_column(DateTime())
    delivery_error: Mapped[str | None] = mapped_column(Text)


class Sample(Base):
    """A run's greedy answer to one held-out prompt at one step (step 0: the base model, before training)."""

    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("job_id", "step", "prompt_index", name="uq_samples_job_step_prompt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    prompt_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)


class Vote(Base):
    """One blind round in the Chat tab: the prompt, every answer with the adapter that gave it (in the order shown),
    the settings they shared, and the person's verdict. Votes are training data: they export as preference pairs."""

    __tablename__ = "votes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_model: Mapped[str] = mapped_column(String(500), index=True)
    prompt: Mapped[list] = mapped_column(JSON)
    """The conversation answered: [{role, content}], ending with the user's turn."""
    answers: Mapped[list] = mapped_column(JSON)
    """[{"adapter": name or "base", "adapter_id": id or null, "reply": text}] in the order the panes showed them."""
    outcome: Mapped[str] = mapped_column(String(16))
    """best (one answer won), tie (all equally good) or all_bad."""
    chosen: Mapped[str | None] = mapped_column(String(200))
    """The winning adapter's name when outcome is best."""
    settings: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)


class PromptSuite(Base):
    """A saved set of prompts, each with an optional reference answer, run against adapters as a grid."""

    __tablename__ = "prompt_suites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    prompts: Mapped[list] = mapped_column(JSON)
    """[{"prompt": text, "reference": text or null}]"""
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)


class SuiteResult(Base):
    """One cell of a suite's grid: a pane's (adapter, checkpoint or base) answer to one prompt on one base model,
    and its mean log-likelihood of the prompt's reference answer. A re-run replaces the cell."""

    __tablename__ = "suite_results"
    __table_args__ = (UniqueConstraint("suite_id", "base_model", "pane", "prompt_index",
                                       name="uq_suite_results_cell"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite_id: Mapped[int] = mapped_column(ForeignKey("prompt_suites.id", ondelete="CASCADE"), index=True)
    base_model: Mapped[str] = mapped_column(String(500))
    pane: Mapped[str] = mapped_column(String(300))
    """An adapter's name, "base", or a checkpoint as "adapter@step-N"."""
    adapter_id: Mapped[int | None] = mapped_column(Integer)
    prompt_index: Mapped[int] = mapped_column(Integer)
    reply: Mapped[str] = mapped_column(Text)
    reference_loglik: Mapped[float | None] = mapped_column(Float)
    settings: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)


class User(Base):
    """A person who signs in (only when accounts exist). A removed user keeps the row, with no password, so the
    name is never given to someone else along with the removed person's jobs and adapters."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    """argon2id, salted (argon2-cffi's PasswordHasher); None once removed."""
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)
    """Jobs this person may have queued or running at once; None: the studio's default."""
    max_upload_bytes: Mapped[int | None] = mapped_column(BigInteger)
    """The largest dataset file this person may upload; None: the studio's limit."""
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    """The disk this person's datasets may take together; None: the studio's limit."""
    max_datasets: Mapped[int | None] = mapped_column(Integer)
    """How many datasets this person may keep; None: the studio's limit."""
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime())
    """Set while an admin has stopped this person signing in (their sessions end at once); None: enabled."""


class SignInSession(Base):
    """A signed-in browser or API client. Only the token's sha256 is stored; the cookie holds the token. A session
    ends when its person signs out, changes their password, is removed or disabled, or it expires (idle or
    absolute limit, storage/settings.py)."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_name: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    client: Mapped[str | None] = mapped_column(String(100))
    user_agent: Mapped[str | None] = mapped_column(String(300))


class AuditEvent(Base):
    """Who did what, for admins: sign-ins (and failed ones: the login limit counts them), account changes, hub
    pushes, deletions."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(64), index=True)
    """The person acting (for a failed sign-in: the name tried); None: the operator's CLI."""
    action: Mapped[str] = mapped_column(String(40), index=True)
    target: Mapped[str | None] = mapped_column(String(300))
    client: Mapped[str | None] = mapped_column(String(100), index=True)
    detail: Mapped[dict | None] = mapped_column(JSON)


class Preset(Base):
    """A named partial spec, private to its owner unless an admin shares it with everyone."""

    __tablename__ = "presets"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_presets_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(64), index=True)
    fields: Mapped[dict] = mapped_column(JSON)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)


class Secret(Base):
    """A person's secret (a hub token), encrypted at rest with the data dir's key; never shown back (`hint`: its
    last characters, so a person can tell which one is stored)."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("owner", "kind", name="uq_secrets_owner_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[str] = mapped_column(Text)
    hint: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
