"""Expected errors (a wrong id, a refused spec): the person reads the message; the log gets one line, no traceback."""

from __future__ import annotations

import logging

import gradio as gr

log = logging.getLogger("app")


def user_error(message: str) -> gr.Error:
    """An error to raise from a handler for a request that is wrong, not for a bug."""
    log.info("refused: %s", message.replace("\n", " | "))
    return gr.Error(message, print_exception=False)
