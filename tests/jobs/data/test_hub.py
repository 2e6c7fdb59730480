"""Importing from the hub reads the hub and nothing else: an id is `owner/name[@revision]` and never a path, a
server folder named like an id is never read, only data files are fetched (never a loading script), at the commit
the revision resolved to, and within the studio's caps.

The real hub cannot be reached from these machines: a small HTTP server in the test serves a dataset repo the way
the hub's API does, and the real huggingface_hub client talks to it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

from jobs.data.errors import DatasetError
from jobs.data.hub import choose_files, import_hub_dataset, parse_hub_id
from jobs.data.store import load_rows
from jobs.hub_access import set_hub_token
from jobs.studio import open_studio
from storage import catalog
from storage.access import Person, acting_as
from storage.settings import load_settings
from tests.conftest import REPO_ROOT

SHA = "0123456789abcdef0123456789abcdef01234567"
HUB_ROWS = [{"instruction": f"hub question {i}", "output": f"hub answer {i}"} for i in range(3)]
SERVER_ROWS = [{"instruction": "SERVER SECRET", "output": "another person's file"}]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


class FakeHub:
    """One dataset repo at one commit, served as the hub's API serves it: repo info, tree listing, file resolve."""

    def __init__(self, repo_id: str, files: dict[str, bytes]) -> None:
        self.repo_id, self.files, self.served, self.tokens = repo_id, files, [], set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802 (the http.server names)
                self._answer(body=False)

            def do_GET(self):  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                if f"/{hub.repo_id}" in path:  # the client also asks the endpoint for its own registries
                    hub.tokens.add(self.headers.get("Authorization"))
                status, headers, payload = hub.route(path, body)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(name, value)
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, path: str, body: bool) -> tuple[int, dict, bytes]:
        repo = re.escape(self.repo_id)
        if re.fullmatch(rf"/api/datasets/{repo}(/revision/[^/]+)?", path):
            siblings = [{"rfilename": name, "size": len(data)} for name, data in self.files.items()]
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {"id": self.repo_id, "sha": SHA, "private": False, "siblings": siblings}).encode()
        if re.fullmatch(rf"/api/datasets/{repo}/tree/{SHA}", path):
            tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in self.files.items()]
            return 200, {"Content-Type": "application/json"}, json.dumps(tree).encode()
        if match := re.fullmatch(rf"/datasets/{repo}/resolve/{SHA}/(.+)", path):
            data = self.files[match.group(1)]
            if body:
                self.served.append(match.group(1))
            return 200, {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}, data
        return 404, {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"}, b'{"error": "not found"}'

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _point_hub_at(monkeypatch, url: str) -> None:
    """What HF_ENDPOINT does when set before huggingface_hub is imported (it may already be, in this process)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def studio(tmp_path):
    """A studio without models: importing a dataset needs none."""
    opened = open_studio(load_settings({"STUDIO_DATA_DIR": str(tmp_path / "data"), "STUDIO_MAX_ROWS": "5"}))
    yield opened
    opened.db.dispose()


@pytest.fixture
def server_folders(studio, tmp_path, monkeypatch):
    """Someone's rows in folders named like the hub id `owner/name`: under the server's working directory and in
    the data dir."""
    for root in (tmp_path / "cwd", studio.settings.data_dir):
        (root / "owner" / "name").mkdir(parents=True)
        (root / "owner" / "name" / "train.jsonl").write_bytes(_jsonl(SERVER_ROWS))
    monkeypatch.chdir(tmp_path / "cwd")


@pytest.fixture
def hub(monkeypatch):
    served = FakeHub("owner/name", {"data/train-00000-of-00001.jsonl": _jsonl(HUB_ROWS),
                                    "data/test-00000-of-00001.jsonl": _jsonl(HUB_ROWS[:1]),
                                    "name.py": b"import os; os.system('echo pwned')\n", "README.md": b"# a card\n"})
    _point_hub_at(monkeypatch, served.url)
    yield served
    served.stop()


def test_a_server_folder_named_like_the_id_is_never_read_the_hub_is(studio, server_folders, hub):
    imported = import_hub_dataset(studio, "owner/name", "from-hub")
    rows = load_rows(studio.absolute(imported.dataset.path))
    assert [row["messages"][0]["content"] for row in rows] == [r["instruction"] for r in HUB_ROWS]
    assert imported.dataset.source == {"hub": "owner/name", "config": None, "split": "train", "revision": SHA,
                                       "files": ["data/train-00000-of-00001.jsonl"]}
    assert hub.served == ["data/train-00000-of-00001.jsonl"], "only the split's data files are fetched, no script"
    assert not list(studio.settings.data_dir.glob(".hub-import-*")), "the download folder is removed"


@pytest.mark.parametrize(("person", "own_token", "sent"), [
    (Person("bob"), None, {None}), (Person("bob"), "hf_bobs_own", {"Bearer hf_bobs_own"}),
    (Person("root", admin=True), None, {"Bearer hf_operator"}),
], ids=["person", "own-token", "admin"])
def test_a_person_reads_the_hub_with_their_own_token_or_none_never_the_operators(studio, hub, monkeypatch, person,
                                                                                 own_token, sent):
    monkeypatch.setenv("STUDIO_HF_TOKEN", "hf_operator")
    with acting_as(person):
        if own_token:
            set_hub_token(studio, own_token)
        import_hub_dataset(studio, "owner/name", "from-hub")
    assert hub.tokens == sent


def test_the_command_line_imports_from_the_hub_only_with_the_operators_token(studio, server_folders, hub):
    env = {**os.environ, "STUDIO_DATA_DIR": str(studio.settings.data_dir), "HF_ENDPOINT": hub.url,
           "HF_HUB_OFFLINE": "0", "STUDIO_HF_TOKEN": "hf_operator", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "jobs", "import-hub", "owner/name", "--name", "from-cli"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "imported 'from-cli' (3 rows" in done.stdout, done.stderr[-2000:]
    assert hub.tokens == {"Bearer hf_operator"}
    refused = subprocess.run([sys.executable, "-m", "jobs", "import-hub", "../owner/name"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "hub_id: '../owner/name' is not a hub dataset id" in refused.stderr


def test_with_the_hub_unreachable_the_import_is_refused_and_no_folder_is_read(studio, server_folders, monkeypatch):
    _point_hub_at(monkeypatch, "http://127.0.0.1:9")  # a closed port: nothing listens there
    with pytest.raises(DatasetError) as caught:
        import_hub_dataset(studio, "owner/name", "from-hub")
    assert caught.value.problems[0].startswith("hub: could not reach the Hugging Face hub to fetch 'owner/name'")
    with studio.db.read() as session:
        assert catalog.get_dataset_by_name(session, "from-hub") is None


@pytest.mark.parametrize("hub_id", [
    "../owner/name", "/etc/passwd", "~/name", "~root/name", "owner\\name", "owner/../name", "owner/name/train",
    "https://huggingface.co/datasets/owner/name", "file:///etc/passwd", "hf://datasets/owner/name", "name", "",
    "owner/", "/name", "-owner/name", "owner/name.", "own--er/name", "own..er/name", "owner/name@", "owner/name@..",
    "owner/name@/main", "owner/name@a b", "owner/na me", "owner/na\nme", "o/" + "n" * 97,
])
def test_anything_path_like_is_refused_before_the_hub_is_asked(studio, hub, hub_id):
    with pytest.raises(DatasetError) as caught:
        import_hub_dataset(studio, hub_id, "x")
    assert caught.value.problems[0].startswith(("hub_id:", "revision:")), caught.value.problems
    assert hub.served == []


@pytest.mark.parametrize(("text", "revision", "parsed"), [
    ("owner/name", "", ("owner/name", None)),
    ("stanfordnlp/imdb@main", "", ("stanfordnlp/imdb", "main")),
    ("HuggingFaceH4/ultrachat_200k", "refs/convert/parquet", ("HuggingFaceH4/ultrachat_200k", "refs/convert/parquet")),
    (f"a.b/c-d_e@{SHA}", SHA, ("a.b/c-d_e", SHA)),
])
def test_a_hub_id_is_owner_slash_name_with_an_optional_revision(text, revision, parsed):
    assert parse_hub_id(text, revision) == parsed


def test_two_different_revisions_are_refused():
    with pytest.raises(DatasetError, match="revision: 'owner/name@v1' names revision 'v1' but the revision field"):
        parse_hub_id("owner/name@v1", "v2")


@pytest.mark.parametrize(("paths", "config", "split", "chosen"), [
    (["train.jsonl", "test.jsonl", "README.md"], "", "train", ["train.jsonl"]),
    (["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "data/test-00000.parquet"], "",
     "train", ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]),
    (["data.csv"], "", "train", ["data.csv"]),  # no split named anywhere: it is all train
    (["train.jsonl", "dev.jsonl"], "", "validation", ["dev.jsonl"]),
    (["train_sft.parquet", "train_gen.parquet"], "", "train_sft", ["train_sft.parquet"]),
    (["en/train.jsonl", "fr/train.jsonl"], "fr", "train", ["fr/train.jsonl"]),
    (["default/train/0000.parquet", "default/test/0000.parquet"], "default", "test", ["default/test/0000.parquet"]),
    (["contest.jsonl", "train.jsonl"], "", "train", ["train.jsonl"]),
    (["../train.jsonl", "/etc/train.jsonl", "a\\..\\train.jsonl", "ok/train.jsonl"], "", "train", ["ok/train.jsonl"]),
])
def test_the_files_of_a_config_and_split_are_chosen_like_the_hub_names_them(paths, config, split, chosen):
    assert choose_files(paths, config, split) == chosen


@pytest.mark.parametrize(("paths", "config", "split", "words"), [
    (["loader.py", "README.md"], "", "train", "no data files"),
    (["train.jsonl", "test.jsonl"], "", "validation", "no files for split 'validation'"),
    (["data.csv"], "", "test", "no files for split 'test'"),
    (["en/train.jsonl"], "de", "train", "no files for config 'de'"),
])
def test_a_split_or_config_the_repo_lacks_is_refused_naming_what_it_has(paths, config, split, words):
    with pytest.raises(DatasetError, match=words):
        choose_files(paths, config, split)


def test_the_row_and_size_caps_hold_for_hub_datasets(studio, hub):
    hub.files["data/train-00000-of-00001.jsonl"] = _jsonl(HUB_ROWS * 2)  # 6 rows; STUDIO_MAX_ROWS is 5
    with pytest.raises(DatasetError, match="STUDIO_MAX_ROWS"):
        import_hub_dataset(studio, "owner/name", "too-many")
    hub.served.clear()
    small = open_studio(load_settings({"STUDIO_DATA_DIR": str(studio.settings.data_dir),
                                       "STUDIO_MAX_UPLOAD_BYTES": "100"}))
    with pytest.raises(DatasetError, match="STUDIO_MAX_UPLOAD_BYTES"):
        import_hub_dataset(small, "owner/name", "too-big")
    assert hub.served == [], "a repo over the size cap is refused before anything is downloaded"
    small.db.dispose()
