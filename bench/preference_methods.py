"""Do ORPO and KTO run end to end on SmolLM2: on preference data built here, and on votes exported from the chat?

    python bench/preference_methods.py [--model smollm2|demo] [--steps 4] [--votes 6] [--smoke] [--out PATH]

1. Built data: the extraction prompts of bench/grpo_json.py with a preference pair each (chosen: the reference JSON;
   rejected: the same facts in a sentence, not JSON), and its unpaired KTO form (every chosen answer labelled
   desirable, every rejected one undesirable).
2. `jobs.training.train.train` (the worker's path) runs ORPO on the pairs and KTO on the unpaired rows, --steps each.
3. Votes: the base and both adapters answer --votes held-out prompts greedily through the chat's scheduler and
   engine (one batched compare a prompt, as the Chat tab's blind round). A rule votes as a person would for this
   task: answers rank by parsing as JSON, then by how many of the three facts they state; the first answer above
   the others is best, none parsing nor stating a fact is "all bad", all equal a tie. `record_vote` stores each round
   and `export_votes` exports them as preference pairs and as unpaired rows (the Chat tab's own calls).
4. ORPO and KTO train again, on the exported votes.
5. Every adapter answers one held-out prompt greedily through the chat (one batched compare with the base).
Per run: steps, wall seconds, first and last loss, the method's own metrics first and last (ORPO: nll_loss,
log_odds_ratio, rewards/margins; KTO: kl, rewards/margins), the process's peak RSS after it, and that the adapter
folder was saved. Printed and saved as JSON to bench/results/."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.grpo_json import base_dir, extraction_rows  # noqa: E402
from bench.machine import write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
METHOD_METRICS = {"orpo": ("nll_loss", "log_odds_ratio", "rewards/margins", "rewards/accuracies"),
                  "kto": ("kl", "rewards/margins")}
SMOKE = {"rows": 8, "steps": 1, "votes": 2, "new_tokens": 8}


def user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def prose(reference: str) -> str:
    person = json.loads(reference)
    return f"The person is {person['name']}, who is {person['age']} and lives in {person['city']}."


def built_sets(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(preference pairs, their unpaired KTO form): the JSON answer preferred to the same facts in prose."""
    pairs = [{"prompt": user(r["prompt"]), "chosen": assistant(r["reference"]),
              "rejected": assistant(prose(r["reference"]))} for r in rows]
    unpaired = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
                for p in pairs for side in ("chosen", "rejected")]
    return pairs, unpaired


def judged(reply: str, reference: str) -> tuple[bool, int]:
    """How the rule ranks an answer: whether it parses as JSON, then how many of the three facts it states."""
    try:
        json.loads(reply.strip())
        parsed = True
    except ValueError:
        parsed = False
    return parsed, sum(str(value) in reply for value in json.loads(reference).values())


def verdict_of(replies: list[str], reference: str):
    """Best: the first answer ranked above every other; all bad: none parses nor states a fact; else a tie."""
    from jobs.chat.votes import Verdict

    ranks = [judged(reply, reference) for reply in replies]
    top = max(ranks)
    if top == (False, 0):
        return Verdict("all_bad")
    if ranks.count(top) == len(ranks):
        return Verdict("tie")
    return Verdict("best", ranks.index(top))


def run_method(method: str, dataset: Path, base: Path, out_dir: Path, steps: int) -> dict:
    """Train one adapter; its figures."""
    from jobs.spec import parse_spec
    from jobs.training.train import train

    logged: list[dict] = []
    steps_seen: set[int] = set()
    spec = parse_spec({"method": method, "max_steps": steps, "batch_size": 2, "max_length": 256, "eval_fraction": 0,
                       "save_steps": 1000, "logging_steps": 1, "sample_prompts": 0, "learning_rate": 5e-4,
                       "warmup_ratio": 0})
    started = time.monotonic()
    def sink(step: int, values: dict, total: int) -> None:
        logged.append(values)
        steps_seen.add(step)

    result = train(spec, out_dir, str(base), dataset, sink, lambda: False)
    figures = {"method": method, "steps": max(steps_seen, default=0), "wall_s": round(time.monotonic() - started, 1),
               "peak_rss_mib_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               "adapter_saved": (Path(result.adapter_dir) / "adapter_config.json").is_file(),
               "adapter_dir": Path(result.adapter_dir)}
    for key in ("loss", *METHOD_METRICS[method]):
        values = [entry[key] for entry in logged if key in entry]
        figures[key] = {"first": round(values[0], 4), "last": round(values[-1], 4)} if values else None
    print(json.dumps({k: v for k, v in figures.items() if k != "adapter_dir"}), flush=True)
    return figures


def chat_votes(studio, scheduler, base: Path, adapters: dict[str, Path], held: list[dict], new_tokens: int) -> dict:
    """Each held-out prompt answered by the base and the adapters in one greedy compare, voted by the JSON rule."""
    from jobs.chat.request import GenerationSettings
    from jobs.chat.votes import record_vote
    from storage.models import Adapter

    with studio.db.write() as session:  # the catalog's rows a finished job would have written (votes name them)
        for name, folder in adapters.items():
            session.add(Adapter(name=name, base_model=base.name, path=str(folder), size_bytes=1))
    panes = [("base", None), *adapters.items()]
    settings = GenerationSettings(max_new_tokens=new_tokens, temperature=0)
    outcomes = {"best": 0, "tie": 0, "all_bad": 0}
    for row in held:
        replies = scheduler.compare(base.name, panes, [user(row["prompt"])] * len(panes), settings)
        answers = [{"adapter": name, "reply": reply} for (name, _), reply in zip(panes, replies, strict=True)]
        verdict = verdict_of(list(replies), row["reference"])
        record_vote(studio, base.name, user(row["prompt"]), answers, verdict, {"max_new_tokens": new_tokens,
                                                                            "temperature": 0.0})
        outcomes[verdict.outcome] += 1
    return outcomes


def exported(studio, base: Path) -> dict[str, Path | None]:
    """The votes as the Chat tab exports them: pairs for ORPO, unpaired rows for KTO (None: no row of that shape)."""
    from jobs.chat.votes import NoPreferences, export_votes
    from jobs.data.formats import PREFERENCE, UNPAIRED

    files: dict[str, Path | None] = {}
    for method, shape in (("orpo", PREFERENCE), ("kto", UNPAIRED)):
        try:
            files[method] = studio.absolute(export_votes(studio, base.name, f"votes-{method}", shape).dataset.path)
        except NoPreferences as why:
            print(f"{method}: {why}", flush=True)
            files[method] = None
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("smollm2", "demo"), default="smollm2")
    parser.add_argument("--rows", type=int, default=32, help="built preference pairs")
    parser.add_argument("--steps", type=int, default=4, help="steps of each ORPO and KTO run")
    parser.add_argument("--votes", type=int, default=6, help="blind rounds voted in the chat")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--smoke", action="store_true", help="the demo model, one step each: the script runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.model = "demo"
        for key, value in SMOKE.items():
            setattr(args, key, value)
    from jobs.chat.engine import ChatEngine
    from jobs.chat.request import GenerationSettings
    from jobs.chat.scheduler import GenerationScheduler
    from jobs.data.formats import PREFERENCE, UNPAIRED, parse_records
    from jobs.data.store import store_parsed
    from jobs.studio import open_studio
    from jobs.training.train import quiet_libraries
    from storage.settings import load_settings

    quiet_libraries()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="preference-methods-"))
    base = base_dir(args.model, work)
    rows = extraction_rows(args.rows + args.votes)
    train_rows, held = rows[:args.rows], rows[args.rows:]
    pairs, unpaired = built_sets(train_rows)
    pair_file, _ = store_parsed(parse_records(pairs), work / "data")
    unpaired_file, _ = store_parsed(parse_records(unpaired), work / "data")
    assert parse_records(pairs).format == PREFERENCE and parse_records(unpaired).format == UNPAIRED
    runs = {"orpo_built": run_method("orpo", pair_file, base, work / "orpo-built", args.steps),
            "kto_built": run_method("kto", unpaired_file, base, work / "kto-built", args.steps)}

    studio = open_studio(load_settings({"STUDIO_DATA_DIR": str(work / "studio")}))
    scheduler = GenerationScheduler(ChatEngine(base.parent))
    votes = chat_votes(studio, scheduler, base, {name: runs[name]["adapter_dir"] for name in runs}, held,
                       args.new_tokens)
    for method, dataset in exported(studio, base).items():
        if dataset is not None:
            runs[f"{method}_votes"] = run_method(method, dataset, base, work / f"{method}-votes", args.steps)
            runs[f"{method}_votes"]["rows"] = sum(1 for _ in dataset.open())

    panes = [("base", None), *((name, run["adapter_dir"]) for name, run in runs.items())]
    replies = scheduler.compare(base.name, panes, [user(held[0]["prompt"])] * len(panes),
                                GenerationSettings(max_new_tokens=args.new_tokens, temperature=0))
    chat = {name: reply for (name, _), reply in zip(panes, replies, strict=True)}
    for name, reply in chat.items():
        print(f"chat {name}: {reply!r}", flush=True)
    for run in runs.values():
        del run["adapter_dir"]
    report = {"model": args.model, "built_pairs": len(pairs), "built_unpaired": len(unpaired),
              "vote_rounds": len(held), "vote_outcomes": votes, "runs": runs, "chat_answers": chat,
              "wall_s": round(time.monotonic() - started, 1)}
    out = args.out or RESULTS / f"preference_methods_{args.model}.json"
    write_report(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
