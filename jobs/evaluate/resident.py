"""One resident base per base variant for an evaluation's panes, the chat engine's pattern (jobs.chat.engine): each
(base, variant) loads once, every adapter attaches to it by name (peft's load_adapter) and the pane being scored
makes its own active (set_adapter), so N adapters cost one base load, not N. The base pane runs with the adapters
disabled; a whole model (full or freeze fine-tuning) is a base of its own and applies no adapter.

Only the active adapter computes (peft's set_adapter), so a pane's scores are those of its adapter loaded alone on
a fresh base (tests/jobs/evaluate/test_resident.py compares them). An evaluation's panes run one after another in
one child process, so the bases stay until the job ends; adapters are small beside a base."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from jobs.chat.request import Pane


class ResidentBases:
    """`load(pane)` loads the base `pane.variant` says (no adapter); called once per variant."""

    def __init__(self, load: Callable[[Pane], Any]) -> None:
        self._load = load
        self._models: dict[Any, Any] = {}
        self._names: dict[str, str] = {}

    @contextlib.contextmanager
    def active(self, pane: Pane) -> Iterator[Any]:
        """The pane's model in eval mode: its base with its adapter the active one (the base pane: adapters off)."""
        from peft import PeftModel

        model = self._models.get(pane.variant)
        if model is None:
            model = self._models[pane.variant] = self._load(pane)
        if pane.adapter_dir is None or pane.variant.model_dir is not None:
            with model.disable_adapter() if isinstance(model, PeftModel) else contextlib.nullcontext():
                yield model.eval()
            return
        name = self._names.setdefault(str(pane.adapter_dir), f"adapter_{len(self._names)}")
        if not isinstance(model, PeftModel):
            model = self._models[pane.variant] = PeftModel.from_pretrained(model, str(pane.adapter_dir),
                                                                           adapter_name=name, is_trainable=False)
        elif name not in model.peft_config:
            model.load_adapter(str(pane.adapter_dir), adapter_name=name, is_trainable=False)
        model.set_adapter(name)
        yield model.eval()
