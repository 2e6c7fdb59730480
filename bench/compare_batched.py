"""Side-by-side chat: ONE batched generate over N panes vs N separate generate calls, in one run.

    python bench/compare_batched.py [--panes 1,2,4,8] [--new-tokens 48] [--repeats 5] [--smoke]

Trains small adapters on the demo model (a few steps each, different seeds), loads them onto one 4-bit base, then
for each pane count N (the base plus N-1 adapters) times greedy generation for the same prompt: the studio's
batched path (`ChatEngine` through the generation scheduler, adapter_names=[..., "__base__"]) against one generate
call per pane on the same loaded model (what a compare costs without batching)."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from jobs.chat.engine import ChatEngine  # noqa: E402
from jobs.chat.request import GenerationSettings  # noqa: E402
from jobs.chat.scheduler import GenerationScheduler  # noqa: E402
from jobs.data.formats import parse_file  # noqa: E402
from jobs.data.store import store_parsed  # noqa: E402
from jobs.models.demo import DEMO_MODEL_NAME, ensure_demo_model  # noqa: E402
from jobs.spec import parse_spec  # noqa: E402
from jobs.studio import EXAMPLE_DATASET_FILE  # noqa: E402
from jobs.training.train import train  # noqa: E402

PROMPT = [{"role": "user", "content": "Reverse the words: apple owl key cat"}]


def train_adapters(count: int, base: Path, data: Path, work: Path) -> list[Path]:
    adapters = []
    for seed in range(count):
        spec = parse_spec({"max_steps": 4, "batch_size": 2, "max_length": 256, "eval_fraction": 0, "seed": seed,
                           "save_steps": 10**6})
        adapters.append(train(spec, work / f"run{seed}", str(base), data, lambda *a: None, lambda: False).adapter_dir)
    return adapters


def time_it(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(engine: GenerationScheduler, panes: list, settings: GenerationSettings, repeats: int) -> dict:
    batched = time_it(lambda: engine.compare(DEMO_MODEL_NAME, panes, [PROMPT] * len(panes), settings), repeats)
    separate = time_it(lambda: [engine.compare(DEMO_MODEL_NAME, [pane], [PROMPT], settings) for pane in panes],
                       repeats)
    return {"panes": len(panes), "batched_one_generate": round(batched, 3), "separate_generates": round(separate, 3),
            "speedup_batched": round(separate / batched, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panes", default="1,2,4,8", help="pane counts to time (the base plus adapters)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "compare_batched.json"))
    parser.add_argument("--smoke", action="store_true", help="1 and 2 panes, 8 tokens, once: CI's check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.panes, args.new_tokens, args.repeats = "1,2", 8, 1
    counts = [int(part) for part in args.panes.split(",")]
    settings = GenerationSettings(max_new_tokens=args.new_tokens, temperature=0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = ensure_demo_model(work / "models")
        data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), work / "data")
        adapters = train_adapters(max(counts) - 1, base, data, work)
        engine = GenerationScheduler(ChatEngine(work / "models"))  # every generation goes through one
        every = [("base", None)] + [(f"a{i}", path) for i, path in enumerate(adapters)]
        rows = []
        for count in counts:
            rows.append(measure(engine, every[:count], settings, args.repeats))
            print(f"{count} panes: batched {rows[-1]['batched_one_generate']:.3f} s, one per pane "
                  f"{rows[-1]['separate_generates']:.3f} s, speedup {rows[-1]['speedup_batched']:.2f}x", flush=True)
    result = {
        "benchmark": "compare_batched", "unit": "seconds per compare (median)", "new_tokens": args.new_tokens,
        "repeats": args.repeats, "rows": rows,
        "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "machine": {"threads": torch.get_num_threads(), "platform": platform.platform()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
