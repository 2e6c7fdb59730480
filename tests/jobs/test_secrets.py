"""Secrets are kept encrypted (the database file never holds one in clear), each is its owner's alone, and what is
shown of one is at most its last 4 characters."""

import stat

import pytest
from sqlalchemy import update

from jobs.secrets import KEY_FILE, SecretError, drop_secret, hint_for, put_secret, secret_for_use, secret_hint
from jobs.studio import open_studio
from storage.access import Person, acting_as
from storage.models import Secret
from storage.settings import load_settings

TOKEN = "hf_QmV0dGVyTm90QmVQbGFpblRleHQ9WQ"


@pytest.fixture
def studio(tmp_path):
    opened = open_studio(load_settings({"STUDIO_DATA_DIR": str(tmp_path / "data")}))
    yield opened
    opened.db.dispose()


def test_the_token_is_not_in_the_database_file_in_clear(studio):
    with acting_as(Person("alice")):
        put_secret(studio, "hub_token", TOKEN)
        assert secret_for_use(studio, "hub_token") == TOKEN
    studio.db.dispose()  # nothing held back in a connection: every page is on disk (the main file or its WAL)
    files = sorted(studio.settings.data_dir.glob("studio.db*"))
    raw = b"".join(path.read_bytes() for path in files)
    assert files and TOKEN.encode() not in raw and TOKEN[3:15].encode() not in raw, files
    with studio.db.read() as session:
        assert session.query(Secret).one().ciphertext.startswith("gAAAA")  # a Fernet token
    key = studio.settings.data_dir / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.parametrize("length", [1, 3, 4, 7, 8, 15, 16, 17, 37, 200])
def test_a_hint_shows_at_most_four_characters_and_never_most_of_a_short_secret(length):
    value = "".join(chr(ord("a") + i % 26) for i in range(length))
    shown = hint_for(value).removeprefix("…")
    assert len(shown) <= 4 and len(shown) <= length // 4 and value.endswith(shown)


def test_the_hint_is_what_is_shown_back(studio):
    with acting_as(Person("alice")):
        assert put_secret(studio, "hub_token", TOKEN) == "…Q9WQ" == secret_hint(studio, "hub_token")


def test_each_secret_is_its_owners_alone(studio):
    with acting_as(Person("alice")):
        put_secret(studio, "hub_token", TOKEN)
    with acting_as(Person("root", admin=True)):  # an admin sees everyone's jobs, never their secrets
        assert secret_hint(studio, "hub_token") is None and secret_for_use(studio, "hub_token") is None
    with acting_as(Person("bob")):
        assert secret_for_use(studio, "hub_token") is None
        put_secret(studio, "hub_token", "hf_bobs_own_token_123")
        assert secret_for_use(studio, "hub_token") == "hf_bobs_own_token_123"
        assert drop_secret(studio, "hub_token") and not drop_secret(studio, "hub_token")
    with acting_as(Person("alice")):
        assert secret_for_use(studio, "hub_token") == TOKEN


def test_a_row_moved_to_another_owner_does_not_decrypt_as_theirs(studio):
    with acting_as(Person("alice")):
        put_secret(studio, "hub_token", TOKEN)
    with studio.db.write() as session:
        session.execute(update(Secret).values(owner="bob"))
    with acting_as(Person("bob")), pytest.raises(SecretError, match="can no longer be read here"):
        secret_for_use(studio, "hub_token")


def test_a_request_that_slipped_past_the_login_keeps_no_secret(studio):
    with acting_as(Person("")), pytest.raises(SecretError, match="sign in"):
        put_secret(studio, "hub_token", TOKEN)
