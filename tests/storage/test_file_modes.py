"""The data dir is the studio's user's alone (0700 / 0600), or also its group's with STUDIO_SHARED_GROUP (0750 /
0640), never everyone's: for what a process makes from its start, and for a tree made before, closed at its top."""

import os
import stat

import pytest

from storage.file_modes import restrict_new_files, tighten_data_dir
from storage.settings import load_settings


def _mode(path):
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask():
    """The test's own umask comes back afterwards: restrict_new_files changes the whole process's."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.mark.parametrize(("shared", "folder", "file"), [("", 0o700, 0o600), ("1", 0o750, 0o640)])
def test_what_a_process_makes_after_restricting_is_not_everyones(tmp_path, umask, shared, folder, file):
    restrict_new_files(load_settings({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_SHARED_GROUP": shared}))
    (tmp_path / "made").mkdir()
    (tmp_path / "made" / "file").write_text("x")
    assert (_mode(tmp_path / "made"), _mode(tmp_path / "made" / "file")) == (folder, file)


@pytest.mark.parametrize(("shared", "folder", "file"), [("", 0o700, 0o600), ("1", 0o2750, 0o640)])
def test_a_data_dir_made_before_is_closed_at_its_top(tmp_path, umask, shared, folder, file):
    data = tmp_path / "data"
    deep = data / "runs" / "job-1"
    deep.mkdir(parents=True)
    (data / "studio.db").write_text("rows")
    (deep / "train.log").write_text("a log")
    outside = tmp_path / "elsewhere"
    outside.write_text("not the studio's")
    (data / "link").symlink_to(outside)
    for path in (data, data / "runs", deep):
        os.chmod(path, 0o2775 if shared else 0o755)
    os.chmod(data / "studio.db", 0o664)
    os.chmod(outside, 0o644)

    changed = tighten_data_dir(load_settings({"STUDIO_DATA_DIR": str(data), "STUDIO_SHARED_GROUP": shared}))
    assert set(changed) == {data, data / "runs", data / "studio.db"}
    assert (_mode(data), _mode(data / "runs"), _mode(data / "studio.db")) == (folder, folder, file)
    # Deeper entries are not walked: their folder is closed to others instead.
    assert _mode(deep) == (0o2775 if shared else 0o755) and _mode(deep / "train.log") == 0o644
    assert _mode(outside) == 0o644  # a link's target is left alone


def test_the_setting_is_a_switch():
    assert not load_settings({}).shared_group
    assert load_settings({"STUDIO_SHARED_GROUP": "yes"}).shared_group
    with pytest.raises(ValueError, match="STUDIO_SHARED_GROUP"):
        load_settings({"STUDIO_SHARED_GROUP": "studio-workers"})
