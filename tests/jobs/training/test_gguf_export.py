"""The export job, run as the worker's child runs it (in this process): it merges, converts and publishes the GGUF
folder with the job's success, the download zip follows, a delete takes it along; an adapter whose base has an
architecture the converter does not know fails in words, with nothing left behind (no GGUF, no merge scratch)."""

from __future__ import annotations

import json
import shutil
import signal
import zipfile

import pytest

from jobs.queue.child import run_attempt
from jobs.submit import submit_export
from jobs.training.export import gguf_export
from jobs.training.registry import delete_adapter, gguf_exports, gguf_folder
from storage import catalog, jobs_repo
from storage.models import Adapter

pytestmark = pytest.mark.slow


def _register(studio, trained_adapter, name: str, base_model: str) -> None:
    folder = studio.settings.adapters_dir / name
    shutil.copytree(trained_adapter, folder)
    with studio.db.write() as session:
        session.add(Adapter(name=name, base_model=base_model, path=studio.relative(folder), size_bytes=1))


def _run(studio, job_id: int) -> int:
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    with studio.db.write() as session:
        claimed, attempt = jobs_repo.claim_next(session, "test-worker")
    assert claimed == job_id
    studio.run_dir(job_id).mkdir(parents=True)  # the worker makes it (the child's log lives there)
    try:
        return run_attempt(studio, job_id, attempt)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def test_the_export_job_publishes_the_gguf_and_a_delete_takes_it(studio, trained_adapter, tmp_path):
    _register(studio, trained_adapter, "exported", "demo-tiny-llama")
    job_id = submit_export(studio, "exported", "f16")
    assert _run(studio, job_id) == 0
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id)
        adapter = catalog.get_adapter_by_name(session, "exported")
    assert (job.status, job.kind, job.step, job.total_steps) == ("succeeded", "export", 21, 21)  # tensors converted
    assert gguf_exports(studio, adapter.id) == ["f16"]
    assert not (studio.settings.runs_dir / f"job-{job_id}" / "export-merged").exists()  # the float32 merge went
    with zipfile.ZipFile(gguf_export(studio, adapter, "f16")) as archive:
        names = set(archive.namelist())
        record = json.loads(archive.read("exported-gguf-f16/export.json"))
    assert {"exported-gguf-f16/model-f16.gguf", "exported-gguf-f16/Modelfile"} <= names
    assert record["modelfile"] is None and record["lora"] is None, record
    assert gguf_export(studio, adapter, "q8_0") is None  # not exported at that type
    delete_adapter(studio, "exported")
    assert not gguf_folder(studio, adapter.id).exists()
    assert not list(studio.settings.exports_dir.rglob("*.zip"))


def test_an_unknown_architecture_fails_in_words_and_leaves_nothing(studio, trained_adapter, demo_model_dir,
                                                                   tmp_path_factory):
    other = tmp_path_factory.mktemp("bases") / "not-llama"
    shutil.copytree(demo_model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["MambaForCausalLM"]}))
    _register(studio, trained_adapter, "odd", str(other))
    job_id = submit_export(studio, "odd", "q8_0")
    assert _run(studio, job_id) == 1
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, "odd")
    error = (studio.settings.runs_dir / f"job-{job_id}" / "error.txt").read_text()
    assert error.startswith("The GGUF export was refused: architecture: MambaForCausalLM is not one the GGUF "
                            "export converts"), error
    assert not gguf_folder(studio, adapter.id).exists()
    assert sorted(p.name for p in (studio.settings.runs_dir / f"job-{job_id}").iterdir()) == ["error.txt"]
