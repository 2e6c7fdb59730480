"""The peak memory a job reports is its own: a training process started from a large one (the app, with chat
models loaded) must not report its parent's size, as getrusage's ru_maxrss does on Linux across fork + exec."""

import subprocess
import sys

from tests.conftest import REPO_ROOT

HELD_BYTES = 2 * 2**30  # importing the training stack alone takes about 0.5 GiB
CHILD = "from jobs.training.callbacks import peak_rss; print(int(peak_rss()))"


def test_a_child_of_a_large_process_reports_its_own_peak():
    held = bytearray(HELD_BYTES)  # touched, so resident in this process
    for offset in range(0, len(held), 4096):
        held[offset] = 1
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 10 * 2**20 < int(done.stdout) < HELD_BYTES / 2
    del held
