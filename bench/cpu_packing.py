"""What keeping bitsandbytes' own 4-bit layout costs CPU chat on a CPU with AVX512-BF16: greedy generation on one
4-bit base loaded as chat loads it, with the layout kept (what the studio does, jobs.models.loading.keep_4bit_layout)
against bitsandbytes' default repacking into its bf16 CPU kernel, the two arms interleaved in one process.

    python bench/cpu_packing.py [--model PATH] [--new-tokens 64] [--rounds 4] [--out PATH]

The first round of each arm is a warm-up (the repacking happens there) and is left out of the median."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

PROMPT = "Name three colours and say why people like them."


def load(path: str, packed: bool):
    import torch
    from bitsandbytes.functional import has_avx512bf16

    from jobs.chat.request import BaseVariant
    from jobs.models import loading

    model = loading.load_base_model(BaseVariant().spec(path), path, "cpu", torch.float32).eval()
    for layer in model.modules():
        if hasattr(layer, "support_avx512bf16_for_cpu"):  # bitsandbytes' Linear4bit: its own default back
            layer.support_avx512bf16_for_cpu = packed and has_avx512bf16()
    return model


def main() -> None:
    import bitsandbytes.functional as bnbf
    import torch
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(Path.home() / ".cache/qlora-studio-tests/models/smollm2-135m-instruct"))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "bench/results/cpu_packing.json"))
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                        return_tensors="pt")
    ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
    models = {"kept": load(args.model, False), "packed": load(args.model, True)}
    seconds, texts = {arm: [] for arm in models}, {}
    for round_ in range(args.rounds):
        for arm in (("kept", "packed") if round_ % 2 == 0 else ("packed", "kept")):
            with torch.inference_mode():
                start = time.perf_counter()
                out = models[arm].generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                           do_sample=False)
                seconds[arm].append(time.perf_counter() - start)
            texts[arm] = tokenizer.decode(out[0, ids.shape[1]:])
    arms = {arm: {"median_s": statistics.median(runs[1:]), "runs_s": runs,
                  "ms_per_token": 1000 * statistics.median(runs[1:]) / args.new_tokens}
            for arm, runs in seconds.items()}
    report = {"model": args.model, "new_tokens": args.new_tokens, "threads": torch.get_num_threads(),
              "avx512_bf16": bool(bnbf.has_avx512bf16()), "arms": arms,
              "kept_over_packed": arms["kept"]["median_s"] / arms["packed"]["median_s"],
              "same_greedy_text": texts["kept"] == texts["packed"]}
    for arm, figures in arms.items():
        print(f"{arm:>6}: {figures['ms_per_token']:.1f} ms a token (median of {args.rounds - 1})")
    print(f"kept ÷ packed: {report['kept_over_packed']:.2f}x; same greedy text: {report['same_greedy_text']}")
    write_report(Path(args.out), report)


if __name__ == "__main__":
    main()
