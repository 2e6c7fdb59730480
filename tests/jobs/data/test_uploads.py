"""Gradio's copies of uploads: gone once imported, stale ones removed at start, and nothing outside Gradio's cache
(or in it but not Gradio's upload layout) is ever touched."""

import hashlib
import json
import os
import time

from jobs.data.store import import_dataset
from jobs.data.uploads import clean_upload_cache, remove_upload, upload_cache_dir


def _upload(cache, name, content: bytes, age_s: float = 0):
    """A file where Gradio puts an upload: <cache>/<sha256>/<name>."""
    folder = cache / hashlib.sha256(content).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
        os.utime(folder, (old, old))
    return path


def test_the_cache_is_where_gradio_keeps_uploads(tmp_path, monkeypatch):
    from gradio.utils import get_upload_folder

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    assert upload_cache_dir() == upload_cache_dir({}) == type(upload_cache_dir())(get_upload_folder())
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    assert upload_cache_dir() == tmp_path.resolve() == type(tmp_path)(get_upload_folder()).resolve()


def test_an_imported_upload_leaves_gradios_cache(studio, tmp_path, monkeypatch):
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    upload = _upload(cache, "mine.jsonl", json.dumps({"text": "some prose"}).encode() + b"\n")
    dataset = import_dataset(studio, upload, "mine").dataset
    assert studio.absolute(dataset.path).exists()
    assert not upload.exists() and not upload.parent.exists() and cache.exists()
    own = tmp_path / "own.jsonl"  # the CLI imports a person's own file: it stays
    own.write_text(json.dumps({"text": "my own"}) + "\n")
    import_dataset(studio, own, "own")
    assert own.exists()


def test_remove_upload_touches_nothing_outside_the_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    outside = tmp_path / ("a" * 64) / "data.jsonl"  # an upload's layout, but not in the cache
    outside.parent.mkdir()
    outside.write_text("{}")
    loose = cache / "loose.jsonl"  # in the cache, but not in an upload's folder
    loose.write_text("{}")
    target = tmp_path / "target.jsonl"
    link = _upload(cache, "link.jsonl", b"x")
    link.unlink()
    link.symlink_to(target)
    target.write_text("keep me")
    assert not remove_upload(outside, cache) and outside.exists()
    assert not remove_upload(loose, cache) and loose.exists()
    assert not remove_upload(cache / ".." / "target.jsonl", cache) and target.exists()
    assert remove_upload(link, cache) and not link.is_symlink() and target.read_text() == "keep me"


def test_stale_uploads_are_cleaned_and_nothing_else(tmp_path):
    cache = tmp_path / "cache"
    old = _upload(cache, "old.jsonl", b"old", age_s=7200)
    fresh = _upload(cache, "fresh.jsonl", b"fresh")
    unfinished = cache / "tmpab12cd_3"
    unfinished.write_bytes(b"half an upload")
    os.utime(unfinished, (time.time() - 7200,) * 2)
    others = [cache / "deep_links" / "page.html", cache / "notes.txt"]
    for path in others:
        path.parent.mkdir(exist_ok=True)
        path.write_text("not an upload")
        os.utime(path, (time.time() - 7200,) * 2)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("keep")
    os.utime(outside, (time.time() - 7200,) * 2)
    (_upload(cache, "via-link.jsonl", b"link", age_s=7200)).unlink()
    link = cache / hashlib.sha256(b"link").hexdigest() / "via-link.jsonl"
    link.symlink_to(outside)
    os.utime(link, (time.time() - 7200,) * 2, follow_symlinks=False)

    os.chmod(cache, 0o755)
    removed = clean_upload_cache(cache, max_age_s=3600)
    assert cache.stat().st_mode & 0o777 == 0o700  # uploads are people's data: the folder is this user's alone
    assert set(removed) == {old, unfinished, link}
    assert not old.parent.exists() and fresh.exists() and all(p.exists() for p in others)
    assert outside.read_text() == "keep"
    assert clean_upload_cache(tmp_path / "missing", 3600) == []


def test_the_system_temp_folder_is_never_changed(tmp_path, monkeypatch):
    """GRADIO_TEMP_DIR=/tmp puts uploads straight in the temp folder: its mode and other programs' files stay."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    monkeypatch.setattr("tempfile.tempdir", str(shared))
    theirs = shared / "tmpab12cd_3"
    theirs.write_text("another program's")
    os.utime(theirs, (time.time() - 7200,) * 2)
    old = _upload(shared, "old.jsonl", b"old", age_s=7200)
    assert clean_upload_cache(shared, max_age_s=3600) == [old]
    assert shared.stat().st_mode & 0o7777 == 0o1777 and theirs.exists()

