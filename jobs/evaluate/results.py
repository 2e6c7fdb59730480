"""What an eval job wrote, read for the Evaluate tab, the API and the CLI: the table of panes x metrics with the best
marked, the rows sorted by where the panes disagree most, CSV and JSON downloads. Only the job's owner (or an admin)
reads them: the job is looked up through the ledger's ownership rules first."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from jobs.evaluate.metrics import HIGHER_IS_BETTER, METRICS
from jobs.evaluate.run import PREDICTIONS_FILE, RESULTS_DIR, RESULTS_FILE
from jobs.queue.run_files import run_dir_for
from jobs.studio import Studio
from storage import jobs_repo
from storage.files import write_atomically
from storage.models import JobKind, JobStatus

LABELS = {name: label for name, label, _ in METRICS}


class NoResults(LookupError):
    """The job is not the caller's, not an evaluation, or has no results yet (said in words)."""


def results_dir(studio: Studio, job_id: int) -> Path:
    """The job's results folder, once the caller may see the job and it succeeded."""
    return _checked(studio, job_id)[0]


def _checked(studio: Studio, job_id: int) -> tuple[Path, str | None]:
    """(the results folder, the job's owner)."""
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, int(job_id))
        found = (job.kind, job.status, job.step, job.total_steps, job.owner) if job is not None else None
    if found is None:
        raise NoResults(f"job_id: no job with id {job_id}")
    kind, status, step, total, owner = found
    if kind != JobKind.EVAL:
        raise NoResults(f"job_id: job {job_id} is a {kind} job, not an evaluation")
    if status != JobStatus.SUCCEEDED:
        progress = f" ({step}/{total} answers)" if status == JobStatus.RUNNING and total else ""
        raise NoResults(f"job_id: evaluation {job_id} is {status}{progress}; its results come when it succeeds")
    folder = run_dir_for(studio, int(job_id)) / RESULTS_DIR
    if not (folder / RESULTS_FILE).is_file():
        raise NoResults(f"job_id: evaluation {job_id} has no results file (its run folder was removed)")
    return folder, owner


def eval_results(studio: Studio, job_id: int) -> dict:
    """results.json as the job wrote it: base_model, panes, set, rows, settings, metrics, best, per_row."""
    return json.loads((results_dir(studio, job_id) / RESULTS_FILE).read_text(encoding="utf-8"))


def predictions_file(studio: Studio, job_id: int) -> Path:
    return results_dir(studio, job_id) / PREDICTIONS_FILE


def metric_names(results: dict) -> list[str]:
    """The metrics any pane has a value for, in METRICS' order; a benchmark's (lm_eval's "<task> <metric>") after."""
    known = [name for name, _, _ in METRICS]
    found = {name for row in results["metrics"].values() for name, value in row.items() if value is not None}
    return [name for name in known if name in found] + sorted(found - set(known))


def table(results: dict, mark: str = "") -> list[dict]:
    """One dict per pane: "adapter" then each metric's value; with `mark`, best values as text followed by it."""
    names, best = metric_names(results), results.get("best", {})
    rows = []
    for pane in results["panes"]:
        row: dict = {"adapter": pane}
        for name in names:
            value = results["metrics"][pane].get(name)
            if mark:
                text = "" if value is None else f"{value:.4g}"
                row[LABELS.get(name, name)] = f"{text} {mark}" if pane in best.get(name, []) else text
            else:
                row[name] = value
        rows.append(row)
    return rows


def best_text(results: dict) -> str:
    """Which pane is best on each metric, in words (lower is better for loss, perplexity and time)."""
    parts = []
    directions = {**results.get("directions", {}), **HIGHER_IS_BETTER}
    for name, panes in results.get("best", {}).items():
        direction = "higher" if directions.get(name) else "lower"
        parts.append(f"{LABELS.get(name, name)} ({direction} is better): {', '.join(panes)}")
    return "; ".join(parts)


def row_view(results: dict, limit: int = 200) -> list[dict]:
    """The rows, most disagreement first: prompt, reference, each pane's answer and its chrF / ROUGE-L / loss."""
    out = []
    for row in results["per_row"][:limit]:
        item = {"row": row["row"] + 1, "disagreement": round(row["disagreement"], 4), "prompt": row["prompt"],
                "reference": row["reference"] or ""}
        for pane in results["panes"]:
            item[pane] = row["answers"][pane]
            for name in ("chrf", "rouge_l", "exact_match", "loss", "margin"):  # margin: a reward model's pair
                if name in row["scores"][pane]:
                    item[f"{pane} {name}"] = round(row["scores"][pane][name], 4)
        for judgment in row.get("judgments", []):  # each order's verdict; its reasons are in `judgments_view`
            item[f"judge {judgment['a']} vs {judgment['b']}"] = judgment["verdict"]
        out.append(item)
    return out


def judging_table(results: dict) -> list[dict]:
    """Per pair of panes: judgments (two a row: both orders), each side's wins, ties, unparsed, rows where both
    orders agree; empty when the evaluation had no judge."""
    return list(results.get("judging", {}).get("pairs", []))


def judgments_view(results: dict, limit: int = 200) -> list[dict]:
    """Every judgment of the first `limit` rows (most disagreement first): row, answer A's and B's pane, the verdict
    (a pane's name, tie, unparsed) and the judge's reply, its reasons."""
    return [{"row": row["row"] + 1, **{k: v for k, v in judgment.items() if k != "row"}}
            for row in results["per_row"][:limit] for judgment in row.get("judgments", [])]


def as_csv(records: list[dict], drop: tuple[str, ...] = ()) -> str:
    if not records:
        return ""
    buffer = io.StringIO()
    fields = [name for name in records[0] if name not in drop]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({key: _cell(value) for key, value in record.items()} for record in records)
    return buffer.getvalue()


def _cell(value: object) -> object:
    """A model's or a person's text that a spreadsheet would run as a formula (=, +, -, @ first) is quoted, as
    OWASP's CSV-injection advice says; numbers stay numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


EXPORTS = ("table", "rows", "predictions")
FORMATS = ("csv", "json")


def export_text(studio: Studio, job_id: int, what: str = "table", fmt: str = "csv") -> str:
    """The table ("table"), the per-row view ("rows") or every answer ("predictions") as CSV or JSON (predictions
    as JSON: the JSONL file itself, one answer a line)."""
    problems = ([f"what: one of {', '.join(EXPORTS)} (got '{what}')"] if what not in EXPORTS else []) + (
        [f"format: one of {', '.join(FORMATS)} (got '{fmt}')"] if fmt not in FORMATS else [])
    if problems:
        raise ValueError("; ".join(problems))
    if what == "predictions":
        text = predictions_file(studio, job_id).read_text(encoding="utf-8")
        return text if fmt == "json" else as_csv([json.loads(line) for line in text.splitlines()],
                                                 drop=("messages",))
    results = eval_results(studio, job_id)
    records = table(results) if what == "table" else row_view(results, limit=len(results["per_row"]))
    return as_csv(records) if fmt == "csv" else json.dumps(records, ensure_ascii=False, indent=1)


def export_file(studio: Studio, job_id: int, what: str = "table", fmt: str = "csv") -> Path:
    """`export_text` as a file in the job owner's exports folder (what the page's download button serves)."""
    text = export_text(studio, job_id, what, fmt)
    owner = _checked(studio, job_id)[1]
    suffix = "jsonl" if (what, fmt) == ("predictions", "json") else fmt
    target = studio.export_dir(f"eval-{int(job_id)}", owner) / f"eval-{int(job_id)}-{what}.{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(target, text)


def summary(studio: Studio, job_id: int, rows: int = 50) -> dict:
    """What the API and the CLI show: the set, the settings, the table (`table`: one dict per pane, None where a
    metric does not apply), the best pane(s) per metric, the first `rows` of the per-row view, and `judging` (None
    without a judge): the judge, its prompt, the totals per pair, the first `rows` rows' judgments with reasons."""
    results = eval_results(studio, job_id)
    return {"job_id": int(job_id), "base_model": results["base_model"], "set": results["set"],
            "source": results["source"], "rows": results["rows"], "rows_in_set": results["rows_in_set"],
            "settings": results["settings"], "panes": results["panes"], "table": table(results),
            "best": results["best"], "directions": results.get("directions", {}),
            "per_row": row_view(results, limit=max(0, min(int(rows), 2000))),
            "judging": ({"judge": results["judging"]["judge"], "prompt": results["judging"]["prompt"],
                         "pairs": judging_table(results),
                         "judgments": judgments_view(results, limit=max(0, min(int(rows), 2000)))}
                        if "judging" in results else None)}
