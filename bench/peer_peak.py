"""LLaMA-Factory's peak resident memory on the peer bench's work, on this machine, with its timeline.

    python bench/peer_peak.py [--model smollm2|demo] [--max-steps N] [--seed 42]
                              [--lf bench/peers/llamafactory/run.sh] [--out bench/results/peer_peak_smollm2.json]

The LLaMA-Factory arm of bench/peers.py (the same rows, base, learning rate and run.sh) without the evaluation, so
its peak can be had from a short run (`--max-steps`, run.sh's MAX_STEPS) where a whole one takes long. Whether a
short run's peak is the whole run's is what the timeline answers: every 0.5 s the biggest process of the arm's tree,
its resident set and high-water mark (VmRSS, VmHWM), and the optimizer step it is at (the step counter of
LLaMA-Factory's progress bar in its log). The report names the step at which the high-water mark last rose and the
high-water mark after each step, so a whole run shows how far its first steps' peak is from its end's.
Printed and saved as JSON to bench/results/."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402
from bench.peers import FIRST_SEED, RESULTS, descendants, plan_work, prepare  # noqa: E402

STEP = re.compile(rb"\|\s*(\d+)/(\d+)\s*\[")
"""tqdm's `| 12/120 [` in LLaMA-Factory's log: the optimizer steps done."""


def status_kib(pid: int) -> dict[str, int]:
    found = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def last_step(log: Path) -> int:
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            steps = STEP.findall(handle.read())
    except OSError:
        return 0
    return int(steps[-1][0]) if steps else 0


def watch(root: int, log: Path, began: float, timeline: list[dict], stop: threading.Event) -> None:
    while not stop.is_set():
        biggest = max((status_kib(pid) for pid in descendants({root})), key=lambda s: s.get("VmHWM", 0), default={})
        if biggest:
            timeline.append({"t": round(time.perf_counter() - began, 1), "step": last_step(log),
                             **{key.lower() + "_mb": round(value / 1024, 1) for key, value in biggest.items()}})
        stop.wait(0.5)


def per_step(timeline: list[dict]) -> list[dict]:
    """The high-water mark when each step was first seen done (the peak of everything up to that step)."""
    rows: dict[int, dict] = {}
    for sample in timeline:
        rows.setdefault(sample["step"], {"step": sample["step"], "t": sample["t"], "hwm_mb": 0.0})
        rows[sample["step"]]["hwm_mb"] = max(rows[sample["step"]]["hwm_mb"], sample.get("vmhwm_mb", 0.0))
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["demo", "smollm2"], default="smollm2")
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--max-steps", type=int, default=-1, help="run.sh's MAX_STEPS (-1: its 3 epochs)")
    parser.add_argument("--seed", type=int, default=FIRST_SEED)
    parser.add_argument("--lf", default=str(ROOT / "bench/peers/llamafactory/run.sh"))
    parser.add_argument("--timeout", type=float, help="stop the run after this many seconds and report the steps "
                        "it made (a loaded machine)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or RESULTS / f"peer_peak_{args.model}{'' if args.max_steps < 0 else f'_{args.max_steps}steps'}.json"
    with tempfile.TemporaryDirectory() as tmp:
        work = plan_work(*prepare(Path(tmp), args.model, args.rows, args.held_out), False)
        log = Path(tmp) / "lf.log"
        command = ["bash", str(Path(args.lf).resolve()), str(work.base), str(work.train_file), str(Path(tmp) / "out"),
                   "100000", str(work.learning_rate), str(args.max_steps), str(args.seed)]
        timeline: list[dict] = []
        stop = threading.Event()
        began = time.perf_counter()
        with log.open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=dict(os.environ),
                                       start_new_session=True)
            watcher = threading.Thread(target=watch, args=(process.pid, log, began, timeline, stop), daemon=True)
            watcher.start()
            try:
                process.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:  # a loaded machine: keep the steps it made, say it was stopped
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()
        stop.set()
        watcher.join()
        wall = time.perf_counter() - began
        failed = process.returncode and not (args.timeout and wall >= args.timeout)
        if failed:
            raise SystemExit(f"run.sh failed (exit {process.returncode}):\n{log.read_text(errors='replace')[-4000:]}")
    steps = per_step(timeline)
    peak = max((s.get("vmhwm_mb", 0.0) for s in timeline), default=0.0)
    reached = next((s for s in timeline if s.get("vmhwm_mb", 0.0) >= peak), {})
    result = {"model": args.model, "rows": args.rows, "max_steps": args.max_steps, "seed": args.seed,
              "learning_rate": work.learning_rate, "lf_bf16": os.environ.get("LF_BF16", "false"),
              "wall_s": wall, "stopped": bool(process.returncode), "peak_mb": peak,
              "peak_reached_at_step": reached.get("step"), "peak_reached_at_s": reached.get("t"),
              "hwm_by_step": steps, "timeline": timeline}
    write_report(out, result)
    print(f"LLaMA-Factory peak {peak:.0f} MB, first reached at step {reached.get('step')} "
          f"({reached.get('t')} s of {wall:.0f} s); saved {out}")
    for row in steps:
        print(f"  step {row['step']:>4}: high-water mark {row['hwm_mb']:.0f} MB at {row['t']} s")


if __name__ == "__main__":
    main()
