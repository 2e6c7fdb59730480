"""The memory verdict against real training: for each method, variant, quantization and architecture the studio
trains, the estimate (jobs/models/memory.py, from the base's config and headers and the spec) beside the peak RSS of
a real training run.

    python bench/memory_estimate.py [--rows NAME,...|all] [--steps 3] [--cuda] [--smoke] [--out PATH]
    python bench/memory_estimate.py --markdown bench/results/memory_estimate.json   (the tables for the docs)

Each row trains `--steps` optimizer steps with the studio's `train()` in a fresh process and reads its peak resident
set as the worker's child does (`jobs.training.callbacks.peak_rss`, VmHWM over the whole process, loading included).
Bases: tiny random models of each family (bench/tiny_models.py: Llama, Qwen2, Mistral, Phi-3, Gemma 2), the demo
model and SmolLM2-135M-Instruct (the real offline base). Data: chat rows long enough that packing fills every
sequence (SFT), and preference pairs of about one length (DPO, so every padded batch is about the longest). The
estimate is given what the Train tab gives it: the spec, and for padded batches the data's longest sequence.

Printed and saved per row: estimated and measured MiB, estimate ÷ measured, and the same ratio for the part that
depends on the model and the job (both less the framework's fixed RSS, `framework_bytes`), which a 25% band on a
tiny model's total would hide. CUDA rows are the estimate alone for a GPU (no GPU here): `--cuda` adds them.

--smoke: one small demo row, one step: what CI runs so the script cannot rot (a real row of the table is checked
by tests/jobs/models/test_memory_architectures.py)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ARCHITECTURES = ("llama", "qwen2", "mistral", "phi3", "gemma2")
TINY = {"batch_size": 4, "max_length": 512}
SMOLLM2 = {"batch_size": 1, "max_length": 512}
DPO = {"method": "dpo", "batch_size": 4, "max_length": 512}
STEPS = {"eval_fraction": 0, "save_steps": 1000, "logging_steps": 1, "sample_prompts": 0, "learning_rate": 1e-4}
RUN = """
import json, sys
from pathlib import Path
from jobs.spec import parse_spec
from jobs.training.callbacks import peak_rss
from jobs.training.train import quiet_libraries, train
quiet_libraries()
spec = parse_spec(json.loads(sys.argv[1]))
init = Path(sys.argv[5]) if len(sys.argv) > 5 else None
train(spec, Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), lambda *a: None, lambda: False, init_adapter=init)
print("PEAK", int(peak_rss()))
"""


@dataclass(frozen=True)
class Row:
    name: str
    base: str
    """'demo', 'smollm2', or a family of bench/tiny_models.py."""
    spec: dict
    data: str = "chat"
    """'chat', 'pairs' or 'unpaired' (KTO's labelled answers: each pair's two answers, true and false)."""
    start_adapter: bool = False
    """DPO from an adapter (a short SFT run first): TRL keeps a frozen copy of it as the reference."""
    tags: dict = field(default_factory=dict)


def rows() -> list[Row]:
    """Every method and variant on every family (nf4), the other quantizations on one, and the real offline base."""
    found = []
    variants = {"lora": {}, "dora": {"use_dora": True}, "modules_to_save": {"modules_to_save": ["lm_head"]},
                "embeddings": {"target_modules": ["embed_tokens"]}}
    for arch in ARCHITECTURES:
        for variant, extra in variants.items():
            found.append(Row(f"{arch} sft {variant}", arch, {**TINY, **extra}))
        found.append(Row(f"{arch} dpo lora", arch, DPO, data="pairs"))
    for quantization in ("fp4", "int8", "none"):
        found.append(Row(f"llama sft lora {quantization}", "llama",
                         {**TINY, "quantization": quantization, "double_quant": quantization == "fp4"}))
    found += [
        Row("llama sft dora + dropout 0.05", "llama", {**TINY, "use_dora": True, "lora_dropout": 0.05}),
        Row("llama sft lora, checkpointing", "llama", {**TINY, "gradient_checkpointing": "on"}),
        Row("qwen2 sft lora, biases trained", "qwen2", {**TINY, "lora_bias": "all"}),
        Row("llama dpo from an adapter", "llama", DPO, data="pairs", start_adapter=True),
        Row("llama orpo lora", "llama", {**DPO, "method": "orpo"}, data="pairs"),
        Row("llama simpo lora", "llama", {**DPO, "method": "simpo"}, data="pairs"),
        Row("llama kto lora", "llama", {**DPO, "method": "kto"}, data="unpaired"),
        Row("gemma2 dpo dora", "gemma2", {**DPO, "use_dora": True}, data="pairs"),
        Row("demo sft lora", "demo", TINY),
        Row("demo dpo lora", "demo", DPO, data="pairs"),
        Row("smollm2 sft lora", "smollm2", SMOLLM2),
        Row("smollm2 sft dora", "smollm2", {**SMOLLM2, "use_dora": True}),
        Row("smollm2 sft modules_to_save", "smollm2", {**SMOLLM2, "modules_to_save": ["lm_head"]}),
        Row("smollm2 sft embeddings", "smollm2", {**SMOLLM2, "target_modules": ["embed_tokens"]}),
        Row("smollm2 sft lora int8", "smollm2", {**SMOLLM2, "quantization": "int8", "double_quant": False}),
        Row("smollm2 dpo lora", "smollm2", {**DPO, "batch_size": 2}, data="pairs"),
    ]
    return found


# Published configs of real models of each family (config.json values that move memory; bf16 checkpoints): the
# verdict on a GPU at real sizes, estimated from the config alone, as before a download.
REAL_CONFIGS = {
    "Llama-3.1-8B": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
    "Qwen2-7B": {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                 "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
    "Mistral-7B-v0.3": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "head_dim": 128, "vocab_size": 32768},
    "Phi-3-mini-4k": {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
                      "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064},
    "Gemma-2-9B": {"model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
                   "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
                   "tie_word_embeddings": True, "attn_logit_softcapping": 50.0,
                   "layer_types": ["sliding_attention", "full_attention"] * 21},
}
GPU_JOBS = {"sft r16 b1 L2048": {"lora_r": 16, "batch_size": 1, "max_length": 2048},
            "sft r16 b4 L2048, DoRA": {"lora_r": 16, "batch_size": 4, "max_length": 2048, "use_dora": True},
            "dpo r16 b2, pairs of 512": {"lora_r": 16, "batch_size": 2, "max_length": 2048, "method": "dpo"}}


def gpu_estimates() -> list[dict]:
    """Each real config's estimated peak on a GPU (bf16 compute, checkpointing on: 'auto' there), not measured."""
    from jobs.models.fits import job_estimate
    from jobs.models.memory_inputs import ModelShape
    from jobs.run_settings.settings import Machine
    from jobs.spec import parse_spec

    found = []
    for model, config in REAL_CONFIGS.items():
        shape = replace(ModelShape.from_config(config), checkpoint_dtype_bytes=2)  # published in bf16
        for job, fields in GPU_JOBS.items():
            longest = 512 if fields.get("method") == "dpo" else 0
            estimate = job_estimate(parse_spec(fields), shape, Machine("cuda", bf16=True), longest)
            found.append({"model": model, "job": job, "params": shape.total_params,
                          "estimated_bytes": estimate.peak, "measured": "not measured (no GPU here)"})
    return found


SMOKE_ROW = Row("demo smoke", "demo", {"batch_size": 1, "max_length": 128})


# ---------------------------------------------------------------------------------------------------------- data


WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "rain", "runs", "to", "sea")


def chat_rows(count: int = 60) -> list[dict]:
    """Answers of 40 to 235 words: packed, they fill every sequence of 512 tokens."""
    return [{"messages": [{"role": "user", "content": f"Tell me story {i}."},
                          {"role": "assistant", "content": _words(i, 40 + 5 * (i % 40))}]} for i in range(count)]


def preference_rows(count: int = 24) -> list[dict]:
    """Pairs of about one length (80 to 90 words), so every padded batch is about as long as the longest."""
    return [{"prompt": [{"role": "user", "content": f"Tell me story {i}."}],
             "chosen": [{"role": "assistant", "content": _words(i, 80 + i % 10)}],
             "rejected": [{"role": "assistant", "content": _words(i + 3, 80 + (i + 5) % 10)}]} for i in range(count)]


def unpaired_rows() -> list[dict]:
    """KTO's rows: every pair's chosen answer labelled true and its rejected one false, in turn."""
    return [{"prompt": row["prompt"], "completion": row[side], "label": side == "chosen"}
            for row in preference_rows() for side in ("chosen", "rejected")]


def _words(start: int, count: int) -> str:
    return " ".join(WORDS[(start + j) % len(WORDS)] for j in range(count))


def dataset(kind: str, work: Path) -> Path:
    from jobs.data.formats import PREFERENCE, UNPAIRED, ParsedDataset, parse_file
    from jobs.data.store import store_parsed

    if kind == "unpaired":
        path, _ = store_parsed(ParsedDataset(UNPAIRED, unpaired_rows()), work / f"data-{kind}")
        return path
    if kind == "pairs":
        path, _ = store_parsed(ParsedDataset(PREFERENCE, preference_rows()), work / f"data-{kind}")
        return path
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "chat.jsonl"
    raw.write_text("".join(json.dumps(row) + "\n" for row in chat_rows()))
    path, _ = store_parsed(parse_file(raw), work / f"data-{kind}")
    return path


def longest_sequence(base: str, kind: str) -> int:
    """The data's longest sequence through the base's chat template: for a pair, its prompt with the longer answer."""
    from jobs.data.stats import tokenize_row
    from jobs.models.loading import load_tokenizer

    tokenizer = load_tokenizer(base)
    if kind in ("pairs", "unpaired"):
        conversations = [row["prompt"] + row[side] for row in preference_rows() for side in ("chosen", "rejected")]
    else:
        conversations = [row["messages"] for row in chat_rows()]
    return max(len(tokenize_row(tokenizer, {"messages": c}, False).ids) for c in conversations)


def base_dir(base: str, models: Path) -> str:
    if base == "demo":
        from jobs.models.demo import ensure_demo_model

        return str(ensure_demo_model(models))
    if base == "smollm2":
        from jobs.models.smollm2 import ensure_smollm2

        return str(ensure_smollm2(models))
    from bench.tiny_models import build_tiny

    return str(build_tiny(base, models / f"tiny-{base}"))


# --------------------------------------------------------------------------------------------------------- a row


def measure(row: Row, base: str, data: Path, work: Path, steps: int) -> dict:
    """Train the row in a fresh process; its peak RSS and the dtype it ran in."""
    spec = {**STEPS, **row.spec, "max_steps": steps}
    extra = []
    if row.start_adapter:
        start = {**STEPS, **TINY, "max_steps": 1, "target_modules": "attention"}
        done = _train(start, base, dataset("chat", work), work / "start", [])
        if done["returncode"]:
            return done
        extra = [str(work / "start" / "adapter")]
        spec["init_adapter"] = "start"
    return _train(spec, base, data, work / "run", extra)


def _train(spec: dict, base: str, data: Path, out: Path, extra: list[str]) -> dict:
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", RUN, json.dumps(spec), str(out), base, str(data), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    result = {"returncode": done.returncode, "wall_s": round(time.monotonic() - began, 1)}
    if done.returncode:
        result["error"] = done.stderr[-2000:]
        return result
    result["measured_bytes"] = int(done.stdout.split("PEAK")[-1])
    result["dtype"] = done.stdout.split("training on cpu (torch.")[-1].split(",")[0]
    return result


def estimated(row: Row, base: str, dtype: str, longest: int, device: str = "cpu") -> dict:
    """The verdict's estimate for the row, as the Train tab makes it, and its parts."""
    from jobs.models.fits import job_estimate
    from jobs.models.memory_inputs import CUDA_BF16, ModelShape, cpu_profile
    from jobs.run_settings.cpu_dtype import native_bf16
    from jobs.run_settings.settings import Machine
    from jobs.spec import parse_spec

    spec = parse_spec({**STEPS, **row.spec, "init_adapter": "start" if row.start_adapter else ""})
    profile = CUDA_BF16 if device == "cuda" else cpu_profile(dtype)
    # The run measured computed in `dtype`: the estimate resolves the settings of that run (began in it).
    machine = Machine("cuda", bf16=True) if device == "cuda" else Machine("cpu", native_bf16(), began_in=dtype)
    found = job_estimate(spec, ModelShape.from_dir(base), machine, longest)
    return {"estimated_bytes": found.peak, "profile": profile.name, "framework_bytes": profile.framework_bytes,
            "parts": found.breakdown(), "load_peak_bytes": found.load_peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="all", help="row names, comma-separated, or 'all'")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", type=Path, help="where bases are built and kept (default: a temporary folder)")
    parser.add_argument("--cuda", action="store_true", help="add each row's estimate for a GPU (not measured)")
    parser.add_argument("--smoke", action="store_true", help="one small row, one step: CI's check")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", type=Path, help="print this report's tables for docs/benchmarks.md and stop")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    chosen = [row for row in rows() if args.rows == "all" or row.name in args.rows.split(",")]
    if args.smoke:
        chosen, args.steps = [SMOKE_ROW], 1
    out = args.out or RESULTS / f"memory_estimate{'_smoke' if args.smoke else ''}.json"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = args.models or work / "models"
        data = {kind: dataset(kind, work) for kind in ("chat", "pairs", "unpaired")}
        for row in chosen:
            base = base_dir(row.base, models)
            run_dir = work / row.name.replace(" ", "_").replace(",", "").replace("+", "")
            measured = measure(row, base, data[row.data], run_dir, args.steps)
            result = {"row": row.name, "base": row.base, "spec": row.spec, **measured}
            if not measured["returncode"]:
                longest = longest_sequence(base, row.data) if row.data != "chat" else 0
                result.update(estimated(row, base, measured["dtype"], longest), longest_sequence=longest)
                result.update(_ratios(result))
                if args.cuda:
                    result["cuda_estimated_bytes"] = estimated(row, base, "bfloat16", longest, "cuda")[
                        "estimated_bytes"]
            results.append(result)
            _print(result)
            write_report(out, {"steps": args.steps, "rows": results, "partial": True})  # a long run keeps its rows
    worst = max((abs(r["ratio"] - 1) for r in results if "ratio" in r), default=None)
    gpu = gpu_estimates()
    for row in gpu:
        print(f"GPU {row['model']:<16} {row['job']:<26} estimated {row['estimated_bytes'] / 2**30:6.1f} GiB "
              f"(not measured: no GPU here)")
    write_report(out, {"steps": args.steps, "worst_ratio_error": worst, "rows": results, "gpu_estimates": gpu})
    print(f"worst |estimate / measured - 1|: {worst:.3f}" if worst is not None else "no row measured")
    print(f"saved {out}")


def markdown(report: dict) -> str:
    """The report as docs/benchmarks.md's tables: measured rows, then the GPU's estimates."""
    lines = ["| row | estimated MiB | measured MiB | estimated ÷ measured | above the framework | CUDA estimate MiB |",
             "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if row["returncode"]:
            lines.append(f"| {row['row']} | | failed | | | |")
            continue
        cuda = f"{row['cuda_estimated_bytes'] / 2**20:,.0f} (not measured)" if "cuda_estimated_bytes" in row else ""
        lines.append(f"| {row['row']} | {row['estimated_bytes'] / 2**20:,.0f} | {row['measured_bytes'] / 2**20:,.0f} | "
                     f"{row['ratio']:.2f} | {row['ratio_above_framework']:.2f} | {cuda} |")
    lines += ["", "| model (config only) | job | parameters | estimated peak on a GPU | measured |",
              "|---|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['job']} | {row['params'] / 1e9:.2f} B | "
              f"{row['estimated_bytes'] / 2**30:.1f} GiB | {row['measured']} |"
              for row in report.get("gpu_estimates", [])]
    return "\n".join(lines)


def _ratios(result: dict) -> dict:
    fixed = result["framework_bytes"]
    return {"ratio": round(result["estimated_bytes"] / result["measured_bytes"], 3),
            "ratio_above_framework": round((result["estimated_bytes"] - fixed) / (result["measured_bytes"] - fixed), 3)}


def _print(result: dict) -> None:
    if result["returncode"]:
        print(f"{result['row']:<34} FAILED: {result['error'][-600:]}", flush=True)
        return
    print(f"{result['row']:<34} estimated {result['estimated_bytes'] / 2**20:8.0f} MiB  measured "
          f"{result['measured_bytes'] / 2**20:8.0f} MiB  ratio {result['ratio']:.2f}  above framework "
          f"{result['ratio_above_framework']:.2f}  ({result['wall_s']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
