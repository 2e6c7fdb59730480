"""Weights & Biases as a `report_to` choice: each person's own API key, kept in the secret store (jobs.tracker_keys),
reaches only their own job's training process, in its environment. On the demo model through the real queue and
worker, W&B offline (WANDB_MODE=offline: no network here) writes a run with the logged loss; the key appears in
neither the job's log, its spec, its script nor any file of its run."""

import glob
import json
import struct
from pathlib import Path

import pytest

from jobs.secrets import SecretError
from jobs.spec import SpecError
from jobs.spec_store import load_stored_spec
from jobs.submit import submit_job
from jobs.tracker_keys import owners_wandb_key, set_wandb_key, wandb_key_status
from jobs.training.script import plain_trl_script
from storage import jobs_repo, users_repo
from storage.access import Person, acting_as

SHORT_JOB = {"max_steps": 2, "batch_size": 2, "max_length": 128, "logging_steps": 1, "eval_fraction": 0,
             "save_steps": 100, "sample_prompts": 0}
"""Two logged steps, nothing else: what is checked here is where the loss goes and where the key does not."""
KEY = "wandb-test-key-5e1f0c7a9b2d4e6f8a0c1e3b5d7f9a1c"


def _history(run_file: str) -> list[dict]:
    """The history rows of a W&B run file (run-*.wandb): a LevelDB-style log of protobuf Records (32 KiB blocks,
    each chunk a 7-byte header: CRC, length, type; after the file's 7-byte ':W&B' header). wandb 0.31 has no reader
    of its own in Python."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, records = Path(run_file).read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            records.append(chunk)
            chunk = b""
    rows = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_a_wandb_run_needs_the_persons_own_key_and_never_gets_anothers(studio):
    with studio.db.write() as session:
        for name in ("alice", "bob"):
            users_repo.add_user(session, name, "unused-hash")
    with acting_as(Person("alice")):
        assert set_wandb_key(studio, "  " + KEY + "\n") == {"stored": True, "hint": "…9a1c"}  # pasted with spaces
    with acting_as(Person("bob")):
        assert wandb_key_status(studio) == {"stored": False, "hint": None}  # alice's key is not his
        with pytest.raises(SpecError) as refused:
            submit_job(studio, {"max_steps": 1, "report_to": "wandb"})
    problems = {p.field: p.message for p in refused.value.problems}
    assert "your own W&B API key" in problems["report_to"] and "Account tab" in problems["report_to"]
    # The training process reads its owner's key, never anyone else's (nor the operator's).
    assert owners_wandb_key(studio, "alice") == KEY
    with pytest.raises(SecretError, match="report_to: this run reports to wandb but its owner has no W&B API key"):
        owners_wandb_key(studio, "bob")
    with acting_as(Person("alice")):
        job_id = submit_job(studio, {"max_steps": 1, "report_to": "wandb"})
    with studio.db.read() as session:
        assert KEY not in json.dumps(jobs_repo.get_job(session, job_id).spec)


@pytest.mark.slow
def test_a_wandb_run_logs_its_loss_offline_and_the_key_is_nowhere_in_its_files(live, demo_model_dir):
    set_wandb_key(live.studio, KEY)  # the local person's (no accounts on the live studio)
    try:
        job_id = submit_job(live.studio, {**SHORT_JOB, "report_to": "wandb"})
        job = live.wait_for(job_id)
    finally:
        set_wandb_key(live.studio, "unused-afterwards")  # the shared studio's next tests never see this key
    assert job.status == "succeeded", job.error
    run_dir = live.data_dir / "runs" / f"job-{job_id}"
    [run_file] = glob.glob(str(run_dir / "tracking" / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    losses = [row["train/loss"] for row in _history(run_file) if "train/loss" in row]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    # Nowhere: not the log, the spec, the run's files (W&B's own logs and run file included), the script.
    assert all(KEY.encode() not in path.read_bytes() for path in run_dir.rglob("*") if path.is_file())
    assert KEY not in json.dumps(job.spec)
    script = plain_trl_script(load_stored_spec(job.spec).require(), str(demo_model_dir), "data.jsonl")
    assert KEY not in script and "WANDB_API_KEY" in script and "os.environ['WANDB_DIR']" in script

