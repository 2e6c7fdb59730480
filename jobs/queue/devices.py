"""What device a worker trains on and how much memory a job may use there now, found without torch (the worker
process never imports it): a GPU's free memory by `nvidia-smi`, a CPU's available memory within its limit. The
worker writes it into its row at registration and at each heartbeat while it holds no job; the plan fits a job
without a memory budget under it (jobs.models.budget.free_memory_fit).

The free memory is reported in steps of 1% of the device's total (`reported_free`): read anew at every heartbeat
it moves by some MB, and the plan that quotes it would read differently a second later. A step that scales with the
device keeps the figure still under the ordinary churn of a busy host (tens to hundreds of MB here; a process
starting and ending) at a cost of at most 1-2% of the device, inside the estimate's own margin. It never counts
memory that is not there: it is rounded down, and a figure kept from the last report is kept only while the memory
free now is at least that much."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from jobs.models.fits import Device
from jobs.queue import gang
from jobs.queue.lifecycle import device_label
from jobs.run_settings.allocator import JEMALLOC_LABEL, jemalloc_for_training
from jobs.run_settings.cores import usable_cores
from jobs.run_settings.cpu_dtype import NATIVE_BF16_LABEL, native_bf16
from jobs.studio import Studio
from storage import workers_repo
from storage.models import Worker

MIB = 1 << 20
CGROUP_LIMIT_FILES = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
CGROUP_USAGE_FILES = (Path("/sys/fs/cgroup/memory.current"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def memory_limit_bytes() -> int:
    """The memory a training process may use here: STUDIO_MEMORY_LIMIT_BYTES, else the cgroup's limit, else RAM."""
    if setting := os.environ.get("STUDIO_MEMORY_LIMIT_BYTES"):
        return int(setting)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in CGROUP_LIMIT_FILES:
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), total)
    return total


_LAST_REPORTED: dict[str, int] = {}
"""The free memory this process last reported, per device: the next report keeps it unless it moved by a step."""


def reported_free(free_bytes: int, total_bytes: int, device: str = "") -> int:
    """`free_bytes` as a worker reports it for `device`: rounded down to a step of 1% of `total_bytes` (at least
    1 MiB); the last report's figure while the memory free now is at least that and less than two steps above it
    (a drop is reported at once, a rise once it is a step clear of the edge)."""
    step = max(MIB, total_bytes // 100)
    last = _LAST_REPORTED.get(device)
    if last is None or not last <= free_bytes < last + 2 * step:
        last = _LAST_REPORTED[device] = free_bytes // step * step
    return last


def _gpu(index: str) -> tuple[str, int] | None:
    """(name, free bytes) of GPU `index`: the driver's free count, which torch.cuda.mem_get_info reads too (before
    the job's own CUDA context, which the GPU profile's runtime counts), reported in steps (`reported_free`)."""
    if shutil.which("nvidia-smi") is None:
        return None
    command = ["nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits", "-i",
               index]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""
    parts = [part.strip() for part in line.rsplit(",", 2)]  # a GPU's name may hold commas; the numbers do not
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    name, total, free = parts
    return name, reported_free(int(free) * MIB, int(total) * MIB, f"cuda-{index}")


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_cpu_bytes(inherited_bytes: int = 0) -> int:
    """The memory a training process may use on this CPU now: the kernel's MemAvailable, within what the cgroup's
    limit leaves, plus `inherited_bytes` (what the worker's spare holds: it becomes the job's process, whose runtime
    the estimate counts), never above the limit (STUDIO_MEMORY_LIMIT_BYTES, the cgroup's, or RAM)."""
    limit = memory_limit_bytes()
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return limit
    for limit_file, usage_file in zip(CGROUP_LIMIT_FILES, CGROUP_USAGE_FILES, strict=True):
        cgroup_limit, usage = _number(limit_file), _number(usage_file)
        if cgroup_limit is not None and usage is not None and cgroup_limit < available + usage:
            available = min(available, cgroup_limit - usage)
    return max(0, min(limit, available + inherited_bytes))


def resident_anon_bytes(pid: int | None) -> int:
    """What process `pid` holds in memory of its own (RssAnon: not the libraries' file pages); 0 when gone."""
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def describe_device(inherited_bytes: int = 0, jemalloc: bool = False) -> tuple[str, int]:
    """(device name, the memory a job may use there now) of what this worker trains on: its first visible GPU's free
    memory, else the CPU's available memory (`available_cpu_bytes`), in steps (`reported_free`). A CPU's name says
    whether it multiplies bf16 natively and whether its training processes run with jemalloc (`jemalloc`: the
    STUDIO_JEMALLOC setting, and installed), which the memory verdict reads (jobs.models.fits.Device.machine)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = (visible.split(",")[0].strip() if visible is not None else "0") or None
    gpu = _gpu(first) if first is not None else None
    if gpu is not None:
        return gpu
    native = f", {NATIVE_BF16_LABEL}" if native_bf16() else ""  # the verdict's dtype for 'auto' depends on it
    malloc = f", {JEMALLOC_LABEL}" if jemalloc_for_training(jemalloc) else ""  # and its allocator factor on this
    return (f"CPU ({usable_cores()} cores{native}{malloc})",
            reported_free(available_cpu_bytes(inherited_bytes), memory_limit_bytes(), "cpu"))


def device_count(label: str, name: str) -> int:
    """How many devices one job on this worker may use at once (jobs.queue.ranks): the GPUs it was given
    (CUDA_VISIBLE_DEVICES=0,1 is labelled cuda-0_1), or on a CPU worker its cores, each a gloo rank."""
    if cores := re.match(r"CPU \((\d+) cores", name):
        return int(cores.group(1))
    if label.startswith("cuda-") and label != "cuda-none":
        return len(label.removeprefix("cuda-").split("_"))
    return 1


def job_devices(studio: Studio, pool: str = "", devices: int = 1) -> list[Device]:
    """The devices a job of `devices` ranks may run on, each with how many of its ranks its host runs: the live
    workers of its pool (any worker when it names none) that offer that many devices (one host runs every rank), and,
    for a job that names a pool whose hosts can split it (jobs.queue.gang.feasible), each worker that may be one of
    its gang's nodes (one with a rendezvous address offering the gang's ranks per host). Empty when no live worker may
    run it (a pool no live worker serves, too few devices); with no worker at all (the app before its worker
    registers), this machine."""
    with studio.db.read() as session:
        workers = workers_repo.live_workers(session, studio.settings.lease_s)
    return pool_devices(studio, workers, pool, devices)


def pool_devices(studio: Studio, workers: list[Worker], pool: str = "", devices: int = 1) -> list[Device]:
    """`job_devices` from the live workers the caller read (in its own transaction)."""
    if pool:
        workers = [w for w in workers if w.pool == pool]
    if not workers and not pool:
        name, memory = describe_device(jemalloc=studio.settings.jemalloc)
        return [Device("this machine (no worker has registered)", name, memory, ranks=devices)]
    shape = gang.feasible(devices, gang.host_offers(workers)) if pool and devices > 1 else None
    found = []
    for worker in workers:
        offer = worker.device_count or device_count(worker.device, worker.device_name)
        device = Device(f"{worker.host} {worker.device}", worker.device_name, worker.memory_bytes, ranks=devices,
                        host=worker.host)
        if offer >= devices:
            found.append(device)
        elif shape is not None and worker.address and offer >= shape[1]:
            found.append(replace(device, ranks=shape[1], nodes=shape[0]))
    return found


def placement_words(devices: int, pool: str | None, found: list[Device]) -> str:
    """Where a job of `devices` ranks runs, in words, from `job_devices`' answer: one host's devices, or a gang's nodes
    across its pool's hosts, naming the hosts that may take it. Empty for one device."""
    if devices <= 1 or not found:
        return ""
    alone = list(dict.fromkeys(device.host or device.label for device in found if device.nodes == 1))
    nodes = [device for device in found if device.nodes > 1]
    ways = [f"of one host ({', '.join(alone)})"] if alone else []
    if nodes:
        hosts = ", ".join(dict.fromkeys(device.host for device in nodes))
        count, per_host = nodes[0].nodes, devices // nodes[0].nodes
        # Where some host runs it alone, the others may take it only by leading a gang (its followers may be any).
        ways.append(f"as a gang of {count} nodes × {per_host} rank{'s' if per_host > 1 else ''}, one node per host "
                    f"of pool {pool}" + (f", led by {hosts}" if alone else f" (any {count} of {hosts})"))
    return f"It runs on {devices} devices {', or '.join(ways)}; batch_size is per device."


def most_devices(studio: Studio, pool: str = "") -> int:
    """The most devices one host may give a job of `pool` (any pool when empty): the best of the live workers that
    may take it (device_count), or this machine before any worker registers; 0 when a named pool has no live worker.
    A worker's STUDIO_WORKER_DEVICES, when set, is its count. This is also what devices 'all' means (one host's);
    more runs only across a pool's hosts (jobs.queue.gang)."""
    with studio.db.read() as session:
        workers = workers_repo.live_workers(session, studio.settings.lease_s)
    serving = [w.device_count or device_count(w.device, w.device_name) for w in workers if not pool or w.pool == pool]
    if not workers:
        serving = [device_count(device_label(), describe_device()[0])]
    return max(serving, default=0)
