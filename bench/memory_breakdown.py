"""Where a default job's memory goes: peak resident set by phase, and what each memory lever changes.

    python bench/memory_breakdown.py [--model smollm2|demo] [--steps 4] [--arms default,checkpointing,...]
                                     [--full] [--idle] [--smoke] [--out bench/results/memory_breakdown_smollm2.json]

Each arm is the studio's `train()` on the default job's work (the first 320 rows of the example file the studio ships
for the base, the spec naming nothing else, so the per-job rule picks batch, packing, epochs and learning rate, and
the sample answers run as a worker runs them) in a fresh process, with one lever moved from the default. Peak memory
is reached in the first optimizer steps (the activations of a step, the optimizer's states from the first update), so
`--steps N` (max_steps) runs suffice for the levers; `--full` runs the default job to its end once, to show the peak
of the whole job (every sample answer and checkpoint) against the short runs'.

A probe in the training process splits its life into phases and reads the peak resident set of each: it resets the
kernel's high-water mark (`/proc/self/clear_refs` with 5) where a phase begins and reads VmHWM where it ends, so every
phase has its own peak, not the run's so far. Phases: imports, data, base load + 4-bit, trainer build + tokenization,
training setup, the first step (forward + backward, the optimizer's update, what follows), the later steps (the
highest of them), sample answers, checkpoint saves, evals, and the adapter's save. Beside the peak: the resident set
where the phase began and ended, and how much of it is file pages (RssFile: mapped files such as the libraries and
the checkpoint) rather than memory the process allocated (RssAnon).

Levers (each arm moves one, against `default`):
- tokens per step: `max_length` 256 or 128 at batch 1 (packed rows half or a quarter as long), or the same with 2 or
  4 accumulated (the same tokens an optimizer step, in shorter forward passes; `pack_length 256` is the spec's field for
  it, which keeps max_length at 512 for the rows); rows unpacked, one a forward pass, 8
  accumulated a step (what LLaMA-Factory does by default)
- gradient_checkpointing on; LoRA dropout 0.05 (its masks are saved for backward)
- the LM head: TRL's fused head on every position (the studio scores labelled positions only)
- LoRA weights left in bf16 as TRL casts them (the studio puts them back in fp32 under fp32 compute), or put back in
  fp32 under bf16 compute too (`lora in fp32`); AdamW 8-bit
  (bitsandbytes, its two states in 8 bits)
- no sample answers
- the allocator: every arm runs as a worker runs its training process, with jemalloc preloaded where it is installed
  (jobs.queue.spare.child_env, the default since 2026-12-05); `glibc malloc` without it; jemalloc with one arena
  (`narenas:1`) or giving freed pages back at once (`dirty_decay_ms:0,muzzy_decay_ms:0`)
- the compute dtype: `float32 compute` and `bfloat16 compute` pin what `auto` picks (bf16 on a CPU that multiplies
  it natively, jobs.run_settings.cpu_dtype), so one machine compares the two; `onednn caches 1024` sets
  oneDNN's and ideep's per-shape caches to the libraries' size (ONEDNN_PRIMITIVE_CACHE_CAPACITY, LRU_CACHE_CAPACITY),
  and `bfloat16 + onednn caches 1024` or `... 64` do so in bf16 (the demo model's `auto` is float32)
- the checkpoint's pages: the unquantized weights (embeddings, norms) copied out of the mmapped safetensors file after
  loading, so the file is unmapped (`release_checkpoint`), and glibc's free heap returned after loading
  (`malloc_trim`)

`--idle`: a studio with no job (`python -m app` with its worker and the worker's spare training process): the
resident set of each, and the spare's cost against a worker without it (STUDIO_SPARE_CHILD=0).

Printed and saved: per arm the peak, the peak of the training steps, the step's tokens and median seconds (timings on
a shared CPU are noisy; peaks are not), and the phase table. JSON to bench/results/."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import write_report  # noqa: E402

ROWS = 320
EXAMPLES = {"demo": "chat.jsonl", "smollm2": "pirate_chat.jsonl"}
ARMS: dict[str, dict] = {
    "default": {},
    "checkpoint kept mapped": {"probe": ["keep_checkpoint"]},
    "max_length 256": {"fields": {"max_length": 256, "batch_size": 1}},
    "max_length 128": {"fields": {"max_length": 128, "batch_size": 1}},
    "unpacked: 1 row × 8 accumulated": {"fields": {"packing": False, "batch_size": 1, "grad_accum": 8}},
    "checkpointing": {"fields": {"gradient_checkpointing": "on"}},
    "lora dropout 0.05": {"fields": {"lora_dropout": 0.05}},
    "head on every position": {"probe": ["head_every_position"]},
    "lora in bf16": {"probe": ["lora_bf16"]},
    "adamw 8-bit": {"fields": {"optimizer": "adamw_8bit"}},
    "no sample answers": {"fields": {"sample_prompts": 0}},
    "glibc malloc": {"glibc": True},
    "jemalloc narenas:1": {"env": {"MALLOC_CONF": "narenas:1"}},
    "jemalloc without decay": {"env": {"MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}},
    "max_length 256 × 2 accumulated": {"fields": {"max_length": 256, "batch_size": 1, "grad_accum": 2}},
    "max_length 128 × 4 accumulated": {"fields": {"max_length": 128, "batch_size": 1, "grad_accum": 4}},
    "pack_length 256": {"fields": {"pack_length": 256}},  # the same passes as the arm above, through the spec
    "release_checkpoint": {"probe": ["release_checkpoint"]},
    "malloc_trim": {"probe": ["malloc_trim"]},
    "release_checkpoint + malloc_trim": {"probe": ["release_checkpoint", "malloc_trim"]},
    "float32 compute": {"fields": {"compute_dtype": "float32"}},
    "bfloat16 compute": {"fields": {"compute_dtype": "bfloat16"}},
    "onednn caches 1024": {"env": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"}},
    "bfloat16 + onednn caches 1024": {"fields": {"compute_dtype": "bfloat16"},
                                      "env": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"}},
    "bfloat16 + onednn caches 64": {"fields": {"compute_dtype": "bfloat16"},
                                    "env": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64", "LRU_CACHE_CAPACITY": "64"}},
    "lora in fp32": {"probe": ["lora_fp32"]},
}
SMOKE_ARMS = ("no sample answers",)
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")


# ------------------------------------------------------------------------------------------------ the probe


def status_mb() -> dict[str, float]:
    """This process's VmHWM, VmRSS, RssAnon and RssFile in MB (/proc/self/status)."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in STATUS_FIELDS:
                found[name] = int(value.split()[0]) / 1024
    return found


def reset_peak() -> None:
    """Linux: the high-water mark of the resident set starts again from the resident set now."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


class Probe:
    """Intervals of the process's life, each with its own peak resident set."""

    def __init__(self) -> None:
        self.label, self.intervals, self.stack = "imports", [], []
        self.began, self.start = time.perf_counter(), {"VmRSS": 0.0, "RssFile": 0.0}
        self.step_tokens: list[int] = []
        self.step_seconds: list[float] = []

    def switch(self, label: str) -> None:
        now = status_mb()
        self.intervals.append({"label": self.label, "peak_mb": now["VmHWM"], "rss_start_mb": self.start["VmRSS"],
                               "rss_end_mb": now["VmRSS"], "file_end_mb": now["RssFile"],
                               "anon_end_mb": now["RssAnon"], "s": time.perf_counter() - self.began})
        reset_peak()
        self.label, self.began, self.start = label, time.perf_counter(), status_mb()

    @contextmanager
    def section(self, label: str):
        self.stack.append(self.label)
        self.switch(label)
        try:
            yield
        finally:
            self.switch(self.stack.pop())


def category(label: str) -> str:
    """Steps after the first are one phase ('later steps'), their highest peak."""
    if label.startswith("step "):
        number, _, part = label[5:].partition(": ")
        return f"{'first step' if number == '1' else 'later steps'}: {part}"
    return label


def phase_table(intervals: list[dict]) -> list[dict]:
    """Intervals grouped by phase in order of first appearance: peak (highest), resident at its first start and
    last end, seconds (summed)."""
    table: dict[str, dict] = {}
    for interval in intervals:
        name = category(interval["label"])
        row = table.setdefault(name, {"phase": name, "peak_mb": 0.0, "rss_start_mb": interval["rss_start_mb"],
                                      "s": 0.0, "times": 0})
        row["peak_mb"] = max(row["peak_mb"], interval["peak_mb"])
        row["rss_end_mb"], row["file_end_mb"] = interval["rss_end_mb"], interval["file_end_mb"]
        row["s"] += interval["s"]
        row["times"] += 1
    return list(table.values())


def install(probe: Probe, switches: list[str]) -> None:
    """The probe's hooks in the studio's training path, and the arm's switches that are not spec fields."""
    import torch
    import transformers

    import jobs.training.prepare as prepare
    import jobs.training.train as train_module
    from jobs.training.callbacks import SampleCallback

    @contextmanager
    def phase(name: str):
        from jobs.training.phases import add

        began = time.perf_counter()
        with probe.section(name):
            yield
        add(name, time.perf_counter() - began)

    train_module.phase = prepare.phase = phase

    original_load = prepare.load_base

    def load_base(settings, base_model):
        model = original_load(settings, base_model)
        if "release_checkpoint" in switches:
            from jobs.models.loading import release_checkpoint_file

            release_checkpoint_file(model)
        if "malloc_trim" in switches:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        return model

    prepare.load_base = load_base
    if "keep_checkpoint" in switches:  # the studio before it released the loading memory
        prepare.release_loading_memory = lambda model: 0
    if "lora_bf16" in switches:
        prepare.keep_lora_in_fp32 = train_module.keep_lora_in_fp32 = lambda model, settings: None
    if "lora_fp32" in switches:  # fp32 LoRA whatever the compute dtype
        from dataclasses import replace

        original_keep = train_module.keep_lora_in_fp32
        train_module.keep_lora_in_fp32 = lambda model, settings: original_keep(
            model, replace(settings, compute_dtype="float32"))
    if "head_every_position" in switches:
        prepare.score_only_labelled_positions = lambda: None

    class ProbeCallback(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.tokens, self.began = 0, 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()
            probe.switch(f"step {state.global_step + 1}: forward + backward")

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            probe.switch(f"step {state.global_step + 1}: optimizer update")

        def on_optimizer_step(self, args, state, control, **kwargs):
            probe.switch(f"step {state.global_step + 1}: after the update")

        def on_step_end(self, args, state, control, **kwargs):
            probe.step_seconds.append(time.perf_counter() - self.began)
            seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            probe.step_tokens.append(seen - self.tokens)
            self.tokens = seen
            probe.switch(f"step {state.global_step}: logging")

    original_prepare = train_module.prepare_run

    def prepare_run(*args, **kwargs):
        run = original_prepare(*args, **kwargs)
        run.trainer.callback_handler.callbacks.insert(0, ProbeCallback())  # first: its marks come before the others'
        return run

    train_module.prepare_run = prepare_run

    def sectioned(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            with probe.section(label):
                return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    sectioned(SampleCallback, "_answer", "sample answers")
    sectioned(transformers.Trainer, "_save_checkpoint", "checkpoint save")
    sectioned(transformers.Trainer, "evaluate", "eval")
    torch.set_num_threads(os.cpu_count() or 1)


def run_arm(name: str, model: str, base: str, data: str, steps: int | None, work: str,
            no_samples: bool = False) -> dict:
    """One arm in this process: the default job with the arm's lever, probed (`no_samples`: without the sample
    answers, which take long on a loaded CPU and peak below the steps)."""
    probe = Probe()
    arm = ARMS[name]
    install(probe, arm.get("probe", []))
    from jobs.spec import parse_spec
    from jobs.training.train import quiet_libraries, train

    quiet_libraries()
    fields = {**arm.get("fields", {}), **({"max_steps": steps} if steps else {}),
              **({"sample_prompts": 0} if no_samples else {})}
    spec = parse_spec(fields)
    began = time.perf_counter()
    probe.switch("between phases")  # train() enters its phases from here (run settings, LoRA, the Trainer's setup)
    result = train(spec, Path(work) / "run", base, Path(data), lambda *a: None, lambda: False,
                   on_samples=lambda *a: None)
    seconds = time.perf_counter() - began
    probe.switch("end")
    phases = phase_table(probe.intervals)
    steps_peak = max((row["peak_mb"] for row in phases if "step" in row["phase"]), default=0.0)
    later = probe.step_seconds[1:] or probe.step_seconds
    return {"arm": name, "model": model, "fields": fields, "switches": arm.get("probe", []),
            "peak_mb": max(row["peak_mb"] for row in phases), "steps_peak_mb": steps_peak,
            "steps": len(probe.step_seconds), "step_s": statistics.median(later) if later else None,
            "tokens_per_step": max(probe.step_tokens, default=0), "train_s": seconds,
            "final": result.final_metrics, "phases": phases, "intervals": probe.intervals}


def arm_env(name: str) -> dict[str, str]:
    """The arm's environment: a worker's training process's (jemalloc preloaded where installed, the studio's default
    since 2026-12-05), glibc's malloc for the `glibc malloc` arm, and the arm's own variables."""
    from jobs.queue.spare import child_env

    arm = ARMS[name]
    return {**os.environ, **child_env(jemalloc=not arm.get("glibc")), **arm.get("env", {})}


def in_subprocess(name: str, model: str, base: str, data: str, steps: int | None, no_samples: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as work:
        command = [sys.executable, __file__, "--arm", name, "--model", model, "--base", base, "--data", data,
                   "--work", work, "--steps", str(steps or 0)] + (["--no-samples"] if no_samples else [])  # 0: whole
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              env=arm_env(name))
    if done.returncode:
        raise RuntimeError(f"arm {name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ the idle studio


def process_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def idle_studio(spare: bool) -> dict:
    """`python -m app` in a data dir that has been used before (its demo base built: a first start builds it, which
    imports torch into the app), left idle (its page answering, its worker and, if on, the worker's spare training
    process started and done importing): each process's resident set."""
    import urllib.request

    from jobs.models.demo import ensure_demo_model

    with tempfile.TemporaryDirectory() as tmp:
        ensure_demo_model(Path(tmp) / "data" / "models")
        log, port = Path(tmp) / "app.log", free_port()
        env = {**os.environ, "STUDIO_DATA_DIR": str(Path(tmp) / "data"), "PYTHONPATH": str(ROOT),
               "STUDIO_SPARE_CHILD": "1" if spare else "0", "HF_HUB_OFFLINE": "1"}
        with log.open("ab") as output:
            app = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], env=env, cwd=ROOT,
                                   stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline, last, steady_since = time.monotonic() + 300, -1.0, None
            while True:
                if app.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the studio did not get idle:\n{log.read_text(errors='replace')[-3000:]}")
                worker = next((pid for pid in children_of(app.pid) if "jobs.queue.worker" in cmdline(pid)), None)
                spares = [pid for pid in children_of(worker) if "--spare" in cmdline(pid)] if worker else []
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).close()
                    page = True
                except OSError:
                    page = False
                total = sum(process_rss_mb(pid) for pid in [app.pid, *([worker] if worker else []), *spares])
                steady_since = (steady_since or time.monotonic()) if abs(total - last) < 2 else None
                last = total
                if page and worker and (spares or not spare) and steady_since and time.monotonic() - steady_since > 5:
                    break
                time.sleep(1)
            result = {"app_mb": process_rss_mb(app.pid), "worker_mb": process_rss_mb(worker),
                      "spare_mb": sum(process_rss_mb(pid) for pid in spares)}
        finally:
            app.terminate()
            try:
                app.wait(60)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
    result["total_mb"] = result["app_mb"] + result["worker_mb"] + result["spare_mb"]
    return result


def cmdline(pid: int | None) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------ report


def work_files(model: str, work: Path) -> tuple[str, str]:
    """(base model dir, the default job's rows) under `work`."""
    if model == "demo":
        from jobs.models.demo import ensure_demo_model

        base = str(ensure_demo_model(work / "models"))
    else:
        from jobs.models.resolve import resolve_base_model
        from storage.settings import load_settings

        base = resolve_base_model("smollm2-135m-instruct", load_settings({}).models_dir)
    data = work / "train.jsonl"
    lines = (ROOT / "static" / "examples" / EXAMPLES[model]).read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:ROWS]))
    return base, str(data)


def report(results: list[dict]) -> None:
    if not results:
        return
    default = next((r for r in results if r["arm"] == "default"), results[0])
    print(f"{'arm':<36}{'peak MB':>9}{'vs default':>11}{'steps peak':>11}{'tokens/step':>12}{'step s':>8}")
    for r in results:
        step_s = f"{r['step_s']:.2f}" if r["step_s"] else "-"
        print(f"{r['arm']:<36}{r['peak_mb']:>9.0f}{r['peak_mb'] - default['peak_mb']:>+11.0f}"
              f"{r['steps_peak_mb']:>11.0f}{r['tokens_per_step']:>12}{step_s:>8}")
    for r in results:
        if r["arm"] in ("default", "release_checkpoint + malloc_trim") or r.get("full"):
            print(f"\nphases of {r['arm']}{' (whole job)' if r.get('full') else ''}:")
            print(f"{'phase':<36}{'peak MB':>9}{'RSS at start':>13}{'RSS at end':>11}{'file pages':>11}{'s':>8}")
            for row in r["phases"]:
                print(f"{row['phase']:<36}{row['peak_mb']:>9.0f}{row['rss_start_mb']:>13.0f}{row['rss_end_mb']:>11.0f}"
                      f"{row['file_end_mb']:>11.0f}{row['s']:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "demo"], default="smollm2")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per lever arm (max_steps; 0: the whole "
                        "job)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--full", action="store_true", help="also the default job run to its end")
    parser.add_argument("--no-samples", action="store_true", help="every arm without sample answers (compare their "
                        "steps' peaks; the samples' own peak is in a run with them)")
    parser.add_argument("--idle", action="store_true", help="also the idle studio, with and without its spare")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="the demo model, 2 steps, two arms in this process: "
                        "CI's check")
    parser.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.model, args.base, args.data, args.steps, args.work,
                                 args.no_samples)))
        return
    arms = list(SMOKE_ARMS) if args.smoke else [arm for arm in args.arms.split(",") if arm]  # "": --idle alone
    if unknown := set(arms) - set(ARMS):
        parser.error(f"--arms: unknown {', '.join(sorted(unknown))} (known: {', '.join(ARMS)})")
    if args.smoke:  # one step, no sample answers: what CI can afford
        args.model, args.steps = "demo", 1
    results, idle = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        base, data = work_files(args.model, Path(tmp))
        if args.smoke:  # one process, so CI imports torch once; the phases still reset their peaks
            results = [run_arm(arm, args.model, base, data, args.steps, str(Path(tmp) / arm.replace(" ", "_")))
                       for arm in arms[:1]]
        else:
            for arm in arms:
                results.append(in_subprocess(arm, args.model, base, data, args.steps, args.no_samples))
                print(f"{arm}: peak {results[-1]['peak_mb']:.0f} MB", flush=True)
                save(args, results, {})  # each arm as it ends: a long run interrupted keeps what it measured
            if args.full:
                whole = in_subprocess("default", args.model, base, data, None)
                results.append({**whole, "arm": "default, whole job", "full": True})
    if args.idle:
        idle = {"with_spare": idle_studio(True), "without_spare": idle_studio(False)}
        for name, found in idle.items():
            print(f"idle studio {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in found.items()))
    report(results)
    print(f"saved {save(args, results, idle)}")


def save(args: argparse.Namespace, results: list[dict], idle: dict) -> Path:
    out = args.out or ROOT / "bench" / "results" / f"memory_breakdown_{args.model}{'_smoke' if args.smoke else ''}.json"
    write_report(out, {"model": args.model, "steps": args.steps, "sample_answers": not args.no_samples,
                       "arms": results, "idle": idle})
    return out


if __name__ == "__main__":
    main()
