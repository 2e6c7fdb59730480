"""A job on several devices: the job's child process becomes the launcher of its ranks.

The child starts the ranks with torchrun's own engine (torch.distributed.launcher's `elastic_launch`: the elastic
agent, a c10d rendezvous on this host at a free port, RANK / LOCAL_RANK / WORLD_SIZE in each rank's environment), each
rank being `python -m jobs.queue.child --rank JOB ATTEMPT`. Rank 0 is the job's child as a one-device job has it
(ledger sink, provenance, the adapter's registration); the others train their share and keep nothing.

Outcomes: with max_restarts 0 a rank that dies ends the group (the agent stops the others), and the attempt counts as
lost, so the supervisor requeues it to resume from the last complete checkpoint, which rank 0 wrote. A worker's
SIGTERM reaches the agent, which passes it to every rank: they agree to stop at the step's end, checkpoint, and the
attempt is requeued. A cancel reaches rank 0 through the ledger (it polls the cancel flag) and every rank stops at
the step's end; the supervisor's kill after the cancel grace reaches the agent (in the child's process group) and the
ranks (their parent-death signal)."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

from jobs.queue.gang import RDZV_TIMEOUT_S, Gang
from jobs.training.distributed import free_port

RANK_FLAG = "--rank"
EXIT_RANK_LOST = 77
"""A rank was killed (a signal, the OOM killer): the supervisor requeues the attempt like a lost child."""
AGENT_SHUTDOWN_S = 30
"""How long the agent gives the ranks to checkpoint after a SIGTERM before it kills them."""
LINE_PREFIX = "[rank${rank}]: "
"""What torchrun's agent puts before each line a rank writes to the job's log (${rank}: the global rank)."""
RANK_LOGS = "rank-logs"
"""The agent's per-rank output files in the run dir, read into the job's log as they grow and removed after."""


def device_problem(devices: int, device: str, visible: int) -> str | None:
    """Why this host cannot run `devices` ranks on `device`: a GPU run needs that many GPUs visible to the worker
    (a CPU runs any count of gloo processes, sharing its cores)."""
    if devices > 1 and device != "cpu" and visible < devices:
        return (f"devices: the job asks for {devices} devices but this worker sees {visible} GPU(s); run a worker with "
                f"{devices} GPUs visible (CUDA_VISIBLE_DEVICES) for it")
    return None


def launch_ranks(job_id: int, attempt: int, devices: int, interrupted: int, run_dir: Path,
                 gang: Gang | None = None, node: int = 0) -> int:
    """Run the attempt as `devices` ranks on this host; the child's exit code (jobs.queue.child) for the supervisor,
    `interrupted` when a signal stopped the ranks (the worker stops: requeue and resume).

    Each rank's output reaches the job's log once, each line prefixed with its rank: the agent's tee (a rank writes
    to its own file in the run dir, which the agent copies line by line into this process's output, the log).
    Letting the ranks write to the log directly gave every line the ranks share (the memory estimate, the resume)
    twice with nothing saying whose it was."""
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, SignalException, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    signal.signal(signal.SIGUSR1, lambda *_: None)  # a cancel: rank 0 reads it in the ledger; this process lives on
    sys.stdout.reconfigure(line_buffering=True)  # the agent copies the ranks' lines here without flushing
    logs_dir = run_dir / (RANK_LOGS if node == 0 else f"{RANK_LOGS}-node-{node}")  # the nodes share the run dir
    shutil.rmtree(logs_dir, ignore_errors=True)  # a killed attempt's
    shared = dict(run_id=f"job-{job_id}-{attempt}", max_restarts=0, monitor_interval=0.5, start_method="spawn",
                  shutdown_timeout=AGENT_SHUTDOWN_S, logs_specs=DefaultLogsSpecs(log_dir=str(logs_dir), tee=Std.ALL),
                  log_line_prefix_template=LINE_PREFIX)
    if gang is None:
        port = free_port()
        print(f"launching {devices} ranks (torchrun's elastic agent, rendezvous 127.0.0.1:{port})", flush=True)
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=devices, rdzv_backend="c10d",
                              rdzv_endpoint=f"127.0.0.1:{port}", **shared)
    else:  # a static rendezvous: the node ranks are the gang's (node 0, the leader, holds global rank 0 and the store)
        print(f"launching node {node} of {gang.nodes}: {gang.per_host} rank(s) here, {gang.nodes * gang.per_host} in "
              f"all (torchrun's elastic agent, rendezvous {gang.rendezvous})", flush=True)
        config = LaunchConfig(min_nodes=gang.nodes, max_nodes=gang.nodes, nproc_per_node=gang.per_host,
                              rdzv_backend="static", rdzv_endpoint=gang.rendezvous,
                              rdzv_configs={"rank": node, "timeout": RDZV_TIMEOUT_S}, **shared)
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "jobs.queue.child", RANK_FLAG, str(job_id), str(attempt))
    except SignalException as stopped:
        print(f"the ranks were stopped ({stopped.sigval.name})", flush=True)
        return interrupted
    except ChildFailedError as failed:
        return outcome({rank: failure.exitcode for rank, failure in failed.failures.items()})
    except Exception as error:  # noqa: BLE001 - a node that never joined, or a peer's agent gone: the store fails
        if gang is None:
            raise
        print(f"the gang's rendezvous or store failed ({type(error).__name__}: {error}); the attempt is lost",
              flush=True)
        return EXIT_RANK_LOST
    finally:
        shutil.rmtree(logs_dir, ignore_errors=True)  # every line is in the job's log
    return 0


PEER_LOST_WORDS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
"""What gloo (a plain RuntimeError) says when the rank at the other end of a collective is gone."""


def peer_lost(error: BaseException) -> bool:
    """Whether a rank's error says another rank is gone (killed, or its host's agent ended), not that this rank's own
    training failed: the attempt is then lost, not failed. Another host's rank dies where no exit code of this host's
    agent shows it; only the error of the collective it left behind does."""
    import torch.distributed as dist

    seen = error
    while seen is not None:
        if isinstance(seen, dist.DistError) and not isinstance(seen, dist.DistStoreError):
            return True
        if any(words in str(seen) for words in PEER_LOST_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def outcome(exit_codes: dict[int, int]) -> int:
    """The attempt's exit code from the ranks that did not exit 0: a rank killed by a signal loses the attempt (the
    others only failed because it was gone); otherwise rank 0's code says what happened (interrupted, cancelled,
    out of memory, failed), and a failure of another rank alone is a failure."""
    if any(code < 0 for code in exit_codes.values()):
        killed = ", ".join(f"rank {rank} (signal {-code})" for rank, code in sorted(exit_codes.items()) if code < 0)
        print(f"lost {killed}: the group ended; the attempt resumes from its last complete checkpoint", flush=True)
        return EXIT_RANK_LOST
    if EXIT_RANK_LOST in exit_codes.values():  # a rank saw its peer go (peer_lost): on another host, out of sight
        return EXIT_RANK_LOST
    return exit_codes.get(0, 1) or 1
