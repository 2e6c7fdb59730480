"""What a job writes (its run folder, log, checkpoints, adapter, the dataset and the database) is the studio's user's
alone, or also its group's with STUDIO_SHARED_GROUP=1, even when the worker was started with a loose umask."""

import json
import os
import stat
import subprocess
import sys

import pytest

from jobs.data.store import import_dataset
from jobs.studio import open_studio
from jobs.submit import submit_job
from storage.settings import load_settings
from tests.conftest import FAST_JOB, REPO_ROOT, LiveStudio, seed_model, studio_environ

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("shared", "folder", "file"), [("0", 0o700, 0o600), ("1", 0o750, 0o640)])
def test_a_jobs_files_are_not_everyones(tmp_path, demo_model_dir, shared, folder, file):
    before = os.umask(0o022)
    data = tmp_path / "data"
    seed_model(data, demo_model_dir)
    env = studio_environ(data, STUDIO_SHARED_GROUP=shared)
    worker = None
    try:
        studio = open_studio(load_settings(env))
        source = tmp_path / "rows.jsonl"
        source.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(40)))
        dataset = import_dataset(studio, source, "rows").dataset
        job_id = submit_job(studio, {**FAST_JOB, "dataset": "rows", "name": "private"})
        os.umask(0o022)  # the worker must restrict itself, whatever it inherits
        live = LiveStudio.__new__(LiveStudio)
        live.studio, live.env, live.log_path, live.data_dir = studio, env, tmp_path / "worker.log", data
        worker = live.worker = subprocess.Popen([sys.executable, "-m", "jobs.queue.worker"], env=env, cwd=REPO_ROOT,
                                                stdout=live.log_path.open("ab"), stderr=subprocess.STDOUT)
        assert live.wait_for(job_id).status == "succeeded", live.worker_log()
        run, adapter = studio.run_dir(job_id), studio.settings.adapters_dir / f"job-{job_id}"
        made = [data, *data.iterdir(), *run.rglob("*"), *adapter.rglob("*"), studio.absolute(dataset.path)]
        made = [p for p in made if p.name != "models"]  # the demo model this test put there itself
        expected = {str(p.relative_to(data)): folder if p.is_dir() else file for p in made}
        assert {"studio.db", "queue.db", "runs/job-1/train.log", "adapters/job-1/adapter_model.safetensors",
                "datasets"} <= set(expected)
        assert {str(p.relative_to(data)): stat.S_IMODE(p.stat().st_mode) for p in made} == expected
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(120)
        os.umask(before)
