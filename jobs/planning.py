"""A submitted job's step plan (jobs.step_plan) from what the studio holds: the dataset's rows counted with the
base's tokenizer when it is on this machine, else estimated from characters, and the base's size from its config."""

from __future__ import annotations

from jobs.data.preview import row_lengths
from jobs.data.store import find_dataset, load_rows
from jobs.models.fits import model_shape
from jobs.spec import TrainSpec
from jobs.step_plan import DataSize, StepPlan, estimated_lengths, plan
from jobs.studio import Studio


def data_size(studio: Studio, spec: TrainSpec) -> DataSize:
    """The spec's dataset in tokens of its base (empty when there is no such dataset)."""
    dataset = find_dataset(studio, spec.dataset)
    if dataset is None:
        return DataSize(lengths=[], counted=False)
    counted = row_lengths(studio, dataset, spec.base_model)
    if counted is not None:
        return DataSize(lengths=counted, counted=True)
    return DataSize(lengths=estimated_lengths(load_rows(studio.absolute(dataset.path))), counted=False)


def job_plan(studio: Studio, spec: TrainSpec) -> StepPlan:
    """The steps, tokens and chosen defaults of `spec` on this studio's data."""
    shape = model_shape(spec.base_model, studio.settings.models_dir)
    return plan(spec, data_size(studio, spec), shape.total_params if shape else None)
