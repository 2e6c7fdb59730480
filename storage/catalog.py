"""Adapters and datasets: what users trained and what they uploaded."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import Adapter, Dataset, Job, utcnow


def list_adapters(session: Session, base_model: str | None = None) -> list[Adapter]:
    query = select(Adapter).order_by(Adapter.id.desc())
    if base_model is not None:
        query = query.where(Adapter.base_model == base_model)
    return list(session.scalars(query))


def get_adapter_by_name(session: Session, name: str) -> Adapter | None:
    return session.scalars(select(Adapter).where(Adapter.name == name)).first()


def get_adapter(session: Session, adapter_id: int) -> Adapter | None:
    return session.get(Adapter, adapter_id)


def delete_adapter(session: Session, adapter_id: int) -> None:
    session.execute(delete(Adapter).where(Adapter.id == adapter_id))


def adapters_with_jobs(session: Session) -> list[tuple[Adapter, Job | None]]:
    """Every adapter, newest first, with the job that trained it (for its spec and steps)."""
    query = select(Adapter, Job).outerjoin(Job, Adapter.job_id == Job.id).order_by(Adapter.id.desc())
    return [(adapter, job) for adapter, job in session.execute(query)]


def adapter_for_job(session: Session, job_id: int) -> Adapter | None:
    return session.scalars(select(Adapter).where(Adapter.job_id == job_id)).first()


def get_dataset_by_sha256(session: Session, sha256: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.sha256 == sha256)).first()


def add_dataset(session: Session, name: str, path: str, format: str, rows: int, sha256: str,
                mapping: dict | None = None, source: dict | None = None) -> Dataset:
    """Register a dataset; the same content uploaded twice is stored once (the first row is returned)."""
    existing = get_dataset_by_sha256(session, sha256)
    if existing is not None:
        return existing
    dataset = Dataset(name=name, path=path, format=format, rows=rows, sha256=sha256, created_at=utcnow(),
                      mapping=mapping, source=source)
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, dataset_id: int) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.id.desc())))


def get_dataset_by_name(session: Session, name: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.name == name).order_by(Dataset.id.desc())).first()
