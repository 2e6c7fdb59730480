"""The run page says where a tracked run's output is and how to open it."""

from __future__ import annotations

from app.runs import run_view
from jobs.submit import submit_job


def test_a_tracked_run_shows_where_its_tracker_writes(studio):
    tracked = submit_job(studio, {"max_steps": 3, "report_to": "tensorboard"})
    plain = submit_job(studio, {"max_steps": 3})
    folder = studio.run_dir(tracked) / "tracking" / "tensorboard"
    details = run_view.details_or_none(studio, tracked)
    assert details["tracking"].startswith(f"tensorboard output in `{folder}` (not written yet)")
    assert f"open it with `tensorboard --logdir {folder}`" in run_view.details(studio, str(tracked))[0]
    assert run_view.details_or_none(studio, plain)["tracking"] is None
    assert "**Tracking:**" not in run_view.details(studio, str(plain))[0]
