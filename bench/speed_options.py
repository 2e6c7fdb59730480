"""What each speed option buys on this machine: non-pad tokens/s of the studio's own training path with attention
eager / sdpa / FlashAttention-2, torch.compile on, and Liger's kernels, one arm at a time, same spec otherwise.

    python bench/speed_options.py [--base demo|PATH] [--steps 16] [--warmup 4]
                                  [--out bench/results/speed_options.json] [--smoke]

An arm this machine cannot run (FlashAttention and Liger need CUDA and their packages; torch.compile a compiler and
TorchDynamo on) is reported with the run settings' own note instead of a figure: the same words a job's log gets.
Throughput is the studio's `tokens_per_s` metric (non-pad tokens over each log interval), median over the steps after
the warmup (torch.compile spends its first steps compiling; the first step is reported apart as `first_step_s`)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import write_report  # noqa: E402
from jobs.data.formats import parse_file  # noqa: E402
from jobs.data.store import store_parsed  # noqa: E402
from jobs.models.demo import ensure_demo_model  # noqa: E402
from jobs.spec import parse_spec  # noqa: E402
from jobs.studio import EXAMPLE_DATASET_FILE  # noqa: E402

ARMS = {
    "sdpa (default)": {},
    "eager": {"attn_implementation": "eager"},
    "flash_attention_2": {"attn_implementation": "flash_attention_2"},
    "torch_compile": {"torch_compile": True},
    "liger_kernel": {"liger_kernel": True},
}
SMOKE_ARMS = ("sdpa (default)", "eager", "liger_kernel")


def run_arm(options: dict, base: Path, data: Path, steps: int, warmup: int, work: Path, max_length: int) -> dict:
    from jobs.training.prepare import settings_here
    from jobs.training.train import quiet_libraries, train

    quiet_libraries()
    spec = parse_spec({"max_steps": steps, "batch_size": 4, "packing": True, "learning_rate": 5e-3,
                       "logging_steps": 1, "eval_fraction": 0, "save_steps": 10**6, "sample_prompts": 0,
                       "max_length": max_length, **options})
    settings = settings_here(spec, work, str(base))
    dropped = [note for note in settings.notes if "note:" in note]
    if dropped:  # the machine runs something else than the arm asks for: measuring it would mislabel the figure
        return {"skipped": dropped}
    marks: list[tuple[int, float, float | None]] = []
    started = time.perf_counter()

    def sink(step: int, values: dict[str, float], total: int | None) -> None:
        marks.append((step, time.perf_counter(), values.get("tokens_per_s")))

    train(spec, work, str(base), data, sink, lambda: False)
    rates = [rate for step, _, rate in marks if step > warmup and rate is not None]
    first = next((at for step, at, _ in marks if step >= 1), None)
    return {"tokens_per_s": round(statistics.median(rates), 1) if rates else None,
            "first_step_s": round(first - started, 2) if first else None, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="demo", help="'demo' (built here) or a local model folder")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed_options.json"))
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--smoke", action="store_true", help="3 steps after 1 of 128 tokens, three arms: CI's check")
    args = parser.parse_args()
    arms = {name: ARMS[name] for name in SMOKE_ARMS} if args.smoke else ARMS
    if args.smoke:
        args.steps, args.warmup, args.max_length = 3, 1, 128
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = ensure_demo_model(work / "models") if args.base == "demo" else Path(args.base)
        data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), work / "data")
        results = {}
        for name, options in arms.items():
            results[name] = run_arm(options, base, data, args.steps, args.warmup, work / name.split()[0],
                                    args.max_length)
            print(name, results[name], flush=True)
    baseline = results["sdpa (default)"].get("tokens_per_s")
    for result in results.values():
        if baseline and result.get("tokens_per_s"):
            result["ratio_over_sdpa"] = round(result["tokens_per_s"] / baseline, 3)
    write_report(Path(args.out), {"benchmark": "speed_options", "unit": "non-pad tokens/s", "base": args.base,
                                  "warmup": args.warmup, "max_length": args.max_length, "batch_size": 4,
                                  "arms": results})


if __name__ == "__main__":
    main()
