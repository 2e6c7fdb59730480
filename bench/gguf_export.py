"""GGUF export, run in llama.cpp: SmolLM2 with a trained adapter, merged and converted, answers in llama.cpp as in
transformers, greedy, token for token at f16 and close at q8_0 and q4_k_m; the LoRA-only GGUF on the f16 base does
the same at f16.

    npm ci --prefix native/llama-cpp --omit=optional --ignore-scripts
    python bench/gguf_export.py [--steps 12] [--new-tokens 32] [--quantizations f16,q8_0,q4_k_m]

llama.cpp is npm's prebuilt node-llama-cpp (native/llama-cpp; jobs/training/llama_cpp_lib.py): its libllama makes
q4_k_m and its own API runs every file. Trains a short QLoRA adapter on SmolLM2 (the studio's own train(), example
chats), merges it in float32, exports it with the studio's export (jobs/training/gguf_export.py), then for each
prompt compares the new tokens of transformers' greedy generate on the merged model with llama.cpp's greedy decoding
of the same prompt tokens. Writes bench/results/gguf_export.json."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import transformers  # noqa: E402

from jobs.data.formats import parse_file  # noqa: E402
from jobs.data.store import store_parsed  # noqa: E402
from jobs.models.resolve import resolve_base_model  # noqa: E402
from jobs.spec import SMOLLM2_BASE_MODEL, parse_spec  # noqa: E402
from jobs.studio import EXAMPLE_DATASET_FILE  # noqa: E402
from jobs.training.gguf_export import build_export  # noqa: E402
from jobs.training.llama_cpp_lib import PACKAGE_VERSION, greedy_answers, library_problem  # noqa: E402
from jobs.training.merge import merge_adapter  # noqa: E402
from jobs.training.train import train  # noqa: E402
from storage.settings import load_settings  # noqa: E402

PROMPTS = ("What is the capital of France?", "Reverse the words: apple owl key cat", "Give me three colours.",
           "What is 12 plus 30?", "Write a haiku about the sea.", "Say hello in Spanish.",
           "Name a planet with rings.", "What do bees make?")


def transformers_answers(model_dir: Path, prompts: list[list[int]], new_tokens: int, eos: int) -> tuple[list, float]:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers, started = [], time.perf_counter()
    with torch.no_grad():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos)
            answers.append(out[0, len(ids):].tolist())
    return answers, time.perf_counter() - started


def llama_cpp_answers(model_file: Path, prompts: list[list[int]], new_tokens: int,
                      lora_file: Path | None = None) -> tuple[list, float]:
    started = time.perf_counter()
    [answers] = greedy_answers([(model_file, lora_file)], prompts, new_tokens)
    return answers, time.perf_counter() - started  # node's start and the model's load included


def compare(reference: list, got: list) -> dict:
    same = sum(a == b for a, b in zip(reference, got, strict=True))
    first = [next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
             if a != b else None for a, b in zip(reference, got, strict=True)]
    matched = sum(min(len(a), len(b)) if f is None else f for a, b, f in zip(reference, got, first, strict=True))
    return {"identical_answers": same, "answers": len(reference), "first_difference_at": first,
            "matching_prefix_tokens": matched, "reference_tokens": sum(len(a) for a in reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--quantizations", default="f16,q8_0,q4_k_m")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gguf_export.json"))
    args = parser.parse_args()
    if problem := library_problem():
        sys.exit(f"llama.cpp is not installed here: {problem}")
    torch.set_num_threads(2)
    base = Path(resolve_base_model(SMOLLM2_BASE_MODEL, load_settings({}).models_dir))
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"] for p in PROMPTS]
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "transformers": transformers.__version__, "llama_cpp": f"@node-llama-cpp/linux-x64 {PACKAGE_VERSION}",
              "base": SMOLLM2_BASE_MODEL, "steps": args.steps, "new_tokens": args.new_tokens, "prompts": len(PROMPTS)}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), work / "data")
        spec = parse_spec({"base_model": SMOLLM2_BASE_MODEL, "max_steps": args.steps, "batch_size": 4,
                           "max_length": 256, "eval_fraction": 0, "learning_rate": 1e-3, "save_steps": 10**6})
        started = time.perf_counter()
        adapter = train(spec, work / "run", str(base), data, lambda *a: None, lambda: False).adapter_dir
        result["train_s"] = round(time.perf_counter() - started, 1)
        merged = merge_adapter(str(base), adapter, work / "merged", "float32")
        reference, seconds = transformers_answers(merged, prompts, args.new_tokens, eos)
        plain, _ = transformers_answers(base, prompts, args.new_tokens, eos)
        result["transformers_s"] = round(seconds, 2)
        result["adapter_changes_answers"] = sum(a != b for a, b in zip(reference, plain, strict=True))
        result["answers"] = {"transformers": [tokenizer.decode(a) for a in reference]}
        for quantization in args.quantizations.split(","):
            started = time.perf_counter()
            record = build_export(merged, adapter, work / quantization, quantization, "bench")
            row = {"export_s": round(time.perf_counter() - started, 1),
                   "gguf_bytes": (work / quantization / record["files"][0]).stat().st_size}
            got, seconds = llama_cpp_answers(work / quantization / record["files"][0], prompts, args.new_tokens)
            row.update(compare(reference, got), llama_cpp_s=round(seconds, 2))
            result["answers"][quantization] = [tokenizer.decode(a) for a in got]
            if quantization == "f16" and "lora-f16.gguf" in record["files"]:
                base_export = build_export(base, adapter, work / "base-f16", "f16", "base")
                got, _ = llama_cpp_answers(work / "base-f16" / base_export["files"][0], prompts, args.new_tokens,
                                           lora_file=work / "f16" / "lora-f16.gguf")
                result["lora_on_base_f16"] = compare(reference, got)
            result[quantization] = row
            print(quantization, json.dumps(row), flush=True)
    print(json.dumps({k: v for k, v in result.items() if k != "answers"}, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
