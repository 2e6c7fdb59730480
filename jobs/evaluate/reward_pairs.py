"""Evaluating reward models (issue 31, reward-model training): a reward adapter generates nothing, so the eval job
scores preference pairs with it instead of answering prompts. Each pair's chosen and rejected conversations get one
score each; the table says, per adapter, the pairwise accuracy (the share of pairs where chosen scores above
rejected) and the mean margin (chosen minus rejected), as TRL's RewardTrainer logs them while training.

Submit (`reward_eval_problems`) takes reward adapters only, all of one base, on preference pairs: a stored
preference dataset, or the rows a paired-method training job held out. The base has no score head: it is left out."""

from __future__ import annotations

from jobs.chat.request import BASE_PANE, Pane
from jobs.data.formats import PREFERENCE
from jobs.data.store import find_dataset, split_sizes
from jobs.evaluate.spec import EvalSpec
from jobs.models.reward_adapters import is_reward_adapter
from jobs.spec import PAIRED_METHODS
from jobs.spec_store import load_stored_spec
from jobs.spec_words import Problem
from jobs.studio import Studio
from storage import catalog, jobs_repo
from storage.models import JobKind

METRICS = ("pairwise_accuracy", "mean_margin")
DIRECTIONS = {"pairwise_accuracy": True, "mean_margin": True}


def reward_adapters(studio: Studio, spec: EvalSpec) -> list[str]:
    """The named adapters that are reward models (looked up as the person asking: another's is not found)."""
    found = []
    with studio.db.read() as session:
        for name in dict.fromkeys(spec.adapters):
            adapter = catalog.get_adapter_by_name(session, name.partition("@")[0]) if name != BASE_PANE else None
            if adapter is not None and is_reward_adapter(studio.absolute(adapter.path)):
                found.append(name)
    return found


def reward_eval_problems(studio: Studio, spec: EvalSpec, rewards: list[str]) -> tuple[str, list, dict, int,
                                                                                       list[Problem]]:
    """(base, panes, pins, rows, problems) of an evaluation of reward adapters: every problem at once."""
    problems = []
    others = [name for name in dict.fromkeys(spec.adapters) if name not in rewards and name != BASE_PANE]
    if others:
        problems.append(Problem(field="adapters", message=(
            f"{', '.join(map(repr, rewards))} score answers (reward models) but {', '.join(map(repr, others))} "
            f"generate: evaluate reward models apart from generating adapters")))
    if any("@" in name for name in rewards):
        problems.append(Problem(field="adapters", message="a reward model is evaluated as trained, not at a step"))
    if spec.judge.strip():
        problems.append(Problem(field="judge", message="reward models are scored on pairs, not judged: leave it empty"))
    panes, base_model = [], ""
    with studio.db.read() as session:
        adapters = [catalog.get_adapter_by_name(session, name.partition("@")[0]) for name in rewards]
    bases = sorted({a.base_model for a in adapters})
    if len(bases) > 1:
        problems.append(Problem(field="adapters", message=(
            f"the reward models are of different bases ({', '.join(bases)}); an evaluation compares one base's")))
    base_model = bases[0] if bases else ""
    for adapter in adapters:
        panes.append(Pane(adapter.name, studio.absolute(adapter.path)))
    pins, rows, set_problems = _pairs_set(studio, spec)
    pins["reward"] = True
    return base_model, panes, pins, rows, problems + set_problems


def _pairs_set(studio: Studio, spec: EvalSpec) -> tuple[dict, int, list[Problem]]:
    """(what the set pins, its row count, problems): preference pairs only."""
    if spec.source == "dataset":
        dataset = find_dataset(studio, spec.dataset.strip()) if spec.dataset.strip() else None
        if dataset is None:
            return {}, 0, [Problem(field="dataset", message=f"no dataset named '{spec.dataset}'; import it first")]
        if dataset.format != PREFERENCE:
            return {}, 0, [Problem(field="dataset", message=(
                f"a reward model is scored on preference pairs (prompt, chosen, rejected), but '{dataset.name}' is "
                f"a {dataset.format} dataset: choose a preference dataset"))]
        return {"dataset": {"id": dataset.id, "name": dataset.name, "sha256": dataset.sha256}}, dataset.rows, []
    if spec.source != "held_out":
        return {}, 0, [Problem(field="source", message=(
            "a reward model is scored on preference pairs: source 'dataset' (a preference dataset) or 'held_out' "
            "(a reward or preference job's held-out pairs)"))]
    if spec.train_job is None:
        return {}, 0, [Problem(field="train_job", message="name the training job whose held-out pairs to use")]
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, spec.train_job)
        kind, raw, pins = (job.kind, job.spec, jobs_repo.pinned(job)) if job else (None, None, {})
    if job is None or kind != JobKind.TRAIN:
        return {}, 0, [Problem(field="train_job", message=f"no training job with id {spec.train_job}")]
    train_spec = load_stored_spec(raw).spec
    if train_spec is None or train_spec.method not in PAIRED_METHODS:
        return {}, 0, [Problem(field="train_job", message=(
            f"job {spec.train_job} did not train on preference pairs; name a reward (or dpo, orpo, simpo) job"))]
    held = find_dataset(studio, train_spec.eval_dataset) if train_spec.eval_dataset else None
    dataset = find_dataset(studio, train_spec.dataset)
    count = held.rows if held else (split_sizes(dataset.rows, train_spec.eval_fraction or 0)[1] if dataset else 0)
    if count == 0:
        return {}, 0, [Problem(field="train_job", message=(
            f"job {spec.train_job} held out no pairs (eval_fraction 0 and no eval_dataset): the eval set is empty"))]
    return {"train_job": {"id": spec.train_job, **{k: v for k, v in pins.items()
                                                     if k in ("dataset", "eval_dataset")}}}, count, []


def reward_bases(base_path: str):
    """The reward adapters' resident bases (jobs.evaluate.resident): each variant loaded once as a sequence
    classifier, 4-bit as the adapters' spec says, every reward adapter attached to it by name."""
    from jobs.evaluate.resident import ResidentBases
    from jobs.training.reward import load_reward_base

    return ResidentBases(lambda pane: load_reward_base(base_path, pane.variant.spec(base_path)))


def pair_scores(bases, pane: Pane, records: list[dict], max_tokens: int, should_stop) -> list[tuple]:
    """(chosen score, rejected score) for each pair, by the reward adapter in `pane` active on its resident base
    (`bases`, from reward_bases). Conversations longer than `max_tokens` keep their last `max_tokens` tokens (the
    score is read at the last token). None when `should_stop()` asked to stop between pairs."""
    import torch
    from transformers import AutoTokenizer

    from jobs.training.reward import scores_last_token, with_pad_token

    tokenizer = with_pad_token(AutoTokenizer.from_pretrained(str(pane.adapter_dir)))
    scores = []
    with bases.active(pane) as model:
        scores_last_token(model, tokenizer)
        for record in records:
            if should_stop():
                return None
            pair = []
            for answer in ("chosen", "rejected"):
                ids = tokenizer.apply_chat_template([*record.get("prompt", []), *record[answer]], tokenize=True,
                                                    return_dict=True)["input_ids"][-max_tokens:]
                with torch.no_grad():
                    pair.append(float(model(input_ids=torch.tensor([ids], device=model.device)).logits[0, 0]))
            scores.append(tuple(pair))
    return scores


def summary(scores: list[tuple[float, float]]) -> dict[str, float]:
    """Pairwise accuracy (chosen strictly above rejected) and the mean margin, over all pairs."""
    if not scores:
        return {"pairwise_accuracy": 0.0, "mean_margin": 0.0}
    return {"pairwise_accuracy": sum(c > r for c, r in scores) / len(scores),
            "mean_margin": sum(c - r for c, r in scores) / len(scores)}


def results(spec: EvalSpec, base_model: str, panes: list[str], records: list[dict],
            scores: dict[str, list[tuple[float, float]]], rows_in_set: int) -> tuple[dict, list[dict]]:
    """(results.json, predictions.jsonl's lines), shaped as a generating evaluation's (a table of panes x metrics,
    the best per metric, rows sorted by how much the panes disagree), with each pair's scores."""
    from jobs.evaluate import metrics

    table = {pane: summary(scores[pane]) for pane in panes}
    per_row, predictions = [], []
    for index, record in enumerate(records):
        prompt = "\n\n".join(m["content"] for m in record.get("prompt", []))
        row_scores = {pane: {"chosen": scores[pane][index][0], "rejected": scores[pane][index][1],
                             "margin": scores[pane][index][0] - scores[pane][index][1]} for pane in panes}
        margins = [s["margin"] for s in row_scores.values()]
        per_row.append({"row": index, "prompt": prompt, "reference": record["chosen"][-1]["content"],
                        "rejected": record["rejected"][-1]["content"],
                        "answers": {pane: f"chosen {v['chosen']:.4g}, rejected {v['rejected']:.4g}"
                                    for pane, v in row_scores.items()}, "scores": row_scores,
                        "disagreement": max(margins) - min(margins) if margins else 0.0})
        predictions += [{"row": index, "prompt": prompt, "adapter": pane, **row_scores[pane]} for pane in panes]
    per_row.sort(key=lambda r: (-r["disagreement"], r["row"]))
    return ({"base_model": base_model, "panes": panes, "source": spec.source, "kind": "reward",
             "set": spec.dataset or f"job {spec.train_job} held-out pairs", "rows": len(records),
             "rows_in_set": rows_in_set, "settings": {"max_rows": spec.max_rows}, "metrics": table,
             "best": metrics.best_panes(table, DIRECTIONS), "directions": DIRECTIONS, "per_row": per_row},
            predictions)
