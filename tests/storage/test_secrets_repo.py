"""Secret rows: one per owner and kind, replaced in place, looked up by their owner whoever is acting."""

from storage import secrets_repo
from storage.access import Person, acting_as
from storage.db import Database
from storage.schema import upgrade_database


def test_a_secret_is_replaced_in_place_and_found_only_by_its_owner(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    upgrade_database(db)
    with db.write() as session:
        first = secrets_repo.put_secret(session, "alice", "hub_token", "sealed-1", "…abcd").id
        secrets_repo.put_secret(session, "bob", "hub_token", "sealed-b", None)
    with db.write() as session:
        again = secrets_repo.put_secret(session, "alice", "hub_token", "sealed-2", "…efgh")
        assert (again.id, again.ciphertext, again.hint) == (first, "sealed-2", "…efgh")
    with acting_as(Person("root", admin=True)), db.read() as session:
        assert secrets_repo.get_secret(session, "alice", "hub_token").ciphertext == "sealed-2"
        assert secrets_repo.get_secret(session, "alice", "other") is None
    with db.write() as session:
        assert secrets_repo.delete_secret(session, "alice", "hub_token")
        assert not secrets_repo.delete_secret(session, "alice", "hub_token")
        assert secrets_repo.get_secret(session, "bob", "hub_token").ciphertext == "sealed-b"
    db.dispose()
