"""A memory target the plan honours (issue 34): with `memory_budget_gib`, the step plan picks the memory levers the
person left to the studio so the job's ESTIMATED peak (jobs.models.memory, the same estimate the memory verdict shows)
fits under the budget, fastest first.

The levers, each only where the person left it to the studio (a field they set is kept):
- the micro-batch: `batch_size` left empty is lowered to a divisor of the planned batch and `grad_accum` multiplied
  by the same factor, so the effective batch, the steps and the tokens per step stay the same (a packed row is
  batch x max_length tokens, so activations, masks and the LM head's tiles shrink with it);
- gradient checkpointing left 'auto': off where the budget allows it (faster), on where it is needed.

Fastest first: candidates are tried in the order of their expected speed relative to the plan without a budget
(`relative_speed`), and among equals the largest micro-batch. The estimate is the whole training process's peak (on
a CPU its resident set, the Python/torch runtime included: the CPU profile's `framework_bytes`), so the budget is
in the same terms as the `peak_memory_bytes` metric a job records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from jobs.models.fits import Device, job_estimate, model_shape
from jobs.models.memory_inputs import ModelShape
from jobs.queue.devices import describe_device
from jobs.run_settings.lora import LoraSettings, read_adapter_lora
from jobs.spec import TrainSpec
from jobs.step_plan import StepPlan, min_batch_size
from jobs.studio import Studio
from storage import catalog, workers_repo

GiB = 2**30
HEADROOM = 0.9
"""The plan fits the estimate under this share of the budget: the estimate has been 0.94 to 1.19 times the measured
peak (docs/benchmarks.md), so an estimate at 90% of the budget keeps a run at 0.94 within it."""
CHECKPOINTING_SPEED = {"cpu": 0.69, "cuda": 0.75}
"""Training speed with gradient checkpointing relative to without. CPU: measured, 541 vs 781 non-pad tokens/s on the
demo job (docs/benchmarks.md); CUDA: the recomputed forward, about a third of a step's work (not measured here)."""


@dataclass(frozen=True)
class Levers:
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool


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

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.budget_bytes * HEADROOM

    def sentence(self) -> str:
        gc = "on" if self.levers.gradient_checkpointing else "off"
        head = (f"Memory budget {self.budget_bytes / GiB:g} GiB: batch size {self.levers.batch_size} × "
                f"{self.levers.grad_accum} accumulation, gradient checkpointing {gc}; expected peak "
                f"{self.peak_bytes / GiB:.2f} GiB, expected speed {self.relative_speed:.0%} of the job without a "
                "budget.")
        return head if self.fits else f"{head} **It does not fit:** {self.problem()}"

    def problem(self) -> str | None:
        """Why no choice fits, in words naming what to change; None when the budget is met."""
        if self.fits:
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


def relative_speed(levers: Levers, device: str) -> float:
    return CHECKPOINTING_SPEED.get(device, CHECKPOINTING_SPEED["cuda"]) if levers.gradient_checkpointing else 1.0


def candidates(original: TrainSpec, planned: TrainSpec, devices: Sequence[Device]) -> list[Levers]:
    """Every combination of the free levers, fastest first (then the largest micro-batch)."""
    batch, accum = planned.batch_size or 1, planned.grad_accum
    smallest = min(batch, min_batch_size(original.method))
    batches = ([b for b in range(batch, smallest - 1, -1) if batch % b == 0] if original.batch_size is None
               else [batch])
    if original.gradient_checkpointing == "auto":
        checkpointing = [False, True]
    else:
        checkpointing = [original.gradient_checkpointing == "on"]
    device = devices[0].machine.device if devices else "cpu"
    found = [Levers(b, accum * (batch // b), gc) for gc in checkpointing for b in batches]
    return sorted(found, key=lambda levers: (-relative_speed(levers, device), -levers.batch_size))


def with_levers(spec: TrainSpec, levers: Levers) -> TrainSpec:
    return spec.model_copy(update={"batch_size": levers.batch_size, "grad_accum": levers.grad_accum,
                                   "gradient_checkpointing": "on" if levers.gradient_checkpointing else "off"})


def peak_of(spec: TrainSpec, shape: ModelShape, devices: Sequence[Device], longest: int,
            adapter: LoraSettings | None) -> int:
    return max(job_estimate(spec, shape, device.machine, longest, adapter).peak for device in devices)


def fit(original: TrainSpec, step_plan: StepPlan, shape: ModelShape, devices: Sequence[Device], longest: int = 0,
        adapter: LoraSettings | None = None) -> StepPlan:
    """The plan with the free levers chosen for `original.memory_budget_gib`, and its MemoryFit. When nothing fits,
    the most frugal choice, with the fit saying why (submit refuses it)."""
    budget = int(original.memory_budget_gib * GiB)
    planned = step_plan.spec
    tried = [(levers, peak_of(with_levers(planned, levers), shape, devices, longest, adapter))
             for levers in candidates(original, planned, devices)]
    fitting = [(levers, peak) for levers, peak in tried if peak <= budget * HEADROOM]
    levers, peak = fitting[0] if fitting else min(tried, key=lambda pair: pair[1])
    free = original.model_copy(update={"batch_size": None, "gradient_checkpointing": "auto"})
    floor = min(peak_of(with_levers(planned, lv), shape, devices, longest, adapter)
                for lv in candidates(free, planned, devices))
    fixed = tuple(name for name, value in (("batch_size", original.batch_size),
                                           ("gradient_checkpointing", original.gradient_checkpointing))
                  if value not in (None, "auto"))
    device = devices[0].machine.device if devices else "cpu"
    memory = MemoryFit(budget_bytes=budget, peak_bytes=peak, levers=levers,
                       relative_speed=relative_speed(levers, device), smallest_bytes=min(p for _, p in tried),
                       floor_bytes=floor, fixed=fixed)
    chosen = list(step_plan.chosen)
    chosen += [name for name in ("grad_accum", "gradient_checkpointing") if name not in chosen and
               (name != "grad_accum" or levers.grad_accum != planned.grad_accum) and
               (name != "gradient_checkpointing" or original.gradient_checkpointing == "auto")]
    return replace(step_plan, spec=with_levers(planned, levers), chosen=tuple(chosen), memory=memory)


def job_devices(studio: Studio, pool: str = "") -> list[Device]:
    """The devices a job may run on: live workers of its pool (any worker when it names none). Empty when it names a
    pool no live worker serves; with no worker at all (the app before its worker registers), this machine."""
    with studio.db.read() as session:
        workers = workers_repo.live_workers(session, studio.settings.lease_s)
    if pool:
        workers = [w for w in workers if w.pool == pool]
    if workers or pool:
        return [Device(f"{w.host} {w.device}", w.device_name, w.memory_bytes) for w in workers]
    name, memory = describe_device()
    return [Device("this machine (no worker has registered)", name, memory)]


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


def budget_plan(studio: Studio, original: TrainSpec, step_plan: StepPlan, longest: int) -> StepPlan:
    """`fit` for this studio's devices and the base's shape; the plan unchanged when the base's shape is not known
    here (no estimate to fit) or no device serves the job's pool yet."""
    shape = model_shape(original.base_model, studio.settings.models_dir, studio.settings.model_dirs)
    devices = job_devices(studio, original.pool)
    if shape is None or not devices:
        return step_plan
    return fit(original, step_plan, shape, devices, longest, start_adapter(studio, original))
