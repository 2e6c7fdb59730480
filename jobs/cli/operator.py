"""The operator's side of the verbs: the same domain calls the API's handlers make, run on the studio's machine with
the data dir's full access (what they create belongs to the local owner). Each returns what its endpoint returns."""

from __future__ import annotations

import shutil
from pathlib import Path

from jobs.models.contents import folder_kind
from jobs.spec_store import load_stored_spec
from jobs.studio import Studio
from storage import catalog, jobs_repo, workers_repo
from storage.models import JobKind


def job(studio: Studio, job_id: int) -> dict:
    with studio.db.read() as session:
        found = jobs_repo.get_job(session, job_id)
        if found is None:
            raise LookupError(f"job_id: no job with id {job_id}")
        return {"id": found.id, "name": found.name, "kind": found.kind, "status": found.status, "step": found.step,
                "total_steps": found.total_steps, "attempt": found.attempt, "priority": found.priority,
                "group_name": found.group_name, "error": found.error, "spec": found.spec,
                "spec_problems": _spec_problems(found), "loss": jobs_repo.latest_metric(session, job_id, "loss")}


def _spec_problems(found) -> list[str]:
    """As the API says them: why a stored training spec is no longer valid (it is shown, never raised)."""
    if found.kind != JobKind.TRAIN:
        return []
    return [str(problem) for problem in load_stored_spec(found.spec).problems]


def move(studio: Studio, job_id: int, where: str) -> list[int]:
    if where not in jobs_repo.MOVES:
        raise ValueError(f"where: one of {', '.join(jobs_repo.MOVES)}, not '{where}'")
    try:
        with studio.db.write() as session:
            return jobs_repo.move_job(session, job_id, where)
    except LookupError:
        raise LookupError(f"job_id: job {job_id} is not queued") from None


def set_priority(studio: Studio, job_id: int, priority: int) -> list[int]:
    from jobs.spec import priority_problem

    if problem := priority_problem(priority):
        raise ValueError(f"priority: {problem}")
    try:
        with studio.db.write() as session:
            jobs_repo.set_priority(session, job_id, priority)
            return jobs_repo.queued_job_ids(session)
    except LookupError:
        raise LookupError(f"job_id: job {job_id} is not queued") from None


def workers(studio: Studio) -> list[dict]:
    with studio.db.read() as session:
        live = workers_repo.live_workers(session, studio.settings.lease_s)
        return [{"host": w.host, "device": w.device, "device_name": w.device_name, "memory_bytes": w.memory_bytes,
                 "pool": w.pool, "current_job_id": w.current_job_id, "device_count": w.device_count,
                 "spans_hosts": w.address is not None} for w in live]


def submit_sweep(studio: Studio, spec: str, sweep: str, mode: str = "grid", name: str = "", priority: int = 0) -> dict:
    import json

    from jobs.sweeps import axes_from_text
    from jobs.sweeps import submit_sweep as queue_sweep

    group, ids = queue_sweep(studio, json.loads(spec), axes_from_text(sweep), mode, name, priority)
    return {"group": group, "job_ids": ids}


def cancel_sweep(studio: Studio, name: str) -> dict:
    from jobs.sweeps import cancel_sweep as cancel_group

    return {str(job_id): status for job_id, status in cancel_group(studio, name).items()}


def start_search(studio: Studio, spec: str, space: str, budget_trials: int, budget_minutes: float = 0.0,
                 parallel: int = 1, pruner: str = "hyperband", name: str = "", start_from_plan: bool = True) -> dict:
    import json

    from jobs.search.driver import start_search as start
    from jobs.sweeps import axes_from_text

    raw = {"name": name, "base": json.loads(spec), "space": axes_from_text(space), "budget_trials": budget_trials,
           "parallel": parallel, "pruner": pruner, "start_from_plan": start_from_plan}
    if budget_minutes:
        raw["budget_minutes"] = budget_minutes
    return {"name": start(studio, raw)}


def list_searches(studio: Studio) -> list[dict]:
    from jobs.search.driver import list_searches as searches

    return searches(studio)


def search_result(studio: Studio, name: str) -> dict:
    from jobs.search.driver import search_result as found

    return found(studio, name)


def train_search_best(studio: Studio, name: str) -> int:
    from jobs.search.driver import train_best

    return train_best(studio, name)


def cancel_search(studio: Studio, name: str) -> str:
    from jobs.search.driver import CANCELLED
    from jobs.search.driver import cancel_search as cancel

    cancel(studio, name)
    return CANCELLED


def metrics(studio: Studio, job_id: int, names: list[str]) -> dict:
    job(studio, job_id)  # a refusal for an unknown job
    with studio.db.read() as session:
        found = jobs_repo.metrics_for(session, job_id)
    series: dict[str, list[list[float]]] = {}
    for metric in found:
        if not names or metric.name in names:
            series.setdefault(metric.name, []).append([metric.step, metric.value])
    return series


def plan(studio: Studio, spec: str) -> dict:
    import json

    from jobs.spec import parse_spec
    from jobs.submit import planned_job

    planned = planned_job(studio, parse_spec(json.loads(spec)))
    return {"steps": planned.steps, "tokens": planned.tokens, "sequences_per_epoch": planned.sequences_per_epoch,
            "train_rows": planned.train_rows, "eval_rows": planned.eval_rows, "counted": planned.counted,
            "chosen": {name: getattr(planned.spec, name) for name in planned.chosen},
            "sentence": planned.sentence()}


def adapters(studio: Studio, base_model: str = "") -> list[dict]:
    with studio.db.read() as session:
        return [{"name": a.name, "base_model": a.base_model, "kind": folder_kind(studio.absolute(a.path)),
                 "job_id": a.job_id, "size_bytes": a.size_bytes, "created_at": str(a.created_at)}
                for a in catalog.list_adapters(session, base_model or None)]


def _adapter(studio: Studio, name: str):
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, (name or "").strip())
    if adapter is None:
        raise LookupError(f"name: no adapter named '{name}'")
    return adapter


def adapter_zip(studio: Studio, name: str) -> str:
    from jobs.training.export import adapter_export

    return str(adapter_export(studio, _adapter(studio, name)))


def merged_zip(studio: Studio, name: str) -> str:
    from jobs.training.export import merged_export

    if (zipped := merged_export(studio, _adapter(studio, name))) is None:
        raise ValueError(f"name: '{name}' has no merged model yet; ask for one with `merge` (it runs as a job)")
    return str(zipped)


def rename_adapter(studio: Studio, name: str, new_name: str) -> str:
    from jobs.training.registry import rename_adapter as rename

    return rename(studio, (name or "").strip(), new_name).name


def delete_adapter(studio: Studio, name: str) -> str:
    from jobs.training.registry import delete_adapter as delete

    delete(studio, (name or "").strip())
    return f"deleted {name}"


def merge(studio: Studio, name: str, dtype: str = "bfloat16") -> int:
    from jobs.submit import submit_merge

    return submit_merge(studio, name, dtype)


def combine(studio: Studio, name: str, adapters: list[str], weights: list[float] | None = None,
            combination_type: str = "linear", density: float = 0.5, majority_sign_method: str = "total",
            svd_rank: int = 0, priority: int = 0) -> int:
    from jobs.submit import submit_combine

    return submit_combine(studio, name, adapters, weights, combination_type, density, majority_sign_method, svd_rank,
                          priority)


def export_gguf(studio: Studio, name: str, quantization: str = "q8_0") -> int:
    from jobs.submit import submit_export
    from jobs.training.gguf import unavailable

    if why := unavailable(quantization):
        raise ValueError(why)
    return submit_export(studio, name, quantization)


def gguf_zip(studio: Studio, name: str, quantization: str = "q8_0") -> str:
    from jobs.training.export import gguf_export

    if (zipped := gguf_export(studio, _adapter(studio, name), quantization)) is None:
        raise ValueError(f"quantization: '{name}' has no {quantization} GGUF yet; ask for one with `export-gguf` "
                         "(it runs as a job)")
    return str(zipped)


def leaderboard(studio: Studio, base_model: str) -> list[dict]:
    from jobs.chat.votes import base_leaderboard

    standings, _ = base_leaderboard(studio, base_model)
    return [{"rank": rank, "adapter": s.name, "score": round(s.score), "win rate": f"{s.win_rate:.0%}", "wins": s.wins,
             "ties": s.ties, "rounds": s.rounds} for rank, s in enumerate(standings, start=1)]  # as the API's rows


def suites(studio: Studio) -> list[str]:
    from storage import suites_repo

    with studio.db.read() as session:
        return [suite.name for suite in suites_repo.list_suites(session)]


def save_suite(studio: Studio, name: str, prompts: str) -> str:
    from jobs.chat.suites import parse_suite_text, save_suite

    suite = save_suite(studio, name, parse_suite_text(prompts))
    return f"Saved suite {suite.name} ({len(suite.prompts)} prompts)."


def suite_results(studio: Studio, name: str, base_model: str) -> dict:
    from jobs.chat.suites import suite_grid

    grid = suite_grid(studio, name, base_model)
    return {"prompts": grid.prompts, "panes": grid.panes,
            "answers": [[grid.replies.get((i, pane)) for pane in grid.panes] for i in range(len(grid.prompts))],
            "mean_loglik": {pane: grid.mean_loglik(pane) for pane in grid.panes}}


def suite_diff(studio: Studio, name: str, before: str, after: str, base_model: str) -> str:
    from jobs.chat.suites import diff_html, suite_grid

    grid = suite_grid(studio, name, base_model)
    for pane, role in ((before, "before"), (after, "after")):
        if pane not in grid.panes:
            raise ValueError(f"{role}: '{pane}' has no answers in suite '{name}' on {base_model}")
    return diff_html(grid, before, after)


def presets(studio: Studio) -> list[str]:
    from jobs.presets import preset_names

    return preset_names(studio)


def save_preset(studio: Studio, name: str, spec: str) -> str:
    import json

    from jobs.presets import save_preset as save

    return save(studio, name, json.loads(spec))


def load_preset(studio: Studio, name: str) -> dict:
    from jobs.presets import load_preset as load

    return load(studio, name)


def delete_preset(studio: Studio, name: str) -> str:
    from jobs.presets import delete_preset as delete

    delete(studio, name)
    return f"deleted {name}"


def share_preset(studio: Studio, name: str, shared: bool = True) -> str:
    from jobs.presets import share_preset as share

    share(studio, name, shared)
    return f"{name}: {'shared' if shared else 'private'}"


def save_file(path: str, out_dir: str) -> str:
    """A file the studio built (or a client downloaded), copied into the asked folder; returns where it lies."""
    target = Path(out_dir).expanduser() / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return str(target)


def vote(studio: Studio, base_model: str, prompt: str, answers: list[dict], outcome: str, best: int = -1) -> str:
    from jobs.chat.request import conversation
    from jobs.chat.votes import Verdict, pane_letter, record_vote

    record_vote(studio, base_model, conversation(prompt), answers, Verdict(outcome, best if best >= 0 else None), {})
    revealed = ", ".join(f"{pane_letter(i)} was {a.get('adapter', '')}" for i, a in enumerate(answers))
    verdict = {"best": f"{pane_letter(max(best, 0))} best", "tie": "a tie", "all_bad": "all bad"}[outcome]
    return f"Vote recorded ({verdict}): {revealed}."


def evaluate(studio: Studio, spec: str, priority: int = 0) -> int:
    import json

    from jobs.evaluate.submit import submit_eval

    return submit_eval(studio, json.loads(spec), priority)


def eval_results(studio: Studio, job_id: int, rows: int = 50) -> dict:
    from jobs.evaluate.results import summary

    return summary(studio, job_id, rows)


def export_eval(studio: Studio, job_id: int, what: str = "table", format: str = "csv") -> str:  # noqa: A002
    from jobs.evaluate.results import export_text

    return export_text(studio, job_id, what, format)
