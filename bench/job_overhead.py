"""Where a default job's wall time goes, from submit to registered adapter, through the CLI and a real worker.

    python bench/job_overhead.py [--model smollm2|demo] [--rows 320] [--out bench/results/job_overhead_smollm2.json]
                                 [--smoke]

A fresh data dir (SQLite, Huey on SQLite), the base model copied into its models folder, a worker process
(`python -m jobs.queue.worker`) started first, then `python -m jobs submit SPEC --wait` with a spec that names only
the base and a dataset file (the first --rows rows of the pirate example for SmolLM2, of the example chats for the
demo): every other field is the studio's default, the per-job rule included. Reported: the Runs tab's phases
(`jobs.training.phases`: queue, child start, imports, base preparation, data, base load + 4-bit, trainer build +
tokenization, training, adapter save, registration), the CLI's wall time, and the share of the job that was not
training (the issue's goal: under 15% on the real offline model)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

EXAMPLES = ROOT / "static" / "examples"


def prepare(data_dir: Path, model: str, rows: int) -> tuple[Path, dict[str, str]]:
    """The spec file to submit, and the environment of the studio in `data_dir` with its base model in place."""
    from jobs.models.demo import ensure_demo_model
    from jobs.models.resolve import resolve_base_model
    from storage.settings import load_settings

    if model == "demo":
        source, base, examples = ensure_demo_model(data_dir / "built"), None, EXAMPLES / "chat.jsonl"
    else:
        source = Path(resolve_base_model("smollm2-135m-instruct", load_settings({}).models_dir))
        base, examples = "smollm2-135m-instruct", EXAMPLES / "pirate_chat.jsonl"
    shutil.copytree(source, data_dir / "models" / Path(source).name)
    dataset = data_dir.parent / f"{model}_{rows}_rows.jsonl"
    dataset.write_text("".join(examples.read_text().splitlines(keepends=True)[:rows]))
    spec = {"dataset": str(dataset), **({"base_model": base} if base else {})}
    spec_file = data_dir.parent / "job.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "STUDIO_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    return spec_file, env


def start_waiting_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    """A worker (`python -m jobs.queue.worker`, output in `log`) that is up and idle, its spare training process
    ready unless STUDIO_SPARE_CHILD is off in `env`: a studio that has been running before the job comes."""
    with log.open("ab") as output:
        worker = subprocess.Popen([sys.executable, "-m", "jobs.queue.worker"], env=env, cwd=ROOT, stdout=output,
                                  stderr=subprocess.STDOUT)
    from storage.settings import load_settings

    ready = "ready for the next job" if load_settings(env).spare_child else "worker ready"
    deadline = time.monotonic() + 180
    while ready not in log.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise RuntimeError(f"the worker did not get ready; its log:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    time.sleep(1)  # idle, past its first reaper pass
    return worker


def run_job(spec_file: Path, env: dict[str, str], log: Path, watch: Callable[[int], None] = lambda pid: None,
            worker_exit_s: float = 60) -> float:
    """The CLI's wall seconds from submit to its exit, with a worker already waiting. `watch` is told the worker's
    and the CLI's PIDs as they start (a memory sampler follows their process trees)."""
    worker = start_waiting_worker(env, log)
    watch(worker.pid)
    try:
        with log.open("ab") as output:
            started = time.perf_counter()
            cli = subprocess.Popen([sys.executable, "-m", "jobs", "submit", str(spec_file), "--wait"], env=env,
                                   cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
            watch(cli.pid)
            cli.wait()
            wall = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(worker_exit_s)
    if cli.returncode:
        raise RuntimeError(f"the job failed; the log:\n{log.read_text(errors='replace')[-4000:]}")
    return wall


def breakdown(data_dir: Path) -> dict:
    """The finished job as the Runs tab reads it: its phases, queue wait and total."""
    from app.runs.run_view import details_or_none, newest_job_id
    from jobs.studio import open_studio
    from storage.settings import load_settings

    studio = open_studio(load_settings({"STUDIO_DATA_DIR": str(data_dir)}))
    try:
        job = details_or_none(studio, newest_job_id(studio))
    finally:
        studio.db.dispose()
    created, started, finished = (datetime.fromisoformat(job[key]) for key in ("created_at", "started_at",
                                                                                "finished_at"))
    total = (finished - created).total_seconds()
    phases = {"queue": (started - created).total_seconds(), **job["phases_s"]}
    return {"job": job["id"], "phases_s": phases, "total_s": total,
            "not_training_s": total - phases["training"], "not_training_share": 1 - phases["training"] / total}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "demo"], default="smollm2")
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="the demo model and 40 rows: CI's check")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.rows = "demo", 40
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        spec_file, env = prepare(data_dir, args.model, args.rows)
        cli_wall = run_job(spec_file, env, Path(tmp) / "run.log")
        result = breakdown(data_dir)
    result["cli_wall_s"] = cli_wall
    for name, seconds in result["phases_s"].items():
        print(f"{name:<15}{seconds:>8.1f} s")
    print(f"total {result['total_s']:.1f} s (CLI {cli_wall:.1f} s); all but training {result['not_training_s']:.1f} s "
          f"({result['not_training_share']:.0%})")
    out = args.out or ROOT / "bench" / "results" / f"job_overhead_{args.model}{'_smoke' if args.smoke else ''}.json"
    write_report(out, {"model": args.model, "rows": args.rows, "result": result})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
