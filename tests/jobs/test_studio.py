"""Opening a studio: the SQLite version notice is said once per data dir, not as a warning at every start."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from jobs.studio import open_studio
from storage.settings import load_settings


@pytest.mark.skipif(sqlite3.sqlite_version_info >= (3, 51, 3), reason="this SQLite has the WAL-reset fix")
def test_the_sqlite_notice_is_said_once_per_data_dir_and_not_as_a_warning(tmp_path, caplog):
    settings = load_settings({"STUDIO_DATA_DIR": str(tmp_path / "data")})
    said = []
    for _ in range(3):  # three starts of the app
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="jobs.studio"):
            open_studio(settings, warn=True).db.dispose()
        said.append([r for r in caplog.records if "3.51.3" in r.getMessage()])
    assert [len(records) for records in said] == [1, 0, 0]
    assert said[0][0].levelno < logging.WARNING
    other = load_settings({"STUDIO_DATA_DIR": str(tmp_path / "elsewhere")})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jobs.studio"):
        open_studio(other, warn=True).db.dispose()
    assert any("3.51.3" in r.getMessage() for r in caplog.records)  # a new data dir hears it once too
