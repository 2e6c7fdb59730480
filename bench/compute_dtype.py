"""What the compute dtype costs and buys on this CPU: the studio's default job (sample answers included, as a real
job runs) with `compute_dtype` float32 and bfloat16, interleaved per seed, every adapter scored by ONE evaluator on
the same held-out rows.

    python bench/compute_dtype.py [--model smollm2|demo] [--rows 320] [--held-out 40] [--dtypes float32,bfloat16]
                                  [--seeds 42] [--smoke] [--out PATH]

Rows: the first --rows of the example file the studio ships for the base, the next --held-out rows to measure on
(the same split as bench/peers.py). Each run is `jobs.training.train.train` with the studio's defaults and only
`compute_dtype` set. Reported per run: wall seconds of `train()`, optimizer steps, tokens trained per second of it,
the held-out loss of its adapter (assistant tokens only); per dtype the medians and the ratio to the first dtype.
The CPU's native bf16 support (AVX512-BF16, AMX) is recorded with the figures: without it bf16 is emulated.
Printed and saved as JSON to bench/results/."""

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
from bench.peers import prepare  # noqa: E402
from bench.time_to_loss import score_adapters  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SMOKE = {"rows": 16, "held_out": 4, "steps": 4}


def cpu_bf16() -> dict[str, bool]:
    import torch

    return {"avx512_bf16": torch.cpu._is_avx512_bf16_supported(), "amx": torch.cpu._is_amx_tile_supported()}


def run_once(base: Path, train_file: Path, out: Path, dtype: str, seed: int, max_steps: int) -> dict:
    from jobs.spec import parse_spec
    from jobs.training.train import train

    spec = parse_spec({"compute_dtype": dtype, "seed": seed, "max_steps": max_steps})
    answers = []
    started = time.perf_counter()
    result = train(spec, out, str(base), train_file, lambda *a: None, lambda: False,
                   on_samples=lambda step, rows: answers.append(step))
    wall = time.perf_counter() - started
    return {"wall_s": wall, "steps": result.final_metrics["steps"], "sample_rounds": len(answers),
            "adapter_dir": str(result.adapter_dir)}


def tokens_trained(train_file: Path, base: Path, max_steps: int) -> float | None:
    """The tokens the default job trains on over its whole run (its plan's count: rows cut at the max length, times
    the epochs); None for capped smoke runs, which stop part-way."""
    if max_steps > 0:
        return None
    from jobs.data.store import load_rows
    from jobs.models.loading import load_tokenizer
    from jobs.spec import parse_spec
    from jobs.training.prepare import rows_plan

    rows, tokenizer = load_rows(train_file), load_tokenizer(str(base))
    plan = rows_plan(parse_spec({}), str(base), rows, tokenizer)
    return float(plan.tokens)


def summarize(runs: list[dict], dtypes: list[str]) -> dict:
    table = {}
    for dtype in dtypes:
        mine = [run for run in runs if run["dtype"] == dtype]
        table[dtype] = {key: statistics.median(run[key] for run in mine)
                        for key in ("wall_s", "held_out_loss", "steps")}
        rates = [run["tokens_per_s"] for run in mine if run["tokens_per_s"] is not None]
        table[dtype]["tokens_per_s"] = statistics.median(rates) if rates else None
    first = table[dtypes[0]]
    for row in table.values():
        row["speedup_over_first"] = first["wall_s"] / row["wall_s"]  # > 1: faster than the first dtype
        row["loss_minus_first"] = row["held_out_loss"] - first["held_out_loss"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["demo", "smollm2"], default="smollm2")
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--smoke", action="store_true", help="the demo model, 16 rows, 4 steps: CI's check")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.model, args.rows, args.held_out = "demo", SMOKE["rows"], SMOKE["held_out"]
    dtypes, seeds = args.dtypes.split(","), [int(s) for s in args.seeds.split(",")]
    max_steps = SMOKE["steps"] if args.smoke else -1
    out = args.out or RESULTS / f"compute_dtype_{args.model}{'_smoke' if args.smoke else ''}.json"
    from jobs.training.train import quiet_libraries

    quiet_libraries()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base, train_file, eval_file = prepare(work, args.model, args.rows, args.held_out)
        tokens = tokens_trained(train_file, base, max_steps)
        for seed in seeds:
            for dtype in dtypes:  # interleaved, so drifts of the machine fall on both alike
                run = run_once(base, train_file, work / f"run-{dtype}-{seed}", dtype, seed, max_steps)
                run.update(dtype=dtype, seed=seed, tokens_per_s=tokens / run["wall_s"] if tokens else None)
                runs.append(run)
                print(f"{dtype}, seed {seed}: {run['steps']:.0f} steps, {run['wall_s']:.1f} s", flush=True)
        score_adapters(runs, base, eval_file)
    table = summarize(runs, dtypes)
    write_report(out, {"model": args.model, "rows": args.rows, "held_out": args.held_out, "seeds": seeds,
                       "cpu_bf16": cpu_bf16(), "summary": table, "runs": runs})
    print(f"{'dtype':<10}{'wall s':>9}{'tokens/s':>10}{'held-out':>10}{'faster by':>11}")
    for dtype, row in table.items():
        rate = f"{row['tokens_per_s']:.0f}" if row["tokens_per_s"] else "-"
        print(f"{dtype:<10}{row['wall_s']:>9.1f}{rate:>10}{row['held_out_loss']:>10.4f}"
              f"{row['speedup_over_first']:>10.2f}×")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
