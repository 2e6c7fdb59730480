"""The OpenAI-compatible endpoint under load: 8 concurrent clients across 4 adapters of one base against the same
requests sent one at a time, through the real `openai` client and the studio's real web server.

    python bench/openai_serve.py [--clients 8] [--adapters 4] [--requests-per-client 4] [--max-tokens 32] [--smoke]

A fresh studio (no accounts: no key) serves the demo base with 4 adapters (PEFT's own random init with its B scaled
up, so each answers differently; serving does not care how the weights were found). Every request is greedy, so the
concurrent run must give the same answers as the one at a time (checked). Reported: requests per second and p95
latency each way, and their ratios (goal: concurrent throughput at least 3x), with how many batches ran."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

BASE = "demo-tiny-llama"
PROMPTS = ["What is the opposite of hot?", "hi", "Name a fruit.", "What is 2 + 2?", "Say something kind.",
           "What colour is the sky?", "Count to three.", "Tell me a word."]


def make_adapters(studio, count: int, base: str = BASE, scale_b: float = 20.0, prefix: str = "") -> list[str]:
    """`count` LoRA adapters of `base` (a folder in the studio's models), registered in the studio under `prefix`-N:
    PEFT's random init (init_lora_weights=False: lora_B is not zero) with lora_B scaled by `scale_b`, so each answers
    differently."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from storage.models import Adapter

    names = []
    for index in range(count):
        torch.manual_seed(index)
        model = AutoModelForCausalLM.from_pretrained(studio.settings.models_dir / base, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                 init_lora_weights=False, task_type="CAUSAL_LM"))
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data.mul_(scale_b)
        name = f"{prefix or ('bench-adapter' if base == BASE else f'bench-{base}')}-{index}"
        model.save_pretrained(studio.absolute(f"adapters/{name}"))
        with studio.db.write() as session:
            session.add(Adapter(name=name, base_model=base, path=f"adapters/{name}", size_bytes=1))
        names.append(name)
    return names


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "openai_serve.json"))
    parser.add_argument("--smoke", action="store_true",
                        help="4 clients on 2 adapters, 1 request each, 4 tokens: CI's check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.adapters, args.requests_per_client, args.max_tokens = 4, 2, 1, 4
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    import torch
    from openai import OpenAI

    from app.web.server import build_app, launch_options
    from jobs.models.demo import ensure_demo_model
    from jobs.studio import open_studio
    from storage.settings import load_settings

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ensure_demo_model(data / "models")
        studio = open_studio(load_settings({"STUDIO_DATA_DIR": str(data)}))
        adapters = make_adapters(studio, args.adapters)
        app = build_app(studio)
        app.queue(default_concurrency_limit=1)
        app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                   **launch_options(studio, app=app))
        client = OpenAI(base_url=app.local_url.rstrip("/") + "/v1", api_key="none", max_retries=0, timeout=600)
        requests = [(adapters[(c + r) % len(adapters)], PROMPTS[(c * args.requests_per_client + r) % len(PROMPTS)])
                    for c in range(args.clients) for r in range(args.requests_per_client)]

        def ask(request: tuple[str, str]) -> tuple[str, float]:
            started = time.monotonic()
            answer = client.chat.completions.create(model=request[0], max_tokens=args.max_tokens, temperature=0,
                                                    messages=[{"role": "user", "content": request[1]}])
            return answer.choices[0].message.content, time.monotonic() - started

        ask((adapters[0], "hi"))  # load the base and the adapters before any clock runs
        for name in adapters:
            ask((name, "hi"))
        batcher = app.studio_serve.state.batcher
        started = time.monotonic()
        alone = [ask(request) for request in requests]
        alone_s = time.monotonic() - started
        batches_before = batcher.batches_started

        def one_client(index: int) -> list[tuple[str, float]]:
            return [ask(request) for request in requests[index * args.requests_per_client:
                                                         (index + 1) * args.requests_per_client]]

        started = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            together = [answer for answers in pool.map(one_client, range(args.clients)) for answer in answers]
        together_s = time.monotonic() - started
        batches = batcher.batches_started - batches_before
        app.close()
        studio.db.dispose()

    count = len(requests)
    result = {
        "requests": count, "clients": args.clients, "adapters": args.adapters, "max_tokens": args.max_tokens,
        "alone": {"seconds": round(alone_s, 3), "requests_per_s": round(count / alone_s, 3),
                  "p95_latency_s": round(p95([s for _, s in alone]), 3),
                  "median_latency_s": round(statistics.median(s for _, s in alone), 3)},
        "concurrent": {"seconds": round(together_s, 3), "requests_per_s": round(count / together_s, 3),
                       "p95_latency_s": round(p95([s for _, s in together]), 3),
                       "median_latency_s": round(statistics.median(s for _, s in together), 3),
                       "batches": batches},
        "answers_equal": [a for a, _ in alone] == [a for a, _ in together],
    }
    result["throughput_ratio"] = round(alone_s / together_s, 2)
    result["p95_latency_ratio_concurrent_over_alone"] = round(
        result["concurrent"]["p95_latency_s"] / result["alone"]["p95_latency_s"], 2)
    print(f"{count} requests of {args.max_tokens} tokens on {args.adapters} adapters: one at a time "
          f"{result['alone']['requests_per_s']} req/s (p95 {result['alone']['p95_latency_s']} s); {args.clients} "
          f"clients at once {result['concurrent']['requests_per_s']} req/s (p95 {result['concurrent']['p95_latency_s']}"
          f" s) in {batches} batches: {result['throughput_ratio']}x the throughput (goal >= 3x); same answers: "
          f"{result['answers_equal']}")
    write_report(Path(args.out), {"benchmark": "openai_serve", **result, "torch_threads": torch.get_num_threads(),
                                  "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}})


if __name__ == "__main__":
    main()
