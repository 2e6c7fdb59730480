"""Blind A/B in the Chat tab: the vote buttons, the reveal, the leaderboard of the base model, and the votes turned
into a dataset and a preference job (DPO, ORPO, SimPO on pairs; KTO on labelled answers). The rounds themselves are
sent by the chat tab (it owns the panes)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from app.web.errors import user_error
from app.web.safe_text import SafeMarkdown
from jobs.chat.request import BASE_PANE, ChatRequestError
from jobs.chat.votes import NoPreferences, Verdict, base_leaderboard, export_votes, pane_letter, record_vote
from jobs.data.errors import DatasetError
from jobs.data.formats import PREFERENCE, UNPAIRED
from jobs.spec import DEMO_BASE_MODEL, PREFERENCE_METHODS, UNPAIRED_METHODS, SpecError
from jobs.studio import Studio
from jobs.submit import submit_job
from storage import catalog

LEADERBOARD_COLUMNS = ["rank", "adapter", "score", "win rate", "wins", "ties", "rounds"]
DPO_STEPS = 50
DPO_LEARNING_RATE = 5e-5  # LoRA preference tuning: an order below SFT's, as TRL's DPO examples use


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def vote(studio: Studio, blind_round: dict | None, outcome: str, best: int | None = None) -> str:
    """Record the verdict on the round just answered and return what it revealed."""
    if not blind_round or blind_round.get("voted"):
        raise user_error("vote: send a prompt in blind mode first (each round takes one vote)")
    answers = [{"adapter": name, "reply": reply} for name, reply in zip(blind_round["order"],
                                                                          blind_round["replies"], strict=True)]
    try:
        record_vote(studio, blind_round["base"], blind_round["prompt"], answers, Verdict(outcome, best),
                    blind_round["settings"])
    except ChatRequestError as error:
        raise user_error(str(error)) from None
    blind_round["voted"] = True
    revealed = ", ".join(f"{pane_letter(i)} was **{name}**" for i, name in enumerate(blind_round["order"]))
    verdict = {"best": f"{pane_letter(best or 0)} best", "tie": "a tie", "all_bad": "all bad"}[outcome]
    return f"Vote recorded ({verdict}): {revealed}."


def leaderboard_frame(studio: Studio, base_model: str) -> tuple[pd.DataFrame, str]:
    standings, count = base_leaderboard(studio, base_model or DEMO_BASE_MODEL)
    rows = [[rank, s.name, round(s.score), f"{s.win_rate:.0%}", s.wins, s.ties, s.rounds]
            for rank, s in enumerate(standings, start=1)]
    note = (f"{count} blind vote{'s' if count != 1 else ''} on {base_model}. Score: Bradley–Terry strength on the "
            f"Elo scale (1000 is even with a neutral opponent; +400 is 10-to-1 odds)." if count else
            f"No blind votes on {base_model} yet.")
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS), note


def leader(studio: Studio, base_model: str) -> str | None:
    """The adapter (not the base) with the best score: where a run from the votes starts by default."""
    standings, _ = base_leaderboard(studio, base_model or DEMO_BASE_MODEL)
    return next((s.name for s in standings if s.name != BASE_PANE), None)


def export_and_train(studio: Studio, base_model: str, dataset_name: str, start_from: str, steps: int,
                     train: bool, method: str = "dpo") -> str:
    """Store the votes as the data `method` trains on (pairs for dpo, orpo, simpo, reward; labelled answers for kto);
    with `train`, queue a job of that method on it from `start_from`."""
    base_model = base_model or DEMO_BASE_MODEL
    method = method or "dpo"
    if method not in PREFERENCE_METHODS:
        raise user_error(f"method: one of {', '.join(PREFERENCE_METHODS)} (got {method!r})")
    shape = UNPAIRED if method in UNPAIRED_METHODS else PREFERENCE
    try:
        imported = export_votes(studio, base_model, (dataset_name or "").strip(), shape)
    except (NoPreferences, DatasetError) as error:
        raise user_error(str(error)) from None
    message = imported.message(dataset_name)
    if not train:
        return f"{message[0].upper()}{message[1:]}."
    spec = {"method": method, "base_model": base_model, "dataset": imported.dataset.name,
            "init_adapter": "" if start_from in (None, "", BASE_PANE) else start_from, "max_steps": int(steps),
            "learning_rate": DPO_LEARNING_RATE, "eval_fraction": 0, "sample_prompts": 0, "batch_size": 2}
    try:
        job_id = submit_job(studio, spec)
    except SpecError as error:
        raise user_error(error.as_text()) from None
    return (f"{message[0].upper()}{message[1:]}. Queued {method.upper()} job {job_id} on it, starting from "
            f"{spec['init_adapter'] or 'a new adapter'}: follow it in the Runs tab.")


def start_choices(studio: Studio, base_model: str) -> list[str]:
    with studio.db.read() as session:
        return [BASE_PANE] + [a.name for a in catalog.list_adapters(session, base_model or DEMO_BASE_MODEL)]


# --- layout -------------------------------------------------------------------------------------------------
@dataclass
class BlindPanel:
    """What the chat tab wires: the mode switch, the round state, and the outputs a new round resets."""

    mode: gr.Checkbox
    round_state: gr.State
    vote_row: gr.Row
    vote_buttons: list[gr.Button]
    status: SafeMarkdown
    refresh: object
    """base model -> the leaderboard's outputs (`board`)."""
    board: list


def mode_switch() -> gr.Checkbox:
    return gr.Checkbox(False, label="Blind A/B: names hidden, order shuffled for each prompt, one vote per round",
                       elem_id="blind-mode")


def build(studio: Studio, base_model: gr.Dropdown, mode: gr.Checkbox, panes: list[gr.Chatbot]) -> BlindPanel:
    """The vote row, the reveal and the leaderboard, placed under the panes; `mode` sits by the pane picker."""
    max_panes = len(panes)
    round_state = gr.State(None)
    with gr.Row(visible=False) as vote_row:
        buttons = [gr.Button(f"{pane_letter(i)} is best", visible=False, elem_id=f"vote-{pane_letter(i)}")
                   for i in range(max_panes)]
        tie = gr.Button("Tie", elem_id="vote-tie")
        all_bad = gr.Button("All bad", elem_id="vote-all-bad")
    status = SafeMarkdown(elem_id="blind-status")
    with gr.Accordion("Leaderboard and preference tuning from the votes", open=False):
        note = SafeMarkdown(elem_id="leaderboard-note")
        table = gr.Dataframe(pd.DataFrame(columns=LEADERBOARD_COLUMNS), interactive=False, elem_id="leaderboard")
        with gr.Row():
            dataset_name = gr.Textbox("votes", label="Preference dataset name", scale=2, elem_id="votes-name")
            method = gr.Dropdown(list(PREFERENCE_METHODS), value="dpo", label="Train with", scale=1,
                                 elem_id="votes-method", info=(
                                     "dpo, orpo, simpo, reward (a reward model, from a new adapter): the votes as "
                                     "pairs (winner over each other answer); kto: "
                                     "winners desirable, every answer of an all-bad vote undesirable"))
            start_from = gr.Dropdown([BASE_PANE], value=BASE_PANE, label="Start from", scale=2,
                                     elem_id="dpo-start")
            steps = gr.Number(DPO_STEPS, precision=0, minimum=1, label="Steps", scale=1)
        with gr.Row():
            export_button = gr.Button("Export votes as a dataset", scale=1)
            train_button = gr.Button("Export votes and train", variant="primary", scale=1, elem_id="dpo-submit")
        dpo_status = SafeMarkdown(elem_id="dpo-status")

    def refresh(base):
        frame, text = leaderboard_frame(studio, base)
        choices = start_choices(studio, base)
        best = leader(studio, base)
        return frame, text, gr.update(choices=choices, value=best if best in choices else BASE_PANE)

    def on_vote(outcome, best, blind_round, base):
        text = vote(studio, blind_round, outcome, best)
        order = blind_round["order"]
        labels = [gr.update(label=f"{pane_letter(i)}: {order[i]}") if i < len(order) else gr.update()
                  for i in range(max_panes)]  # the reveal
        return (text, blind_round, gr.update(visible=False), *refresh(base), *labels)

    private = dict(api_visibility="private")
    board = [table, note, start_from]
    vote_outputs = [status, round_state, vote_row, *board, *panes]
    for index, button in enumerate(buttons):
        button.click(lambda r, b, i=index: on_vote("best", i, r, b), [round_state, base_model], vote_outputs,
                     **private)
    tie.click(lambda r, b: on_vote("tie", None, r, b), [round_state, base_model], vote_outputs, **private)
    all_bad.click(lambda r, b: on_vote("all_bad", None, r, b), [round_state, base_model], vote_outputs, **private)
    base_model.change(refresh, base_model, board, **private)
    mode.change(refresh, base_model, board, **private)
    export_button.click(lambda b, n, s, k, m: export_and_train(studio, b, n, s, k, False, m),
                        [base_model, dataset_name, start_from, steps, method], dpo_status, **private)
    train_button.click(lambda b, n, s, k, m: export_and_train(studio, b, n, s, k, True, m),
                       [base_model, dataset_name, start_from, steps, method], dpo_status, **private)
    return BlindPanel(mode=mode, round_state=round_state, vote_row=vote_row, vote_buttons=buttons, status=status,
                      refresh=refresh, board=board)
