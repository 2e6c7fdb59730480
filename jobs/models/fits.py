"""Will it fit? The memory estimate for a spec (jobs/models/memory.py), and a verdict for each device a job may
run on: fits (under 80% of its memory), tight (80-100%), does not fit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.models.memory import Estimate, estimate
from jobs.models.memory_inputs import DeviceProfile, ModelShape, TrainShape, profile_for
from jobs.models.resolve import folder_readable, hub_cache_snapshot, looks_local, prepared_path
from jobs.run_settings.allocator import JEMALLOC_LABEL
from jobs.run_settings.cpu_dtype import NATIVE_BF16_LABEL, base_positions
from jobs.run_settings.lora import LoraSettings
from jobs.run_settings.settings import Base, Machine, RunSettings, resolve
from jobs.run_settings.speed import ALL_KERNELS, COMPILE
from jobs.spec import DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL, STUDIO_BASE_MODELS, TrainSpec

TIGHT_SHARE = 0.8
# SmolLM2-135M-Instruct before it is prepared: its shape is fixed (fp32 checkpoint, tied embeddings).
KNOWN_SHAPES = {SMOLLM2_BASE_MODEL: ModelShape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3,
                                               vocab=49152, tied_embeddings=True, checkpoint_bytes=134_515_008 * 4)}

KNOWN_CONTEXTS = {DEMO_BASE_MODEL: 1024, SMOLLM2_BASE_MODEL: 8192}
"""max_position_embeddings of the studio's bases before they are built (jobs.models.demo.MAX_POSITIONS; SmolLM2's
config)."""

@dataclass(frozen=True)
class Device:
    """Where a job may run: a worker's device, or this machine when no worker has registered."""

    label: str
    name: str
    memory_bytes: int
    ranks: int | None = None
    """How many of the job's ranks its host runs (jobs.queue.devices.job_devices); None: all of them."""
    nodes: int = 1
    """The hosts the job spans when this host is one node of a gang across its pool's hosts (jobs.queue.gang); 1:
    this host runs every rank."""
    host: str = ""
    """The worker's host (a gang takes one node per host); empty: this machine."""

    def ranks_sharing(self, spec: TrainSpec) -> int:
        """How many of the job's ranks share this device's memory: a CPU's ranks on its host all do; a GPU holds
        one."""
        return (self.ranks or spec.devices) if self.machine.device == "cpu" else 1

    @property
    def machine(self) -> Machine:
        """The machine a run resolves its settings for here. A CPU worker's name says whether it multiplies bf16
        natively and whether its training processes run with jemalloc (jobs.queue.devices); a GPU's does not say
        whether it supports bf16, and the GPU profile counts bf16 and fp16 alike."""
        if self.name.startswith("CPU"):
            return Machine(device="cpu", bf16=NATIVE_BF16_LABEL in self.name, kernels=frozenset({COMPILE}),
                           jemalloc=JEMALLOC_LABEL in self.name)
        return Machine(device="cuda", bf16=True, kernels=ALL_KERNELS)  # its packages are not known here

    def profile_for(self, spec: TrainSpec, shape: ModelShape) -> DeviceProfile:
        """The profile a job of `spec` on `shape` runs under here (a CPU's depends on the dtype it computes in)."""
        return profile_for(resolve(spec, Base(hidden=shape.hidden), self.machine))


@dataclass(frozen=True)
class Verdict:
    device: Device
    estimate: Estimate
    """One rank's: each device of a several-device job holds the whole 4-bit base and its own batch."""
    ranks: int = 1
    """How many of the job's ranks share this device's memory (Device.ranks_sharing)."""

    @property
    def peak(self) -> int:
        return self.estimate.peak * self.ranks

    @property
    def share(self) -> float:
        return self.peak / self.device.memory_bytes if self.device.memory_bytes else float("inf")

    @property
    def word(self) -> str:
        return "fits" if self.share < TIGHT_SHARE else "tight" if self.share <= 1 else "does not fit"


def model_shape(base_model: str, models_dir: Path, model_dirs: Sequence[Path] = ()) -> ModelShape | None:
    """The base's shape from its folder's config and headers, whatever its family (a studio base before it exists:
    its known shape); None when the folder is not here yet, not one the person may load from (`folder_readable`;
    `model_dirs`: STUDIO_MODEL_DIRS), or its config is not a decoder's."""
    folder = _config_folder(base_model, models_dir, model_dirs)
    if folder is None:
        return KNOWN_SHAPES.get(base_model) if folder_readable(base_model, models_dir, model_dirs) else None
    try:
        return ModelShape.from_dir(folder)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None


def _config_folder(base_model: str, models_dir: Path, model_dirs: Sequence[Path] = ()) -> Path | None:
    """The base's folder with its config.json, when it is here and one the person may load from."""
    if not folder_readable(base_model, models_dir, model_dirs):
        return None
    path = prepared_path(base_model, models_dir)
    if base_model not in STUDIO_BASE_MODELS and not looks_local(base_model):
        path = hub_cache_snapshot(base_model)  # a hub id: its download, if there is one
    return Path(path) if path and (Path(path) / "config.json").is_file() else None


def base_context(base_model: str, models_dir: Path, model_dirs: Sequence[Path] = ()) -> tuple[int | None, str | None]:
    """(the base's context in tokens, its own RoPE scaling type) from its config (a studio base before it is built:
    its known context); (None, None) when unknown."""
    folder = _config_folder(base_model, models_dir, model_dirs)
    if folder is None:
        return KNOWN_CONTEXTS.get(base_model), None
    context, rope = base_positions(folder)
    return context, (rope or {}).get("rope_type", (rope or {}).get("type"))


def job_estimate(spec: TrainSpec, shape: ModelShape, machine: Machine, longest_sequence: int = 0,
                 adapter: LoraSettings | None = None) -> Estimate:
    """The estimated peak of a job of `spec` (planned) on `shape` on `machine`, with the settings its training
    resolves (jobs.run_settings). `longest_sequence`: the data's longest sequence in tokens when known (a padded
    batch, such as DPO's, is as long as its longest row); else max_length. `adapter`: the LoRA of the adapter the job
    continues (init_adapter), which trains instead of the spec's LoRA fields."""
    return estimate(shape, *job_estimate_inputs(spec, shape, machine, longest_sequence, adapter))


def job_estimate_inputs(spec: TrainSpec, shape: ModelShape, machine: Machine, longest_sequence: int = 0,
                        adapter: LoraSettings | None = None) -> tuple[TrainShape, DeviceProfile]:
    """What the estimate of `job_estimate` assumes: the run's training shape and its device profile."""
    return estimate_inputs(resolve(spec, Base(hidden=shape.hidden), machine, adapter), longest_sequence)


def estimate_inputs(settings: RunSettings, longest_sequence: int = 0) -> tuple[TrainShape, DeviceProfile]:
    return TrainShape.from_settings(settings, longest_sequence), profile_for(settings)


def settings_estimate(settings: RunSettings, shape: ModelShape, longest_sequence: int = 0) -> Estimate:
    """The estimated peak of a run with these settings on `shape`."""
    return estimate(shape, *estimate_inputs(settings, longest_sequence))


def verdicts(spec: TrainSpec, shape: ModelShape, devices: list[Device], longest_sequence: int = 0,
             adapter: LoraSettings | None = None) -> list[Verdict]:
    return [Verdict(device, job_estimate(spec, shape, device.machine, longest_sequence, adapter),
                    ranks=device.ranks_sharing(spec)) for device in devices]


def gang_problem(found: Sequence[Verdict]) -> str | None:
    """Why a job that only a gang across its pool's hosts can run (every verdict is a node's: Device.nodes > 1)
    cannot fit there: fewer of the hosts that may be its nodes hold a node's ranks in their device's memory than it
    needs nodes (a node is one host: two workers of one host count once). None when enough do, or for no gang."""
    if not found or any(verdict.device.nodes <= 1 for verdict in found):
        return None  # some worker runs every rank itself: no gang is needed
    nodes = max(verdict.device.nodes for verdict in found)
    fitting = {verdict.device.host for verdict in found if verdict.share <= 1}
    if len(fitting) >= nodes:
        return None
    hosts = {verdict.device.host for verdict in found}
    each = "; ".join(f"{v.device.label} ({v.device.name}): {_peak_words(v)} against {v.device.memory_bytes / 2**30:.2f}"
                     f" GiB free, {v.word}" for v in found)
    per_host = found[0].device.ranks or 1
    return (f"runs as a gang of {nodes} nodes × {per_host} rank{'s' if per_host > 1 else ''}, one node per host, but "
            f"only {len(fitting)} of the {len(hosts)} host(s) that may be its nodes can hold a node's peak: {each}. "
            f"Lower max_length, lora_r or the batch (or leave batch_size and gradient_checkpointing to the studio), "
            f"or serve the pool from hosts with more memory")


def _peak_words(verdict: Verdict) -> str:
    if verdict.ranks > 1:
        return f"its {verdict.ranks} ranks share {verdict.peak / 2**30:.2f} GiB"
    return f"one rank per device, {verdict.peak / 2**30:.2f} GiB each"
