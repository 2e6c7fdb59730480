"""A budgeted search against the grid over the same space, on a real worker: which finds the better held-out loss,
and at what compute (issue 32: the goal is the grid's best loss in at most half its compute).

    python bench/search_vs_grid.py [--model smollm2|demo] [--budget-minutes 30] [--steps 60] [--eval-steps 10]
                                   [--ranks 8,16,32] [--rates 1e-4,3e-4,1e-3,3e-3]
                                   [--no-start-from-plan] [--grid-from bench/results/search_vs_grid_smollm2.json]
                                   [--out bench/results/search_vs_grid_smollm2.json] [--smoke]

A fresh data dir and one worker process (`python -m jobs.queue.worker`). The grid: every point of lora_r × learning
rate × target modules (GRID), each run to the end as a sweep. The search: the same span as ranges (lora_r and the
learning rate on a log scale, the target modules as choices) with Hyperband pruning and the studio's default start
(its first trial the plan's own values, clamped into the span; --no-start-from-plan: the sampler's from the first),
driven in this process as the app drives it (one pass every 2 s); its time budget caps it (and the sweep cap of 64
trials), or without one as many trials as the grid has points. Compute is each trial's seconds from its start to its
end (and its optimizer steps), summed: what the worker spent; "to the grid's best" is the compute of the trials up to
the first whose loss is at or below the grid's best. The grid runs first; both read the same held-out rows (the
spec's seed picks them). --grid-from takes the grid arm from an earlier report of the same model, grid, steps and
CPU instead of running it again (the report names it). Run it on a quiet machine."""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.job_overhead import start_waiting_worker  # noqa: E402
from bench.machine import write_report  # noqa: E402
from jobs.sweeps import MAX_POINTS  # noqa: E402

GRID = {"lora_r": [8, 16, 32], "learning_rate": [1e-4, 3e-4, 1e-3, 3e-3], "target_modules": ["attention",
                                                                                              "all-linear"]}
SMOKE_GRID = {"lora_r": [4, 8], "learning_rate": [1e-3, 5e-3]}


def space_of(grid: dict) -> dict:
    """The grid's span as a search space: numbers as ranges (log scale), anything else as choices."""
    space = {}
    for name, values in grid.items():
        if all(isinstance(v, int | float) for v in values):
            space[name] = {"low": min(values), "high": max(values), "log": True}
        else:
            space[name] = {"choices": values}
    return space


def prepare(data_dir: Path, model: str) -> tuple[dict, dict[str, str]]:
    """The base spec and the studio's environment, with the base model in place."""
    from jobs.models.demo import ensure_demo_model
    from jobs.models.resolve import resolve_base_model
    from storage.settings import load_settings

    if model == "demo":
        source, base = ensure_demo_model(data_dir / "built"), {"dataset": "example"}
    else:
        source = Path(resolve_base_model("smollm2-135m-instruct", load_settings({}).models_dir))
        base = {"base_model": "smollm2-135m-instruct", "dataset": "pirate"}
    shutil.copytree(source, data_dir / "models" / Path(source).name)
    return base, {**os.environ, "STUDIO_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}


def compute_of(studio, job_ids: list[int]) -> dict:
    from storage import jobs_repo

    with studio.db.read() as session:
        jobs = [jobs_repo.get_job(session, job_id) for job_id in job_ids]
        finals = jobs_repo.latest_metrics(session, job_ids, ("eval_loss",))
    seconds = sum((job.finished_at - job.started_at).total_seconds() for job in jobs if job.started_at)
    done = [finals[job.id]["eval_loss"] for job in jobs if job.status == "succeeded" and job.id in finals]
    runs = [{"name": job.name, "status": job.status, "steps": job.step,
             "seconds": round((job.finished_at - job.started_at).total_seconds(), 1) if job.started_at else 0.0,
             "eval_loss": finals.get(job.id, {}).get("eval_loss"),
             **{name: job.spec.get(name) for name in ("lora_r", "learning_rate", "target_modules")}} for job in jobs]
    return {"jobs": len(jobs), "steps": sum(job.step for job in jobs), "seconds": round(seconds, 1),
            "statuses": sorted(job.status for job in jobs), "best_eval_loss": min(done) if done else None,
            "runs": runs}


def run_grid(studio, base: dict, grid: dict) -> dict:
    from jobs.sweeps import submit_sweep
    from storage import jobs_repo

    _, ids = submit_sweep(studio, {**base, "name": "grid"}, grid, name="grid")
    while True:
        with studio.db.read() as session:
            if all(jobs_repo.get_job(session, job_id).status in ("succeeded", "failed", "cancelled")
                   for job_id in ids):
                break
        time.sleep(2)
    return compute_of(studio, ids)


def run_search(studio, base: dict, grid: dict, budget_minutes: float | None, trials: int, from_plan: bool) -> dict:
    from jobs.search.driver import DONE, drive_search, search_result, start_search

    request = {"name": "search", "base": base, "space": space_of(grid), "budget_trials": trials,
               "pruner": "hyperband", "start_from_plan": from_plan}
    if budget_minutes:
        request["budget_minutes"] = budget_minutes
    start_search(studio, request)
    while drive_search(studio, "search") != DONE:
        time.sleep(2)
    found = search_result(studio, "search")
    compute = compute_of(studio, [t["job_id"] for t in found["trials"] if t["job_id"] is not None])
    return {**compute, "best_spec": found["best_spec"], "importance": found["importance"],
            "trials": [{k: t[k] for k in ("number", "params", "origin", "job_status", "value", "steps", "seconds")}
                       for t in found["trials"]]}


def to_the_grids_best(search: dict, grid_best: float) -> dict | None:
    """The search's compute up to (and with) its first trial whose final held-out loss is at or below the grid's
    best, in the order the trials were asked; None where none reached it."""
    steps = seconds = 0.0
    for trial in search["trials"]:
        steps, seconds = steps + trial["steps"], seconds + trial["seconds"]
        if trial["value"] is not None and trial["job_status"] == "succeeded" and trial["value"] <= grid_best:
            return {"trial": trial["number"], "value": trial["value"], "steps": steps, "seconds": round(seconds, 1)}
    return None


def earlier_grid(path: Path, model: str, grid: dict, steps: int, eval_steps: int) -> dict:
    """The grid arm of an earlier report, refused unless it measured the same thing on this CPU."""
    import json

    from bench.machine import versions

    report = json.loads(path.read_text())
    same = {"model": model, "grid": grid, "steps": steps, "eval_steps": eval_steps}
    if differs := [key for key, value in same.items() if report.get(key) != value]:
        raise SystemExit(f"{path}: its {', '.join(differs)} differ from this run's")
    if report["versions"].get("cpu") != versions().get("cpu"):
        raise SystemExit(f"{path}: measured on {report['versions'].get('cpu')}, this is {versions().get('cpu')}")
    return {**report["grid_result"], "from": str(path), "date": report.get("date")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "demo"], default="smollm2")
    parser.add_argument("--budget-minutes", type=float, default=30)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--ranks", help="lora_r values of the grid, comma-separated (default: 8,16,32)")
    parser.add_argument("--rates", help="learning rates of the grid, comma-separated (default: 1e-4,3e-4,1e-3,3e-3)")
    parser.add_argument("--no-start-from-plan", dest="from_plan", action="store_false",
                        help="the search's first trial is the sampler's, not the plan's values")
    parser.add_argument("--grid-from", type=Path, help="take the grid arm from this earlier report")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="the demo model, a 4-point grid, 3 trials of 4 steps")
    args = parser.parse_args()
    grid, trials = dict(GRID), None
    if args.ranks:
        grid["lora_r"] = [int(value) for value in args.ranks.split(",")]
    if args.rates:
        grid["learning_rate"] = [float(value) for value in args.rates.split(",")]
    if args.smoke:
        args.model, args.steps, args.eval_steps, args.budget_minutes, grid, trials = "demo", 4, 2, 0, SMOKE_GRID, 3
    from jobs.studio import open_studio
    from storage.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        base, env = prepare(data_dir, args.model)
        base = {**base, "max_steps": args.steps, "eval_steps": args.eval_steps, "save_steps": args.steps,
                "sample_prompts": 0, "seed": 42, "eval_fraction": 0.1}
        os.environ.update({"STUDIO_DATA_DIR": str(data_dir)})
        studio = open_studio(load_settings(env))
        worker = start_waiting_worker(env, Path(tmp) / "worker.log")
        try:
            points = len(list(itertools.product(*grid.values())))
            cap = trials or (MAX_POINTS if args.budget_minutes else points)
            grid_result = (earlier_grid(args.grid_from, args.model, grid, args.steps, args.eval_steps)
                           if args.grid_from else run_grid(studio, base, grid))
            search_result = run_search(studio, base, grid, args.budget_minutes or None, cap, args.from_plan)
        finally:
            worker.terminate()
            worker.wait(120)
            studio.db.dispose()
    ratio = search_result["seconds"] / grid_result["seconds"] if grid_result["seconds"] else None
    for label, found in (("grid", grid_result), ("search", search_result)):
        print(f"{label:<7} best held-out loss {found['best_eval_loss']}  jobs {found['jobs']}  steps {found['steps']}"
              f"  compute {found['seconds']:.0f} s")
    print(f"search compute / grid compute: {ratio:.2f}" if ratio else "no grid compute measured")
    reached = (to_the_grids_best(search_result, grid_result["best_eval_loss"])
               if grid_result["best_eval_loss"] is not None else None)
    if reached and grid_result["seconds"]:
        print(f"the search reached the grid's best at trial {reached['trial']}: {reached['steps']:.0f} steps, "
              f"{reached['seconds']:.0f} s ({reached['seconds'] / grid_result['seconds']:.2f} of the grid's compute)")
    out = args.out or ROOT / "bench" / "results" / f"search_vs_grid_{args.model}{'_smoke' if args.smoke else ''}.json"
    write_report(out, {"model": args.model, "grid": grid, "space": space_of(grid), "budget_minutes":
                       args.budget_minutes, "steps": args.steps, "eval_steps": args.eval_steps,
                       "start_from_plan": args.from_plan, "grid_result": grid_result, "search_result": search_result,
                       "search_to_the_grids_best": reached,
                       "compute_ratio_search_over_grid": ratio})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
