"""Eval sets as rows: each a prompt (a conversation ending with the user's turn) and a reference answer, or None for
batch prediction. A stored dataset's normalized rows (jobs.data.formats) become rows here: a chat row's last assistant
turn is its reference and what comes before it the prompt; a preference row's prompt with its chosen answer. Raw text
has no prompt to answer and is refused. Suites' prompts are rows as they are."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalRow:
    prompt: list[dict]
    reference: str | None

    def prompt_text(self) -> str:
        """The prompt as one text (what the predictions and the per-row view show): its last user turn, with the
        turns before it when there are some."""
        return "\n\n".join(f"{m['role']}: {m['content']}" if len(self.prompt) > 1 else m["content"]
                           for m in self.prompt)


def _last_assistant_text(messages: list[dict]) -> str | None:
    return messages[-1]["content"] if messages and messages[-1].get("role") == "assistant" else None


def row_from_record(record: dict) -> tuple[EvalRow | None, str | None]:
    """(the row, why the record cannot be one)."""
    if "text" in record and "messages" not in record:
        return None, "raw text has no prompt to answer; evaluate on chat, instruction or completion rows"
    if "label" in record:  # an unpaired answer: the prompt, answered as `completion` when that was desirable
        prompt = record.get("prompt") or []
        reference = _last_assistant_text(record["completion"]) if record["label"] else None
        return (EvalRow(prompt, reference or None), None) if prompt else (None, "has no prompt")
    if "chosen" in record:  # a preference pair: the prompt, answered as `chosen`
        prompt = record.get("prompt") or []
        return (EvalRow(prompt, _last_assistant_text(record["chosen"]) or None), None) if prompt else (
            None, "has no prompt")
    if "reference" in record and "messages" not in record:  # a prompt/reference row (GRPO's)
        prompt = record.get("prompt") or []
        return (EvalRow(prompt, record["reference"]), None) if prompt else (None, "has no prompt")
    messages = record.get("messages") or []
    if messages and messages[-1].get("role") == "assistant":
        prompt, reference = messages[:-1], messages[-1]["content"]
    else:
        prompt, reference = messages, None  # no answer yet: batch prediction
    if not any(m.get("role") == "user" for m in prompt):
        return None, "has no user turn to answer"
    return EvalRow(prompt, reference), None


def rows_from_records(records: list[dict], where: str) -> tuple[list[EvalRow], list[str]]:
    """Every record as a row; problems name the first few bad rows (`where`: the set, in words)."""
    rows, bad = [], []
    for number, record in enumerate(records, start=1):
        row, problem = row_from_record(record)
        if row is None:
            bad.append(f"row {number} {problem}" if problem.startswith("has") else problem)
        else:
            rows.append(row)
    if bad and "raw text" in bad[0]:
        return [], [f"{where} is raw text: {bad[0]}"]
    problems = [f"{where}: {len(bad)} row(s) cannot be evaluated: " + "; ".join(bad[:3])] if bad else []
    return rows, problems


def suite_rows(prompts: list[dict]) -> list[EvalRow]:
    return [EvalRow([{"role": "user", "content": item["prompt"]}], item.get("reference")) for item in prompts]


def held_out_records(rows: list[dict], train_spec, tokenizer, held_out: list[dict] | None) -> list[dict]:
    """The rows a training job evaluated on, rebuilt as training split them: its validation dataset, or the same
    seeded split of the same selected rows (jobs.training.prepare). Needs the base's tokenizer when the job dropped
    over-long rows, so this runs in the eval job, not at submit."""
    from jobs.training.prepare import select_rows, split_dataset

    if held_out:
        return held_out
    _, eval_part = split_dataset(select_rows(rows, train_spec, tokenizer), train_spec.eval_fraction, train_spec.seed)
    return list(eval_part) if eval_part is not None else []
