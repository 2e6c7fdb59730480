"""What a run's rows are made of and rendered with, from the spec's Data fields (jobs.spec): the datasets and their
ratios, the row budget, the chat template's text, the default system prompt, and which assistant turns carry loss.
Training, the plan and the plain script read these, never the spec's fields."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.spec import TrainSpec


@dataclass(frozen=True)
class DataSettings:
    mix: tuple[tuple[str, float], ...]
    """(dataset, ratio) of every dataset the rows come from: the mix, or the one dataset with ratio 1."""
    max_rows: int | None
    seed: int
    chat_template: str | None
    """The spec's choice: a known template's name or a pasted one (jobs.models.templates.template_text gives its
    text); None: the base's own."""
    system_prompt: str
    last_turn_only: bool

    @property
    def mixes(self) -> bool:
        """The rows are not simply the dataset's own: several datasets, or a row budget."""
        return len(self.mix) > 1 or self.max_rows is not None  # as jobs.data.mixing.mixes

    @classmethod
    def from_spec(cls, spec: TrainSpec) -> DataSettings:
        return cls(mix=tuple(spec.mix_parts()), max_rows=spec.max_rows, seed=spec.seed,
                   chat_template=spec.chat_template or None, system_prompt=spec.system_prompt,
                   last_turn_only=spec.method == "sft" and spec.loss_turns == "last")
