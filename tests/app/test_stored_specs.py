"""A job whose stored spec today's rules refuse (written straight into its row) is listed, shown, cloned and
compared, with its problem in words; one stored before versions existed is read as version 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from app.runs import compare_panel, run_view
from app.runs import tab as runs_tab
from app.train.spec_form import form_layout
from jobs.submit import submit_job

V1 = json.loads((Path(__file__).parents[1] / "jobs" / "fixtures" / "specs_v1.json").read_text())
NAMES = [name for rows in form_layout().values() for row in rows for name in row]


def _stored(studio, spec: dict) -> int:
    job_id = submit_job(studio, {"max_steps": 3})
    with studio.db.write() as session:
        session.execute(text("UPDATE jobs SET spec = :spec WHERE id = :id"), {"spec": json.dumps(spec), "id": job_id})
    return job_id


def test_an_invalid_stored_spec_is_listed_shown_cloned_and_compared_with_its_problem(studio):
    job_id = _stored(studio, {**V1["defaults"], "lora_r": 0})
    listed = [job for job in runs_tab.job_list(studio) if job["id"] == job_id][0]
    assert listed["spec_problems"] == ["lora_r: must be a whole number from 1 to 1024 (got 0)"]
    assert runs_tab.jobs_frame(studio).shape[0] == 1
    summary = run_view.details(studio, str(job_id))[0]
    assert "**Spec problem:** This stored spec (version 1) is not valid under today's rules: lora_r: must be" in summary
    with pytest.warns(UserWarning, match="lora_r: must be a whole number .* Fix these fields in the form"):
        values = runs_tab.clone_values(studio, str(job_id), NAMES)
    assert values[NAMES.index("lora_r")] == 0  # shown as it was, for the person to fix; the submit outlines it
    compare_panel.compare(studio, [job_id], "loss curves", "step", False)


def test_a_job_stored_before_versions_clones_and_compares_under_todays_version(studio):
    old = _stored(studio, V1["every_variant"])
    new = submit_job(studio, {"max_steps": 3})
    values = runs_tab.clone_values(studio, str(old), NAMES)
    assert values[NAMES.index("lora_r")] == 32 and values[NAMES.index("name")] == ""
    assert [job["spec_problems"] for job in runs_tab.job_list(studio)] == [[], []]
    table = compare_panel.compare(studio, [old, new], "loss curves", "step", True)[1]
    assert "Spec version (spec_version)" not in set(table["field"])  # both read as today's version
