"""A worker started under `taskset`, a cpuset cgroup (docker --cpuset-cpus) or a batch scheduler's allocation may use
fewer cores than the machine has: its name, its "all" devices and each rank's torch threads follow the cores it may
run on, not os.cpu_count() (which counts the machine's, so two threads would share one allowed core)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

PROBE = """
import os
os.sched_setaffinity(0, {first})
from jobs.run_settings.cores import usable_cores
from jobs.training.distributed import threads_per_rank
from jobs.queue.devices import describe_device, device_count
name, _ = describe_device()
print(usable_cores(), threads_per_rank(), device_count("cpu", name), name.split(" cores")[0], sep="|")
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to allow only one")
def test_a_worker_pinned_to_one_core_counts_one_core() -> None:
    first = {min(os.sched_getaffinity(0))}
    run = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    out = run.stdout.strip().split("|")
    assert out == ["1", "1", "1", "CPU (1"]


def test_usable_cores_are_the_allowed_ones() -> None:
    from jobs.run_settings.cores import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0)) <= (os.cpu_count() or 1)
