"""Registered adapters: publishing a finished one, renaming, deleting. Files and ledger rows change together.

An adapter's folder is named by its job (`adapters/job-<id>`), never by its user-facing name: names are
display-only, so a rename touches one row, and a new adapter can never land in a renamed one's folder. A delete
first moves the folder aside (`.deleting-<adapter id>`), then drops the row, then removes the files; a crash in
between is settled by `settle_interrupted_deletes` at the next start (row still there: the folder goes back)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from jobs.models.resolve import portable_base_reference, resolve_base_model
from jobs.spec import ADAPTER_FIELDS, TrainSpec, name_problem
from jobs.spec_store import read_spec_file
from jobs.studio import Studio
from jobs.training.combine import rewrite_card
from jobs.training.model_card import write_model_card
from storage import catalog, jobs_repo
from storage.access import everyone
from storage.models import Adapter, JobKind

log = logging.getLogger(__name__)

DELETING_PREFIX = ".deleting-"


class AdapterError(ValueError):
    """A refused rename or delete, in words, naming the field."""


def adapter_folder(studio: Studio, job_id: int) -> Path:
    return studio.settings.adapters_dir / f"job-{job_id}"


def free_adapter_name(studio: Studio, wanted: str, job_id: int) -> str:
    """`wanted`, or `<wanted>-job<id>` when another adapter already has that name."""
    with studio.db.read() as session, everyone():
        taken = catalog.get_adapter_by_name(session, wanted)
    return wanted if taken is None or taken.job_id == job_id else f"{wanted}-job{job_id}"


def publish_adapter(studio: Studio, job_id: int, attempt: int, spec: TrainSpec, name: str,
                    adapter_dir: Path) -> bool:
    """Move a finished adapter into place and, in one transaction, register it and mark the job succeeded.
    False when a newer attempt owns the job (the files are then removed)."""
    def finish(target: Path, base_pin: dict) -> None:
        if spec.finetuning == "lora":  # a full or freeze run's model names no base: it is one
            name_base(target / "adapter_config.json", spec.base_model, base_pin)
        _write_card(studio, target, name)

    return _register(studio, job_id, attempt, spec.base_model, name, adapter_dir, finish)


def publish_combined(studio: Studio, job_id: int, attempt: int, base_model: str, name: str,
                     adapter_dir: Path) -> bool:
    """Register a combined adapter (jobs.training.combine) as a trained one is: its folder named by its job, its row
    and the job's success in one transaction. Its config already names the base as its first parent's did."""
    return _register(studio, job_id, attempt, base_model, name, adapter_dir, lambda target, pin: None)


def _register(studio: Studio, job_id: int, attempt: int, base_model: str, name: str, adapter_dir: Path,
              finish) -> bool:
    target = adapter_folder(studio, job_id)
    if target.exists():
        shutil.rmtree(target)  # a previous attempt of this same job got this far, then died
    os.replace(adapter_dir, target)
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id)  # the child acts for no one: unscoped
        owner, base_pin = job.owner, jobs_repo.pinned(job).get("base_model", {})  # the adapter is the submitter's
    finish(target, base_pin)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    adapter = Adapter(name=name, base_model=base_model, path=studio.relative(target), size_bytes=size,
                      job_id=job_id, owner=owner)
    with studio.db.write() as session:
        recorded = jobs_repo.succeed_job(session, job_id, attempt, adapter)
    if not recorded:
        shutil.rmtree(target, ignore_errors=True)
    return recorded


def name_base(config_file: Path, base_model: str, base_pin: dict) -> None:
    """Name the real base in the adapter's config, so that `AutoPeftModelForCausalLM.from_pretrained(folder)` loads
    it anywhere: its hub id (jobs.models.resolve.portable_base_reference) and, for a hub base, the commit it trained
    at as `revision`, which PEFT passes on when it loads the base."""
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = portable_base_reference(base_model)
    config["revision"] = base_pin.get("revision") if base_pin.get("hub_id") else None
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


def publish_merged(studio: Studio, job_id: int, attempt: int, adapter_id: int, merged_dir: Path) -> bool:
    """Move a merged model into place and, in one transaction, record it on its adapter and finish the job."""
    target = studio.settings.merged_dir / f"adapter-{adapter_id}"
    aside = target.with_name(f"{target.name}.old-{job_id}")
    if target.exists():
        os.replace(target, aside)  # an earlier merge of the same adapter: kept until this one is recorded
    os.replace(merged_dir, target)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    with studio.db.write() as session:
        adapter = catalog.get_adapter(session, adapter_id)
        recorded = adapter is not None and jobs_repo.complete_job(session, job_id, attempt)
        if recorded:
            adapter.merged_path, adapter.merged_size_bytes = studio.relative(target), size
    if recorded:
        shutil.rmtree(aside, ignore_errors=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        if aside.exists():
            os.replace(aside, target)
    return recorded


def gguf_folder(studio: Studio, adapter_id: int, quantization: str | None = None) -> Path:
    """Where an adapter's GGUF exports live: one folder per quantization."""
    folder = studio.settings.gguf_dir / f"adapter-{adapter_id}"
    return folder / quantization if quantization else folder


def gguf_exports(studio: Studio, adapter_id: int) -> list[str]:
    """The quantizations an export job finished for this adapter (the folder appears whole, by rename)."""
    folder = gguf_folder(studio, adapter_id)
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and "." not in p.name) if folder.is_dir() else []


def publish_export(studio: Studio, job_id: int, attempt: int, adapter_id: int, quantization: str,
                   built: Path) -> bool:
    """Move a finished GGUF export into place and finish the job in one step; a stale attempt's files go."""
    target = gguf_folder(studio, adapter_id, quantization)
    aside = target.with_name(f"{target.name}.old-{job_id}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.replace(target, aside)  # an earlier export at this quantization: kept until this one is recorded
    os.replace(built, target)
    with studio.db.write() as session:
        adapter = catalog.get_adapter(session, adapter_id)
        recorded = adapter is not None and jobs_repo.complete_job(session, job_id, attempt)
    if recorded:
        shutil.rmtree(aside, ignore_errors=True)
        for stale in studio.export_dir(f"adapter-{adapter_id}", adapter.owner).glob(f"*-gguf-{quantization}.zip"):
            stale.unlink(missing_ok=True)  # the download of the export this one replaces
    else:
        shutil.rmtree(target, ignore_errors=True)
        if aside.exists():
            os.replace(aside, target)
    return recorded


def gguf_zip_path(studio: Studio, adapter: Adapter, name: str, quantization: str) -> Path:
    return studio.export_dir(f"adapter-{adapter.id}", adapter.owner) / f"{name}-gguf-{quantization}.zip"


def _write_card(studio: Studio, folder: Path, name: str) -> None:
    """(Re)write the model card from the spec and final metrics the folder holds (a combined adapter's from what it
    was combined from)."""
    if rewrite_card(folder, name):
        return
    stored = read_spec_file(folder / "training_spec.json")
    if stored.spec is None:  # an adapter trained under older rules keeps its card rather than failing a rename
        log.warning("model card of %s not rewritten: %s", folder, stored.problems_text())
        return
    spec = stored.spec
    final_metrics = json.loads((folder / "final_metrics.json").read_text())
    base_path = resolve_base_model(spec.base_model, studio.settings.models_dir)
    write_model_card(folder, name, spec, final_metrics, base_path)


def _export_zip(studio: Studio, adapter: Adapter, name: str) -> Path:
    return studio.export_dir(f"adapter-{adapter.id}", adapter.owner) / f"{name}.zip"


def merged_zip_path(studio: Studio, adapter: Adapter, name: str) -> Path:
    return studio.export_dir(f"adapter-{adapter.id}", adapter.owner) / f"{name}-merged.zip"


def rename_adapter(studio: Studio, name: str, new_name: str) -> Adapter:
    new_name = (new_name or "").strip()
    if problem := name_problem(new_name):
        raise AdapterError(f"new_name: {problem}")
    with studio.db.write() as session:
        adapter = catalog.get_adapter_by_name(session, name)
        if adapter is None:
            raise AdapterError(f"name: no adapter named '{name}'")
        with everyone():  # names are unique across everyone's adapters
            taken = new_name != name and catalog.get_adapter_by_name(session, new_name) is not None
        if taken:
            raise AdapterError(f"new_name: an adapter is already named '{new_name}'")
        adapter.name = new_name
    folder = studio.absolute(adapter.path)
    if folder.is_dir():
        _write_card(studio, folder, new_name)
    for stale in (_export_zip(studio, adapter, name), merged_zip_path(studio, adapter, name),
                  *(gguf_zip_path(studio, adapter, name, q) for q in gguf_exports(studio, adapter.id))):
        stale.unlink(missing_ok=True)  # downloads under the old name are stale
    return adapter


def adapter_ids_in_use(session) -> set[int]:
    """Adapters a queued or running job continues from, scores with (a GRPO reward model) or combines (pinned by id
    at submit)."""
    active = jobs_repo.active_jobs(session)  # anyone's
    pins = [jobs_repo.pinned(job).get(role) for job in active for role in ADAPTER_FIELDS]
    combined = [parent["adapter_id"] for job in active if job.kind == JobKind.COMBINE
                for parent in (job.spec or {}).get("parents", [])]
    return {pin["id"] for pin in pins if pin} | set(combined)


def delete_adapter(studio: Studio, name: str) -> None:
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, name)
        in_use = adapter is not None and adapter.id in adapter_ids_in_use(session)
    if adapter is None:
        raise AdapterError(f"name: no adapter named '{name}'")
    if in_use:
        raise AdapterError(f"name: a queued or running job continues from '{name}', scores with it or combines "
                           f"it; delete it when that job is done")
    folder = studio.absolute(adapter.path)
    aside = folder.with_name(f"{DELETING_PREFIX}{adapter.id}")
    if folder.exists():
        os.replace(folder, aside)
    try:
        with studio.db.write() as session:
            catalog.delete_adapter(session, adapter.id)
    except Exception:
        if aside.exists():
            os.replace(aside, folder)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    if adapter.merged_path:
        shutil.rmtree(studio.absolute(adapter.merged_path), ignore_errors=True)
    exported = gguf_exports(studio, adapter.id)
    shutil.rmtree(gguf_folder(studio, adapter.id), ignore_errors=True)
    for stale in (_export_zip(studio, adapter, adapter.name), merged_zip_path(studio, adapter, adapter.name),
                  *(gguf_zip_path(studio, adapter, adapter.name, q) for q in exported)):
        stale.unlink(missing_ok=True)


def settle_interrupted_deletes(studio: Studio) -> None:
    """Finish or undo deletes a crash interrupted: the row decides whether the files stay."""
    for aside in studio.settings.adapters_dir.glob(f"{DELETING_PREFIX}*"):
        adapter_id = aside.name.removeprefix(DELETING_PREFIX)
        with studio.db.read() as session:
            adapter = catalog.get_adapter(session, int(adapter_id)) if adapter_id.isdigit() else None
        if adapter is not None and not studio.absolute(adapter.path).exists():
            os.replace(aside, studio.absolute(adapter.path))
        else:
            shutil.rmtree(aside, ignore_errors=True)
