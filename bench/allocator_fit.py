"""The memory estimate's CPU allocator factor, fitted for each malloc a training process may run with (issue 34).

    python bench/allocator_fit.py [--steps 4] [--rows demo-r8,demo-ckpt,smollm2] [--out PATH]

Each row is one of tests/jobs/models/test_memory.py's runs (the demo model twice, SmolLM2 once), trained `--steps`
optimizer steps by the studio's `train()` in a fresh process, once with glibc's malloc and once with jemalloc
preloaded as the worker preloads it (jobs.queue.spare.child_env), the two arms one after the other. Printed and saved
per arm: the measured peak RSS (VmHWM, loading included), the estimate's static and dynamic parts, and the allocator
factor that would make the estimate equal the peak, (peak - static) / dynamic: the factor to fit is at or above the
largest of these, so the estimate stays on the safe side. Peaks are reliable on a loaded machine; times are not."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

MiB = 2**20
RUN = """  # one train() in a fresh process, printing its allocator and peak (test_memory.py runs it too)
import json, sys
from pathlib import Path
from jobs.spec import parse_spec
from jobs.run_settings.allocator import allocator_in_use
from jobs.training.callbacks import peak_rss
from jobs.training.train import train
spec = parse_spec(json.loads(sys.argv[1]))
train(spec, Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), lambda *a: None, lambda: False)
print("ALLOCATOR", allocator_in_use())
print("PEAK", int(peak_rss()))
"""
ROWS = {  # tests/jobs/models/test_memory.py's runs
    "demo-r8": ("demo", {"lora_r": 8, "batch_size": 4, "max_length": 512}),
    "demo-ckpt": ("demo", {"lora_r": 32, "batch_size": 8, "max_length": 256, "target_modules": "attention",
                           "gradient_checkpointing": "on"}),
    "smollm2": ("smollm2", {"base_model": "smollm2-135m-instruct", "lora_r": 8, "batch_size": 1, "max_length": 512}),
}


def story_rows(path: Path, count: int = 60) -> None:
    """`count` chat rows of growing length (the rows tests/jobs/models/test_memory.py trains on too)."""
    words = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "rain", "runs", "to", "sea")
    with path.open("w") as handle:
        for i in range(count):
            answer = " ".join(words[(i + j) % len(words)] for j in range(40 + 5 * (i % 40)))
            handle.write(json.dumps({"messages": [{"role": "user", "content": f"Tell me story {i}."},
                                                  {"role": "assistant", "content": answer}]}) + "\n")


def base_dir(name: str, models: Path) -> Path:
    if name == "demo":
        from jobs.models.demo import ensure_demo_model

        return ensure_demo_model(models)
    from jobs.models.smollm2 import ensure_smollm2

    return ensure_smollm2(models)


def estimate_parts(spec: dict, base: Path, jemalloc: bool) -> dict:
    from jobs.models.fits import settings_estimate
    from jobs.models.memory_inputs import ModelShape
    from jobs.run_settings.cpu_dtype import native_bf16
    from jobs.run_settings.settings import Base, Machine, resolve
    from jobs.spec import parse_spec

    shape = ModelShape.from_dir(base)
    settings = resolve(parse_spec(spec), Base(hidden=shape.hidden), Machine("cpu", bf16=native_bf16(),
                                                                              jemalloc=jemalloc))
    found = settings_estimate(settings, shape)
    return {"static": sum(found.static.values()), "dynamic": found.dynamic_total, "factor": found.allocator_factor,
            "load_peak": found.load_peak, "estimate": found.peak, "dtype": settings.compute_dtype}


def measure(spec: dict, base: Path, data: Path, work: Path, jemalloc: bool) -> tuple[int, str]:
    from jobs.queue.spare import child_env

    env = {**os.environ, **child_env(jemalloc)}
    if not jemalloc:
        env.pop("LD_PRELOAD", None)
    done = subprocess.run([sys.executable, "-c", RUN, json.dumps(spec), str(work), str(base), str(data)], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return int(done.stdout.split("PEAK")[-1]), done.stdout.split("ALLOCATOR")[-1].split("\n")[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "qlora-studio-tests" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "allocator_fit.json")
    args = parser.parse_args()
    from jobs.data.formats import parse_file
    from jobs.data.store import store_parsed

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        story_rows(work / "rows.jsonl")
        data, _ = store_parsed(parse_file(work / "rows.jsonl"), work / "data")
        for name in args.rows.split(","):
            base_name, fields = ROWS[name]
            base = base_dir(base_name, args.models)
            spec = {"max_steps": args.steps, "eval_fraction": 0, "save_steps": 100, "logging_steps": 1, **fields}
            for jemalloc in (False, True):
                peak, allocator = measure(spec, base, data, work / f"{name}-{jemalloc}", jemalloc)
                parts = estimate_parts(spec, base, jemalloc)
                row = {"row": name, "allocator": allocator, "peak_mib": round(peak / MiB),
                       "estimate_mib": round(parts["estimate"] / MiB), "static_mib": round(parts["static"] / MiB),
                       "dynamic_mib": round(parts["dynamic"] / MiB), "factor_used": parts["factor"],
                       "load_peak_mib": round(parts["load_peak"] / MiB), "dtype": parts["dtype"],
                       "factor_needed": round((peak - parts["static"]) / parts["dynamic"], 3)}
                results.append(row)
                print(json.dumps(row), flush=True)
    write_report(args.out, {"steps": args.steps, "rows": results})


if __name__ == "__main__":
    main()
