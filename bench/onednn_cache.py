"""oneDNN's per-shape caches on a CPU: what bf16 matmuls over many token counts leave resident, per cache size.

    python bench/onednn_cache.py [--counts 107] [--repeats 20] [--smoke] [--out bench/results/onednn_cache.json]

A packed training step's token count changes from step to step, and every linear layer's matmul (forward, and the
input's gradient backward) runs at that count. In bf16 on a CPU PyTorch hands the matmul to oneDNN, which builds a
primitive per shape and keeps it in two caches (oneDNN's own, ONEDNN_PRIMITIVE_CACHE_CAPACITY, and PyTorch's ideep
layer's, LRU_CACHE_CAPACITY; 1,024 entries each by default). Each arm is a fresh process with jemalloc preloaded (as a
worker's training process runs) and the caches at one size: SmolLM2's four linear shapes (576→576, 576→192,
576→1536, 1536→576) forward and backward at `--counts` token counts from 300 up, and the resident set's growth over
them; then `--repeats` passes at one count (512), timed. These four shapes are not a whole step's: a real step's
speed under a cap is bench/memory_breakdown.py's `bfloat16 + onednn caches ...` arms.
Float32 matmuls (MKL) are the control. A shared CPU makes the seconds noisy; the MB are not."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

SHAPES = ((576, 576), (192, 576), (1536, 576), (576, 1536))
"""SmolLM2-135M's linear layers as (out, in)."""
ARMS = {"bf16, the libraries' caches (1,024)": ("bfloat16", "1024"), "bf16, caches at 64":
        ("bfloat16", "64"), "bf16, no caches": ("bfloat16", "0"), "float32, the libraries' caches": ("float32", "1024")}


def measure(dtype_name: str, counts: int, repeats: int) -> dict:
    """In this process: the resident set's growth over `counts` token counts, and `repeats` passes at 512, timed."""
    import torch

    from bench.memory_breakdown import status_mb

    dtype = getattr(torch, dtype_name)
    weights = [torch.randn(out, inp, dtype=dtype) for out, inp in SHAPES]

    def passes(tokens: int) -> None:
        for weight in weights:
            x = torch.randn(tokens, weight.shape[1], dtype=dtype, requires_grad=True)
            torch.nn.functional.linear(x, weight).sum().backward()

    passes(256)  # the libraries' one-off set-up, outside the growth
    start = status_mb()["VmRSS"]
    began = time.perf_counter()
    for tokens in range(300, 300 + 2 * counts, 2):
        passes(tokens)
    shapes_s = time.perf_counter() - began
    grown = status_mb()["VmRSS"] - start
    began = time.perf_counter()
    for _ in range(repeats):
        passes(512)
    return {"dtype": dtype_name, "token_counts": counts, "rss_growth_mb": grown, "shapes_s": shapes_s,
            "same_shape_s": time.perf_counter() - began, "repeats": repeats}


def arm(name: str, counts: int, repeats: int) -> dict:
    """One arm in a fresh process, with jemalloc (where installed) and its cache sizes."""
    from jobs.queue.spare import child_env

    dtype, capacity = ARMS[name]
    env = {**os.environ, **child_env(True), "ONEDNN_PRIMITIVE_CACHE_CAPACITY": capacity,
           "LRU_CACHE_CAPACITY": capacity if capacity != "0" else "1"}  # ideep's LRU takes no 0
    done = subprocess.run([sys.executable, __file__, "--measure", dtype, "--counts", str(counts), "--repeats",
                           str(repeats)], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    return {"arm": name, "onednn_primitive_cache_capacity": capacity, "lru_cache_capacity": env["LRU_CACHE_CAPACITY"],
            **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, default=107, help="token counts, 300, 302, ...")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "onednn_cache.json")
    parser.add_argument("--smoke", action="store_true", help="5 counts, 2 repeats: CI's check")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.counts, args.repeats)))
        return
    if args.smoke:
        args.counts, args.repeats = 5, 2
    results = []
    for name in ARMS:
        results.append(arm(name, args.counts, args.repeats))
        row = results[-1]
        print(f"{name:<40} RSS +{row['rss_growth_mb']:6.0f} MB over {row['token_counts']} token counts; "
              f"{row['repeats']} passes at one count {row['same_shape_s']:.2f} s", flush=True)
    write_report(args.out, {"arms": results, "load_average_1min": os.getloadavg()[0]})
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
