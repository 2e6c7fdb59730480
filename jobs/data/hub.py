"""Importing a dataset from the Hugging Face hub (id, config, split, revision) into the same normalized store as an
upload, with the commit it resolved to recorded. Where the hub is unreachable, a clear refusal.

A hub id is only ever a hub id: `owner/name[@revision]`, checked before anything else, and the files come from the
hub alone. `datasets.load_dataset(id)` would first read a server folder of that relative path (another person's
files), and it runs a repo's loading script; here the repo's data files (Parquet, JSONL, JSON, CSV) of the asked
split are downloaded into a private temporary folder at the resolved commit and read by the studio's own readers,
under the same caps as an upload."""

from __future__ import annotations

import glob
import re
import tempfile
from pathlib import Path, PurePosixPath

from jobs.data.errors import DatasetError
from jobs.data.formats import Mapping, parse_records
from jobs.data.readers import SUFFIXES, ReadLimits, read_records
from jobs.data.store import Imported, new_name_problems, read_limits, register_parsed
from jobs.hub_access import repo_id_problem, token_for_use
from jobs.secrets import SecretError
from jobs.studio import Studio

REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
"""A branch, tag, commit or `refs/convert/parquet`: no '..', no leading '/', nothing else."""
MAX_REVISION_CHARS = 200
SPLIT_WORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
               "test": ("test", "testing", "eval", "evaluation")}
"""The hub's own split names for files (as `datasets` resolves them): a file names its split between delimiters."""
DELIMITER = r"[-._ 0-9/]"


def parse_hub_id(text: str, revision: str = "") -> tuple[str, str | None]:
    """(repo id, revision or None) of `owner/name[@revision]`, the revision field agreeing; else DatasetError."""
    repo_id, at, in_id = text.partition("@")
    if problem := repo_id_problem(repo_id, "dataset"):
        raise DatasetError([f"hub_id: {problem}; write owner/name or owner/name@revision"])
    if at and revision and in_id != revision:
        raise DatasetError([f"revision: '{text}' names revision '{in_id}' but the revision field says "
                            f"'{revision}'; give one"])
    chosen = revision or in_id
    well_formed = REVISION.fullmatch(chosen) and ".." not in chosen and len(chosen) <= MAX_REVISION_CHARS
    if (at or chosen) and not well_formed:
        raise DatasetError([f"revision: '{chosen}' is not a branch, tag or commit of the hub"])
    return repo_id, chosen or None


def choose_files(paths: list[str], config: str, split: str) -> list[str]:
    """The repo's data files of `config` (a folder; empty: any) and `split`, as the hub names them."""
    data = sorted(path for path in paths if PurePosixPath(path).suffix.lower() in SUFFIXES and _plain(path))
    if not data:
        raise DatasetError([f"hub: the repo has no data files ({', '.join(SUFFIXES)}); the studio never runs "
                            f"dataset scripts (the hub's converted copy may have them: revision refs/convert/parquet)"])
    if config:
        data = [path for path in data if config in PurePosixPath(path).parts[:-1]]
        if not data:
            raise DatasetError([f"config: no files for config '{config}' in the repo (a config is a folder)"])
    chosen = [path for path in data if _names_split(path, split)]
    if not chosen and split == "train" and not any(_names_split(path, s) for path in data for s in SPLIT_WORDS):
        chosen = data  # a repo that names no split at all is one train split
    if not chosen:
        found = sorted({s for path in data for s in SPLIT_WORDS if _names_split(path, s)})
        raise DatasetError([f"split: no files for split '{split}' in the repo (it has: "
                            f"{', '.join(found) or 'train'})"])
    return chosen


def _plain(path: str) -> bool:
    """A repo file name that stays inside the folder it is downloaded to (the client checks too)."""
    return not path.startswith("/") and "\\" not in path and ".." not in path.split("/")


def _names_split(path: str, split: str) -> bool:
    words = "|".join(re.escape(word) for word in SPLIT_WORDS.get(split, (split,)))
    return re.search(rf"(^|{DELIMITER})({words})({DELIMITER}|$)", path.lower()) is not None


def import_hub_dataset(studio: Studio, hub_id: str, name: str = "", config: str = "", split: str = "train",
                       revision: str = "", mapping: Mapping | None = None) -> Imported:
    hub_id, config, split = (hub_id or "").strip(), (config or "").strip(), (split or "").strip() or "train"
    problems = []
    try:
        repo_id, revision = parse_hub_id(hub_id, (revision or "").strip())
    except DatasetError as error:
        problems += error.problems
        repo_id = None
    name = (name or "").strip() or (repo_id or "").split("/")[-1]
    problems += new_name_problems(name)
    if problems:
        raise DatasetError(problems)
    records, commit, files = _fetch(studio, repo_id, config, split, revision)
    parsed = parse_records(records, mapping)
    source = {"hub": repo_id, "config": config or None, "split": split, "revision": commit, "files": files}
    return register_parsed(studio, name, parsed, source)


def _fetch(studio: Studio, repo_id: str, config: str, split: str,
           revision: str | None) -> tuple[list[dict], str, list[str]]:
    """(records, commit, files read) of the split, downloaded from the hub only."""
    from huggingface_hub import HfApi, snapshot_download

    limits = read_limits(studio)
    try:
        token = token_for_use(studio).token or False  # False: anonymous, never a token the client finds itself
    except SecretError as error:
        raise DatasetError([f"hub: {error}"]) from None
    try:
        info = HfApi(token=token).dataset_info(repo_id, revision=revision, files_metadata=True)
        sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
        files = choose_files(list(sizes), config, split)
        total = sum(sizes[path] for path in files)
        if total > limits.max_bytes:
            raise DatasetError([f"hub: the split's files hold {total:,} bytes; datasets are capped at "
                                f"{limits.max_bytes:,} ({limits.max_bytes_set_by})"])
        with tempfile.TemporaryDirectory(dir=studio.settings.data_dir, prefix=".hub-import-") as folder:
            # Pinned to the commit resolved above, fetching exactly the chosen data files (escaped: a name may hold
            # glob characters), into a folder only this import uses: no shared cache, no script, no other split.
            snapshot_download(repo_id, repo_type="dataset", revision=info.sha, token=token,
                              allow_patterns=[glob.escape(path) for path in files],
                              cache_dir=Path(folder) / "cache", local_dir=Path(folder) / "files")
            return _read(Path(folder) / "files", files, limits), info.sha, files
    except DatasetError:
        raise
    except Exception as error:  # the hub client's error types vary by version; the words say what happened
        raise DatasetError([_explain(repo_id, revision, error)]) from None


def _read(folder: Path, files: list[str], limits: ReadLimits) -> list[dict]:
    """Every chosen file's records; at most twice the row cap is ever held, however many files the split has."""
    records: list[dict] = []
    for path in files:
        local = (folder / path).resolve()
        local.relative_to(folder.resolve())  # a name from the hub never leads outside the download folder
        try:
            records += read_records(local, limits)
        except DatasetError as error:
            raise DatasetError([f"{path}: {problem}" for problem in error.problems]) from None
        if len(records) > limits.max_rows:
            raise DatasetError([f"hub: the split has more than {limits.max_rows:,} rows; datasets are capped at "
                                f"that (STUDIO_MAX_ROWS)"])
    return records


def _explain(repo_id: str, revision: str | None, error: Exception) -> str:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    text = f"{type(error).__name__}: {error}"
    if isinstance(error, RevisionNotFoundError):
        return f"revision: '{repo_id}' has no revision '{revision}' on the hub"
    if isinstance(error, RepositoryNotFoundError):  # gated and private repos answer the same to a stranger
        return (f"hub_id: no dataset '{repo_id}' on the hub that your hub token may read (it may be private or "
                f"gated)")
    if any(word in text.lower() for word in ("offline", "connect", "couldn't reach", "resolve", "timed out",
                                             "timeout")):
        return (f"hub: could not reach the Hugging Face hub to fetch '{repo_id}' from this machine; upload the "
                f"dataset as a file instead ({text[:200]})")
    return f"hub: could not load '{repo_id}' ({text[:300]})"
