"""Expected errors (a wrong id, a refused spec): the person reads the message; the log gets one line, no traceback."""

from __future__ import annotations

import logging

import gradio as gr

from jobs.studio import Studio
from storage import audit_repo
from storage.access import current_person

log = logging.getLogger("app")


def user_error(message: str) -> gr.Error:
    """An error to raise from a handler for a request that is wrong, not for a bug."""
    log.info("refused: %s", message.replace("\n", " | "))
    return gr.Error(message, print_exception=False)


def audit(studio: Studio, action: str, target: str | None = None, **detail) -> None:
    """Record what the person asking did (deletions and the like) in the audit log admins read."""
    person = current_person()
    with studio.db.write() as session:
        audit_repo.record(session, action, person.name if person else None, target, detail=detail or None)
