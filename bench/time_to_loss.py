"""Time to the same held-out loss: the studio's defaults against its peers, measured as a learning curve.

    python bench/time_to_loss.py [--repeats 3] [--model demo|smollm2] [--lf /work/lf/run_lf.sh] [--smoke]

Every arm trains the same base (NF4 + double quant, LoRA r=8 on all linear layers) on the same rows in its own fresh
process, started by this script, and writes HF checkpoints. A watcher copies each checkpoint's adapter as it appears,
stamped with the seconds since the arm's process was launched (imports and model load included). Afterwards ONE
evaluator computes every snapshot's held-out loss on the same rows (assistant tokens only, each row cut at 512
tokens), so arms whose own eval losses are defined differently are compared on one measure.

Arms:
- studio: `jobs.training.train.train` with every default, the per-job rule included (jobs.step_plan).
- studio-fixed: the same with the previous fixed batch (4 packed sequences of 512 tokens), 3 epochs, lr 2e-3.
- trl: a plain TRL `SFTTrainer` script with TRL's defaults (padded batches of 8 rows, loss on every token), 3 epochs,
  lr 2e-3, as the TRL docs lead a user to write it.
- llamafactory: `llamafactory-cli train` through the script given by --lf (its own virtualenv; skipped without it).

The target is the best held-out loss that every run of the slowest peer (the non-studio arm with the longest run)
reaches: the highest of its runs' best losses (its runs differ in the last digits from thread timing); each arm's
time to target is the first snapshot at or below it. Medians over interleaved repeats. Printed, saved as JSON and
plotted (held-out loss against wall seconds) to bench/results/."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

LEARNING_RATE = 2e-3
EPOCHS = 3
EVAL_MAX_LENGTH = 512
SNAPSHOTS = 12  # checkpoints per arm, about
RESULTS = ROOT / "bench" / "results"


# ------------------------------------------------------------------------------------------------------ fixture


def prepare(work: Path, model: str, rows: int, held_out: int) -> tuple[Path, Path, Path]:
    """(base model dir, train.jsonl, eval.jsonl) under `work`."""
    from jobs.data import pirate_data
    from jobs.data.example_data import generate_examples, to_jsonl
    from jobs.models.demo import ensure_demo_model

    if model == "demo":
        base = ensure_demo_model(work / "models")
        data = generate_examples(rows + held_out, seed=11)
    else:
        from jobs.models.resolve import resolve_base_model
        from storage.settings import load_settings

        base = Path(resolve_base_model("smollm2-135m-instruct", load_settings({}).models_dir))
        data = pirate_data.generate_examples(rows + held_out, seed=11)
    train_file, eval_file = work / "train.jsonl", work / "eval.jsonl"
    train_file.write_text(to_jsonl(data[:rows]))
    eval_file.write_text(to_jsonl(data[rows:]))
    return Path(base), train_file, eval_file


# ---------------------------------------------------------------------------------------------------------- arms


def studio_spec(fixed: bool, save_every: int = 50):
    from jobs.spec import parse_spec

    fields = {"eval_dataset": "held-out", "save_steps": save_every, "sample_prompts": 0}
    if fixed:
        fields.update(batch_size=4, packing=True, num_epochs=EPOCHS, learning_rate=LEARNING_RATE)
    return parse_spec(fields)


def expected_steps(arm: str, base: Path, train_file: Path) -> int:
    """Optimizer steps the arm will make (to space its ~SNAPSHOTS checkpoints): the studio's plan, or 3 epochs of
    8 rows a step (TRL's default batch; LLaMA-Factory's 1 row × 8 accumulated)."""
    from jobs.data.store import load_rows
    from jobs.models.loading import load_tokenizer
    from jobs.training.prepare import rows_plan

    rows = load_rows(train_file)
    if not arm.startswith("studio"):
        return EPOCHS * -(-len(rows) // 8)
    spec = studio_spec(arm == "studio-fixed")
    return rows_plan(spec, str(base), rows, load_tokenizer(str(base))).steps


def studio_arm(base: str, train_file: str, eval_file: str, out: str, fixed: bool, save_every: int) -> None:
    from jobs.training.train import quiet_libraries, train

    quiet_libraries()
    train(studio_spec(fixed, save_every), Path(out), base, Path(train_file), lambda *a: None, lambda: False,
          eval_path=Path(eval_file))


def trl_arm(base: str, train_file: str, eval_file: str, out: str, save_every: int) -> None:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16))
    config = SFTConfig(output_dir=f"{out}/checkpoints", num_train_epochs=EPOCHS, learning_rate=LEARNING_RATE,
                       lr_scheduler_type="cosine", save_steps=save_every, save_total_limit=2, report_to="none",
                       use_cpu=not torch.cuda.is_available(), eval_strategy="no")
    rows = load_dataset("json", data_files=train_file, split="train")
    SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer,
               peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")).train()


def launch(arm: str, base: Path, train_file: Path, eval_file: Path, out: Path, save_every: int,
           lf_script: str | None) -> subprocess.Popen:
    out.mkdir(parents=True)
    if arm == "llamafactory":
        command = ["bash", lf_script, str(base), str(train_file), str(out / "checkpoints"), str(save_every)]
    else:
        command = [sys.executable, __file__, "--arm", arm, "--base", str(base), "--train", str(train_file),
                   "--eval", str(eval_file), "--out", str(out), "--save-every", str(save_every)]
    log = (out / "arm.log").open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


# ------------------------------------------------------------------------------------------------------ watching


def watch(process: subprocess.Popen, checkpoints: Path, snapshots: Path, started: float) -> float:
    """Copy each finished checkpoint's adapter as it appears, stamped with seconds since launch; returns the arm's
    wall seconds. A checkpoint is finished once its trainer_state.json is written (HF writes it last)."""
    seen: set[str] = set()

    def sweep() -> None:
        for state in sorted(checkpoints.glob("checkpoint-*/trainer_state.json")):
            folder = state.parent
            adapter = folder / "adapter_model.safetensors"
            if folder.name in seen or not adapter.is_file():
                continue
            seen.add(folder.name)
            target = snapshots / folder.name
            target.mkdir(parents=True)
            for name in ("adapter_model.safetensors", "adapter_config.json"):
                shutil.copy(folder / name, target / name)
            (target / "seconds").write_text(f"{adapter.stat().st_mtime - started:.3f}")

    while process.poll() is None:
        sweep()
        time.sleep(0.05)
    wall = time.time() - started
    sweep()
    if process.returncode:
        log = (snapshots.parent / "arm.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"arm failed (exit {process.returncode}); the end of its log:\n{log}")
    return wall


def run_arm(arm: str, base: Path, train_file: Path, eval_file: Path, work: Path, snapshots: int,
            lf_script: str | None) -> dict:
    out = work / f"{arm}-{time.monotonic_ns()}"
    save_every = max(1, expected_steps(arm, base, train_file) // snapshots)
    started = time.time()
    process = launch(arm, base, train_file, eval_file, out, save_every, lf_script)
    wall_s = watch(process, out / "checkpoints", out / "snapshots", started)  # one arm at a time
    return {"arm": arm, "wall_s": wall_s, "snapshots": str(out / "snapshots")}


# ----------------------------------------------------------------------------------------------------- evaluator


def score_adapters(runs: list[dict], base: Path, eval_file: Path) -> None:
    """Every run's held-out loss, by ONE evaluator on the same rows (its `adapter_dir` replaced by the loss)."""
    evaluator = Evaluator(base, eval_file)
    for run in runs:
        run["held_out_loss"] = evaluator.loss(Path(run.pop("adapter_dir")))


class Evaluator:
    """Held-out loss of any adapter of one base: the mean cross-entropy of the assistant tokens of the eval rows."""

    def __init__(self, base: Path, eval_file: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        from jobs.data.stats import tokenize_row
        from jobs.data.store import load_rows
        from jobs.models.loading import load_tokenizer

        tokenizer = load_tokenizer(str(base))
        self.rows = [tokenize_row(tokenizer, row, True) for row in load_rows(eval_file)]
        self.base = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, quantization_config=(
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)))
        self.model = None

    def loss(self, adapter_dir: Path) -> float:
        import torch
        from peft import PeftModel

        name = f"a{abs(hash(str(adapter_dir)))}"
        if self.model is None:
            self.model = PeftModel.from_pretrained(self.base, str(adapter_dir), adapter_name=name)
        else:
            self.model.load_adapter(str(adapter_dir), adapter_name=name)
        self.model.set_adapter(name)
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for row in self.rows:
                ids = torch.tensor([row.ids[:EVAL_MAX_LENGTH]])
                labels = torch.tensor([[t if keep else -100 for t, keep in zip(
                    row.ids[:EVAL_MAX_LENGTH], row.loss[:EVAL_MAX_LENGTH], strict=True)]])
                kept = int((labels[0, 1:] != -100).sum())
                if kept:
                    total += float(self.model(input_ids=ids, labels=labels).loss) * kept
                    count += kept
        self.model.delete_adapter(name)
        return total / count


def curve(evaluator: Evaluator, snapshots: Path) -> list[tuple[float, int, float]]:
    """(seconds, step, held-out loss) per snapshot, in step order."""
    points = []
    for folder in sorted(snapshots.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        points.append((float((folder / "seconds").read_text()), int(folder.name.split("-")[1]),
                       evaluator.loss(folder)))
    return points


# -------------------------------------------------------------------------------------------------------- report


def time_to(points: list[tuple[float, int, float]], target: float) -> float | None:
    return next((seconds for seconds, _, loss in points if loss <= target + 1e-9), None)


def summarize(runs: list[dict], arms: list[str]) -> dict:
    peers = [arm for arm in arms if not arm.startswith("studio")]
    walls = {arm: statistics.median(r["wall_s"] for r in runs if r["arm"] == arm) for arm in arms}
    slowest = max(peers, key=walls.get) if peers else arms[0]
    target = max(min(loss for _, _, loss in r["curve"]) for r in runs if r["arm"] == slowest)
    table = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        reached = [time_to(r["curve"], target) for r in mine]
        table[arm] = {"wall_s": walls[arm], "best_loss": statistics.median(min(x[2] for x in r["curve"]) for r in mine),
                      "final_loss": statistics.median(r["curve"][-1][2] for r in mine),
                      "steps": statistics.median(r["curve"][-1][1] for r in mine),
                      "time_to_target_s": statistics.median(reached) if all(x is not None for x in reached) else None,
                      "reached": f"{sum(x is not None for x in reached)}/{len(reached)}"}
    return {"slowest_peer": slowest, "target_loss": target, "arms": table}


def plot(runs: list[dict], summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"studio": "tab:blue", "studio-fixed": "tab:cyan", "trl": "tab:orange", "llamafactory": "tab:red"}
    figure, axes = plt.subplots(figsize=(8, 5))
    labelled = set()
    for run in runs:
        seconds = [p[0] for p in run["curve"]]
        losses = [p[2] for p in run["curve"]]
        label = None if run["arm"] in labelled else run["arm"]
        labelled.add(run["arm"])
        axes.plot(seconds, losses, marker="o", markersize=3, color=colors.get(run["arm"]), label=label, alpha=0.8)
    axes.axhline(summary["target_loss"], color="gray", linestyle="--",
                 label=f"target: {summary['slowest_peer']}'s best ({summary['target_loss']:.3f})")
    axes.set_xlabel("wall seconds since the arm's process started")
    axes.set_ylabel("held-out loss (assistant tokens)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["demo", "smollm2"], default="demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--arms", default="studio,studio-fixed,trl,llamafactory")
    parser.add_argument("--lf", help="bench/peers/llamafactory/run.sh (after its setup.sh): adds the LLaMA-Factory arm")
    parser.add_argument("--smoke", action="store_true", help="a few rows, one repeat, studio and trl: CI's check")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--reuse", type=Path, help="an earlier report (same machine, model and rows) whose runs of "
                        "arms not run now join this report, each marked with where it came from")
    parser.add_argument("--reuse-arms", help="with --reuse: the arms whose earlier runs join, run now or not (default: "
                        "those not run now); for a peer whose setup did not change, to add repeats to it")
    parser.add_argument("--resummarize", type=Path, help="a saved report: its summary, table and plot again from its "
                        "runs, by this script's rule (nothing is trained)")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    for hidden in ("--base", "--train", "--eval", "--save-every"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        return run_one(args)
    if args.resummarize:
        return resummarize(args.resummarize)
    if args.smoke:
        args.rows, args.held_out, args.repeats, args.arms = 16, 4, 1, "studio,trl"
    arms = [a for a in args.arms.split(",") if a != "llamafactory" or args.lf]
    name = f"time_to_loss_{args.model}{'_smoke' if args.smoke else ''}"
    out = args.out or RESULTS / f"{name}.json"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base, train_file, eval_file = prepare(work, args.model, args.rows, args.held_out)
        runs = []
        for repeat in range(args.repeats):
            for arm in arms:  # interleaved, so drifts of the machine fall on every arm alike
                run = run_arm(arm, base, train_file, eval_file, work, 4 if args.smoke else SNAPSHOTS, args.lf)
                print(f"repeat {repeat + 1}: {arm} ran {run['wall_s']:.1f} s", flush=True)
                runs.append(run)
        evaluator = Evaluator(base, eval_file)
        for run in runs:
            run["curve"] = curve(evaluator, Path(run.pop("snapshots")))
    if args.reuse:
        earlier = json.loads(args.reuse.read_text())
        joining = args.reuse_arms.split(",") if args.reuse_arms else [a for a in earlier["summary"]["arms"]
                                                                       if a not in arms]
        kept = [{**run, "reused_from": run.get("reused_from") or f"{args.reuse.name} ({earlier['date']})"}
                for run in earlier["runs"] if run["arm"] in joining]
        runs += kept
        arms += [arm for arm in dict.fromkeys(run["arm"] for run in kept) if arm not in arms]
    summary = summarize(runs, arms)
    write_report(out, {"model": args.model, "rows": args.rows, "held_out": args.held_out, "repeats": args.repeats,
                       "summary": summary, "runs": runs})
    plot(runs, summary, out.with_suffix(".png"), f"{args.model}: held-out loss against wall time")
    print_table(summary)
    print(f"saved {out} and {out.with_suffix('.png')}")


def resummarize(path: Path) -> None:
    report = json.loads(path.read_text())
    arms = list(dict.fromkeys(run["arm"] for run in report["runs"]))
    report["summary"] = summarize(report["runs"], arms)
    report["resummarized"] = f"{time.strftime('%Y-%m-%d')}: {' '.join(sys.argv)}"
    path.write_text(json.dumps(report, indent=2))
    plot(report["runs"], report["summary"], path.with_suffix(".png"),
         f"{report['model']}: held-out loss against wall time")
    print_table(report["summary"])


def print_table(summary: dict) -> None:
    print(f"target: {summary['target_loss']:.4f} (the best held-out loss every run of {summary['slowest_peer']}, "
          "the slowest peer, reached)")
    studio = summary["arms"].get("studio", {}).get("time_to_target_s")
    print(f"{'arm':<14}{'wall s':>8}{'steps':>7}{'best':>8}{'final':>8}{'to target s':>13}{'studio ÷ arm':>14}")
    for arm, row in summary["arms"].items():
        reached = row["time_to_target_s"]
        ratio = f"{studio / reached:.2f}" if studio and reached else "-"
        print(f"{arm:<14}{row['wall_s']:>8.1f}{row['steps']:>7}{row['best_loss']:>8.3f}{row['final_loss']:>8.3f}"
              f"{(f'{reached:.1f}' if reached else 'never'):>13}{ratio:>14}")


def run_one(args) -> None:
    save_every = int(args.save_every)
    if args.arm in ("studio", "studio-fixed"):
        studio_arm(args.base, args.train, args.eval, args.out, args.arm == "studio-fixed", save_every)
    else:
        trl_arm(args.base, args.train, args.eval, args.out, save_every)


if __name__ == "__main__":
    main()
