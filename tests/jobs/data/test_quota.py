"""Per-person limits on what the store keeps: the largest file, the disk a person's datasets take together, and how
many they keep; an account's own limits bind only people who are not admins."""

import json
from dataclasses import replace

import pytest

from jobs.data.errors import DatasetError
from jobs.data.quota import allowance, disk_use
from jobs.data.store import delete_dataset, import_dataset
from storage import users_repo
from storage.access import LOCAL_OWNER, Person, acting_as


def _rows(path, count, width=10):
    path.write_text("".join(json.dumps({"text": f"{index:04d}" + "x" * width}) + "\n" for index in range(count)))
    return path


def _account(studio, name, **limits):
    with studio.db.write() as session:
        user = users_repo.add_user(session, name, "not-used")
        for column, value in limits.items():
            setattr(user, column, value)


def test_a_person_cannot_keep_more_datasets_than_their_account_allows(studio, tmp_path):
    _account(studio, "carol", max_datasets=2)
    with acting_as(Person("carol")):
        for index in range(2):
            import_dataset(studio, _rows(tmp_path / f"d{index}.jsonl", index + 1), f"d{index}")
        with pytest.raises(DatasetError, match=r"you keep 2 datasets, as many as allowed \(the limit of carol's "):
            import_dataset(studio, _rows(tmp_path / "d2.jsonl", 3), "d2")
        delete_dataset(studio, "d0")  # room again
        import_dataset(studio, _rows(tmp_path / "d2.jsonl", 3), "d2")
    assert disk_use(studio, "carol")[1] == 2


def test_a_person_cannot_store_more_bytes_than_allowed_and_a_refusal_leaves_no_file(studio, tmp_path):
    small = import_dataset(studio, _rows(tmp_path / "small.jsonl", 1), "small").dataset  # the local person's
    stored = studio.absolute(small.path).stat().st_size
    _account(studio, "dave", max_storage_bytes=stored * 3)
    with acting_as(Person("dave")):
        import_dataset(studio, _rows(tmp_path / "small.jsonl", 1), "dave-small")  # his own copy counts for him
        assert disk_use(studio, "dave") == (stored, 1)
        before = sorted(studio.settings.datasets_dir.iterdir())
        with pytest.raises(DatasetError) as caught:
            import_dataset(studio, _rows(tmp_path / "big.jsonl", 50), "big")
        assert sorted(studio.settings.datasets_dir.iterdir()) == before
        left = allowance(studio, Person("dave")).storage_left_bytes
    assert left == stored * 2
    assert f"your datasets may take {left:,} more bytes of {stored * 3:,} (the limit of dave's account)" in str(
        caught.value)


def test_the_studio_settings_bound_admins_the_local_person_and_the_cli(studio, tmp_path):
    studio.settings = replace(studio.settings, max_datasets=1, max_storage_bytes=10_000, max_upload_bytes=5_000)
    _account(studio, "root", max_datasets=100)
    with studio.db.write() as session:
        users_repo.get_user(session, "root").is_admin = True
    for person in (Person("root", admin=True), Person(LOCAL_OWNER, admin=True), None):
        allowed = allowance(studio, person)
        assert (allowed.max_file_bytes, allowed.max_datasets, allowed.max_storage_bytes) == (5_000, 1, 10_000)
        assert allowed.datasets_set_by == "STUDIO_MAX_DATASETS"
    import_dataset(studio, _rows(tmp_path / "one.jsonl", 1), "one")
    with pytest.raises(DatasetError, match=r"as many as allowed \(STUDIO_MAX_DATASETS\)"):
        import_dataset(studio, _rows(tmp_path / "two.jsonl", 2), "two")
    assert allowance(studio, Person(LOCAL_OWNER, admin=True)).problem(6_000) == (
        "the file has 6,000 bytes; uploads are capped at 5,000 (STUDIO_MAX_UPLOAD_BYTES)")


def test_an_account_without_limits_gets_the_studio_defaults(studio):
    _account(studio, "erin")
    allowed = allowance(studio, Person("erin"))
    assert (allowed.max_file_bytes, allowed.storage_left_bytes, allowed.datasets_left) == (1 << 30, 20 << 30, 200)
    assert allowed.problem(1000) is None
    assert "capped at" in allowed.problem((1 << 30) + 1)


def test_allowance_takes_two_queries(studio, tmp_path):
    """The web server asks while each upload streams in: it must stay cheap however many datasets a person has."""
    from sqlalchemy import event

    _account(studio, "frank", max_datasets=50)
    with acting_as(Person("frank")):
        for index in range(5):
            import_dataset(studio, _rows(tmp_path / f"f{index}.jsonl", index + 1), f"f{index}")
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(studio.db.engine, "before_cursor_execute", listener)
    try:
        allowed = allowance(studio, Person("frank"))
    finally:
        event.remove(studio.db.engine, "before_cursor_execute", listener)
    assert allowed.datasets_left == 45
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2


def test_an_accounts_file_cap_is_named_in_the_refusal(studio, tmp_path):
    _account(studio, "gina", max_upload_bytes=1 << 10)
    refused = pytest.raises(DatasetError, match=r"capped at 1,024 \(the limit of gina's account\)")
    with acting_as(Person("gina")), refused:
        import_dataset(studio, _rows(tmp_path / "big.jsonl", 1, width=2000), "big")
