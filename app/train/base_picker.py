"""The base picker's choices: each base with its size and whether a default job on it fits the devices a job may run
on (the memory verdict's arithmetic, app/train/memory_panel). Computed once per refresh of the base list (page load,
tab select), never per keystroke: config reads and arithmetic only, no weights."""

from __future__ import annotations

from app.choices import base_models
from jobs.models.fits import model_shape, verdicts
from jobs.queue.devices import job_devices
from jobs.spec import TrainSpec
from jobs.studio import Studio

VERDICT_ORDER = ("fits", "tight", "does not fit")


def size_words(params: int) -> str:
    """135M, 1.7B: a parameter count as model names write it."""
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


def base_label(studio: Studio, base_model: str) -> str:
    """'smollm2-135m-instruct · 135M · fits': the base, its size, and the best verdict of a default job (a batch of
    one at its max_length) among the devices a job may run on; the name alone when no config is known
    (a hub base before its download)."""
    settings = studio.settings
    shape = model_shape(base_model, settings.models_dir, settings.model_dirs)
    if shape is None:
        return base_model
    spec = TrainSpec(base_model=base_model, batch_size=1)  # the smallest default job; the form's verdict sizes its own
    found = verdicts(spec, shape, job_devices(studio), spec.max_length)
    words = sorted((verdict.word for verdict in found), key=VERDICT_ORDER.index)
    fit = f" · {words[0]} here" if words else ""
    return f"{base_model} · {size_words(shape.total_params)}{fit}"


def base_choices(studio: Studio) -> list[tuple[str, str]]:
    """The base dropdown's (label, value) pairs: the value stays the base's name, as the spec takes it."""
    return [(base_label(studio, name), name) for name in base_models(studio)]
