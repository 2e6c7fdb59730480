"""Fair turns on one chat model: person A sends a prompt at the limit with a high max_new_tokens, person B a short one
while A's generation runs; both through the generation scheduler the studio serves every generation with.

    python bench/chat_fairness.py [--new-tokens 512] [--repeats 5] [--max-prompt-tokens 4096] [--threads N] [--smoke]

On the demo base (a 1,024-token context), A's prompt is as long as the prompt limit allows (the context less A's
max_new_tokens, at most STUDIO_MAX_PROMPT_TOKENS), sampled under a fixed seed so every run makes the same tokens; B
sends "hi" for 16 new tokens the moment A's first token has come. Reported, medians over the repeats (and the
fastest of each, the least disturbed by other work on the machine): B's time to its first token and to its last
with A running (the goal: under 2 s), A's total time alone and with B, A alone in one unsliced generate (what
slicing costs), and what B would have waited behind the engine's old single lock (A's time still to go when B
arrived, plus B's own first token alone)."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

SHORT = [[{"role": "user", "content": "hi"}]]
WORDS = "apple owl key cat lime hot cold "


def prompt_at_limit(tokenizer, limit: int) -> tuple[list[list[dict]], int]:
    """A one-turn conversation whose templated prompt is `limit` tokens (or as close below as whole words go), and
    its tokens."""

    def conversation(words: int) -> list[list[dict]]:
        return [[{"role": "user", "content": " ".join((WORDS.split() * (words // 7 + 1))[:words])}]]

    def tokens(words: int) -> int:
        text = tokenizer.apply_chat_template(conversation(words)[0], add_generation_prompt=True, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    low, high = 1, limit
    while low < high:  # the most words that still fit
        middle = (low + high + 1) // 2
        low, high = (middle, high) if tokens(middle) <= limit else (low, middle - 1)
    return conversation(low), tokens(low)


def timed_stream(scheduler, person: str, conversations, settings, first: threading.Event | None = None) -> dict:
    """Seconds to the first token and to the end of one compare sent as `person`, and its token count."""
    from storage.access import Person, acting_as

    started = time.monotonic()
    result = {"first_token_s": None}
    with acting_as(Person(person)):
        for replies in scheduler.stream("demo-tiny-llama", [("base", None)], conversations, settings):
            if replies.token_counts[0] and result["first_token_s"] is None:
                result["first_token_s"] = time.monotonic() - started
                if first is not None:
                    first.set()
    result.update(total_s=time.monotonic() - started, tokens=replies.token_counts[0], started=started)
    return result


def one_round(scheduler, long_prompt, long_settings, short_settings) -> dict:
    from jobs.chat.scheduler import GenerationLimits

    limits = scheduler.limits
    scheduler.limits = GenerationLimits(max_prompt_tokens=limits.max_prompt_tokens, slice_s=math.inf)
    unsliced = timed_stream(scheduler, "ann", long_prompt, long_settings)
    scheduler.limits = limits
    b_alone = timed_stream(scheduler, "bob", SHORT, short_settings)
    a_alone = timed_stream(scheduler, "ann", long_prompt, long_settings)
    first = threading.Event()
    a_run: dict = {}
    thread = threading.Thread(target=lambda: a_run.update(timed_stream(scheduler, "ann", long_prompt, long_settings,
                                                                       first)))
    thread.start()
    first.wait()
    b = timed_stream(scheduler, "bob", SHORT, short_settings)
    thread.join()
    a_done_before_b = b["started"] - a_run["started"]
    return {
        "b_first_token_s": b["first_token_s"], "b_total_s": b["total_s"], "b_tokens": b["tokens"],
        "b_alone_first_token_s": b_alone["first_token_s"],
        "a_alone_s": a_alone["total_s"], "a_with_b_s": a_run["total_s"], "a_alone_unsliced_s": unsliced["total_s"],
        "a_tokens": a_run["tokens"], "a_first_token_s": a_run["first_token_s"],
        "b_wait_behind_one_lock_s": max(a_alone["total_s"] - a_done_before_b, 0) + b_alone["first_token_s"],
        "a_with_b_over_alone": a_run["total_s"] / a_alone["total_s"],
        "a_alone_over_unsliced": a_alone["total_s"] / unsliced["total_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=512, help="A's max_new_tokens")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own, as the web app runs); 1 steadies the figures "
                             "on a machine other work shares")
    parser.add_argument("--max-prompt-tokens", type=int, default=None,
                        help="STUDIO_MAX_PROMPT_TOKENS for this run (default: the studio's)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "chat_fairness.json"))
    parser.add_argument("--smoke", action="store_true",
                        help="a 64-token prompt limit, 16 new tokens, once: CI's check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.new_tokens, args.repeats, args.max_prompt_tokens = 16, 1, 64

    import torch

    from jobs.chat.engine import ChatEngine
    from jobs.chat.request import GenerationSettings, prompt_token_limit
    from jobs.chat.scheduler import GenerationLimits, GenerationScheduler
    from jobs.models.demo import ensure_demo_model
    from jobs.models.loading import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]  # other work on the machine slows every figure: record it
    with tempfile.TemporaryDirectory() as tmp:
        base = ensure_demo_model(Path(tmp) / "models")
        limits = GenerationLimits()  # the studio's defaults: 0.25 s slices, 4,096 prompt tokens at most
        if args.max_prompt_tokens:
            limits = GenerationLimits(max_prompt_tokens=args.max_prompt_tokens)
        scheduler = GenerationScheduler(ChatEngine(Path(tmp) / "models"), limits)
        context = json.loads((base / "config.json").read_text())["max_position_embeddings"]
        limit, why = prompt_token_limit(context, args.new_tokens, limits.max_prompt_tokens)
        long_prompt, prompt_tokens = prompt_at_limit(load_tokenizer(str(base)), limit)
        long_settings = GenerationSettings(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)
        short_settings = GenerationSettings(max_new_tokens=16, temperature=0)
        scheduler.compare("demo-tiny-llama", [("base", None)], SHORT, short_settings)  # load the base first
        runs = []
        for repeat in range(args.repeats):
            runs.append({key: round(value, 3) if isinstance(value, float) else value
                         for key, value in one_round(scheduler, long_prompt, long_settings, short_settings).items()})
            print(f"run {repeat + 1}: {runs[-1]}", flush=True)
    summary = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    fastest = {key: min(run[key] for run in runs) for key in runs[0]}  # the least disturbed by other work
    print(f"B's first token with A running: {summary['b_first_token_s']:.3f} s (goal < 2 s; behind one lock it "
          f"would have been {summary['b_wait_behind_one_lock_s']:.2f} s); A alone {summary['a_alone_s']:.2f} s, "
          f"with B {summary['a_with_b_s']:.2f} s, unsliced {summary['a_alone_unsliced_s']:.2f} s")
    write_report(Path(args.out), {
        "benchmark": "chat_fairness", "unit": "seconds (median over repeats)", "repeats": args.repeats,
        "a_prompt_tokens": prompt_tokens, "a_prompt_limit_tokens": limit, "a_prompt_limit_why": why,
        "a_new_tokens": args.new_tokens, "slice_s": limits.slice_s,
        "torch_threads": torch.get_num_threads(), **summary, "fastest": fastest, "runs": runs,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}})


if __name__ == "__main__":
    main()
