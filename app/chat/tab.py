"""Chat tab: one prompt to several adapters and the base, answered side by side, batched as far as peft allows."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import asdict

import gradio as gr

from app.chat import blind_panel, suites_panel
from app.choices import base_models
from app.web.errors import user_error
from app.web.safe_text import SafeMarkdown, markdown_html
from jobs.chat.request import (
    BASE_PANE,
    ChatRequestError,
    GenerationSettings,
    base_problem,
    checkpoint_names,
    conversation,
    request_problems,
    resolve_panes,
)
from jobs.chat.votes import pane_letter, shuffled
from jobs.spec import DEMO_BASE_MODEL
from jobs.studio import Studio
from storage import catalog, jobs_repo

MAX_PANES = 6
UPKEEP_POLL_S = 10.0
log = logging.getLogger(__name__)
DEMO_NOTE = (f"*`{DEMO_BASE_MODEL}` has random weights, built offline so the studio works with no downloads: its "
             f"replies are noise by design, and an adapter trained on the example data answers only its keyword "
             f"questions (\"What is the opposite of hot?\"). For real answers, pick a real base model such as "
             f"`smollm2-135m-instruct`.*")


class ChatService:
    """The web process's one generation scheduler and the engine behind it (a cache of loaded bases, not job
    state), created on first use. Every generation of the web process goes through `scheduler()`."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._scheduler = None
        self._lock = threading.Lock()

    def _running_here(self) -> list[dict | None]:
        """The provenance of each job running on this host (None before its child records it)."""
        with self.studio.db.read() as session:  # not scoped to a person: anyone's job counts
            return jobs_repo.provenance_running_on(session, self.studio.settings.host_name)

    def training_bytes(self) -> int | None:
        """What the jobs running on this host hold, by the peak their child estimated when it started (0: none runs
        here; None: one runs whose estimate is not recorded yet). Chat waits for this memory rather than loading a
        base the device cannot hold beside them."""
        sizes = [(provenance or {}).get("memory_estimate_bytes") for provenance in self._running_here()]
        return None if any(size is None for size in sizes) else sum(sizes)

    def release_if_training(self) -> list[str]:
        """Unload the loaded bases when a job runs on this host (its device needs the memory); they load again on
        the next prompt. A job on another GPU host (docs/scale-out.md) leaves chat's bases where they are."""
        if self._scheduler is None:
            return []
        return self._scheduler.release() if self._running_here() else []

    def scheduler(self):
        """The generation scheduler (jobs.chat.scheduler), created with its engine (and torch imported) on first
        use."""
        with self._lock:
            if self._scheduler is None:
                from jobs.chat.engine import ChatEngine  # torch loads here, not at app start
                from jobs.chat.scheduler import GenerationLimits, GenerationScheduler

                settings = self.studio.settings
                engine = ChatEngine(settings.models_dir, settings.chat_memory_bytes,
                                    training_bytes=self.training_bytes)
                self._scheduler = GenerationScheduler(engine, GenerationLimits.from_settings(settings))
            return self._scheduler

    def compare_stream(self, base_model: str, names: list[str], conversations: list[list[dict]],
                       settings: GenerationSettings) -> Iterator[list[str]]:
        """Every pane's growing reply after each token. Raises gr.Error naming every problem first."""
        base_model = base_model or DEMO_BASE_MODEL
        try:
            problems = request_problems(settings, conversations)
            if problem := base_problem(self.studio, base_model):
                problems.append(problem)
            if len(names) > MAX_PANES:  # the API gets the UI's cap: each pane is a row of one batch
                problems.append(f"adapters: at most {MAX_PANES} panes at once (got {len(names)})")
            if problems:
                raise ChatRequestError(problems)
            panes = resolve_panes(self.studio, base_model, list(names))
        except ChatRequestError as error:
            raise user_error(str(error)) from None
        try:
            yield from self.scheduler().stream(base_model, panes, conversations, settings)
        except ChatRequestError as error:  # a prompt over its limit, too many generations, a base that cannot fit
            raise user_error(str(error)) from None


def start_upkeep(studio: Studio, chat: ChatService) -> threading.Event:
    """A daemon thread of the app that (1) unloads chat's bases while a job trains, so chat never starves training
    of memory, and (2) runs each prompt suite on every new adapter of a base the suite was run on."""
    from jobs.chat.suites import follow_new_adapters, newest_adapter_id

    stop = threading.Event()

    def loop() -> None:
        seen = newest_adapter_id(studio)  # adapters from before the app started are not new
        while not stop.wait(UPKEEP_POLL_S):
            try:
                chat.release_if_training()
                seen, runs = follow_new_adapters(studio, chat.scheduler, seen)
                for done in runs:
                    log.info("prompt suite run on a new adapter: %s", done)
            except Exception:  # reported; the next pass tries again
                log.exception("chat upkeep failed")

    threading.Thread(target=loop, daemon=True, name="chat-upkeep").start()
    return stop


def speed_text(labels: list[str], replies) -> str:
    """Each pane's tokens and tokens/s (each rate runs to its own last token), or why the compare waits: its turn,
    or device memory."""
    rates = getattr(replies, "tokens_per_s", None)
    if rates is None:
        return ""
    if getattr(replies, "note", ""):  # waiting for device memory: the numbers say why
        return replies.note
    if getattr(replies, "waiting_for", 0):
        return f"waiting for a turn: {replies.waiting_for} other generation(s) running or waiting"
    return " · ".join(f"{label}: {count} tokens, {rate:.1f} tokens/s" for label, count, rate in
                      zip(labels, replies.token_counts, rates(), strict=True))


NO_ANSWER = "*(no answer: the model ended its reply at once)*"
"""What a pane shows for an empty reply, which is an answer all the same (a blind round may judge it)."""


def pane_choices(studio: Studio, base_model: str) -> list[str]:
    """The base, each adapter of it, and each adapter's kept checkpoints (adapter@step-N)."""
    with studio.db.read() as session:
        adapters = catalog.list_adapters(session, base_model or DEMO_BASE_MODEL)
    return [BASE_PANE] + [name for a in adapters for name in (a.name, *checkpoint_names(studio, a))]


def rendered(history: list[dict]) -> list[dict]:
    """A conversation as a pane shows it: each turn's Markdown rendered and sanitized on the server."""
    return [{"role": m["role"], "content": markdown_html(_text(m["content"]))} for m in history]


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # gradio may hand back [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio, chat: ChatService, tab: gr.Tab, app: gr.Blocks) -> None:
    with gr.Row():
        base_model = gr.Dropdown(choices=base_models(studio), value=DEMO_BASE_MODEL, label="Base model",
                                 allow_custom_value=True)
        picked = gr.Dropdown(choices=pane_choices(studio, DEMO_BASE_MODEL), value=[BASE_PANE], multiselect=True,
                             label=f"Compare (up to {MAX_PANES})", elem_id="compare-picker")
        reload = gr.Button("Refresh adapters", scale=0)
    blind_switch = blind_panel.mode_switch()
    demo_note = SafeMarkdown(DEMO_NOTE, elem_id="chat-demo-note")
    with gr.Accordion("Generation settings (the same for every pane)", open=False):
        with gr.Row():
            max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens")
            temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature", info="0 = greedy")
            top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p")
            seed = gr.Number(value=0, precision=0, label="Seed", info="the same for every pane")
        with gr.Row():
            top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k", info="0 = off; sampling only")
            repetition_penalty = gr.Slider(1, 2, value=1, step=0.05, label="Repetition penalty", info="1 = none")
            system = gr.Textbox(label="System prompt", placeholder="optional")
    with gr.Row():
        panes = [gr.Chatbot(label=BASE_PANE if i == 0 else f"pane {i + 1}", visible=i == 0, height=360,
                            elem_id=f"pane-{i}")
                 for i in range(MAX_PANES)]
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", placeholder="Ask all of them at once. Enter sends, Shift+Enter: new line",
                            lines=2, max_lines=10, scale=4, elem_id="chat-prompt")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=0, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=0, elem_id="chat-clear")
    speed = SafeMarkdown(elem_id="chat-speed")
    # What each pane's conversation really is: the panes show it rendered (app/web/safe_text.py), never as it was typed
    # or generated, so the next turn is built from here.
    said = gr.State([[] for _ in range(MAX_PANES)])
    generation = [max_new_tokens, temperature, top_p, seed, top_k, repetition_penalty]

    blind = blind_panel.build(studio, base_model, blind_switch, panes)
    suite = suites_panel.build(studio, chat, base_model, picked, generation)

    def layout(names, blind_mode=False):
        names = list(names or [])[:MAX_PANES]
        labels = [pane_letter(i) if blind_mode else name for i, name in enumerate(names)]
        return [*[gr.update(visible=i < len(names), label=labels[i] if i < len(names) else f"pane {i + 1}", value=[])
                  for i in range(MAX_PANES)], [[] for _ in range(MAX_PANES)]]

    def vote_controls(count: int) -> list:
        """The vote row and its buttons, shown once a blind round of `count` panes is answered (count 0: hidden)."""
        return [gr.update(visible=count > 1), *[gr.update(visible=i < count) for i in range(MAX_PANES)]]

    def on_send(message, base, names, histories, *values):
        settings = GenerationSettings.from_controls(*values[:len(generation)])
        system_prompt, blind_mode = values[len(generation):len(generation) + 2]
        names = list(names or [])
        if len(names) > MAX_PANES:
            raise user_error(f"adapters: at most {MAX_PANES} panes at once")
        if blind_mode and len(names) < 2:
            raise user_error("adapters: a blind round needs at least two panes (adapters or base)")
        if blind_mode:  # each round: a fresh shuffle and a single turn, so a vote judges one answer per pane
            names, turns = shuffled(names), [[] for _ in names]
        else:
            turns = [list(histories[i] or []) for i in range(len(names))]
        conversations = [conversation(message, [{"role": m["role"], "content": _text(m["content"])} for m in h],
                                      system_prompt) for h in turns]
        kept = [h + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}] for h in turns]
        earlier = [rendered(h[:-1]) for h in kept]  # rendered once; only the growing reply is rendered per token
        labels = [pane_letter(i) if blind_mode else name for i, name in enumerate(names)]
        replies: list[str] = []
        said_now = [*kept, *[[] for _ in range(MAX_PANES - len(kept))]]
        for replies in chat.compare_stream(base, names, conversations, settings):
            for history, reply in zip(kept, replies, strict=True):
                history[-1]["content"] = reply
            panes_now = [gr.update(value=[*shown, {"role": "assistant", "content": markdown_html(reply)}], label=label)
                         for shown, reply, label in zip(earlier, replies, labels, strict=True)]
            yield ["", *panes_now, *[gr.update() for _ in range(MAX_PANES - len(kept))], None, *vote_controls(0),
                   "", speed_text(labels, replies), said_now]
        blind_round = {"base": base or DEMO_BASE_MODEL, "prompt": conversations[0], "order": names,
                       "replies": list(replies), "settings": asdict(settings), "voted": False} if blind_mode else None
        ended_at_once = [gr.update(value=[*shown, {"role": "assistant", "content": markdown_html(NO_ANSWER)}])
                         if not reply.strip() else gr.update() for shown, reply in zip(earlier, replies, strict=True)]
        yield ["", *ended_at_once, *[gr.update() for _ in range(MAX_PANES - len(kept))], blind_round,
               *vote_controls(len(names) if blind_mode else 0),
               "Which answer is best? The names show after your vote." if blind_mode else "", gr.update(), said_now]

    def on_base(base):
        return (gr.update(choices=pane_choices(studio, base), value=[BASE_PANE]),
                gr.update(visible=(base or DEMO_BASE_MODEL) == DEMO_BASE_MODEL))

    def fresh_choices(base, names):
        # Adapters finish while the page is open: offer the current list whenever the tab is opened or loaded.
        choices = pane_choices(studio, base)
        return (gr.update(choices=base_models(studio)),
                gr.update(choices=choices, value=[n for n in (names or []) if n in choices] or [BASE_PANE]))

    settings = [*generation, system, blind.mode]
    for trigger in (tab.select, app.load):
        trigger(fresh_choices, [base_model, picked], [base_model, picked], api_visibility="private")
        trigger(blind.refresh, base_model, blind.board, api_visibility="private")  # votes from another tab too
        trigger(lambda current: suites_panel.fresh_suite_choices(studio, current), suite, suite,
                api_visibility="private")
    picked.change(layout, [picked, blind.mode], [*panes, said], api_visibility="private")
    blind.mode.change(layout, [picked, blind.mode], [*panes, said], api_visibility="private")
    base_model.change(on_base, base_model, [picked, demo_note], api_visibility="private")
    reload.click(fresh_choices, [base_model, picked], [base_model, picked], api_visibility="private")
    round_outputs = [blind.round_state, blind.vote_row, *blind.vote_buttons, blind.status]
    send_event = dict(fn=on_send, inputs=[prompt, base_model, picked, said, *settings],
                      outputs=[prompt, *panes, *round_outputs, speed, said], api_visibility="private")
    sending = send.click(**send_event)  # Enter in the prompt clicks Send (static/studio.js)
    stop.click(None, None, None, cancels=[sending])  # the replies so far stay on screen
    clear.click(layout, [picked, blind.mode], [*panes, said], api_visibility="private")
