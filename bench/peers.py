"""The studio against its peers on the same work, end to end: a studio job, the best plain TRL script, `trl sft` and
LLaMA-Factory's CLI, each run in fresh processes, interleaved, and one evaluator for every arm's adapter.

    python bench/peers.py [--model demo|smollm2] [--repeats 3] [--arms studio,script,trl-cli,llamafactory]
                          [--lf bench/peers/llamafactory/run.sh] [--trl-cli-steps N]
                          [--reuse REPORT [--reuse-arms A,B]] [--studio-field NAME=VALUE ...] [--smoke]
                          [--out PATH]

The work: the same base (NF4 + double quant, LoRA r=8 on every linear layer), the same train rows (the first --rows
of the example file the studio ships for the base, the next --held-out rows held out), the same learning
rate (the one the studio's rule picks for this base: TRL's 2e-5 and LLaMA-Factory's 5e-5 are full fine-tuning
defaults a LoRA barely moves with); everything else is each tool's own default (epochs, batch, schedule, warmup,
LoRA dropout, precision, gradient checkpointing, threads, what carries loss, evals).

Arms:
- studio: a fresh data dir with a worker already waiting (`python -m jobs.queue.worker`), then `python -m jobs submit
  job.json --wait` with a spec naming only the base and the train file; timed from the submit to the CLI's exit
  (the adapter registered).
- script: the plain TRL script the studio's Train tab shows for that same spec (`jobs.training.script`), the best
  plain-library script we know (fp32 compute on a CPU, padding-free packing, LoRA kept in fp32, every core, the
  same held-out split and early stopping), run with `python`.
- trl-cli: `trl sft` with its defaults (through accelerate, as TRL's docs run it) and the flags that say what to
  train: the 4-bit base, the LoRA, the learning rate.
- llamafactory: `llamafactory-cli train` through --lf (bench/peers/llamafactory/run.sh after its setup.sh; its own
  virtualenv), with its defaults.

Per run: wall seconds; the training loop's seconds (the Trainer's `train_runtime`; the studio's `training` phase,
the same `trainer.train()` call); non-pad tokens trained (the tokens of the rows it trained on, cut at its max
length, times the epochs it ran) per training second; the peak resident set of the biggest process of the arm (each
process's VmHWM, sampled every 0.2 s over the arm's process tree; for the studio the tree under the worker, which is
where the job trains); the held-out loss of the adapter the arm ends with, computed by ONE evaluator on the same rows
(assistant tokens only). Medians over interleaved repeats, and the studio's speedup over each peer (peer's wall ÷
studio's wall). Repeat r runs every arm with seed 42 + r (LoRA init, data order): each arm is deterministic for a
seed, so repeats with one seed would only measure timing noise, never how far an arm's loss moves with its
start. Printed and saved as JSON to bench/results/."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.job_overhead import breakdown, run_job  # noqa: E402
from bench.machine import write_report  # noqa: E402
from bench.time_to_loss import Evaluator  # noqa: E402

ARMS = ("studio", "script", "trl-cli", "llamafactory")
LORA_RANK, LORA_ALPHA = 8, 16  # alpha 2 × rank: TRL's and LLaMA-Factory's own ratio, and the studio's default
TRL_MAX_LENGTH, LF_CUTOFF = 1024, 512  # `trl sft`'s default max_length; run.sh's cutoff_len
TRL_EPOCHS, TRL_BATCH = 3, 8  # `trl sft`'s default epochs and per-device batch
SMOKE_STEPS = 8
FIRST_SEED = 42  # the studio's default seed: repeat 0 is the default job
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
RESULTS = ROOT / "bench" / "results"


# ------------------------------------------------------------------------------------------------------- the work


EXAMPLES = {"demo": "chat.jsonl", "smollm2": "pirate_chat.jsonl"}
"""The rows: the first of the example file the studio ships for that base (the ones bench/job_overhead.py trains
on, so a studio run here is that bench's default job too), and the next ones held out."""


def prepare(work: Path, model: str, rows: int, held_out: int) -> tuple[Path, Path, Path]:
    """(base model dir, train.jsonl, eval.jsonl) under `work`."""
    from jobs.models.demo import ensure_demo_model

    if model == "demo":
        base = ensure_demo_model(work / "models")
    else:
        from jobs.models.resolve import resolve_base_model
        from storage.settings import load_settings

        base = Path(resolve_base_model("smollm2-135m-instruct", load_settings({}).models_dir))
    lines = (ROOT / "static" / "examples" / EXAMPLES[model]).read_text().splitlines(keepends=True)
    if len(lines) < rows + held_out:
        raise SystemExit(f"{EXAMPLES[model]} has {len(lines)} rows: fewer than --rows + --held-out")
    train_file, eval_file = work / "train.jsonl", work / "eval.jsonl"
    train_file.write_text("".join(lines[:rows]))
    eval_file.write_text("".join(lines[rows:rows + held_out]))
    return Path(base), train_file, eval_file


@dataclass(frozen=True)
class Work:
    """What every arm trains on, and what the studio's rule chose for it (the spec its job and the script run)."""

    base: Path
    train_file: Path
    eval_file: Path
    spec: object  # jobs.spec.TrainSpec, planned
    smoke: bool
    trl_cli_steps: int | None = None
    fields: dict = field(default_factory=dict)
    """The spec's fields the studio's job sets besides base, data and seed (the script is given the same spec)."""
    """Stop `trl sft` after this many optimizer steps and project its whole run (it would take hours on SmolLM2)."""

    @property
    def learning_rate(self) -> float:
        return self.spec.learning_rate


def plan_work(base: Path, train_file: Path, eval_file: Path, smoke: bool, trl_cli_steps: int | None = None,
              extra_fields: dict | None = None) -> Work:
    from jobs.data.store import load_rows
    from jobs.models.loading import load_tokenizer
    from jobs.spec import parse_spec
    from jobs.training.prepare import rows_plan

    fields = {**studio_fields(smoke), **(extra_fields or {})}
    spec = parse_spec(fields)
    planned = rows_plan(spec, str(base), load_rows(train_file), load_tokenizer(str(base))).spec
    return Work(base, train_file, eval_file, planned, smoke, trl_cli_steps, fields)


def studio_fields(smoke: bool) -> dict:
    """The spec's fields the bench sets besides base and data: none (the studio's defaults are r=8, alpha 16, all
    linear layers), but a few steps for CI's smoke run."""
    return {"max_steps": SMOKE_STEPS} if smoke else {}


def parse_field_settings(settings: list[str]) -> dict:
    """`--studio-field NAME=VALUE` pairs as spec fields (VALUE read as JSON where it parses, else as text); the
    spec's own validation judges them when the work is planned."""
    fields = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise SystemExit(f"--studio-field: {setting!r} is not NAME=VALUE")
        try:
            fields[name] = json.loads(value)
        except json.JSONDecodeError:
            fields[name] = value
    return fields


# --------------------------------------------------------------------------------------------- watching processes


class PeakSampler:
    """The highest VmHWM of any process in the trees under `roots`, sampled every `every_s` while running."""

    def __init__(self, roots: list[int], every_s: float = 0.2) -> None:
        self.roots, self.every_s, self.peak_bytes = set(roots), every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def add_root(self, pid: int) -> None:
        self.roots.add(pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in descendants(self.roots):
                self.peak_bytes = max(self.peak_bytes, vm_hwm_bytes(pid))
            self._stop.wait(self.every_s)


def descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, frontier = set(), list(roots)
    while frontier:
        pid = frontier.pop()
        if pid not in found:
            found.add(pid)
            frontier.extend(children.get(pid, []))
    return found


def vm_hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_command(command: list[str], log: Path, env: dict, cwd: Path, sampler: PeakSampler | None = None) -> float:
    """Run to its exit with its output in `log`; wall seconds. Raises with the log's end if it fails."""
    started = time.perf_counter()
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        if sampler:
            sampler.add_root(process.pid)
        process.wait()
    wall = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"{command[:3]} failed (exit {process.returncode}); the end of its log:\n"
                           f"{log.read_text(errors='replace')[-4000:]}")
    return wall


# ------------------------------------------------------------------------------------------------------- the arms


@dataclass
class Outcome:
    """What one run of an arm left: its times, its adapter, how many rows and epochs it trained."""

    wall_s: float
    train_s: float
    epochs: float
    adapter_dir: Path
    train_rows: list[dict]
    max_length: int
    peak_rss_bytes: int = 0
    extra: dict | None = None
    seed: int | None = None


def run_studio(work: Work, folder: Path, seed: int) -> Outcome:
    """A job through the CLI and a waiting worker, in a fresh data dir (nothing cached from an earlier run)."""
    data_dir = folder / "data"
    models = data_dir / "models"
    models.mkdir(parents=True)
    shutil.copytree(work.base, models / work.base.name)
    spec_file = folder / "job.json"
    base_field = {} if work.base.name == "demo" else {"base_model": work.base.name}
    spec_file.write_text(json.dumps({"dataset": str(work.train_file), **base_field, **work.fields,
                                     "seed": seed}))
    env = {**os.environ, **OFFLINE, "STUDIO_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    with PeakSampler([]) as sampler:  # the worker waits (its spare process ready), as on a running studio
        wall = run_job(spec_file, env, folder / "arm.log", watch=sampler.add_root)
    job = studio_job(data_dir)
    from jobs.spec import parse_spec

    spec = parse_spec(job["spec"])
    train_log = (data_dir / "runs" / f"job-{job['id']}" / "train.log").read_text(errors="replace")
    return Outcome(wall, job["phases_s"]["training"], job["epoch"], data_dir / job["adapter_path"],
                   split_train_rows(work.train_file, spec), spec.max_length, sampler.peak_bytes,
                   {"phases_s": job["phases_s"], "registered_s": job["registered_s"], "job_spec": job["spec"],
                    "compute_dtype": trained_dtype(train_log)})


def trained_dtype(train_log: str) -> str | None:
    """The dtype the job computed in, as its log announced it ('auto' resolved on this machine)."""
    found = re.search(r"^training on \w+ \(torch\.(\w+),", train_log, re.MULTILINE)
    return found.group(1) if found else None


def studio_job(data_dir: Path) -> dict:
    """The finished job as the ledger holds it: its phases and the seconds from its submit to its adapter's
    registration (job_overhead's breakdown), its planned spec, last epoch and adapter folder."""
    from jobs.studio import open_studio
    from storage import catalog, jobs_repo
    from storage.models import JobStatus
    from storage.settings import load_settings

    timing = breakdown(data_dir)
    studio = open_studio(load_settings({"STUDIO_DATA_DIR": str(data_dir)}))
    try:
        with studio.db.read() as session:
            job = jobs_repo.get_job(session, timing["job"])
            if job.status != JobStatus.SUCCEEDED:
                raise RuntimeError(f"the studio job ended {job.status}")
            epoch = jobs_repo.latest_metric(session, job.id, "epoch")
            spec, path = dict(job.spec), catalog.adapter_for_job(session, job.id).path
    finally:
        studio.db.dispose()
    return {"id": timing["job"], "spec": spec, "phases_s": timing["phases_s"], "epoch": epoch, "adapter_path": path,
            "registered_s": timing["total_s"]}


def split_train_rows(train_file: Path, spec) -> list[dict]:
    """The rows a studio spec trains on: the same seeded split `train()` and the plain script make."""
    from jobs.data.store import load_rows
    from jobs.training.prepare import split_dataset

    train, _ = split_dataset(load_rows(train_file), spec.eval_fraction, spec.seed)
    return list(train)


def run_script(work: Work, folder: Path, seed: int) -> Outcome:
    from jobs.data.store import load_rows
    from jobs.models.loading import load_tokenizer
    from jobs.training.script import plain_trl_script

    folder.mkdir(parents=True)
    chat_template = load_tokenizer(str(work.base)).chat_template
    script = folder / "train_adapter.py"
    spec = work.spec.model_copy(update={"seed": seed})
    script.write_text(plain_trl_script(spec, str(work.base), str(work.train_file), chat_template,
                                       out_dir=str(folder / "adapter")))
    log = folder / "arm.log"
    with PeakSampler([]) as sampler:
        wall = run_command([sys.executable, str(script)], log, {**os.environ, **OFFLINE}, folder, sampler)
    runtime, epochs = trainer_summary(log.read_text(errors="replace"))
    rows = split_train_rows(work.train_file, spec) if spec.eval_fraction else load_rows(work.train_file)
    return Outcome(wall, runtime, epochs, folder / "adapter", rows, spec.max_length, sampler.peak_bytes)


def run_trl_cli(work: Work, folder: Path, seed: int) -> Outcome:
    from jobs.data.store import load_rows

    data = folder / "data"
    data.mkdir(parents=True)
    shutil.copy(work.train_file, data / "train.jsonl")
    out = folder / "output"
    command = ["trl", "sft", "--model_name_or_path", str(work.base), "--dataset_name", str(data),
               "--output_dir", str(out), "--load_in_4bit", "--bnb_4bit_quant_type", "nf4", "--use_bnb_nested_quant",
               "--use_peft", "--lora_r", str(LORA_RANK), "--lora_alpha", str(LORA_ALPHA),
               "--lora_target_modules", "all-linear", "--learning_rate", str(work.learning_rate),
               # Without --use_cpu it refuses to start on a machine without a GPU: "Your setup doesn't support
               # bf16/gpu" (its default bf16=True); with it, its bf16 autocast runs on the CPU.
               "--use_cpu", "--report_to", "none", "--seed", str(seed)]
    cap = SMOKE_STEPS if work.smoke else work.trl_cli_steps
    log = folder / "arm.log"
    with PeakSampler([]) as sampler:
        wall = run_command([*command, *(["--max_steps", str(cap)] if cap else [])], log, {**os.environ, **OFFLINE},
                           folder, sampler)
    runtime, epochs = trainer_summary(log.read_text(errors="replace"))
    rows = load_rows(work.train_file)
    whole = TRL_EPOCHS * -(-len(rows) // TRL_BATCH)  # the steps of its default run: 3 epochs of 8 rows a step
    extra = ({"capped_at_steps": cap, "whole_run_steps": whole,
              "projected_wall_s": wall + runtime * (whole / cap - 1)} if cap and not work.smoke else None)
    return Outcome(wall, runtime, epochs, out, rows, TRL_MAX_LENGTH, sampler.peak_bytes, extra)


def run_llamafactory(work: Work, folder: Path, lf_script: str, seed: int) -> Outcome:
    from jobs.data.store import load_rows

    folder.mkdir(parents=True)
    out = folder / "output"
    command = ["bash", str(Path(lf_script).resolve()), str(work.base), str(work.train_file), str(out),
               "100000", str(work.learning_rate), str(SMOKE_STEPS if work.smoke else -1),  # no checkpoints between
               str(seed)]
    log = folder / "arm.log"
    with PeakSampler([]) as sampler:
        wall = run_command(command, log, dict(os.environ), folder, sampler)
    results = json.loads((out / "train_results.json").read_text())  # LLaMA-Factory saves the Trainer's metrics
    return Outcome(wall, results["train_runtime"], results["epoch"], out, load_rows(work.train_file), LF_CUTOFF,
                   sampler.peak_bytes)


TRAIN_RUNTIME = re.compile(r"""['"]train_runtime['"]:\s*['"]?([\d.]+)""")
EPOCH = re.compile(r"""['"]epoch['"]:\s*['"]?([\d.]+)""")


def trainer_summary(log: str) -> tuple[float, float]:
    """(train_runtime, epoch) from the summary the Trainer logs when `train()` ends."""
    line = next((line for line in reversed(log.splitlines()) if TRAIN_RUNTIME.search(line)), None)
    if line is None:
        raise RuntimeError(f"no train_runtime in the arm's log; its end:\n{log[-2000:]}")
    return float(TRAIN_RUNTIME.search(line).group(1)), float(EPOCH.search(line).group(1))


def run_arm(arm: str, work: Work, folder: Path, lf_script: str | None, seed: int) -> Outcome:
    if arm == "studio":
        return run_studio(work, folder, seed)
    if arm == "script":
        return run_script(work, folder, seed)
    if arm == "trl-cli":
        return run_trl_cli(work, folder, seed)
    return run_llamafactory(work, folder, lf_script, seed)


# ----------------------------------------------------------------------------------------------------- the report


def tokens_trained(outcome: Outcome, tokenizer) -> float:
    """Non-pad tokens the run trained on: its rows' tokens (cut at its max length) times the epochs it ran."""
    from jobs.data.stats import tokenize_row

    per_epoch = sum(min(len(tokenize_row(tokenizer, row, False).ids), outcome.max_length)
                    for row in outcome.train_rows)
    return per_epoch * outcome.epochs


def record(arm: str, outcome: Outcome, tokenizer, loss: float) -> dict:
    """One run's figures. A capped run's wall time is its projection (its start-up, then every step at its measured
    pace), and its held-out loss is left out: its adapter saw a fraction of the run."""
    tokens = tokens_trained(outcome, tokenizer)
    extra = outcome.extra or {}
    return {"arm": arm, "wall_s": extra.get("projected_wall_s", outcome.wall_s), "measured_wall_s": outcome.wall_s,
            "train_s": outcome.train_s, "epochs": outcome.epochs, "train_rows": len(outcome.train_rows),
            "tokens_trained": tokens, "tokens_per_s": tokens / outcome.train_s if outcome.train_s else None,
            "peak_rss_mb": outcome.peak_rss_bytes / 2**20,
            "held_out_loss": None if "capped_at_steps" in extra else loss, "seed": outcome.seed, **extra}


def summarize(runs: list[dict], arms: list[str]) -> dict:
    table = {}
    for arm in arms:
        mine = [run for run in runs if run["arm"] == arm]
        table[arm] = {key: median_or_none([run[key] for run in mine])
                      for key in ("wall_s", "train_s", "tokens_per_s", "peak_rss_mb", "held_out_loss", "epochs")}
        table[arm].update(runs=len(mine), projected=any("capped_at_steps" in run for run in mine),
                          **loss_spread([run["held_out_loss"] for run in mine]))
    if "studio" in table:
        studio = table["studio"]
        for row in table.values():
            row["studio_speedup"] = row["wall_s"] / studio["wall_s"]  # > 1: the studio finished sooner
            if row["peak_rss_mb"] and studio["peak_rss_mb"]:  # < 1: the studio held more memory
                row["studio_memory_ratio"] = row["peak_rss_mb"] / studio["peak_rss_mb"]
            if row["held_out_loss"] is not None:  # > 0: the studio's is lower
                row["loss_minus_studio"] = row["held_out_loss"] - studio["held_out_loss"]
            if row.get("held_out_sd") is not None and studio.get("held_out_sd") is not None:
                # Seeds move a loss more than arms may differ: the mean difference with its standard error
                # (Welch) says whether the arms differ beyond that, where medians of three cannot.
                row["loss_mean_minus_studio"] = row["held_out_mean"] - studio["held_out_mean"]
                row["loss_difference_se"] = (row["held_out_sd"] ** 2 / row["held_out_runs"]
                                             + studio["held_out_sd"] ** 2 / studio["held_out_runs"]) ** 0.5
    return table


def loss_spread(losses: list) -> dict:
    """The held-out losses' mean and sample standard deviation over seeds (None below two known values)."""
    known = [loss for loss in losses if loss is not None]
    if len(known) < 2:
        return {"held_out_mean": known[0] if known else None, "held_out_sd": None, "held_out_runs": len(known)}
    return {"held_out_mean": statistics.fmean(known), "held_out_sd": statistics.stdev(known),
            "held_out_runs": len(known)}


def with_earlier_runs(runs: list[dict], arms: list[str], report: Path, args) -> tuple[list[dict], list[str]]:
    earlier = json.loads(report.read_text())
    if (earlier["model"], earlier["rows"], earlier["held_out"]) != (args.model, args.rows, args.held_out):
        raise SystemExit(f"--reuse: {report} measured other work ({earlier['model']}, {earlier['rows']} rows)")
    wanted = set(args.reuse_arms.split(",")) if args.reuse_arms else None
    kept = [{**run, "reused_from": run.get("reused_from") or f"{report.name} ({earlier['date']})"}
            for run in earlier["runs"] if wanted is None or run["arm"] in wanted]
    return runs + kept, arms + [arm for arm in dict.fromkeys(run["arm"] for run in kept) if arm not in arms]


def median_or_none(values: list) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def print_table(table: dict) -> None:
    print(f"{'arm':<14}{'wall s':>9}{'train s':>9}{'tokens/s':>10}{'peak RSS MB':>13}{'held-out':>10}"
          f"{'studio faster':>15}{'peer MB ÷ studio MB':>21}")
    for arm, row in table.items():
        speedup = f"{row['studio_speedup']:.2f}×" if "studio_speedup" in row else "-"
        loss = f"{row['held_out_loss']:.4f}" if row["held_out_loss"] is not None else "-"
        wall = f"{row['wall_s']:.1f}{'*' if row['projected'] else ''}"
        memory = f"{row['studio_memory_ratio']:.2f}" if "studio_memory_ratio" in row else "-"
        print(f"{arm:<14}{wall:>9}{row['train_s']:>9.1f}{row['tokens_per_s']:>10.0f}"
              f"{row['peak_rss_mb']:>13.0f}{loss:>10}{speedup:>15}{memory:>21}")
    if any(row["projected"] for row in table.values()):
        print("* projected from its first steps (start-up, then every step at the pace measured)")
    for arm, row in table.items():
        if row.get("held_out_sd") is not None:
            difference = (f"; mean minus the studio's {row['loss_mean_minus_studio']:+.4f} "
                          f"± {row['loss_difference_se']:.4f} (standard error)" if "loss_difference_se" in row
                          and arm != "studio" else "")
            print(f"held-out {arm}: mean {row['held_out_mean']:.4f}, sd {row['held_out_sd']:.4f} over "
                  f"{row['held_out_runs']} seeds{difference}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["demo", "smollm2"], default="demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--lf", help="bench/peers/llamafactory/run.sh (after its setup.sh): the LLaMA-Factory arm")
    parser.add_argument("--smoke", action="store_true", help=f"16 rows, {SMOKE_STEPS} steps, one repeat: CI's check")
    parser.add_argument("--trl-cli-steps", type=int, help="stop `trl sft` after this many steps and project its "
                        "whole run's wall time from them (its held-out loss is then not reported)")
    parser.add_argument("--reuse", type=Path, help="an earlier report of this script (same machine, model and rows): "
                        "its runs join this one's, each marked with where it came from (repeats added later)")
    parser.add_argument("--reuse-arms", help="only these arms' runs from --reuse (the others' setup changed since)")
    parser.add_argument("--studio-field", action="append", default=[], metavar="NAME=VALUE",
                        help="a spec field the studio's job (and the script, given the same spec) sets, e.g. "
                        "compute_dtype=bfloat16; repeatable")
    parser.add_argument("--lf-bf16", action="store_true", help="LLaMA-Factory with bf16: true (its bf16 autocast) "
                        "instead of its default float32 on a CPU")
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED, help="repeat r runs with this seed + r: "
                        "more seeds beside an earlier report's (with --reuse)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.lf_bf16:
        os.environ["LF_BF16"] = "true"  # run.sh writes it into LLaMA-Factory's config
    extra_fields = parse_field_settings(args.studio_field)
    if args.smoke:
        args.rows, args.held_out, args.repeats = 16, 4, 1
    arms = [arm for arm in args.arms.split(",") if arm != "llamafactory" or args.lf]
    if unknown := set(arms) - set(ARMS):
        parser.error(f"--arms: unknown {', '.join(sorted(unknown))} (known: {', '.join(ARMS)})")
    out = args.out or RESULTS / f"peers_{args.model}{'_smoke' if args.smoke else ''}.json"
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp)
        work = plan_work(*prepare(work_dir, args.model, args.rows, args.held_out), args.smoke, args.trl_cli_steps,
                         extra_fields)
        outcomes = []
        for repeat in range(args.repeats):
            for arm in arms:  # interleaved, so drifts of the machine fall on every arm alike
                seed = args.first_seed + repeat
                outcome = run_arm(arm, work, work_dir / f"{arm}-{repeat}", args.lf, seed)
                outcome.seed = seed
                print(f"repeat {repeat + 1}: {arm} {outcome.wall_s:.1f} s", flush=True)
                outcomes.append((arm, outcome))
        from jobs.models.loading import load_tokenizer

        tokenizer, evaluator = load_tokenizer(str(work.base)), Evaluator(work.base, work.eval_file)
        runs = [record(arm, outcome, tokenizer, evaluator.loss(outcome.adapter_dir)) for arm, outcome in outcomes]
    if args.reuse:
        runs, arms = with_earlier_runs(runs, arms, args.reuse, args)
    table = summarize(runs, arms)
    write_report(out, {"model": args.model, "rows": args.rows, "held_out": args.held_out, "repeats": args.repeats,
                       "first_seed": args.first_seed, "learning_rate": work.learning_rate,
                       "trl_cli_steps": args.trl_cli_steps, "studio_fields": extra_fields,
                       "lf_bf16": args.lf_bf16, "summary": table, "runs": runs})
    print_table(table)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
