"""The time-to-loss bench's --smoke mode runs end to end (CI runs it so the script cannot rot): both arms train in
their own processes, their checkpoints are caught as they appear, one evaluator scores them, and the report holds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_smoke_run_measures_both_arms(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, "bench/time_to_loss.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    arms = report["summary"]["arms"]
    assert set(arms) == {"studio", "trl"} and report["summary"]["slowest_peer"] == "trl"
    for run in report["runs"]:
        seconds = [point[0] for point in run["curve"]]
        assert len(seconds) >= 2 and seconds == sorted(seconds) and 0 < seconds[0] < run["wall_s"]
    assert report["summary"]["target_loss"] == arms["trl"]["best_loss"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "studio ÷ arm" in done.stdout
