"""What the next attempt of a job that lost its training process changes, and why.

A child killed by a signal (`kill -9`, the kernel's OOM killer) is a lost attempt: the job is requeued and resumes
from its newest checkpoint. When the loss was for memory (a CUDA out-of-memory error, or a kill while the
process's memory was near the machine's limit), the retry needs less, by the plan's own memory levers in the plan's
own order (jobs.models.budget.smaller_levers): the fastest candidate of the levers the person left to the studio that
needs no more of any lever than the attempt that failed and less of one, and whose estimated peak is below the failed
attempt's where the estimate can be taken. The levers: a smaller micro-batch with gradient accumulation multiplied by
the same factor, each packed SFT sequence in two forward passes of half of max_length (where that cuts no row), and
gradient checkpointing on; each keeps the tokens an optimizer step trains. A lever the person set is never changed.
The changes are kept as the job's `overrides` beside its spec: {"fields": {spec field: value}, "why": [one line per
change]}, so the Runs tab shows what changed and why, and a later retry counts them as already made.

The resumed attempt keeps the checkpoint's step count: its grad_accum x forward passes x micro-batch trains the tokens
a step did, so the steps an epoch makes stay as they were. A split pass is the one lever that changes what TRL packs
(sequences of half the length, packed anew), so the rest of the interrupted epoch is drawn from those: its rows are
not the exact remainder the uninterrupted run would have trained, as they are after a smaller micro-batch or
checkpointing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from jobs.models.budget import PACK_SPLITS, device_kind, fixed_levers, smaller_levers, with_levers
from jobs.models.fits import Device, model_shape
from jobs.models.memory_inputs import ModelShape
from jobs.queue.devices import pool_devices
from jobs.run_settings.lora import LoraSettings, read_adapter_lora
from jobs.run_settings.settings import gradient_checkpointing, pack_lengths
from jobs.spec import TrainSpec
from jobs.studio import Studio
from storage import catalog, workers_repo
from storage.models import Job

NEAR_LIMIT_SHARE = 0.85
"""A kill with the process's memory above this share of the limit is taken for the OOM killer's."""


def killed_for_memory(peak_bytes: float | None, limit_bytes: int) -> bool:
    return peak_bytes is not None and peak_bytes >= NEAR_LIMIT_SHARE * limit_bytes


def override_fields(overrides: dict | None) -> dict:
    return dict((overrides or {}).get("fields", {}))


FREED = {"batch_size": None, "gradient_checkpointing": "auto", "pack_length": None}
"""Each memory lever as the person leaves it to the studio."""
PASSES_WORDS = {2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class FitInputs:
    """What the plan's memory fit read at submit besides the spec, as a retry reads it again (jobs.queue.supervisor);
    each may be missing, and the retry still shrinks (without an estimate, by the levers' order alone)."""

    chosen: frozenset[str] = frozenset()
    """The fields the plan chose at submit (provenance's plan): a memory lever among them is the studio's to change."""
    longest_row: int = 0
    """The data's longest row in the base's tokens, as the plan counted it (0: not known, so no pass is split)."""
    devices: Sequence[Device] = ()
    shape: ModelShape | None = None
    adapter: LoraSettings | None = None

    @property
    def device(self) -> str:
        """The device kind 'auto' checkpointing resolves for, as the fit takes it (the first device)."""
        return device_kind(self.devices)


def fit_inputs(session: Session, studio: Studio, job: Job, spec: TrainSpec) -> FitInputs:
    """What the plan's fit read at submit, read again cheaply inside the ledger's write that requeues the job: the
    fields the plan chose and the data's longest row from what submit stored in the job's provenance (counting the
    dataset's tokens again here would hold the write for as long as tokenizing takes, and a hub base's tokenizer may
    not be on this host), the base's shape from its config, the devices of the job's pool, and the LoRA of the
    adapter it continues (by the id submit pinned)."""
    submitted = job.provenance or {}
    plan = submitted.get("plan") or {}
    # A count estimated from characters could be short of the real row, and a pass split on it cut that row, which
    # training refuses: only the base tokenizer's own count lets a retry split.
    longest = int(plan.get("longest_row") or 0) if plan.get("tokens_counted") else 0
    devices = pool_devices(studio, workers_repo.live_workers(session, studio.settings.lease_s), spec.pool,
                           spec.ranks())
    shape = model_shape(spec.base_model, studio.settings.models_dir, studio.settings.model_dirs)
    return FitInputs(frozenset(plan.get("chosen") or ()), longest, tuple(devices), shape,
                     _continued_lora(session, studio, submitted.get("pinned") or {}))


def _continued_lora(session: Session, studio: Studio, pinned: dict) -> LoraSettings | None:
    pin = pinned.get("init_adapter")
    adapter = catalog.get_adapter(session, pin["id"]) if pin else None
    try:
        return read_adapter_lora(studio.absolute(adapter.path)) if adapter else None
    except (OSError, ValueError):
        return None


def persons_spec(stored: TrainSpec, chosen: frozenset[str]) -> TrainSpec:
    """The stored (planned) spec with the memory levers the plan chose left free again, as the person left them."""
    return stored.model_copy(update={name: value for name, value in FREED.items() if name in chosen})


def _smaller(original: TrainSpec, failed: TrainSpec, inputs: FitInputs) -> TrainSpec | None:
    try:
        levers = smaller_levers(original, failed, inputs.devices, inputs.longest_row, inputs.shape, inputs.adapter)
    except (KeyError, TypeError, ValueError):  # a shape the estimate cannot model: the levers' order alone
        levers = smaller_levers(original, failed, inputs.devices, inputs.longest_row)
    return None if levers is None else with_levers(failed, levers)


def smaller_footprint(stored: TrainSpec, fields: dict, inputs: FitInputs | None = None) -> tuple[dict, str] | None:
    """The override fields for the next attempt after running out of memory (`fields`: the earlier retries'), and
    what changed in words; None when nothing is left to shrink."""
    inputs = inputs or FitInputs()
    failed = TrainSpec.model_validate({**stored.model_dump(), **fields})
    smaller = _smaller(persons_spec(stored, inputs.chosen), failed, inputs)
    if smaller is None:
        return None
    changes, words = _changes(failed, smaller, inputs.device)
    return {**fields, **changes}, words


def _changes(failed: TrainSpec, smaller: TrainSpec, device: str) -> tuple[dict, str]:
    """The fields `smaller` changes from `failed`, and the change in words."""
    changes, words = {}, []
    if smaller.batch_size != failed.batch_size:
        changes.update(batch_size=smaller.batch_size, grad_accum=smaller.grad_accum)
        factor = (failed.batch_size or 1) // smaller.batch_size
        words.append(f"halved the micro-batch to {smaller.batch_size} and doubled gradient accumulation to "
                     f"{smaller.grad_accum} (the same effective batch)" if factor == 2 else
                     f"cut the micro-batch to {smaller.batch_size} and multiplied gradient accumulation by {factor} "
                     f"to {smaller.grad_accum} (the same effective batch)")
    if smaller.forward_passes() != failed.forward_passes():
        changes["pack_length"] = smaller.pack_length
        passes = smaller.forward_passes()
        words.append(f"split each packed sequence into {PASSES_WORDS.get(passes, passes)} forward passes of "
                     f"{smaller.pack_length} tokens (the same tokens a step)")
    if gradient_checkpointing(smaller, device) != gradient_checkpointing(failed, device):
        changes["gradient_checkpointing"] = "on"
        words.append("turned gradient checkpointing on")
    return changes, " and ".join(words)


def nothing_left_words(stored: TrainSpec, fields: dict, inputs: FitInputs | None = None) -> str:
    """Where the levers stand when no retry can shrink further, and what would let one: a lever the person set
    that, left to the studio, would shrink (named), else a smaller max_length, rank or base model. A lever left that
    the estimate expects no lower peak from is named with it."""
    inputs = inputs or FitInputs()
    failed = TrainSpec.model_validate({**stored.model_dump(), **fields})
    original = persons_spec(stored, inputs.chosen)
    at = [f"micro-batch {failed.batch_size}",
          f"gradient checkpointing {'on' if gradient_checkpointing(failed, inputs.device) else 'off'}"]
    if failed.method == "sft" and failed.packing:
        at.append(_passes_words(failed, original, inputs.longest_row))
    unlowered = smaller_levers(original, failed, inputs.devices, inputs.longest_row)  # by the order alone
    change = _changes(failed, with_levers(failed, unlowered), inputs.device)[1] if unlowered is not None else ""
    estimate = f" (the plan's estimate expects no lower peak from a retry that {change})" if change else ""
    freeable = [name for name in fixed_levers(original)
                if _smaller(original.model_copy(update={name: FREED[name]}), failed, inputs) is not None]
    advice = f"leave {' / '.join(freeable)} to the studio (empty or 'auto'), or use" if freeable else "use"
    return (f"already at its smallest footprint: {', '.join(at)}{estimate}. To need less, {advice} a smaller "
            "max_length, rank or base model")


def _passes_words(failed: TrainSpec, original: TrainSpec, longest_row: int) -> str:
    passes = failed.forward_passes()
    if passes > 1:
        return (f"each packed sequence in {PASSES_WORDS.get(passes, passes)} forward passes of {failed.pack_length} "
                "tokens")
    words = f"each packed sequence in one forward pass of {failed.max_length} tokens"
    if original.pack_length is not None:
        return words
    if not longest_row:
        return f"{words} (pack_length: the data's longest row is not known here, so no pass is split)"
    if not pack_lengths(failed.max_length, longest_row, PACK_SPLITS):
        return (f"{words} (pack_length: two passes of {failed.max_length // 2} would cut the data's longest row of "
                f"{min(longest_row, failed.max_length)} tokens)")
    return words
