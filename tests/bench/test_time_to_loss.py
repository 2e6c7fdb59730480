"""The time-to-loss bench's --smoke mode runs end to end (CI runs it so the script cannot rot): both arms train in
their own processes, their checkpoints are caught as they appear, one evaluator scores them, and the report holds."""

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.slow
def test_the_smoke_run_measures_both_arms(tmp_path):
    out = tmp_path / "smoke.json"
    done, report = run_smoke("time_to_loss.py", out)
    arms = report["summary"]["arms"]
    assert set(arms) == {"studio", "trl"} and report["summary"]["slowest_peer"] == "trl"
    for run in report["runs"]:
        seconds = [point[0] for point in run["curve"]]
        assert len(seconds) >= 2 and seconds == sorted(seconds) and 0 < seconds[0] < run["wall_s"]
    assert report["summary"]["target_loss"] == arms["trl"]["best_loss"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "studio ÷ arm" in done.stdout
