"""One builder for the Account tab's per-person credential panels (the hub token, the W&B API key): a password box
that is cleared once saved (never shown back), Save and Forget buttons, and the account summary refreshed after
each (it names the stored credential by its hint only). The store and its checks are jobs/credentials.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from jobs.studio import Studio


@dataclass(frozen=True)
class CredentialPanel:
    """What one panel says and does."""

    title: str
    label: str
    info: str
    short: str
    """The buttons' word for it: 'token' (Save token), 'W&B key'."""
    noun: str
    """The messages' word for it: 'Hub token' (Hub token saved.), 'W&B key'."""
    save: Callable[[Studio, str], dict]
    """Stores the typed value; raises a user error naming the field when it cannot be one."""
    forget: Callable[[Studio], dict]


def build(studio: Studio, panel: CredentialPanel, account_text: Callable[[Studio], str]):
    """The panel's accordion; returns `connect(status, summary)`, which wires its buttons to the tab's status line
    and account summary (built further down the tab)."""
    with gr.Accordion(panel.title, open=False), gr.Row():
        value = gr.Textbox(label=panel.label, type="password", scale=3, info=panel.info)
        save = gr.Button(f"Save {panel.short}", scale=1)
        forget = gr.Button(f"Forget {panel.short}", scale=1)

    def on_save(typed):
        panel.save(studio, typed)
        return f"{panel.noun} saved.", "", account_text(studio)

    def on_forget():
        panel.forget(studio)
        return f"{panel.noun} forgotten.", account_text(studio)

    def connect(status, summary) -> None:
        private = dict(api_visibility="private")
        save.click(on_save, value, [status, value, summary], **private)
        forget.click(on_forget, None, [status, summary], **private)

    return connect
