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


CUSTOM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'ASSISTANT<|assistant|>' }}{% generation %}"
    "{{ m['content'] + '<|end|>' }}{% endgeneration %}{% else %}{{ m['role'].upper() + ': ' + m['content'] + "
    "'<|end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT<|assistant|>' }}{% endif %}")
"""A template of a person's own (pasted): its own framing (ending on a special token, so the prompt's last token never
merges with the answer's first), markers around each answer and its end token."""
TWO_TURNS = [{"role": "user", "content": "add 2 and 3"}, {"role": "assistant", "content": "5"},
             {"role": "user", "content": "and 4"}, {"role": "assistant", "content": "9"}]


def masked_pieces(tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    """The runs of tokens a mask keeps, decoded."""
    pieces, run = [], []
    for token, keep in [*zip(ids, mask, strict=True), (None, 0)]:
        if keep:
            run.append(token)
        elif run:
            pieces.append(tokenizer.decode(run).replace(" ", ""))
            run = []
    return pieces


def test_a_custom_templates_assistant_mask_covers_each_answer_and_its_end(demo_model_dir):
    from jobs.models.loading import load_tokenizer
    from jobs.spec import parse_spec

    assert parse_spec({"chat_template": CUSTOM_TEMPLATE}).chat_template == CUSTOM_TEMPLATE  # accepted as pasted
    tokenizer = load_tokenizer(str(demo_model_dir), for_assistant_only_loss=True, chat_template=CUSTOM_TEMPLATE)
    assert tokenizer.chat_template == CUSTOM_TEMPLATE  # it has markers: no twin needed
    out = tokenizer.apply_chat_template(TWO_TURNS, return_dict=True, return_assistant_tokens_mask=True)
    assert tokenizer.decode(out["input_ids"]).replace(" ", "").startswith("USER:add2and3<|end|>ASSISTANT<|assistant|>")
    assert masked_pieces(tokenizer, out["input_ids"], out["assistant_masks"]) == ["5<|end|>", "9<|end|>"]
