"""Choices several tabs offer, read from the ledger on every call (never cached in the page)."""

from __future__ import annotations

from jobs.spec import STUDIO_BASE_MODELS
from jobs.studio import Studio
from storage import catalog


def base_models(studio: Studio) -> list[str]:
    """The studio's own bases first, then every base an adapter was trained on."""
    with studio.db.read() as session:
        used = {a.base_model for a in catalog.list_adapters(session)}
    return list(STUDIO_BASE_MODELS) + sorted(used - set(STUDIO_BASE_MODELS))
