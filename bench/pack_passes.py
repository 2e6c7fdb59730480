"""Tokens per forward pass: the speed of one packed sequence in one forward pass against the same tokens in two (or
four) shorter passes, alternated step by step in ONE process, so a shared machine's load falls on every arm alike.

    python bench/pack_passes.py [--model smollm2|demo] [--rounds 8] [--pack-lengths 256,128]
                                [--cycle N] [--out bench/results/pack_passes_smollm2.json] [--smoke]

Each arm is the studio's own training path for the default job's work (the first 320 rows of the example file the
studio ships for the base; batch 1 of packed sequences of max_length 512, the compute dtype `auto` picks here), built
by `prepare_run` with `pack_length` set (none: one pass). One optimizer step's forward and backward passes are timed
per arm and round, in an order that alternates each round (A B, B A, ...); the optimizer's update is left out (it is
the same work in every arm). Printed and saved: per arm the median seconds an optimizer step's passes take, the
tokens they train, seconds per 1,000 tokens, and each arm's ratio to one pass. Peak memory: bench/memory_breakdown.py
(the `pack_length 256` arm). The arms run in this process, with its allocator (the report says which): a
worker's training process preloads jemalloc, `LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2` does the same
here."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import write_report  # noqa: E402
from bench.memory_breakdown import work_files  # noqa: E402


def arm_trainer(pack_length: int | None, max_length: int, base: str, data: str, work: Path):
    """The studio's trainer for the default job with this pack length, and its optimizer steps' micro-batches."""
    from jobs.spec import parse_spec
    from jobs.training.train import prepare_run, quiet_libraries

    quiet_libraries()
    spec = parse_spec({"packing": True, "batch_size": 1, "learning_rate": 3e-3, "num_epochs": 1, "eval_fraction": 0,
                       "sample_prompts": 0, "save_steps": 10**6, "max_length": max_length, "pack_length": pack_length})
    run = prepare_run(spec, work, base, Path(data), lambda *a: None, lambda: False)
    batches = [run.trainer._prepare_inputs(batch) for batch in run.trainer.get_train_dataloader()]
    passes = run.settings.forward_passes
    steps = [batches[i:i + passes] for i in range(0, len(batches) - passes + 1, passes)]
    return run.trainer, steps


def timed_step(trainer, micro_batches: list[dict]) -> tuple[float, int]:
    """(seconds, tokens) of one optimizer step's forward and backward passes; the gradients are dropped after."""
    labelled = sum(int((batch["labels"] != -100).sum()) for batch in micro_batches)
    tokens = sum(int(batch["input_ids"].numel()) for batch in micro_batches)
    began = time.perf_counter()
    for batch in micro_batches:
        trainer.training_step(trainer.model, batch, labelled)
    seconds = time.perf_counter() - began
    trainer.model.zero_grad(set_to_none=True)
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "demo"], default="smollm2")
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per arm (after one untimed)")
    parser.add_argument("--max-length", type=int, default=512, help="the packed sequences' tokens (one pass)")
    parser.add_argument("--pack-lengths", default="256", help="the split arms' pack lengths, beside one pass")
    parser.add_argument("--cycle", type=int, default=0, help="take the rounds' steps from the first N only, so their "
                        "shapes repeat (0: a new step every round)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="the demo model, 1 round, 1,024 tokens in one pass and "
                        "in two (its rows run to 309 tokens): CI's check")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.rounds, args.max_length, args.pack_lengths = "demo", 1, 1024, "512"
    import torch

    torch.set_num_threads(torch.get_num_threads())
    arms: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base, data = work_files(args.model, Path(tmp))
        lengths = [None, *(int(n) for n in args.pack_lengths.split(",") if n)]
        for length in lengths:
            arms[str(length or args.max_length)] = arm_trainer(length, args.max_length, base, data,
                                                               Path(tmp) / f"run_{length}")
        names = list(arms)
        times: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
        for round_ in range(args.rounds + 1):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                trainer, steps = arms[name]
                found = timed_step(trainer, steps[round_ % (args.cycle or len(steps))])
                if round_:  # the first round warms each arm up
                    times[name].append(found)
            print(f"round {round_}: " + ", ".join(f"{n} {times[n][-1][0]:.2f} s" for n in names if times[n]),
                  flush=True)
    one = statistics.median(s for s, _ in times[str(args.max_length)])
    results = {}
    for name in names:
        seconds = statistics.median(s for s, _ in times[name])
        tokens = statistics.median(t for _, t in times[name])
        per_1k = 1000 * sum(s for s, _ in times[name]) / sum(t for _, t in times[name])
        results[name] = {"pack_length": int(name), "step_s": round(seconds, 3), "tokens_per_step": tokens,
                         "s_per_1k_tokens": round(per_1k, 3), "step_s_ratio_to_one_pass": round(seconds / one, 3),
                         "each_step_s": [round(s, 3) for s, _ in times[name]]}
        print(name, results[name], flush=True)
    name = f"pack_passes_{args.model}{'_smoke' if args.smoke else ''}.json"
    out = args.out or Path(__file__).parent / "results" / name
    from jobs.run_settings.allocator import allocator_in_use

    write_report(out, {"model": args.model, "rounds": args.rounds, "cycle": args.cycle, "max_length": args.max_length,
                       "allocator": allocator_in_use(), "arms": results})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
