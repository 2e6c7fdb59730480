"""The LM head and cross-entropy of a big vocabulary: their share of a training step, and what each head costs.

    python bench/lm_head.py [--model smollm2|demo] [--steps 8] [--arms backbone,studio,...] [--smoke]
                            [--out bench/results/lm_head_smollm2.json]

One 4-bit base (NF4 + double quant, fp32 compute, LoRA r=8 on all linear layers, the studio's loaders), one packed
row of chat rows (`max_length` 512, loss on the assistant tokens, the studio's packing: position ids restart per row).
Each arm runs forward + backward (no optimizer step) in its own process, so its peak RSS is its own:

- backbone: the decoder only, loss = a trivial function of the last hidden state: what a step costs without a head.
- full_logits: `model(labels=...)` as transformers runs it: the (tokens × vocabulary) logits, then cross-entropy.
- labelled_logits: the head and cross-entropy on the labelled positions only, unchunked (a few lines of torch).
- trl_fused: TRL's fused, chunked LM head as SFTTrainer calls it on this device (on a CPU: every position).
- studio: the same head scoring only labelled positions (`jobs.training.lm_head`), what the studio trains with.
- studio_before: the studio's step before that and before LoRA dropout defaulted to 0: trl_fused with dropout 0.05.
- studio_compiled: the studio's step through `torch.compile` (inductor, the default backend) of the whole PEFT model;
  its first step (the compile) is reported apart.

Printed and saved: median seconds per step over the steps after the first, peak RSS, the loss (the heads must agree),
and the share of each arm's step over the backbone's ((arm - backbone) / arm: the head's share, and for studio_before
the dropout's too)."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

ARMS = ("backbone", "full_logits", "labelled_logits", "trl_fused", "studio_before", "studio", "studio_compiled")
MAX_LENGTH = 512


def base_dir(model: str, work: Path) -> str:
    """The demo model built under `work`, or SmolLM2 from the studio's models folder (built there once)."""
    if model == "demo":
        from jobs.models.demo import ensure_demo_model

        return str(ensure_demo_model(work / "models"))
    from jobs.models.resolve import resolve_base_model
    from storage.settings import load_settings

    return resolve_base_model("smollm2-135m-instruct", load_settings({}).models_dir)


def packed_batch(base: str, model: str) -> dict:
    """One row of up to MAX_LENGTH tokens: whole chat rows end to end, labels on assistant tokens only."""
    import torch

    from jobs.data import example_data, pirate_data
    from jobs.data.stats import tokenize_row
    from jobs.models.loading import load_tokenizer

    tokenizer = load_tokenizer(base, for_assistant_only_loss=True)
    rows = (pirate_data if model == "smollm2" else example_data).generate_examples(64, seed=11)
    ids, labels, positions = [], [], []
    for row in rows:
        tokens = tokenize_row(tokenizer, row, True)
        if len(ids) + len(tokens.ids) > MAX_LENGTH:
            break
        ids += tokens.ids
        labels += [t if keep else -100 for t, keep in zip(tokens.ids, tokens.loss, strict=True)]
        positions += list(range(len(tokens.ids)))
    return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions])}


def trainable_model(base: str, lora_dropout: float):
    import torch

    from jobs.models.loading import load_base_model
    from jobs.run_settings.settings import Base, Machine, resolve
    from jobs.spec import parse_spec
    from jobs.training.prepare import attach_lora, keep_lora_in_fp32

    spec = parse_spec({"learning_rate": 1e-3, "batch_size": 1, "packing": True, "num_epochs": 1,
                       "lora_dropout": lora_dropout})
    model = load_base_model(spec, base, "cpu", torch.float32)  # its 4-bit layout kept for training (loading)
    settings = resolve(spec, Base(), Machine("cpu", bf16=False))  # fp32 compute, no checkpointing
    model = attach_lora(model, settings)
    keep_lora_in_fp32(model, settings)
    model.train()
    return model


def loss_of(arm: str, model, batch: dict):
    import torch

    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    if arm == "backbone":
        hidden = model.get_base_model().model(**inputs).last_hidden_state
        return hidden.float().pow(2).mean()
    if arm == "full_logits":
        return model(**inputs, labels=batch["labels"]).loss
    if arm == "labelled_logits":
        hidden = model.get_base_model().model(**inputs).last_hidden_state[:, :-1]
        labels = batch["labels"][:, 1:]
        mask = labels != -100
        logits = model.get_base_model().lm_head(hidden[mask]).float()
        return torch.nn.functional.cross_entropy(logits, labels[mask])
    return model(**inputs, labels=batch["labels"], fused_lm_head=True).loss


def run_arm(arm: str, model_name: str, base: str, steps: int) -> dict:
    from trl.trainer.utils import add_fused_lm_head

    from jobs.training.lm_head import score_only_labelled_positions

    batch = packed_batch(base, model_name)
    model = trainable_model(base, 0.05 if arm == "studio_before" else 0.0)
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer adds it
    if arm.startswith("studio") and arm != "studio_before":
        score_only_labelled_positions()
    if arm == "studio_compiled":
        import torch

        model = torch.compile(model)
    seconds, loss = [], None
    for _ in range(steps):
        started = time.perf_counter()
        model.zero_grad(set_to_none=True)
        value = loss_of(arm, model, batch)
        value.backward()
        seconds.append(time.perf_counter() - started)
        loss = float(value)
    tokens = batch["input_ids"].shape[1]
    labelled = int((batch["labels"][0, 1:] != -100).sum())
    return {"arm": arm, "step_s": statistics.median(seconds[1:] or seconds), "first_step_s": seconds[0],
            "loss": loss, "tokens": tokens,
            "labelled_positions": labelled, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_subprocess(arm: str, model: str, base: str, steps: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--arm", arm, "--model", model, "--base", base,
                           "--steps", str(steps)],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"arm {arm} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])



def report(results: list[dict]) -> None:
    backbone = next(r["step_s"] for r in results if r["arm"] == "backbone")
    first = results[0]
    print(f"one packed row of {first['tokens']} tokens, {first['labelled_positions']} with a label")
    print(f"{'arm':<16}{'step s':>8}{'first s':>9}{'over backbone':>15}{'peak RSS MB':>13}{'loss':>9}")
    for r in results:
        r["head_share"] = 0.0 if r["arm"] == "backbone" else (r["step_s"] - backbone) / r["step_s"]
        print(f"{r['arm']:<16}{r['step_s']:>8.3f}{r['first_step_s']:>9.2f}{r['head_share']:>15.0%}"
              f"{r['peak_rss_mb']:>13.0f}"
              f"{'' if r['arm'] == 'backbone' else format(r['loss'], '.4f'):>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "demo"], default="smollm2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--arms", default=",".join(ARMS), help="which arms, in this order (backbone first: the "
                        "shares are over it)")
    parser.add_argument("--smoke", action="store_true", help="the demo model, 2 steps, every arm but the compiled "
                        "one (its compile alone takes over a minute): CI's check")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        parser.error(f"--arms: unknown {', '.join(sorted(unknown))} (known: {', '.join(ARMS)})")
    if "backbone" not in arms:
        parser.error("--arms: backbone is needed (every share is over it)")
    if args.smoke:
        args.model, args.steps, arms = "demo", 2, [arm for arm in ARMS if arm != "studio_compiled"]
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.model, args.base, args.steps)))
        return
    with tempfile.TemporaryDirectory() as work:
        base = base_dir(args.model, Path(work))
        # Each arm in a fresh process, so one arm's allocations never count in another's peak; the smoke only checks
        # that every arm runs, so it runs them in this one (one import of torch instead of six: CI's time).
        run = (lambda arm: run_arm(arm, args.model, base, args.steps)) if args.smoke else (
            lambda arm: in_subprocess(arm, args.model, base, args.steps))
        results = [run(arm) for arm in arms]
    report(results)
    out = args.out or ROOT / "bench" / "results" / f"lm_head_{args.model}{'_smoke' if args.smoke else ''}.json"
    write_report(out, {"model": args.model, "steps": args.steps, "results": results})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
