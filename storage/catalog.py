"""Adapters and datasets: what users trained and what they uploaded."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.access import new_owner, visible
from storage.models import Adapter, Dataset, Job, utcnow


def list_adapters(session: Session, base_model: str | None = None) -> list[Adapter]:
    query = select(Adapter).where(visible(Adapter.owner)).order_by(Adapter.id.desc())
    if base_model is not None:
        query = query.where(Adapter.base_model == base_model)
    return list(session.scalars(query))


def get_adapter_by_name(session: Session, name: str) -> Adapter | None:
    return session.scalars(select(Adapter).where(Adapter.name == name, visible(Adapter.owner))).first()


def get_adapter(session: Session, adapter_id: int) -> Adapter | None:
    return session.scalars(select(Adapter).where(Adapter.id == adapter_id, visible(Adapter.owner))).first()


def delete_adapter(session: Session, adapter_id: int) -> None:
    session.execute(delete(Adapter).where(Adapter.id == adapter_id))


def adapters_with_jobs(session: Session) -> list[tuple[Adapter, Job | None]]:
    """Every adapter, newest first, with the job that trained it (for its spec and steps)."""
    query = (select(Adapter, Job).outerjoin(Job, Adapter.job_id == Job.id).where(visible(Adapter.owner))
             .order_by(Adapter.id.desc()))
    return [(adapter, job) for adapter, job in session.execute(query)]


def adapter_for_job(session: Session, job_id: int) -> Adapter | None:
    return session.scalars(select(Adapter).where(Adapter.job_id == job_id, visible(Adapter.owner))).first()


def get_dataset_by_sha256(session: Session, sha256: str, owner: str | None) -> Dataset | None:
    """The owner's dataset with this content (None: the bundled one): content is unique per owner."""
    owned = Dataset.owner.is_(None) if owner is None else Dataset.owner == owner
    return session.scalars(select(Dataset).where(Dataset.sha256 == sha256, owned)).first()


def add_dataset(session: Session, name: str, path: str, format: str, rows: int, sha256: str,
                mapping: dict | None = None, source: dict | None = None, bundled: bool = False) -> Dataset:
    """Register a dataset for the person acting (a `bundled` one for everyone); the same content uploaded twice by
    one owner is stored once (the first row is returned)."""
    owner = None if bundled else new_owner()
    existing = get_dataset_by_sha256(session, sha256, owner)
    if existing is not None:
        return existing
    dataset = Dataset(name=name, path=path, format=format, rows=rows, sha256=sha256, created_at=utcnow(),
                      mapping=mapping, source=source, owner=owner)
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, dataset_id: int) -> Dataset | None:
    query = select(Dataset).where(Dataset.id == dataset_id, visible(Dataset.owner, public_when_null=True))
    return session.scalars(query).first()


def list_datasets(session: Session) -> list[Dataset]:
    query = select(Dataset).where(visible(Dataset.owner, public_when_null=True)).order_by(Dataset.id.desc())
    return list(session.scalars(query))


def get_dataset_by_name(session: Session, name: str) -> Dataset | None:
    query = (select(Dataset).where(Dataset.name == name, visible(Dataset.owner, public_when_null=True))
             .order_by(Dataset.id.desc()))
    return session.scalars(query).first()


def delete_dataset(session: Session, dataset: Dataset) -> None:
    """The row only: its stored file goes after the commit (jobs.data.store), and only if no other row names it."""
    session.delete(dataset)
    session.flush()


def datasets_at(session: Session, path: str) -> int:
    """How many datasets (anyone's) name the stored file `path`: two owners may share one content."""
    return len(list(session.scalars(select(Dataset.id).where(Dataset.path == path))))


def dataset_paths_of(session: Session, owner: str) -> list[str]:
    """The stored files of every dataset `owner` keeps, whoever asks: what their disk allowance counts."""
    return list(session.scalars(select(Dataset.path).where(Dataset.owner == owner)))
