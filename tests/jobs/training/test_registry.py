"""A published adapter names its real base, so it loads anywhere PEFT loads: a hub base by its id and the commit it
was pinned to at submit, which training loaded too, even after the hub's main branch moved on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile

import pytest

from jobs.queue.child import run_attempt
from jobs.submit import submit_job
from jobs.training.export import build_adapter_zip
from storage import catalog, jobs_repo
from tests.conftest import FAST_JOB, broken_model_dir
from tests.hub_cache import cache_model

pytestmark = pytest.mark.slow
HUB_BASE = "studio-test/tiny-llama"
LOAD_ANYWHERE = """
import sys, torch
from peft import AutoPeftModelForCausalLM
model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1])
config = model.peft_config["default"]
output = model.generate(input_ids=torch.tensor([[1, 5, 9]]), max_new_tokens=2)
print(config.base_model_name_or_path, config.revision, model.get_base_model().config.hidden_size, output.shape[1])
"""


def test_an_adapter_on_a_hub_base_loads_with_automodel_at_the_pinned_revision(studio, demo_model_dir, tmp_path,
                                                                               monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    pinned = cache_model(cache, HUB_BASE, demo_model_dir)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the hub is unreachable: pinned from the cache
    job_id = submit_job(studio, {**FAST_JOB, "max_steps": 2, "base_model": HUB_BASE, "name": "anywhere"})
    # The hub moves on after submit: main now names a commit whose weights do not fit the pinned one's config.
    cache_model(cache, HUB_BASE, broken_model_dir(tmp_path, demo_model_dir), commit="e" * 40)

    assert _run_the_child(studio, job_id) == 0, (studio.settings.runs_dir / f"job-{job_id}" / "train.log")
    with studio.db.read() as session:
        adapter = catalog.adapter_for_job(session, job_id)
        recorded = jobs_repo.get_job(session, job_id).provenance["base_model"]
    folder = studio.absolute(adapter.path)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == (HUB_BASE, pinned)
    assert recorded["revision"] == pinned  # training loaded exactly the pinned snapshot
    card = (folder / "README.md").read_text()
    assert f"base_model: {HUB_BASE}" in card and f'REVISION = "{pinned}"' in card

    with zipfile.ZipFile(build_adapter_zip(folder, tmp_path / "exports", "anywhere")) as archive:
        archive.extractall(tmp_path / "elsewhere")
    elsewhere = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    loaded = subprocess.run([sys.executable, "-c", LOAD_ANYWHERE, str(tmp_path / "elsewhere" / "anywhere")],
                            capture_output=True, text=True, timeout=300, env=elsewhere, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split() == [HUB_BASE, pinned, "128", "5"]  # the pinned weights, not main's


def _run_the_child(studio, job_id: int) -> int:
    """The training child's work, in this process (claimed as a worker would); its signal handlers put back after."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    with studio.db.write() as session:
        claimed, attempt = jobs_repo.claim_next(session, "test-worker")
    assert claimed == job_id
    try:
        return run_attempt(studio, job_id, attempt)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
