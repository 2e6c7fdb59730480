"""A memory target the plan honours (issue 34): with `memory_budget_gib`, the step plan picks the memory levers the
person left to the studio so the job's ESTIMATED peak (jobs.models.memory, the same estimate the memory verdict shows)
fits under the budget, fastest first.

The levers, each only where the person left it to the studio (a field they set is kept):
- the micro-batch: `batch_size` left empty is lowered to a divisor of the planned batch and `grad_accum` multiplied
  by the same factor, so the effective batch, the steps and the tokens per step stay the same (a packed row is
  batch x max_length tokens, so activations, masks and the LM head's tiles shrink with it);
- gradient checkpointing left 'auto': off where the budget allows it (faster), on where it is needed;
- the tokens per forward pass: a packed SFT run whose `pack_length` is left empty trains each packed sequence in
  two forward passes of half of max_length (grad_accum multiplied by the passes, so a step trains the same tokens),
  where half of max_length still holds the data's longest row (no row is cut shorter than max_length).

Fastest first: candidates are tried in the order of their expected speed relative to the plan without a budget
(`relative_speed`), and among equals the largest micro-batch. The estimate is the whole training process's peak (on
a CPU its resident set, the Python/torch runtime included: the CPU profile's `framework_bytes`), so the budget is
in the same terms as the `peak_memory_bytes` metric a job records.

After running out of memory (jobs.queue.retries), a retry takes the same levers in the same order: the fastest
candidate that needs no more of any lever than the attempt that failed and less of one (`smaller_levers`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from jobs.models.fits import Device, job_estimate
from jobs.models.memory_inputs import ModelShape
from jobs.run_settings.lora import LoraSettings, read_adapter_lora
from jobs.run_settings.settings import gradient_checkpointing, pack_lengths
from jobs.spec import TrainSpec
from jobs.studio import Studio
from storage import catalog

GiB = 2**30
HEADROOM = 0.9
"""The plan fits the estimate under this share of the budget: the estimate has been 0.94 to 1.19 times the measured
peak (docs/benchmarks.md), so an estimate at 90% of the budget keeps a run at 0.94 within it."""
CHECKPOINTING_SPEED = {"cpu": 0.69, "cuda": 0.75}
"""Training speed with gradient checkpointing relative to without. CPU: measured, 541 vs 781 non-pad tokens/s on the
demo job (docs/benchmarks.md); CUDA: the recomputed forward, about a third of a step's work (not measured here)."""


PACK_SPLIT_SPEED = {"cpu": 0.85, "cuda": 0.75}
"""Training speed (tokens/s) with each packed sequence in two forward passes of half the tokens, relative to one
pass. CPU: measured on SmolLM2 in bf16, 230 vs 270 tokens/s by median steps (bench/pack_passes.py, docs/benchmarks.md
"Tokens per forward pass"); CUDA: assumed as checkpointing's (not measured; a GPU's passes are launch-bound at these
sizes, so half the tokens a pass likely costs more there)."""
PACK_SPLITS = (2,)
"""Forward passes a packed sequence may be split into by the fit: four passes of 128 measured 0.61x on the CPU, below
checkpointing's 0.69x, so never the faster choice."""


@dataclass(frozen=True)
class Levers:
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    pack_length: int | None = None
    """Tokens per forward pass of a packed sequence (None: max_length, one pass)."""


@dataclass(frozen=True)
class MemoryFit:
    """What the plan chose for a budget, and what it expects."""

    budget_bytes: int
    peak_bytes: int
    """The estimated peak of the chosen levers (the largest over the devices the job may run on)."""
    levers: Levers
    relative_speed: float
    """Expected speed relative to the same job without a budget's levers (1.0: as fast)."""
    smallest_bytes: int
    """The smallest peak the person's fixed fields allow (every free lever at its most frugal)."""
    floor_bytes: int
    """The smallest peak with every lever free: the base's weights, runtime and a step of one sequence."""
    fixed: tuple[str, ...]
    """The levers the person set (kept), named in a refusal."""
    free_on: str = ""
    """Where the budget came from when the person gave none: the device whose free memory it is (`free_memory_fit`);
    empty for the person's memory_budget_gib."""

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.budget_bytes * HEADROOM

    def sentence(self) -> str:
        gc = "on" if self.levers.gradient_checkpointing else "off"
        passes = (f", forward passes of {self.levers.pack_length} tokens" if self.levers.pack_length else "")
        levers = (f"batch size {self.levers.batch_size} × {self.levers.grad_accum} accumulation{passes}, gradient "
                  f"checkpointing {gc}; expected peak {self.peak_bytes / GiB:.2f} GiB")
        if self.free_on:
            head = (f"Memory: no budget set, so the plan fits under the {self.budget_bytes / GiB:.2f} GiB free on "
                    f"{self.free_on}: {levers}, expected speed {self.relative_speed:.0%} of the plan without it.")
            return head if self.fits else (f"{head} **It does not fit** even with the smallest micro-batch and "
                                           "checkpointing; the job may still run once memory is freed there.")
        head = (f"Memory budget {self.budget_bytes / GiB:g} GiB: {levers}, expected speed {self.relative_speed:.0%} "
                "of the job without a budget.")
        return head if self.fits else f"{head} **It does not fit:** {self.problem()}"

    def problem(self) -> str | None:
        """Why no choice fits, in words naming what to change; None when the budget is met (or the budget is the
        device's free memory, which changes while the job waits: never refused)."""
        if self.fits or self.free_on:
            return None
        need = _gib_up(self.smallest_bytes / HEADROOM)
        if self.floor_bytes < self.smallest_bytes and self.floor_bytes <= self.budget_bytes * HEADROOM:
            return (f"{self.budget_bytes / GiB:g} GiB cannot hold this job with {' and '.join(self.fixed)} as set "
                    f"(it needs {need:g} GiB); leave {' / '.join(self.fixed)} to the studio (empty or "
                    f"'auto') or set a budget of at least {need:g} GiB")
        return (f"{self.budget_bytes / GiB:g} GiB is below the smallest peak this job can have: the base's weights "
                f"and runtime with a step of the fewest tokens, with the plan's 10% headroom, need {need:g} GiB; "
                f"set at least {need:g} GiB")


def _gib_up(size: int) -> float:
    return math.ceil(size / GiB * 100) / 100


def device_kind(devices: Sequence[Device]) -> str:
    """The kind of device the levers are rated and 'auto' checkpointing resolved for: the first of the job's."""
    return devices[0].machine.device if devices else "cpu"


def relative_speed(levers: Levers, device: str, passes: int = 1) -> float:
    """Expected speed of `levers` relative to one pass a packed sequence without checkpointing; `passes`: the forward
    passes a packed sequence trains in with them."""
    speed = CHECKPOINTING_SPEED.get(device, CHECKPOINTING_SPEED["cuda"]) if levers.gradient_checkpointing else 1.0
    return speed * (PACK_SPLIT_SPEED.get(device, PACK_SPLIT_SPEED["cuda"]) if passes > 1 else 1.0)


def _passes(planned: TrainSpec, levers: Levers) -> int:
    return with_levers(planned, levers).forward_passes()


def pack_choices(original: TrainSpec, planned: TrainSpec, longest_row: int) -> list[int | None]:
    """The tokens per forward pass the fit may pick: the person's, or one pass (None) and each split that cuts no
    row (`longest_row`: the data's longest row in tokens; 0, unknown: one pass only)."""
    if original.pack_length is not None or planned.method != "sft" or not planned.packing:
        return [planned.pack_length]
    return [None, *pack_lengths(planned.max_length, longest_row, PACK_SPLITS)]


def candidates(original: TrainSpec, planned: TrainSpec, devices: Sequence[Device], longest_row: int = 0
               ) -> list[Levers]:
    """Every combination of the free levers, fastest first (then the largest micro-batch, then one pass)."""
    batch, accum = planned.batch_size or 1, planned.grad_accum
    smallest = min(batch, 2 if original.method == "kto" else 1)  # jobs.step_plan.min_batch_size: KTO pairs rows
    batches = ([b for b in range(batch, smallest - 1, -1) if batch % b == 0] if original.batch_size is None
               else [batch])
    if original.gradient_checkpointing == "auto":
        checkpointing = [False, True]
    else:
        checkpointing = [original.gradient_checkpointing == "on"]
    device = device_kind(devices)
    found = [Levers(b, accum * (batch // b), gc, pack) for gc in checkpointing for b in batches
             for pack in pack_choices(original, planned, longest_row)]
    return sorted(found, key=lambda levers: (-relative_speed(levers, device, _passes(planned, levers)),
                                             -levers.batch_size, -(levers.pack_length or planned.max_length)))


def levers_of(spec: TrainSpec, device: str) -> Levers:
    """The levers a planned spec trains with on `device` ('auto' checkpointing as the run resolves it there)."""
    return Levers(spec.batch_size or 1, spec.grad_accum, gradient_checkpointing(spec, device), spec.pack_length)


def fixed_levers(original: TrainSpec) -> tuple[str, ...]:
    """The levers the person set (a value, not empty or 'auto'): the fit and a retry keep them."""
    return tuple(name for name, value in (("batch_size", original.batch_size),
                                          ("gradient_checkpointing", original.gradient_checkpointing),
                                          ("pack_length", original.pack_length))
                 if value not in (None, "auto"))


def _pass_tokens(spec: TrainSpec) -> int:
    return spec.max_length // spec.forward_passes()


def frugal_steps(original: TrainSpec, planned: TrainSpec, devices: Sequence[Device], longest: int = 0
                 ) -> list[Levers]:
    """The candidates (fastest first) that need no more than `planned` of any lever and less of one: a micro-batch no
    larger, checkpointing no less, forward passes no longer. One that undid an earlier step (checkpointing off again,
    a longer pass) is never among them, so a run of retries only ever shrinks and ends."""
    def needs(levers: Levers) -> tuple[int, bool, int]:
        return levers.batch_size, not levers.gradient_checkpointing, _pass_tokens(with_levers(planned, levers))

    now = needs(levers_of(planned, device_kind(devices)))
    return [levers for levers in candidates(original, planned, devices, longest)
            if (need := needs(levers)) != now and all(less <= more for less, more in zip(need, now, strict=True))]


def smaller_levers(original: TrainSpec, planned: TrainSpec, devices: Sequence[Device], longest: int = 0,
                   shape: ModelShape | None = None, adapter: LoraSettings | None = None) -> Levers | None:
    """After `planned` ran out of memory: the fastest of `frugal_steps` whose estimated peak is below `planned`'s, by
    the estimate the fit uses (taken where the base's `shape` and a device are known; without them the fastest of
    `frugal_steps`). None when nothing is left: every free lever at its most frugal."""
    steps = frugal_steps(original, planned, devices, longest)
    if shape is not None and devices:
        peak = peak_of(planned, shape, devices, longest, adapter)
        steps = [levers for levers in steps
                 if peak_of(with_levers(planned, levers), shape, devices, longest, adapter) < peak]
    return steps[0] if steps else None


def with_levers(spec: TrainSpec, levers: Levers) -> TrainSpec:
    return spec.model_copy(update={"batch_size": levers.batch_size, "grad_accum": levers.grad_accum,
                                   "gradient_checkpointing": "on" if levers.gradient_checkpointing else "off",
                                   "pack_length": levers.pack_length})


def peak_of(spec: TrainSpec, shape: ModelShape, devices: Sequence[Device], longest: int,
            adapter: LoraSettings | None) -> int:
    return max(job_estimate(spec, shape, device.machine, longest, adapter).peak for device in devices)


def fit(original: TrainSpec, planned: TrainSpec, shape: ModelShape, devices: Sequence[Device], longest: int = 0,
        adapter: LoraSettings | None = None, budget_bytes: int | None = None
        ) -> tuple[TrainSpec, MemoryFit, tuple[str, ...]]:
    """(the planned spec with the free levers chosen for `original.memory_budget_gib` (or `budget_bytes`), what it
    expects, the fields it chose). When nothing fits, the most frugal choice, with the fit saying why (submit refuses
    it)."""
    budget = budget_bytes if budget_bytes is not None else int(original.memory_budget_gib * GiB)
    tried = [(levers, peak_of(with_levers(planned, levers), shape, devices, longest, adapter))
             for levers in candidates(original, planned, devices, longest)]
    fitting = [(levers, peak) for levers, peak in tried if peak <= budget * HEADROOM]
    levers, peak = fitting[0] if fitting else min(tried, key=lambda pair: pair[1])
    free = original.model_copy(update={"batch_size": None, "gradient_checkpointing": "auto", "pack_length": None})
    floor = min(peak_of(with_levers(planned, lv), shape, devices, longest, adapter)
                for lv in candidates(free, planned, devices, longest))
    fixed = fixed_levers(original)
    device = device_kind(devices)
    memory = MemoryFit(budget_bytes=budget, peak_bytes=peak, levers=levers,
                       relative_speed=relative_speed(levers, device, _passes(planned, levers)),
                       smallest_bytes=min(p for _, p in tried), floor_bytes=floor, fixed=fixed)
    chosen = (("batch_size",) if original.batch_size is None else ()) + (
        ("grad_accum",) if levers.grad_accum != planned.grad_accum else ()) + (
        ("gradient_checkpointing",) if original.gradient_checkpointing == "auto" else ()) + (
        ("pack_length",) if levers.pack_length != planned.pack_length else ())
    return with_levers(planned, levers), memory, chosen


def free_budget(spec: TrainSpec, devices: Sequence[Device]) -> tuple[int, Device] | None:
    """(the budget one training process gets from the devices' free memory, the device it is for): the smallest of
    the devices the job may run on, so it fits on any; a CPU's is shared by the job's ranks on its host (a gang's
    node runs its share of them: Device.ranks). None without devices."""
    if not devices:
        return None
    shares = [(device.memory_bytes // device.ranks_sharing(spec), device) for device in devices]
    return min(shares, key=lambda pair: pair[0])


def free_memory_fit(original: TrainSpec, planned: TrainSpec, shape: ModelShape, devices: Sequence[Device],
                    longest: int = 0, adapter: LoraSettings | None = None
                    ) -> tuple[TrainSpec, MemoryFit | None, tuple[str, ...]]:
    """A job without a memory budget fitted under the devices' free memory (what the workers report: jobs.queue.
    devices). Free memory is a ceiling, not a target: the plan as the rule made it is kept while it fits (it is the
    fastest), the levers move only when it does not, fastest first, and only to a choice that fits; when none does,
    the plan is kept too, with the fit saying so (free memory changes while a job waits, so it is never refused)."""
    found = free_budget(original, devices)
    if found is None:
        return planned, None, ()
    budget, device = found
    label = f"{device.label} ({device.name})"
    peak = peak_of(planned, shape, devices, longest, adapter)
    if peak <= budget * HEADROOM:
        levers = levers_of(planned, device.machine.device)
        return planned, MemoryFit(budget_bytes=budget, peak_bytes=peak, levers=levers, relative_speed=1.0,
                                  smallest_bytes=peak, floor_bytes=peak, fixed=(), free_on=label), ()
    chosen_spec, memory, chosen = fit(original, planned, shape, devices, longest, adapter, budget_bytes=budget)
    memory = replace(memory, free_on=label)
    if not memory.fits:
        levers = levers_of(planned, device.machine.device)
        return planned, replace(memory, peak_bytes=peak, levers=levers, relative_speed=1.0), ()
    return chosen_spec, memory, chosen


def start_adapter(studio: Studio, spec: TrainSpec) -> LoraSettings | None:
    """The LoRA of the adapter the job continues, which trains instead of the form's LoRA fields (None: a new one,
    or an adapter this person cannot see, which submit refuses)."""
    if not spec.init_adapter:
        return None
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, spec.init_adapter)
    try:
        return read_adapter_lora(studio.absolute(adapter.path)) if adapter else None
    except (OSError, ValueError):
        return None
