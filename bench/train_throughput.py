"""Non-pad tokens per second: the studio's training path vs the plain library path, in one run.

    python bench/train_throughput.py [--steps 20] [--warmup 3] [--out bench/results/train_throughput.json] [--smoke]

Both train the same NF4 + double-quant demo model on the same example data, LoRA r=8 on all linear layers, batch 8,
max length 512, same seed. "plain" is what the TRL/PEFT docs lead a user to write: SFTTrainer with `peft_config`,
its defaults (gradient checkpointing on, bf16 autocast, padded batches of 8 rows), bf16 compute dtype as in the QLoRA
paper. "plain_packed" is the same with `packing=True` and batch 4, i.e. the same tokens per step as the studio, so
its ratio isolates compute dtype, checkpointing and the LoRA dtype from packing.
"studio" is `jobs.training.train.train` with the studio's device defaults. Throughput counts TRL's `num_tokens` (tokens
that are not padding) over the steps after the warmup."""

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

import bitsandbytes  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from jobs.data.formats import parse_file  # noqa: E402
from jobs.data.store import load_rows, store_parsed  # noqa: E402
from jobs.models.demo import ensure_demo_model  # noqa: E402
from jobs.spec import parse_spec  # noqa: E402
from jobs.studio import EXAMPLE_DATASET_FILE  # noqa: E402
from jobs.training.train import train  # noqa: E402


class TokenClock(TrainerCallback):
    """Records (time, cumulative non-pad tokens) at every log."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "num_tokens" in logs:
            self.marks.append((state.global_step, time.perf_counter(), float(logs["num_tokens"])))

    def tokens_per_s(self, warmup: int) -> float:
        """Median over steps of (new tokens / seconds), the same figure the studio logs as `tokens_per_s`."""
        pairs = zip(self.marks, self.marks[1:], strict=False)
        rates = [(n1 - n0) / (t1 - t0) for (_, t0, n0), (step, t1, n1) in pairs if step > warmup]
        return statistics.median(rates)


def run_studio(base: Path, data: Path, steps: int, warmup: int, work: Path) -> float:
    spec = parse_spec({"max_steps": steps, "batch_size": 4, "packing": True, "learning_rate": 5e-3, "logging_steps": 1,
                       "eval_fraction": 0, "save_steps": 10**6})  # the tokens per step the comparison is about
    rates: list[float] = []

    def sink(step: int, values: dict[str, float], total: int | None) -> None:
        if step > warmup and "tokens_per_s" in values:
            rates.append(values["tokens_per_s"])

    train(spec, work / "studio", str(base), data, sink, lambda: False)
    return statistics.median(rates)


def run_plain(base: Path, data: Path, steps: int, warmup: int, work: Path, packed: bool = False) -> float:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    transformers.set_seed(42)
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16))
    clock = TokenClock()
    config = SFTConfig(output_dir=str(work / "plain"), max_steps=steps, per_device_train_batch_size=4 if packed else 8,
                       packing=packed,
                       learning_rate=2e-3, logging_steps=1, max_length=512, assistant_only_loss=True,
                       use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no", seed=42,
                       disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(load_rows(data)),
                         processing_class=AutoTokenizer.from_pretrained(base), callbacks=[clock],
                         peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    trainer.train()
    return clock.tokens_per_s(warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    parser.add_argument("--smoke", action="store_true", help="4 steps after 1 of warmup: CI's check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup = 4, 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = ensure_demo_model(work / "models")
        data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), work / "data")
        plain = run_plain(base, data, args.steps, args.warmup, work)
        plain_packed = run_plain(base, data, args.steps, args.warmup, work, packed=True)
        studio = run_studio(base, data, args.steps, args.warmup, work)
    result = {
        "benchmark": "train_throughput", "unit": "non-pad tokens/s", "steps": args.steps, "warmup": args.warmup,
        "plain_trl": round(plain, 1), "plain_trl_packed": round(plain_packed, 1), "studio": round(studio, 1),
        "ratio_studio_over_plain": round(studio / plain, 2),
        "ratio_studio_over_plain_packed": round(studio / plain_packed, 2),
        "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "trl": trl.__version__, "bitsandbytes": bitsandbytes.__version__},
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
