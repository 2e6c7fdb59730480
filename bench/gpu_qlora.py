"""QLoRA on a GPU at real sizes, with nothing downloaded: Llama-shaped 1B and 8B models from a config with random
weights, through plain TRL and through the studio's worker, with each optimizer (paged ones included).

    python bench/gpu_qlora.py [--sizes 1b,8b] [--optimizers adamw_torch,paged_adamw_8bit,paged_adamw_32bit]
                              [--steps 30] [--max-length 2048] [--smoke] [--out PATH]

Models: the shapes of Llama 3.2 1B and Llama 3.1 8B (hidden size, layers, heads, grouped KV heads, MLP width, the
128,256-token vocabulary), random bf16 weights written as safetensors once per run; the demo's tokenizer (its ids
are in range; what is measured is the compute, not what the model says). Data: the example chats, packed.

Every run: NF4 + double quantization, bf16 compute, gradient checkpointing on, LoRA r=16 on every linear layer,
padding-free packing of `--max-length` tokens a row, `--batch` rows a step, `--steps` optimizer steps.
- plain: a TRL `SFTTrainer` script in its own process, as the TRL and PEFT docs write QLoRA.
- studio: a job through `python -m jobs submit --wait` and a waiting worker (`python -m jobs.queue.worker`), the
  same fields in its spec.
Reported per run: non-pad tokens/s (median over the steps after the first few), model FLOPs utilization (4·N FLOPs
per trained token for a frozen base with LoRA, N = the parameters of every matmul, the LM head included; divided by
the device's dense bf16 peak), and peak GPU memory (torch.cuda.max_memory_allocated); the plain arm also by phase
(`phase_peak_bytes`: the base's load and quantization, LoRA and the trainer's build with tokenization, the first
step, the later steps; the counter reset between phases, so each is that phase's own peak).

--smoke: a tiny Llama of the same family on the CPU (fp32, no checkpointing), a few steps, one optimizer: what CI
runs so the script cannot rot on machines without a GPU (its plain arm in this process, not its own: CI's time). MFU
is not computed on a CPU (no peak to divide by)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.job_overhead import run_job  # noqa: E402
from bench.machine import write_report  # noqa: E402

SHAPES = {
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False},
    "smoke": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 8192, "tie_word_embeddings": False},
}
DENSE_BF16_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12,
                   "H100 PCIe": 756e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
"""Dense bf16 tensor-core FLOP/s from the vendors' data sheets, by a part of the name torch reports."""
LORA_RANK = 16
WARMUP_STEPS = 3
RESULTS = ROOT / "bench" / "results"


# ----------------------------------------------------------------------------------------------- model and data


def build_model(size: str, folder: Path, tokenizer_source: Path) -> Path:
    """A Llama of `size`'s shape with random bf16 weights (made on the GPU when there is one: an 8B init on a CPU
    takes minutes), saved as safetensors with the demo's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = folder / f"llama-{size}-random"
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    config = LlamaConfig(**SHAPES[size], max_position_embeddings=8192, rope_theta=500000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return target


def matmul_params(size: str) -> int:
    """N for the MFU: the weights every token multiplies (attention and MLP projections of each layer, and the LM
    head), not the embedding lookup."""
    shape = SHAPES[size]
    hidden, heads, kv = shape["hidden_size"], shape["num_attention_heads"], shape["num_key_value_heads"]
    head_dim = hidden // heads
    attention = hidden * hidden * 2 + hidden * kv * head_dim * 2  # q and o; k and v (grouped)
    mlp = 3 * hidden * shape["intermediate_size"]
    return shape["num_hidden_layers"] * (attention + mlp) + hidden * shape["vocab_size"]


def write_rows(folder: Path, tokens_needed: int) -> Path:
    from jobs.data.example_data import generate_examples, to_jsonl

    rows = generate_examples(max(200, tokens_needed // 100), seed=3)  # ~150 tokens a row: enough for every step
    path = folder / "rows.jsonl"
    path.write_text(to_jsonl(rows))
    return path


# ----------------------------------------------------------------------------------------------------- the arms


PLAIN_SCRIPT = '''
import json, statistics, sys, time
import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
from trl import SFTConfig, SFTTrainer

base, data, out, optimizer, steps, batch, max_length, warmup = sys.argv[1:9]
steps, batch, max_length, warmup = int(steps), int(batch), int(max_length), int(warmup)
cuda = torch.cuda.is_available()
dtype = torch.bfloat16 if cuda else torch.float32
if not cuda and optimizer.startswith("paged_"):
    optimizer = {"paged_adamw_8bit": "adamw_bnb_8bit", "paged_adamw_32bit": "adamw_torch"}[optimizer]

phases = {}  # torch.cuda.max_memory_allocated by phase: each phase's own peak (the counter is reset between them)

def phase_end(name):
    if cuda:
        phases[name] = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()

class Clock(TrainerCallback):
    marks = []
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "num_tokens" in logs:
            self.marks.append((state.global_step, time.perf_counter(), float(logs["num_tokens"])))
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            phase_end("first step")

tokenizer = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, quantization_config=BitsAndBytesConfig(
    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype),
    device_map={"": "cuda" if cuda else "cpu"})
phase_end("base load + 4-bit")
config = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-4,
                   packing=True, padding_free=True, max_length=max_length, gradient_checkpointing=cuda,
                   bf16=cuda, optim=optimizer, logging_steps=1, save_strategy="no", report_to="none",
                   use_cpu=not cuda, dataloader_num_workers=0, disable_tqdm=True)
clock = Clock()
trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer, callbacks=[clock],
                     train_dataset=load_dataset("json", data_files=data, split="train"),
                     peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
phase_end("LoRA + trainer build + tokenization")
trainer.train()
phase_end("later steps")
rates = [(b[2] - a[2]) / (b[1] - a[1]) for a, b in zip(clock.marks, clock.marks[1:]) if b[0] > warmup]
print(json.dumps({"tokens_per_s": statistics.median(rates) if rates else None,
                  "peak_memory_bytes": max(phases["first step"], phases["later steps"]) if cuda else None,
                  "phase_peak_bytes": phases,
                  "steps": trainer.state.global_step}))
'''


def run_plain(base: Path, rows: Path, work: Path, optimizer: str, args) -> dict:
    script = work / "plain_qlora.py"
    script.write_text(PLAIN_SCRIPT)
    argv = [str(script), str(base), str(rows), str(work / f"plain-{optimizer}"), optimizer, str(args.steps),
            str(args.batch), str(args.max_length), str(WARMUP_STEPS)]
    if args.smoke:  # the smoke only checks that the script runs: here, with torch imported once (CI's time)
        return json.loads(_run_here(argv).strip().splitlines()[-1])
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=work)
    if done.returncode:
        raise RuntimeError(f"the plain TRL run failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_here(argv: list[str]) -> str:
    """What the script `argv[0]` prints, run as __main__ in this process."""
    import contextlib
    import io
    import runpy

    printed, saved = io.StringIO(), sys.argv
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv = saved
    return printed.getvalue()


def run_studio(base: Path, rows: Path, work: Path, optimizer: str, args) -> dict:
    """One job through the CLI and a waiting worker; its figures as the ledger holds them."""
    data_dir = work / f"studio-{optimizer}"
    env = {**os.environ, "STUDIO_DATA_DIR": str(data_dir), "STUDIO_MODEL_DIRS": str(base.parent),
           "PYTHONPATH": str(ROOT)}
    spec = {"base_model": str(base), "dataset": str(rows), "max_steps": args.steps, "batch_size": args.batch,
            "max_length": args.max_length, "packing": True, "optimizer": optimizer, "lora_r": LORA_RANK,
            "lora_alpha": 2 * LORA_RANK, "learning_rate": 2e-4, "eval_fraction": 0, "sample_prompts": 0,
            "logging_steps": 1, "save_steps": 10 * args.steps,
            **({"compute_dtype": "bfloat16", "gradient_checkpointing": "on"} if not args.smoke else {})}
    spec_file = work / f"studio-{optimizer}.json"
    spec_file.write_text(json.dumps(spec))
    run_job(spec_file, env, work / f"studio-{optimizer}.log", worker_exit_s=120)
    return job_figures(data_dir)


def job_figures(data_dir: Path) -> dict:
    from jobs.studio import open_studio
    from storage import jobs_repo
    from storage.settings import load_settings

    studio = open_studio(load_settings({"STUDIO_DATA_DIR": str(data_dir)}))
    try:
        with studio.db.read() as session:
            job_id = jobs_repo.list_jobs(session, limit=1)[0].id
            metrics = jobs_repo.metrics_for(session, job_id)
    finally:
        studio.db.dispose()
    rates = [m.value for m in metrics if m.name == "tokens_per_s" and m.step > WARMUP_STEPS]
    peaks = [m.value for m in metrics if m.name == "peak_memory_bytes"]
    return {"tokens_per_s": statistics.median(rates) if rates else None,
            "peak_memory_bytes": max(peaks) if peaks else None, "steps": max(m.step for m in metrics)}


# -------------------------------------------------------------------------------------------------------- report


def device_peak() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    return name, next((peak for part, peak in DENSE_BF16_PEAK.items() if part in name), None)


def with_mfu(result: dict, size: str, peak: float | None) -> dict:
    rate = result.get("tokens_per_s")
    result["mfu"] = 4 * matmul_params(size) * rate / peak if rate and peak else None
    return result


def print_rows(rows: list[dict]) -> None:
    print(f"{'size':<6}{'arm':<8}{'optimizer':<20}{'tokens/s':>10}{'MFU':>8}{'peak GiB':>10}")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
        peak = f"{r['peak_memory_bytes'] / 2**30:.2f}" if r.get("peak_memory_bytes") else "-"
        rate = f"{r['tokens_per_s']:.0f}" if r.get("tokens_per_s") else "-"
        print(f"{r['size']:<6}{r['arm']:<8}{r['optimizer']:<20}{rate:>10}{mfu:>8}{peak:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1b,8b")
    parser.add_argument("--optimizers", default="adamw_torch,paged_adamw_8bit,paged_adamw_32bit")
    parser.add_argument("--arms", default="plain,studio")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--smoke", action="store_true", help="a tiny Llama on the CPU, 6 steps: CI's check")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.optimizers, args.steps, args.batch, args.max_length = "smoke", "adamw_torch", 6, 2, 256
    device, peak = device_peak()
    if device == "cpu" and not args.smoke:
        parser.error("no GPU here: run with --smoke (a tiny model on the CPU), or on a machine with CUDA")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from jobs.models.demo import ensure_demo_model

        demo = ensure_demo_model(work / "demo")
        data = write_rows(work, args.steps * args.batch * args.max_length)
        for size in args.sizes.split(","):
            started = time.perf_counter()
            base = build_model(size, work / "models", demo)
            print(f"{size}: random weights written in {time.perf_counter() - started:.0f} s", flush=True)
            for optimizer in args.optimizers.split(","):
                for arm in args.arms.split(","):  # the same model, one arm after the other
                    run = (run_plain if arm == "plain" else run_studio)(base, data, work, optimizer, args)
                    rows.append(with_mfu({"size": size, "arm": arm, "optimizer": optimizer, **run}, size, peak))
                    print(json.dumps(rows[-1]), flush=True)
    print_rows(rows)
    out = args.out or RESULTS / f"gpu_qlora{'_smoke' if args.smoke else ''}.json"
    write_report(out, {"device": device, "dense_bf16_peak_flops": peak, "steps": args.steps, "batch": args.batch,
                       "max_length": args.max_length, "lora_rank": LORA_RANK, "rows": rows,
                       "matmul_params": {size: matmul_params(size) for size in args.sizes.split(",")}})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
