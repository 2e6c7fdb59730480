"""Prompt suites: a saved set of prompts, each with an optional reference answer, run as a batch against chosen
panes (adapters, checkpoints, the base). Each prompt is one batched generate over all panes, and, with a
reference, one batched forward pass for each pane's mean log-likelihood of it. Results are a grid of (prompt,
pane) cells in the ledger; a re-run replaces its cells, so a suite can follow a new adapter of the same base.

The generation scheduler is handed in (jobs.chat.scheduler: every generation goes through it, a suite's prompts
one at a time, so a long suite takes turns with everyone's chats): this module itself imports no torch."""

from __future__ import annotations

import difflib
import html
from dataclasses import asdict, dataclass
from pathlib import Path

from jobs.chat.request import BASE_PANE, STEP_MARK, ChatRequestError, GenerationSettings, conversation
from jobs.spec import name_problem
from jobs.studio import Studio
from storage import catalog, suites_repo
from storage.access import LOCAL_OWNER, Person, acting_as, everyone
from storage.models import PromptSuite

REFERENCE_MARK = "=>"
MAX_PROMPTS = 200
MAX_PROMPT_CHARS = 4000


def parse_suite_text(text: str) -> list[dict]:
    """One prompt per line, `prompt => reference answer` when there is one. Raises ChatRequestError listing every
    bad line."""
    prompts, problems = [], []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        prompt, mark, reference = line.partition(REFERENCE_MARK)
        if not prompt.strip():
            problems.append(f"prompts: line {number} has no prompt before '{REFERENCE_MARK}'")
        elif len(line) > MAX_PROMPT_CHARS:
            problems.append(f"prompts: line {number} is longer than {MAX_PROMPT_CHARS} characters")
        elif mark and not reference.strip():
            problems.append(f"prompts: line {number} has '{REFERENCE_MARK}' but no reference answer after it")
        else:
            prompts.append({"prompt": prompt.strip(), "reference": reference.strip() or None})
    if not prompts and not problems:
        problems.append(f"prompts: write at least one prompt (one per line; 'prompt {REFERENCE_MARK} reference')")
    if len(prompts) > MAX_PROMPTS:
        problems.append(f"prompts: at most {MAX_PROMPTS} prompts in a suite (got {len(prompts)})")
    if problems:
        raise ChatRequestError(problems)
    return prompts


def save_suite(studio: Studio, name: str, prompts: list[dict]) -> PromptSuite:
    """Create the suite, or replace its prompts (and drop its results, which answered other prompts)."""
    name = (name or "").strip()
    if problem := name_problem(name):
        raise ChatRequestError([f"name: {problem}"])
    with studio.db.write() as session:
        suite = suites_repo.get_suite(session, name)
        if suite is None:
            with everyone():  # suite names are unique across everyone's
                if suites_repo.get_suite(session, name) is not None:
                    raise ChatRequestError([f"name: a prompt suite is already named '{name}'"])
            suite = suites_repo.add_suite(session, name, prompts)
        elif suite.prompts != prompts:
            suites_repo.replace_prompts(session, suite, prompts)
        return suite


def _suite(studio: Studio, name: str) -> PromptSuite:
    with studio.db.read() as session:
        suite = suites_repo.get_suite(session, name)
    if suite is None:
        raise ChatRequestError([f"suite: no prompt suite named '{name}'"])
    return suite


def run_suite(studio: Studio, scheduler, name: str, base_model: str, panes: list[tuple[str, Path | None]],
              settings: GenerationSettings) -> int:
    """Answer every prompt with every pane (one batched generate per prompt) and score each reference; store
    one cell per (prompt, pane). Returns the number of cells written."""
    suite = _suite(studio, name)
    owners = _adapter_ids(studio, base_model)
    names = [pane for pane, _ in panes]
    cells = 0
    for index, item in enumerate(suite.prompts):
        prompt = conversation(item["prompt"])
        replies = scheduler.compare(base_model, panes, [prompt] * len(panes), settings)
        logliks = (scheduler.reference_logliks(base_model, panes, prompt, item["reference"]) if item["reference"]
                   else [None] * len(panes))
        with studio.db.write() as session:
            for pane, reply, loglik in zip(names, replies, logliks, strict=True):
                suites_repo.put_result(session, suite.id, base_model, pane, index, reply=reply,
                                       reference_loglik=loglik, settings=asdict(settings),
                                       adapter_id=owners.get(pane.partition(STEP_MARK)[0]))
                cells += 1
    return cells


def _adapter_ids(studio: Studio, base_model: str) -> dict[str, int]:
    with studio.db.read() as session:
        return {a.name: a.id for a in catalog.list_adapters(session, base_model)}


@dataclass(frozen=True)
class Grid:
    prompts: list[dict]
    panes: list[str]
    replies: dict[tuple[int, str], str]
    logliks: dict[tuple[int, str], float | None]

    def mean_loglik(self, pane: str) -> float | None:
        scores = [self.logliks.get((i, pane)) for i in range(len(self.prompts))]
        scores = [s for s in scores if s is not None]
        return sum(scores) / len(scores) if scores else None


def suite_grid(studio: Studio, name: str, base_model: str) -> Grid:
    suite = _suite(studio, name)
    with studio.db.read() as session:
        results = suites_repo.results_for(session, suite.id, base_model)
    panes = sorted({r.pane for r in results}, key=lambda p: (p != BASE_PANE, p))
    return Grid(prompts=suite.prompts, panes=panes,
                replies={(r.prompt_index, r.pane): r.reply for r in results},
                logliks={(r.prompt_index, r.pane): r.reference_loglik for r in results})


def diff_html(grid: Grid, before: str, after: str) -> str:
    """Each prompt's answer from `before` and from `after`, words removed struck through and words added
    highlighted; unchanged answers are said to be unchanged."""
    blocks = []
    for index, item in enumerate(grid.prompts):
        old, new = grid.replies.get((index, before)), grid.replies.get((index, after))
        if old is None or new is None:
            continue
        head = f"<h4>{index + 1}. {html.escape(item['prompt'])}</h4>"
        if old == new:
            blocks.append(f"{head}<p><i>unchanged</i>: {html.escape(new)}</p>")
            continue
        words = []
        matcher = difflib.SequenceMatcher(a=old.split(), b=new.split())
        for op, a0, a1, b0, b1 in matcher.get_opcodes():
            if op in ("delete", "replace"):
                words.append(f'<del class="removed">{html.escape(" ".join(old.split()[a0:a1]))}</del>')
            if op in ("insert", "replace"):
                words.append(f'<ins class="added">{html.escape(" ".join(new.split()[b0:b1]))}</ins>')
            if op == "equal":
                words.append(html.escape(" ".join(old.split()[a0:a1])))
        blocks.append(f"{head}<p>{' '.join(words)}</p>")
    return "".join(blocks) or f"<p>No prompt has answers from both {html.escape(before)} and {html.escape(after)}.</p>"


def suites_to_follow(studio: Studio, base_model: str) -> list[str]:
    """The suites already run on this base: a new adapter of it is run on them too."""
    with studio.db.read() as session:
        ids = set(suites_repo.suites_run_on(session, base_model))
        return [s.name for s in suites_repo.list_suites(session) if s.id in ids]


def last_settings(studio: Studio, name: str, base_model: str) -> GenerationSettings:
    """The settings the suite last ran with on this base (a follow-up run answers the same way)."""
    suite = _suite(studio, name)
    with studio.db.read() as session:
        results = suites_repo.results_for(session, suite.id, base_model)
    newest = max(results, key=lambda r: r.id, default=None)
    return GenerationSettings(**newest.settings) if newest and newest.settings else GenerationSettings()


def newest_adapter_id(studio: Studio) -> int:
    with studio.db.read() as session:
        return max((a.id for a in catalog.list_adapters(session)), default=0)


def follow_new_adapters(studio: Studio, scheduler_of, after_id: int) -> tuple[int, list[str]]:
    """Run every suite already run on a base on each adapter of that base registered after `after_id`;
    `scheduler_of()` gives the generation scheduler, asked for only when there is a suite to run (it loads torch).
    Returns (the newest adapter id seen, "suite: adapter" for each run)."""
    with studio.db.read() as session:
        fresh = sorted((a for a in catalog.list_adapters(session) if a.id > after_id), key=lambda a: a.id)
    done = []
    for adapter in fresh:
        with acting_as(Person(adapter.owner or LOCAL_OWNER)):  # a suite follows only its owner's adapters
            for name in suites_to_follow(studio, adapter.base_model):
                pane = [(adapter.name, studio.absolute(adapter.path))]
                run_suite(studio, scheduler_of(), name, adapter.base_model, pane,
                          last_settings(studio, name, adapter.base_model))
                done.append(f"{name}: {adapter.name}")
    return max([after_id, *(a.id for a in fresh)]), done
