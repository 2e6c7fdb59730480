"""The studio's torch-free marker check and its training twins agree with TRL's own."""

import importlib.util
from pathlib import Path

import pytest
from trl.chat_template_utils import has_generation_markers as trl_has_markers

from jobs.models.templates import (
    SMOLLM2_TEMPLATE,
    SMOLLM2_TRAINING_TEMPLATE,
    has_generation_markers,
    training_template,
)

TRL_TEMPLATES = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates"


@pytest.mark.parametrize("template", [
    "{% generation %}x{% endgeneration %}", "{%- generation -%}x{%- endgeneration %}", "{%generation%}",
    "{% if add_generation_prompt %}<|assistant|>{% endif %}",  # a substring test would wrongly accept this
    "no markers at all", SMOLLM2_TEMPLATE, SMOLLM2_TRAINING_TEMPLATE,
])
def test_marker_check_agrees_with_trl(template):
    assert has_generation_markers(template) == trl_has_markers(template)


def test_a_template_with_markers_is_its_own_training_template():
    assert training_template(SMOLLM2_TRAINING_TEMPLATE) == SMOLLM2_TRAINING_TEMPLATE
    assert training_template(SMOLLM2_TEMPLATE) == SMOLLM2_TRAINING_TEMPLATE
    assert training_template("{{ messages }}") is None and training_template(None) is None


def test_trl_training_twins_are_found_by_their_text():
    pairs = [(p.with_name(p.name.replace("_training", "")), p) for p in TRL_TEMPLATES.glob("*_training.jinja")]
    pairs = [(original, twin) for original, twin in pairs if original.is_file()]
    assert pairs
    for original, twin in pairs:
        assert training_template(original.read_text()) == twin.read_text(), original.name
