"""One job on several devices: the ranks torchrun starts, and what each rank may do.

torchrun (`python -m torch.distributed.run`) starts one process per device and sets RANK, LOCAL_RANK, WORLD_SIZE
and the rendezvous address in each; the HF Trainer reads them and wraps the model in DDP (gloo on a CPU, nccl on
CUDA), so only the LoRA weights' gradients are reduced. This module reads the same variables without importing
torch.distributed before the Trainer sets it up, so a one-device run is unchanged.

Only rank 0 writes what the studio keeps (metrics, samples, the best adapter, the final adapter, the run's dtype
record); every rank writes its own RNG state into a checkpoint (the Trainer does), so the completion marker waits
for all of them (`barrier`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from jobs.run_settings.cores import usable_cores

STOP_CODES = {False: 0, True: 1, "cancel": 2}
"""A stop request as a number the ranks can reduce with MAX: a cancel outranks a stop that keeps a checkpoint."""


def world_size() -> int:
    """How many ranks this run has (1: not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes what the run keeps: the only one of a one-device run, rank 0 of several."""
    return rank() == 0


def distributed() -> bool:
    """Whether torch.distributed is set up in this process (the Trainer does it on its first use of the device)."""
    if world_size() <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op in a one-device run)."""
    if distributed():
        import torch.distributed as dist

        dist.barrier()


def agreed_stop(local: bool | str) -> bool | str:
    """The stop request every rank acts on at a step's end: the strongest any rank saw. Ranks that stopped at
    different steps would wait for each other's gradients for ever, so a stop is only taken where all ranks are
    (every rank calls this once per step)."""
    if not distributed():
        return local
    import torch
    import torch.distributed as dist

    code = torch.tensor([STOP_CODES[local if local in STOP_CODES else bool(local)]], dtype=torch.int64)
    dist.all_reduce(code, op=dist.ReduceOp.MAX)
    return {value: key for key, value in STOP_CODES.items()}[int(code.item())]


def threads_per_rank(cores: int | None = None) -> int:
    """A CPU rank's share of the cores: N gloo processes on one CPU split it rather than each taking all of it (the
    ranks on this host: LOCAL_WORLD_SIZE, which is WORLD_SIZE but for a job across hosts)."""
    here = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    return max(1, (cores or usable_cores()) // here)


def launch_command(devices: int, module: str, args: Sequence[str], port: int, address: str = "127.0.0.1"
                   ) -> list[str]:
    """The torchrun command that runs `python -m module args` as `devices` ranks on this host. A fixed address and
    port (a c10d rendezvous on this host) rather than torchrun's own default, so two jobs on one host never meet."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={devices}", "--nnodes=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={address}:{port}", "--max-restarts=0", "-m", module, *args]


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on this host now, for one job's rendezvous."""
    import socket

    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def local_device(device: str) -> str:
    """Where this rank puts the base: its own GPU (LOCAL_RANK) under torchrun; the CPU is shared by all ranks."""
    if device == "cpu" or world_size() <= 1:
        return device
    return f"{device}:{os.environ.get('LOCAL_RANK', '0')}"
