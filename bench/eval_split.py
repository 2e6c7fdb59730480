"""What holding rows out for eval costs the adapter: the studio's default job trained on all of a dataset's rows and
on nine tenths of them (a tenth held out for its eval loss, early stopping and the best adapter), at several
dataset sizes, every adapter scored by ONE evaluator on the same separate rows.

    python bench/eval_split.py [--model smollm2|demo] [--rows 320,900] [--held-out 100] [--fraction 0.1]
                               [--seeds 42] [--data pirate|unit-facts] [--arms all,split] [--smoke] [--out PATH]

Rows: the first N of the example file the studio ships for the base (N from --rows), or of a second dataset unlike
it (`--data unit-facts`: bench/unit_facts.py's terse unit conversions); the file's last --held-out rows are the
measuring rows, never trained on at any N. Each run is `jobs.training.train.train` with the studio's
defaults (the per-job rule chooses packing, batch, epochs and learning rate for the rows it trains on) and
eval_fraction 0 or --fraction, each with every seed of --seeds. Reported per run: the held-out loss of the adapter it
registers (assistant tokens only), its optimizer steps, train and eval rows, the step its adapter is from; per size:
the median loss with and without the split, and their ratio (> 1: the split cost that much). The studio's rule for
the eval split (jobs/step_plan.py) is read off this. Printed and saved as JSON to bench/results/."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402
from bench.peers import EXAMPLES  # noqa: E402
from bench.time_to_loss import score_adapters  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SMOKE = {"rows": "16,24", "held_out": 8, "steps": 4}


def prepare(work: Path, model: str, sizes: list[int], held_out: int,
            data: str = "pirate") -> tuple[Path, dict[int, Path], Path]:
    """(base dir, {size: train.jsonl}, eval.jsonl) under `work`."""
    from jobs.models.demo import ensure_demo_model

    if model == "demo":
        base = ensure_demo_model(work / "models")
    else:
        from jobs.models.resolve import resolve_base_model
        from storage.settings import load_settings

        base = resolve_base_model("smollm2-135m-instruct", load_settings({}).models_dir)
    if data == "unit-facts":
        from bench.unit_facts import write_unit_facts

        source = write_unit_facts(work / "unit_facts.jsonl", max(sizes) + held_out)
    else:
        source = ROOT / "static" / "examples" / EXAMPLES[model]
    lines = source.read_text().splitlines(keepends=True)
    if max(sizes) + held_out > len(lines):
        raise SystemExit(f"{EXAMPLES[model]} has {len(lines)} rows: fewer than the largest --rows + --held-out")
    eval_file = work / "eval.jsonl"
    eval_file.write_text("".join(lines[-held_out:]))
    trains = {}
    for size in sizes:
        trains[size] = work / f"train-{size}.jsonl"
        trains[size].write_text("".join(lines[:size]))
    return Path(base), trains, eval_file


def run_once(base: Path, train_file: Path, out: Path, fraction: float, seed: int, max_steps: int) -> dict:
    from jobs.spec import parse_spec
    from jobs.training.train import train

    spec = parse_spec({"eval_fraction": fraction, "seed": seed, "sample_prompts": 0, "max_steps": max_steps})
    started = time.perf_counter()
    result = train(spec, out, str(base), train_file, lambda *a: None, lambda: False)
    final = result.final_metrics
    return {"wall_s": time.perf_counter() - started, "steps": final["steps"], "adapter_dir": str(result.adapter_dir),
            "adapter_step": final.get("best_step", final["steps"]), "eval_loss": final.get("eval_loss")}


def summarize(runs: list[dict], sizes: list[int], fraction: float) -> dict:
    table = {}
    for size in sizes:
        losses = {split: statistics.median(found) for split in (0.0, fraction)
                  if (found := [run["held_out_loss"] for run in runs
                                if run["rows"] == size and run["eval_fraction"] == split])}
        table[str(size)] = {"all_rows_train": losses.get(0.0), "split": losses.get(fraction),
                            "split_over_all_rows": losses[fraction] / losses[0.0] if len(losses) == 2 else None}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["demo", "smollm2"], default="smollm2")
    parser.add_argument("--rows", default="320,900")
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--data", choices=["pirate", "unit-facts"], default="pirate",
                        help="the base's bundled example file, or bench/unit_facts.py's rows")
    parser.add_argument("--arms", default="all,split", help="all (every row trains), split (a --fraction held "
                        "out), or both")
    parser.add_argument("--smoke", action="store_true", help="the demo model, 16 and 24 rows, 4 steps: CI's check")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.model, args.rows, args.held_out = "demo", SMOKE["rows"], SMOKE["held_out"]
    sizes, seeds = [int(n) for n in args.rows.split(",")], [int(s) for s in args.seeds.split(",")]
    max_steps = SMOKE["steps"] if args.smoke else -1
    data_tag = "" if args.data == "pirate" else f"_{args.data.replace('-', '_')}"
    arm_tag = "" if set(args.arms.split(",")) == {"all", "split"} else f"_{args.arms}"
    out = args.out or RESULTS / f"eval_split_{args.model}{data_tag}{arm_tag}{'_smoke' if args.smoke else ''}.json"
    from jobs.training.train import quiet_libraries

    quiet_libraries()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base, trains, eval_file = prepare(work, args.model, sizes, args.held_out, args.data)
        for size in sizes:
            for seed in seeds:
                for fraction in [f for arm, f in (("all", 0.0), ("split", args.fraction)) if arm in args.arms]:
                    run = run_once(base, trains[size], work / f"run-{size}-{fraction}-{seed}", fraction, seed,
                                   max_steps)
                    runs.append({"rows": size, "eval_fraction": fraction, "seed": seed, **run})
                    print(f"{size} rows, eval fraction {fraction:g}, seed {seed}: {run['steps']:.0f} steps, "
                          f"{run['wall_s']:.0f} s", flush=True)
        score_adapters(runs, base, eval_file)
    table = summarize(runs, sizes, args.fraction)
    write_report(out, {"model": args.model, "data": args.data, "held_out": args.held_out, "fraction": args.fraction,
                       "seeds": seeds, "summary": table, "runs": runs})
    print(f"{'rows':>6}{'all rows train':>16}{f'a {args.fraction:g} split':>14}{'split ÷ all':>13}")
    for size, row in table.items():
        print(f"{size:>6}" + "".join(f"{'-' if row[key] is None else format(row[key], '.4f'):>{width}}" for key, width
                                     in (("all_rows_train", 16), ("split", 14), ("split_over_all_rows", 13))))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
