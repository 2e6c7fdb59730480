"""A pasted chat template renders in a bounded process of its own (jobs.models.template_render): the text is
transformers' own render, and a template that loops, writes without end or eats memory is refused naming
chat_template while other renders go on."""

import threading

import pytest

from jobs.models.template_render import (
    SAMPLE_CONVERSATION,
    TemplateRenderError,
    pasted_template_problem,
    render_pasted,
)
from tests.jobs.models.test_templates import CUSTOM_TEMPLATE, TWO_TURNS

NESTED_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
"""Emits nothing and never ends: the sandbox caps each range at 100,000 items, not the loops' product."""


def test_a_pasted_template_renders_as_apply_chat_template_does(demo_model_dir):
    from jobs.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(demo_model_dir))
    template = "{{ bos_token }}" + CUSTOM_TEMPLATE + "{{ eos_token }}"  # the special tokens reach the render too
    for prompt in (False, True):
        expected = tokenizer.apply_chat_template(TWO_TURNS, chat_template=template, tokenize=False,
                                                 add_generation_prompt=prompt)
        assert render_pasted(template, TWO_TURNS, tokenizer.special_tokens_map,
                             add_generation_prompt=prompt) == expected


@pytest.mark.parametrize(("template", "seconds", "words"), [
    (NESTED_LOOP, 0.5, "rendering took longer than 0.5 s, the most a pasted template may take"),
    # The others end on their own, so they get time to spare: a 10 MB string took over 0.5 s on a busy CI host.
    ("{{ 'x' * 10**7 }}", 30, "the rendered conversation has 10,000,000 characters, more than the 1,000,000"),
    ("{{ 'x' * 10**10 }}", 30, "needed more memory than a pasted template may use"),
    ("{{ raise_exception('no system turns') }}", 30, "TemplateError: no system turns"),
])
def test_a_hostile_or_broken_template_is_refused_naming_chat_template(template, seconds, words):
    with pytest.raises(TemplateRenderError, match="^chat_template: ") as caught:
        render_pasted(template, SAMPLE_CONVERSATION, seconds=seconds)
    assert words in str(caught.value)
    assert render_pasted("{{ messages[0].content }}", SAMPLE_CONVERSATION) == "You are a helpful assistant."  # again


def test_a_looping_template_holds_only_its_own_render():
    """Another person's render completes while a looping one is still running (a render process each)."""
    warm = [threading.Thread(target=render_pasted, args=("{{ 1 }}", SAMPLE_CONVERSATION)) for _ in range(2)]
    for thread in warm:  # two render processes started and idle, so neither render below waits for a start
        thread.start()
    for thread in warm:
        thread.join()
    refused = []

    def loop() -> None:
        try:
            render_pasted(NESTED_LOOP, SAMPLE_CONVERSATION, seconds=2)
        except TemplateRenderError as error:
            refused.append(str(error))

    looping = threading.Thread(target=loop)
    looping.start()
    assert render_pasted("{{ messages[1].content }}", SAMPLE_CONVERSATION) == "What is the capital of France?"
    assert looping.is_alive() and not refused  # the loop was still running when the other render ended
    looping.join()
    assert "took longer than 2 s" in refused[0]


def test_the_submit_check_tries_a_sample_conversation():
    assert pasted_template_problem(CUSTOM_TEMPLATE) is None
    # A loop that only a generation prompt reaches is found too.
    only_prompted = "{% if add_generation_prompt %}" + NESTED_LOOP + "{% endif %}"
    assert "took longer than 0.5 s" in pasted_template_problem(only_prompted, seconds=0.5)
