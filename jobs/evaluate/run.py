"""The eval job, in the worker's child process: every pane (adapters and the base) answers every row through the
chat engine (jobs.chat.engine: one base loaded once, the adapters on it by name, several rows x all panes in ONE
batched generate), each reference answer is scored by the same teacher-forced pass the prompt suites use
(`ChatEngine.reference_scores`), and the results are written to the run folder's `eval/` at once: built in
`eval.partial`, fsynced, renamed. A cancelled or interrupted attempt leaves nothing; a retried one starts over.

Files: `predictions.jsonl` (one line per row and pane: prompt, adapter, answer, reference, tokens, seconds) and
`results.json` (the table of panes x metrics, the best per metric, every row with its answers and scores, sorted by
how much the panes disagree)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from pathlib import Path

from jobs.chat.request import GenerationSettings, Pane
from jobs.evaluate import judging, metrics
from jobs.evaluate.sets import EvalRow, held_out_records, rows_from_records, suite_rows
from jobs.evaluate.spec import EvalSpec
from jobs.spec_store import load_stored_spec
from jobs.studio import Studio
from jobs.training.checkpoints import fsync_tree
from storage import catalog, jobs_repo

BATCH_ANSWERS = 16
"""Answers generated together: rows x panes in one batched generate (fewer rows per batch with more panes)."""
RESULTS_DIR = "eval"
PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_FILE = "results.json"
ADVANCE_S = 2.0


class Stopped(Exception):  # noqa: N818 (an outcome, not a failure)
    def __init__(self, cancel: bool) -> None:
        self.cancel = cancel


def eval_rows(studio: Studio, spec: EvalSpec, pins: dict, base_path: str) -> list[EvalRow]:
    """The set's rows as submit pinned them (all: the job evaluates the first `max_rows`)."""
    if spec.source == "suite":
        rows = suite_rows(pins["suite"]["prompts"])
    elif spec.source == "dataset":
        rows, problems = rows_from_records(_pinned_records(studio, pins["dataset"]), f"'{pins['dataset']['name']}'")
        if problems:
            raise ValueError("; ".join(problems))
    else:
        rows = _held_out(studio, pins["train_job"], base_path)
    if not rows:
        raise ValueError("the eval set is empty: no rows to evaluate")
    return rows


def _pinned_records(studio: Studio, pin: dict) -> list[dict]:
    from jobs.data.store import load_rows

    with studio.db.read() as session:
        dataset = catalog.get_dataset(session, pin["id"])
    if dataset is None or dataset.sha256 != pin["sha256"]:
        raise LookupError(f"the dataset '{pin['name']}' this evaluation was submitted with is gone; it was deleted "
                          f"or replaced after the job was queued")
    return load_rows(studio.absolute(dataset.path))


def _held_out(studio: Studio, pin: dict, base_path: str) -> list[EvalRow]:
    found, problems = rows_from_records(_held_out_records(studio, pin, base_path), f"job {pin['id']}'s held-out rows")
    if problems:
        raise ValueError("; ".join(problems))
    return found


def _held_out_records(studio: Studio, pin: dict, base_path: str) -> list[dict]:
    from jobs.models.loading import load_tokenizer

    with studio.db.read() as session:
        job = jobs_repo.get_job(session, pin["id"])
        raw = job.spec if job else None
    if raw is None:
        raise LookupError(f"training job {pin['id']} was deleted after the evaluation was submitted")
    train_spec = load_stored_spec(raw).require()
    rows = _pinned_records(studio, pin["dataset"])
    held = _pinned_records(studio, pin["eval_dataset"]) if pin.get("eval_dataset") else None
    tokenizer = load_tokenizer(base_path) if train_spec.overlong == "drop" and not held else None
    return held_out_records(rows, train_spec, tokenizer, held)


def _panes(studio: Studio, pins: list[dict]) -> list[Pane]:
    panes = []
    with studio.db.read() as session:
        for pin in pins:
            if pin["id"] is None:
                panes.append(Pane(pin["name"], None))
                continue
            if catalog.get_adapter(session, pin["id"]) is None:
                raise LookupError(f"adapter '{pin['name']}' was deleted after the evaluation was submitted")
            panes.append(Pane(pin["name"], studio.absolute(pin["folder"])))
    return panes


def answer_rows(engine, base_model: str, panes: list[Pane], rows: list[EvalRow], settings: GenerationSettings,
                max_prompt_tokens: int, should_stop, on_progress) -> list[list[metrics.Answer]]:
    """answers[row][pane]: several rows x every pane per batched generate; each reference scored in one pass over
    all panes. `should_stop()` is asked between slices (truthy: stop; "cancel" when nothing is wanted)."""
    per_batch = max(1, BATCH_ANSWERS // len(panes))
    answers: list[list[metrics.Answer]] = []
    stopped = threading.Event()
    for start in range(0, len(rows), per_batch):
        chunk = rows[start:start + per_batch]
        generation = engine.begin(base_model, [pane for _ in chunk for pane in panes],
                                  [row.prompt for row in chunk for _ in panes], settings, max_prompt_tokens)
        while not generation.advance(time.monotonic() + ADVANCE_S, stopped, lambda replies: None):
            if stop := should_stop():
                raise Stopped(cancel=stop == "cancel")
        replies = generation.replies()
        for offset, row in enumerate(chunk):
            scores = (engine.reference_scores(base_model, panes, row.prompt, row.reference, max_prompt_tokens)
                      if row.reference is not None else [(None, 0)] * len(panes))
            cells = range(offset * len(panes), (offset + 1) * len(panes))
            answers.append([metrics.Answer(replies[i], row.reference, replies.token_counts[i], replies.seconds[i],
                                           total, count) for i, (total, count) in zip(cells, scores, strict=True)])
        on_progress(len(answers) * len(panes))
        if stop := should_stop():
            raise Stopped(cancel=stop == "cancel")
    return answers


def build_results(spec: EvalSpec, base_model: str, panes: list[str], rows: list[EvalRow],
                  answers: list[list[metrics.Answer]], rows_in_set: int,
                  judgments: list[judging.Judgment] | None = None) -> tuple[dict, list[dict]]:
    """(results.json's content, predictions.jsonl's lines); with `judgments`, the judging's totals and prompt, and
    each row's judgments with their reasons."""
    by_row: dict[int, list[dict]] = {}
    for judgment in judgments or []:
        by_row.setdefault(judgment.row, []).append(judgment.as_dict())
    table = {pane: metrics.summary([row[i] for row in answers]) for i, pane in enumerate(panes)}
    per_row, predictions = [], []
    for index, (row, row_answers) in enumerate(zip(rows, answers, strict=True)):
        scores = []
        for pane, answer in zip(panes, row_answers, strict=True):
            loss = -answer.logprob_sum / answer.reference_tokens if answer.logprob_sum is not None else None
            scores.append(metrics.row_scores(answer.answer, row.reference, loss))
            predictions.append({"row": index, "prompt": row.prompt_text(), "messages": row.prompt, "adapter": pane,
                                "answer": answer.answer, "reference": row.reference, "tokens": answer.tokens,
                                "seconds": round(answer.seconds, 4)})
        per_row.append({"row": index, "prompt": row.prompt_text(), "reference": row.reference,
                        "answers": {pane: a.answer for pane, a in zip(panes, row_answers, strict=True)},
                        "scores": dict(zip(panes, scores, strict=True)),
                        "disagreement": metrics.disagreement([a.answer for a in row_answers], scores),
                        **({"judgments": by_row.get(index, [])} if judgments is not None else {})})
    per_row.sort(key=lambda r: (-r["disagreement"], r["row"]))
    results = {"base_model": base_model, "panes": panes, "source": spec.source,
               "set": spec.suite or spec.dataset or (f"job {spec.train_job} held-out rows" if spec.train_job else ""),
               "rows": len(rows), "rows_in_set": rows_in_set,
               "settings": {"max_new_tokens": spec.max_new_tokens, "temperature": spec.temperature,
                            "top_p": spec.top_p, "seed": spec.seed},
               "metrics": table, "best": metrics.best_panes(table), "per_row": per_row}
    if judgments is not None:
        results["judging"] = {"judge": spec.judge.strip(), "prompt": spec.judge_prompt,
                              "pairs": judging.totals(judgments, panes)}
    return results, predictions


def write_results(run_dir: Path, results: dict, predictions: list[dict]) -> Path:
    """Both files into `eval.partial`, fsynced, then renamed to `eval` (an older attempt's results replaced)."""
    partial, target = run_dir / f"{RESULTS_DIR}.partial", run_dir / RESULTS_DIR
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / PREDICTIONS_FILE).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions),
                                            encoding="utf-8")
    (partial / RESULTS_FILE).write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    fsync_tree(partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def _judge(studio: Studio, engine, spec: EvalSpec, pins: dict, panes: list[Pane], rows: list[EvalRow],
           answers: list[list[metrics.Answer]], should_stop, on_progress) -> list[judging.Judgment]:
    """The pinned judge judges every pair of panes on every row (jobs.evaluate.judging), on its own base (the
    engine keeps the answers' base loaded beside it, or reuses it when it is the same)."""
    pin = pins["judge"]
    judge = _panes(studio, [pin])[0]
    print(f"judging {len(judging.orders([p.name for p in panes])) * len(rows)} pairs of answers with "
          f"'{pin['name']}'", flush=True)
    return judging.judge_rows(engine, pin["base_model"], judge, [row.prompt_text() for row in rows],
                              [row.reference for row in rows], [[a.answer for a in row] for row in answers],
                              [p.name for p in panes], spec.judge_prompt, studio.settings.max_prompt_tokens,
                              functools.partial(_check_stop, should_stop), on_progress, ADVANCE_S,
                              spec.judge_max_tokens)


def _check_stop(should_stop) -> None:
    if stop := should_stop():
        raise Stopped(cancel=stop == "cancel")


def evaluate(studio: Studio, job_id: int, attempt: int, spec: EvalSpec, pins: dict, run_dir: Path, sink,
             base_path: str) -> str:
    """Run the evaluation; returns "done", "cancelled" or "interrupted"."""
    import transformers

    from jobs.chat.engine import ChatEngine

    transformers.utils.logging.disable_progress_bar()  # one log line per base load, not a bar per shard
    shutil.rmtree(run_dir / f"{RESULTS_DIR}.partial", ignore_errors=True)
    panes = _panes(studio, pins["adapters"])
    if pins.get("reward"):
        return _reward_pairs(studio, job_id, attempt, spec, pins, run_dir, sink, base_path, panes)
    if spec.source == "benchmark":
        return _benchmark(studio, job_id, attempt, spec, pins, run_dir, sink, base_path, panes)
    all_rows = eval_rows(studio, spec, pins, base_path)
    rows = all_rows[: spec.max_rows]
    total = spec.work(len(rows), len(panes))
    print(f"evaluating {', '.join(p.name for p in panes)} on {len(rows)} rows ({spec.source}) of "
          f"{pins['base_model']}", flush=True)
    settings = GenerationSettings(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature, top_p=spec.top_p,
                                  seed=spec.seed)
    engine = ChatEngine(studio.settings.models_dir)
    sink.on_metrics(0, {"eval_answers": 0.0}, total)

    def should_stop() -> bool | str:
        stop = sink.should_stop()
        return "cancel" if stop and stop is not True else bool(stop)

    try:
        answers = answer_rows(engine, pins["base_model"], panes, rows, settings, studio.settings.max_prompt_tokens,
                              should_stop, lambda done: sink.on_metrics(done, {"eval_answers": float(done)}, total))
        judgments = _judge(studio, engine, spec, pins, panes, rows, answers, should_stop,
                           lambda done: sink.on_metrics(len(rows) * len(panes) + done,
                                                        {"eval_answers": float(len(rows) * len(panes) + done)},
                                                        total)) if pins.get("judge") else None
    except Stopped as stopped:
        return "cancelled" if stopped.cancel else "interrupted"
    results, predictions = build_results(spec, pins["base_model"], [p.name for p in panes], rows, answers,
                                         len(all_rows), judgments)
    _record(studio, job_id, attempt, write_results(run_dir, results, predictions), f"{len(predictions)} answers")
    return "done"


def _record(studio: Studio, job_id: int, attempt: int, target: Path, what: str) -> None:
    with studio.db.write() as session:
        recorded = jobs_repo.complete_job(session, job_id, attempt)
    if not recorded:
        shutil.rmtree(target, ignore_errors=True)  # another attempt owns the job now
    print(f"evaluation {'recorded' if recorded else 'discarded (stale attempt)'}: {what}", flush=True)


def _benchmark(studio: Studio, job_id: int, attempt: int, spec: EvalSpec, pins: dict, run_dir: Path, sink,
               base_path: str, panes: list[Pane]) -> str:
    """lm-evaluation-harness tasks on every pane (jobs.evaluate.harness); results.json has the same table of panes x
    metrics as the other sets (no per-row answers: lm_eval scores its own requests), so the tab shows it alike."""
    from jobs.evaluate.harness import benchmark

    tasks = pins["benchmark"]["tasks"]
    total = len(tasks) * len(panes)
    sink.on_metrics(0, {"eval_answers": 0.0}, total)
    print(f"benchmarking {', '.join(p.name for p in panes)} on {', '.join(tasks)} (at most {spec.max_rows} rows "
          f"a task) of {pins['base_model']}", flush=True)
    stop = sink.should_stop
    found = benchmark(panes, pins["base_model"], base_path, tasks, studio.settings.lm_eval_tasks, spec.max_rows,
                      spec.num_fewshot, spec.seed, stop,
                      lambda done: sink.on_metrics(done * len(tasks), {"eval_answers": float(done * len(tasks))},
                                                   total))
    if found is None:
        wanted = stop()
        return "cancelled" if wanted and wanted is not True else "interrupted"
    table, directions = found
    results = {"base_model": pins["base_model"], "panes": [p.name for p in panes], "source": spec.source,
               "set": ", ".join(tasks), "rows": spec.max_rows, "rows_in_set": None,
               "settings": {"num_fewshot": spec.num_fewshot, "limit": spec.max_rows, "seed": spec.seed},
               "metrics": table, "best": metrics.best_panes(table, directions), "directions": directions,
               "per_row": []}
    _record(studio, job_id, attempt, write_results(run_dir, results, []), f"{len(tasks)} task(s) x {len(panes)}")
    return "done"



def _reward_pairs(studio: Studio, job_id: int, attempt: int, spec: EvalSpec, pins: dict, run_dir: Path, sink,
                  base_path: str, panes: list[Pane]) -> str:
    """Reward models score the set's preference pairs (jobs.evaluate.reward_pairs): one resident base for every
    adapter (per variant), the pairs in order; the table is pairwise accuracy and mean margin."""
    from jobs.evaluate import reward_pairs

    all_records = (_pinned_records(studio, pins["dataset"]) if spec.source == "dataset"
                   else _held_out_records(studio, pins["train_job"], base_path))
    records = [r for r in all_records if "chosen" in r and "rejected" in r][: spec.max_rows]
    if not records:
        raise ValueError("the eval set has no preference pairs to score")
    total = len(records) * len(panes)
    sink.on_metrics(0, {"eval_answers": 0.0}, total)
    print(f"scoring {len(records)} preference pairs with the reward model(s) {', '.join(p.name for p in panes)} "
          f"of {pins['base_model']} (the base has no score head: left out)", flush=True)
    scores, bases = {}, reward_pairs.reward_bases(base_path)
    for done, pane in enumerate(panes, start=1):
        found = reward_pairs.pair_scores(bases, pane, records, studio.settings.max_prompt_tokens,
                                         sink.should_stop)
        if found is None:
            wanted = sink.should_stop()
            return "cancelled" if wanted and wanted is not True else "interrupted"
        scores[pane.name] = found
        sink.on_metrics(done * len(records), {"eval_answers": float(done * len(records))}, total)
    results, predictions = reward_pairs.results(spec, pins["base_model"], [p.name for p in panes], records, scores,
                                                len(all_records))
    _record(studio, job_id, attempt, write_results(run_dir, results, predictions), f"{len(records)} pairs scored")
    return "done"
