"""Does GRPO with the JSON-valid reward raise the share of greedy answers that parse as JSON, starting from an SFT
adapter? On a small extraction set built here: "pull the name, age and city out of this sentence as JSON".

    python bench/grpo_json.py [--model smollm2|demo] [--sft-steps 12] [--grpo-steps 30] [--generations 4]
                              [--held-out 24] [--probe] [--skip-base] [--smoke] [--out PATH]

1. Rows: sentences made from fixed lists (seeded), each with its JSON as the reference; the last --held-out rows are
   the measuring prompts, never trained on.
2. SFT: `jobs.training.train.train` on the training rows as chats (prompt -> the reference JSON), deliberately short
   (--sft-steps) so the adapter it leaves is imperfect: the starting point.
3. GRPO: `train` again with method grpo, init_adapter the SFT adapter, grpo_rewards 'json' (only: whether the answer
   parses), --generations answers per prompt. Each step's rewards are kept per prompt (how many of its answers
   parsed): a group whose answers all scored alike gives GRPO nothing to learn from.
4. Each of base, SFT and GRPO answers every held-out prompt greedily (the same 4-bit base, one batch, 64 new
   tokens); reported: the share that parses as JSON (after stripping whitespace), the share whose JSON equals the
   reference, and the GRPO run's first and last logged mean reward. Printed and saved as JSON to bench/results/
   (after SFT's answers, then again after GRPO's, so a stopped run keeps what it measured).

--probe stops after measuring base and SFT: a few minutes to find an SFT start that parses some held-out prompts
but not all (all leaves GRPO nothing to raise, none gives it no reward to tell answers apart)."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NAMES = ["Maria Lopez", "Jon Berg", "Aiko Tanaka", "Samuel Okoro", "Lena Fischer", "Ravi Patel", "Chloe Martin",
         "Omar Haddad", "Ingrid Larsen", "Tomas Novak", "Grace Kim", "Pedro Alves", "Nora Quinn", "Ivan Petrov"]
CITIES = ["Lyon", "Oslo", "Kyoto", "Lagos", "Bremen", "Pune", "Quebec", "Beirut", "Bergen", "Brno", "Busan", "Porto"]
SHAPES = ["{name} is {age} years old and lives in {city}.", "Born {age} years ago, {name} now calls {city} home.",
          "{name}, aged {age}, moved to {city} last spring.", "In {city} you will find {name}, who is {age}.",
          "Our new colleague {name} ({age}) works from {city}."]
INSTRUCTION = ("Extract the person's name, age and city from the sentence below. Answer with JSON only, with the keys "
               "\"name\", \"age\" (a number) and \"city\".\n\nSentence: ")
SMOKE = {"sft_steps": 2, "grpo_steps": 2, "generations": 2, "held_out": 4, "rows": 12, "completion": 8}


def extraction_rows(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        person = {"name": rng.choice(NAMES), "age": rng.randint(19, 79), "city": rng.choice(CITIES)}
        sentence = rng.choice(SHAPES).format(**person)
        rows.append({"prompt": INSTRUCTION + sentence, "reference": json.dumps(person)})
    return rows


def base_dir(model: str, work: Path) -> Path:
    if model == "demo":
        from jobs.models.demo import ensure_demo_model

        return ensure_demo_model(work / "models")
    from jobs.models.smollm2 import ensure_smollm2

    cache = Path(os.environ.get("STUDIO_TEST_CACHE", Path.home() / ".cache" / "qlora-studio-tests"))
    return ensure_smollm2(cache / "models")


GREEDY_BATCH = 32
"""Held-out prompts answered in one generate call (the default 24 fit in one)."""


def greedy_answers(base: Path, adapter: Path | None, prompts: list[str], new_tokens: int) -> list[str]:
    """Greedy answers of the 4-bit base (with `adapter`), batched, left-padded, fp32 compute."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from jobs.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(base))
    tokenizer.padding_side = "left"
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(str(base), quantization_config=quantization, dtype=torch.float32,
                                                 device_map={"": "cpu"})
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    answers = []
    for start in range(0, len(texts), GREEDY_BATCH):
        batch = tokenizer(texts[start:start + GREEDY_BATCH], return_tensors="pt", padding=True,
                          add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def scores(answers: list[str], references: list[str]) -> dict:
    parsed = []
    for answer in answers:
        try:
            parsed.append(json.loads(answer.strip()))
        except ValueError:
            parsed.append(None)
    exact = sum(value == json.loads(ref) for value, ref in zip(parsed, references, strict=True))
    return {"parse_rate": sum(value is not None for value in parsed) / len(answers),
            "exact_rate": exact / len(answers), "examples": answers[:3],
            "unparsed_examples": [answer for answer, value in zip(answers, parsed, strict=True) if value is None][:3],
            "parsed_but_wrong": [answer for answer, value, ref in zip(answers, parsed, references, strict=True)
                                 if value is not None and value != json.loads(ref)]}


def progress(label: str, rewards: list[tuple[int, float]]):
    """A metrics sink that prints each logged step (with seconds since the run began) and keeps GRPO's mean reward."""
    began = time.monotonic()

    def sink(step: int, values: dict, total: int) -> None:
        if "reward" in values:
            rewards.append((step, values["reward"]))
        shown = {key: round(value, 4) for key, value in values.items() if key in ("loss", "reward")}
        print(f"{label} step {step}/{total} at {time.monotonic() - began:.0f} s: {shown}", flush=True)
    return sink


def recording_json_reward(groups: list[list[float]], unparsed: list[str], generations: int) -> None:
    """Makes the studio's json reward (jobs.rewards.json_reward, which the run looks up by name) also keep every
    batch's rewards, cut into groups of `generations` answers to one prompt (TRL samples a prompt's answers
    together), and the last few sampled answers that did not parse. The rewards themselves are the studio's."""
    import jobs.rewards
    from jobs.rewards import answer_text

    studio_reward = jobs.rewards.json_reward

    def json_reward():
        judge = studio_reward()

        def json_valid(completions: list, **kwargs) -> list[float]:
            values = judge(completions, **kwargs)
            batch = [values[start:start + generations] for start in range(0, len(values), generations)]
            groups.extend(batch)
            unparsed[:] = (unparsed + [answer_text(c) for c, v in zip(completions, values, strict=True) if not v])[-3:]
            print(f"grpo sampled answers that parse, per prompt: {[int(sum(group)) for group in batch]}", flush=True)
            return values
        json_valid.__name__ = judge.__name__
        return json_valid
    jobs.rewards.json_reward = json_reward


def group_summary(groups: list[list[float]]) -> dict:
    """How many of each group's answers parsed, and the share of groups with a spread (GRPO's only signal)."""
    parsed = [int(sum(group)) for group in groups]
    mixed = sum(0 < count < len(group) for count, group in zip(parsed, groups, strict=True))
    return {"parsed_per_group": parsed, "groups": len(groups),
            "share_of_groups_with_spread": round(mixed / len(groups), 3) if groups else None}


def measure(report: dict, label: str, base: Path, adapter: Path | None, held: list[dict], new_tokens: int) -> None:
    started = time.monotonic()
    answers = greedy_answers(base, adapter, [r["prompt"] for r in held], new_tokens)
    report[label] = {**scores(answers, [r["reference"] for r in held]),
                     "greedy_s": round(time.monotonic() - started, 1)}
    print(f"{label}: parse rate {report[label]['parse_rate']:.2f}, exact {report[label]['exact_rate']:.2f} "
          f"({report[label]['greedy_s']:.0f} s)", flush=True)


def _dtype_ran(run_dir: Path) -> str | None:
    """What the training computed in ('auto' resolved on this machine), as the run folder records it."""
    try:
        return json.loads((run_dir / "compute_dtype.json").read_text())["dtype"]
    except (OSError, ValueError, KeyError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("smollm2", "demo"), default="smollm2")
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--held-out", type=int, default=24)
    parser.add_argument("--sft-steps", type=int, default=12)
    parser.add_argument("--grpo-steps", type=int, default=30)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--completion", type=int, default=48, help="max_completion_length (tokens)")
    parser.add_argument("--sft-lr", type=float, default=1e-3)
    parser.add_argument("--grpo-lr", type=float, default=2e-4)
    parser.add_argument("--probe", action="store_true",
                        help="measure base and SFT, then stop: to choose the SFT start cheaply")
    parser.add_argument("--skip-base", action="store_true",
                        help="do not answer with the base alone (an earlier run measured it on the same prompts)")
    parser.add_argument("--smoke", action="store_true", help="the demo model, a few steps: the script runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.model = "demo"
        for key, value in SMOKE.items():
            setattr(args, key, value)
    from jobs.data.formats import REFERENCE, parse_records
    from jobs.data.store import store_parsed
    from jobs.spec import parse_spec
    from jobs.training.train import quiet_libraries, train

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="grpo-json-"))
    base = base_dir(args.model, work)
    rows = extraction_rows(args.rows)
    train_rows, held = rows[:-args.held_out], rows[-args.held_out:]
    chats, _ = store_parsed(parse_records([{"prompt": r["prompt"], "completion": r["reference"]}
                                           for r in train_rows]), work / "data")
    checks, _ = store_parsed(parse_records(train_rows), work / "data")
    assert parse_records(train_rows).format == REFERENCE
    common = {"max_length": 256, "eval_fraction": 0, "save_steps": 1000, "logging_steps": 1, "sample_prompts": 0,
              "lora_r": 16, "target_modules": "all-linear", "batch_size": 4}

    new_tokens = 8 if args.smoke else 64
    out = args.out or RESULTS / f"grpo_json_{args.model}.json"
    started = time.monotonic()
    sft = train(parse_spec({**common, "max_steps": args.sft_steps, "learning_rate": args.sft_lr}), work / "sft",
                str(base), chats, progress("sft", []), lambda: False)
    report = {"model": args.model, "rows_trained": len(train_rows), "held_out": len(held),
              "sft_steps": args.sft_steps, "grpo_steps": 0 if args.probe else args.grpo_steps,
              "generations": args.generations, "max_completion_length": args.completion, "sft_lr": args.sft_lr,
              "grpo_lr": args.grpo_lr, "compute_dtype": _dtype_ran(work / "sft"),
              "sft_s": round(time.monotonic() - started, 1)}
    for label, adapter in (("base", None), ("sft", sft.adapter_dir))[args.skip_base:]:
        measure(report, label, base, adapter, held, new_tokens)
    write_report(out, report)
    if args.probe:
        print(f"wrote {out} (probe: no GRPO)")
        return

    rewards: list[tuple[int, float]] = []
    groups: list[list[float]] = []
    unparsed: list[str] = []
    recording_json_reward(groups, unparsed, args.generations)
    grpo_spec = parse_spec({**common, "method": "grpo", "init_adapter": "sft", "max_steps": args.grpo_steps,
                            "batch_size": 2, "num_generations": args.generations,
                            "max_completion_length": args.completion, "grpo_rewards": "json",
                            "learning_rate": args.grpo_lr, "warmup_ratio": 0})
    started = time.monotonic()
    grpo = train(grpo_spec, work / "grpo", str(base), checks,
                 progress("grpo", rewards), lambda: False, init_adapter=sft.adapter_dir)
    report.update({"grpo_s": round(time.monotonic() - started, 1),
                   "grpo_reward_first": rewards[0][1] if rewards else None,
                   "grpo_reward_last": rewards[-1][1] if rewards else None, "grpo_rewards": rewards,
                   "grpo_groups": group_summary(groups), "grpo_unparsed_samples_last": unparsed})
    measure(report, "grpo", base, grpo.adapter_dir, held, new_tokens)
    write_report(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
