"""Chat tab: one prompt to several adapters and the base, answered side by side by ONE batched generate."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import gradio as gr

from app.choices import base_models
from app.errors import user_error
from jobs.chat.request import (
    BASE_PANE,
    ChatRequestError,
    GenerationSettings,
    conversation,
    request_problems,
    resolve_panes,
)
from jobs.spec import DEMO_BASE_MODEL
from jobs.studio import Studio
from storage import catalog

MAX_PANES = 6
DEMO_NOTE = (f"*`{DEMO_BASE_MODEL}` has random weights, built offline so the studio works with no downloads: its "
             f"replies are noise by design, and an adapter trained on the example data answers only its keyword "
             f"questions (\"What is the opposite of hot?\"). For real answers, pick a real base model such as "
             f"`smollm2-135m-instruct`.*")


class ChatService:
    """The web process's one chat engine (a cache of loaded bases, not job state), created on first use."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._engine = None
        self._lock = threading.Lock()

    def _get_engine(self):
        with self._lock:
            if self._engine is None:
                from jobs.chat.engine import ChatEngine  # torch loads here, not at app start

                self._engine = ChatEngine(self.studio.settings.models_dir)
            return self._engine

    def compare_stream(self, base_model: str, names: list[str], conversations: list[list[dict]],
                       settings: GenerationSettings) -> Iterator[list[str]]:
        """Every pane's growing reply after each token. Raises gr.Error naming every problem first."""
        base_model = base_model or DEMO_BASE_MODEL
        try:
            problems = request_problems(settings, conversations)
            if problems:
                raise ChatRequestError(problems)
            panes = resolve_panes(self.studio, base_model, list(names))
        except ChatRequestError as error:
            raise user_error(str(error)) from None
        yield from self._get_engine().stream(base_model, panes, conversations, settings)


def generation_settings(max_new_tokens, temperature, top_p, seed) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                              top_p=float(top_p), seed=int(seed))


def pane_choices(studio: Studio, base_model: str) -> list[str]:
    with studio.db.read() as session:
        adapters = catalog.list_adapters(session, base_model or DEMO_BASE_MODEL)
    return [BASE_PANE] + [a.name for a in adapters]


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
    demo_note = gr.Markdown(DEMO_NOTE, elem_id="chat-demo-note")
    with gr.Accordion("Generation settings (the same for every pane)", open=False), gr.Row():
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens")
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature", info="0 = greedy")
        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p")
        seed = gr.Number(value=0, precision=0, label="Seed", info="the same for every pane")
        system = gr.Textbox(label="System prompt", placeholder="optional")
    with gr.Row():
        panes = [gr.Chatbot(label=BASE_PANE if i == 0 else f"pane {i + 1}", visible=i == 0, height=360,
                            elem_id=f"pane-{i}")
                 for i in range(MAX_PANES)]
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", placeholder="Ask all of them at once. Enter sends, Shift+Enter: new line",
                            lines=2, max_lines=10, scale=4, elem_id="chat-prompt")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        clear = gr.Button("Clear", scale=0)

    def layout(names):
        names = list(names or [])[:MAX_PANES]
        return [gr.update(visible=i < len(names), label=names[i] if i < len(names) else f"pane {i + 1}", value=[])
                for i in range(MAX_PANES)]

    def on_send(message, base, names, new_tokens, temp, nucleus, seed_value, system_prompt, *histories):
        names = list(names or [])
        if len(names) > MAX_PANES:
            raise user_error(f"adapters: at most {MAX_PANES} panes at once")
        turns = [list(histories[i] or []) for i in range(len(names))]
        conversations = [conversation(message, [{"role": m["role"], "content": _text(m["content"])} for m in h],
                                      system_prompt) for h in turns]
        shown = [h + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}] for h in turns]
        settings = generation_settings(new_tokens, temp, nucleus, seed_value)
        for replies in chat.compare_stream(base, names, conversations, settings):
            for history, reply in zip(shown, replies, strict=True):
                history[-1]["content"] = reply
            yield ["", *shown, *[gr.update() for _ in range(MAX_PANES - len(shown))]]

    def on_base(base):
        return (gr.update(choices=pane_choices(studio, base), value=[BASE_PANE]),
                gr.update(visible=(base or DEMO_BASE_MODEL) == DEMO_BASE_MODEL))

    def fresh_choices(base, names):
        # Adapters finish while the page is open: offer the current list whenever the tab is opened or loaded.
        choices = pane_choices(studio, base)
        return (gr.update(choices=base_models(studio)),
                gr.update(choices=choices, value=[n for n in (names or []) if n in choices] or [BASE_PANE]))

    settings = [max_new_tokens, temperature, top_p, seed, system]
    for trigger in (tab.select, app.load):
        trigger(fresh_choices, [base_model, picked], [base_model, picked], api_visibility="private")
    picked.change(layout, picked, panes, api_visibility="private")
    base_model.change(on_base, base_model, [picked, demo_note], api_visibility="private")
    reload.click(fresh_choices, [base_model, picked], [base_model, picked], api_visibility="private")
    send_event = dict(fn=on_send, inputs=[prompt, base_model, picked, *settings, *panes], outputs=[prompt, *panes],
                      api_visibility="private")
    send.click(**send_event)  # Enter in the prompt clicks Send (static/studio.js)
    clear.click(layout, picked, panes, api_visibility="private")
