"""Every request's work is bounded, and files are served to their owner alone, attacked over HTTP: an upload past
the person's limit is cut off while it streams and leaves nothing behind; a 1 MB chat prompt and a sweep of ten
million points are refused at once; an export's path fetched by another person is not found."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from gradio_client import handle_file

from jobs.data.uploads import upload_cache_dir
from tests.conftest import FAST_JOB
from tests.security.conftest import BASE

pytestmark = pytest.mark.slow


def _cached_uploads() -> set[Path]:
    folder = upload_cache_dir()
    return set(folder.rglob("*")) if folder.is_dir() else set()


def test_an_upload_past_the_persons_limit_is_cut_off_while_it_streams(team):
    bob = team.http("bob")  # his account takes files of at most 4 KiB (tests/security/conftest.py)
    before = _cached_uploads()

    def chunks():  # no Content-Length: the limit must hold on the bytes as they come
        # The first chunk is within his limit: Gradio opens its file and writes to it before the limit is passed.
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.jsonl\"\r\n\r\n" + b"x" * 1024
        time.sleep(0.5)  # so the server reads it alone
        for _ in range(64):
            yield b"x" * 65536
        yield b"\r\n--b--\r\n"

    refused = bob.post("/gradio_api/upload", content=chunks(),
                       headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert refused.status_code == 413 and "may upload" in refused.text
    declared = bob.post("/gradio_api/upload", files={"files": ("big.jsonl", b"y" * (1 << 20))})
    assert declared.status_code == 413
    assert not {p for p in _cached_uploads() - before if p.is_file()}  # not even the part written before the cut
    small = bob.post("/gradio_api/upload", files={"files": ("small.jsonl", b'{"text": "hi"}\n')})
    assert small.status_code == 200, small.text  # within his limit, an upload goes through


def test_a_person_at_their_dataset_count_uploads_no_more_than_a_preset(team):
    team.add_person("dora", max_datasets=0)  # she may keep no dataset: the count binds before any import
    dora = team.http("dora")
    big = dora.post("/gradio_api/upload", files={"files": ("rows.jsonl", b'{"text": "x"}\n' * 20_000)})
    assert big.status_code == 413 and "datasets, as many as allowed" in big.text and "delete one first" in big.text
    preset = dora.post("/gradio_api/upload", files={"files": ("mine.json", b'{"lora_r": 16}')})
    assert preset.status_code == 200, preset.text  # a preset still loads


def test_a_megabyte_prompt_and_a_ten_million_point_sweep_are_refused_at_once(team):
    alice = team.client("alice")
    started = time.monotonic()
    with pytest.raises(Exception, match="prompt"):
        alice.predict("word " * 200_000, ["base"], BASE, 8, api_name="/compare")
    with pytest.raises(Exception, match="points"):
        alice.predict(json.dumps({**FAST_JOB, "name": "huge"}), json.dumps({
            "lora_r": list(range(1, 11)), "lora_alpha": list(range(1, 11)), "seed": list(range(10)),
            "max_steps": list(range(1, 11)), "batch_size": list(range(1, 11)), "lora_dropout": [0.0] * 10,
            "learning_rate": [1e-4] * 10}), api_name="/submit_sweep")
    assert time.monotonic() - started < 20  # minutes, and gigabytes, before (the sweep: 17 s and 2.4 GB alone)
    assert not [j for j in alice.predict(api_name="/list_jobs") if j["name"].startswith("huge")]


def test_an_export_is_served_to_its_owner_and_admins_only(team):
    alice = team.client("alice")
    alice.predict("alice-files", json.dumps({"lora_r": 4}), api_name="/save_preset")
    exported = Path(team.app_studio.settings.exports_dir) / "alice"
    path = next(iter(exported.rglob("*.json")), None) if exported.is_dir() else None
    if path is None:  # the Train tab's Download writes it; from the API, write it as that handler does
        from jobs.presets import export_preset
        from storage.access import Person, acting_as

        with acting_as(Person("alice")):
            path = export_preset(team.app_studio, "alice-files")
    url = f"/gradio_api/file={path}"
    assert team.http("bob").get(url).status_code == 404
    assert team.http().get(url).status_code == 404  # nobody signed in: not even whether it exists
    assert team.http("alice").get(url).status_code == 200
    assert team.http("root").get(url).status_code == 200
    assert team.http("bob").get(f"/gradio_api/file={path.parent}/../{path.parent.name}/{path.name}").status_code == 404


def test_a_hub_token_never_comes_back_and_another_persons_import_is_not_reachable(team, tmp_path):
    alice = team.client("alice")
    data = tmp_path / "mine.jsonl"
    data.write_text('{"text": "private words"}\n')
    alice.predict(handle_file(str(data)), "alice-private", api_name="/import_dataset")
    secret = "hf_never_shown_back_9a8b7c"
    alice.predict(secret, api_name="/set_hub_token")
    for name in ("alice", "bob", "root"):
        session = team.http(name)
        for path in ("/config", "/gradio_api/info"):
            assert secret not in session.get(path).text
        assert "alice-private" not in session.get("/").text  # the page is built as no one (names arrive on load)
    assert secret not in json.dumps(alice.predict(api_name="/my_account"))
