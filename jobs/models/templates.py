"""Chat templates for training: assistant-only loss needs `{% generation %}` markers around what the assistant
says. Many templates have none, so training uses a twin that renders the same text with the markers: the studio's
own patch for a template it knows (SmolLM2's ChatML), or the training twin TRL ships for its known families.

No torch or TRL import here (the web process checks submissions with it): TRL's twins are read as the data files
they are, and the marker test is TRL's own pattern (tests check both agree with `trl.chat_template_utils`)."""

from __future__ import annotations

import importlib.util
import re
import threading
from functools import cache
from pathlib import Path

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

# trl.chat_template_utils.has_generation_markers: `{% generation %}` with any whitespace-trim variant.
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The same text, byte for byte, with the assistant's content and its <|im_end|> inside the generation block: the
# model learns to answer and to stop, and nothing of the prompt carries loss.
SMOLLM2_TRAINING_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
STUDIO_TRAINING_TWINS = {SMOLLM2_TEMPLATE: SMOLLM2_TRAINING_TEMPLATE}
NO_TRAINING_TEMPLATE = (
    "the base model's chat template has no {% generation %} markers and neither the studio nor TRL knows a "
    "training twin of it, so assistant turns cannot be told apart; turn assistant_only_loss off")


_RENDERING = threading.Lock()


def render_chat(tokenizer, messages: list[dict], **options):
    """`tokenizer.apply_chat_template(messages, **options)`, one render at a time in this process. transformers
    compiles each template once per process (an lru_cache) with a single AssistantTracker for its generation marks:
    two renders at once (two people inspecting, an inspect beside a chat) raised "AssistantTracker should not be
    reused before closed", or put one render's assistant tokens into the other's mask. A tokenizer per request would
    not help: the compiled template is shared by its text. Rendering a row takes well under a millisecond."""
    with _RENDERING:
        return tokenizer.apply_chat_template(messages, **options)


def encode_text(tokenizer, text: str) -> list[int]:
    """Plain text's ids, under the same lock: a fast tokenizer's Rust state refuses two encodes at once ("Already
    borrowed") when one of them changes its truncation or padding."""
    with _RENDERING:
        return tokenizer(text, add_special_tokens=True)["input_ids"]


def has_generation_markers(template: str | dict | None) -> bool:
    if isinstance(template, dict):
        template = template.get("default")
    return bool(template) and GENERATION_MARKER.search(template) is not None


@cache
def _trl_training_twins() -> dict[str, str]:
    """TRL's shipped templates that have a `<name>_training.jinja` twin, read as files (TRL matches them by their
    exact text the same way)."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return {}
    folder = Path(spec.submodule_search_locations[0]) / "chat_templates"
    twins = {}
    for training in folder.glob("*_training.jinja"):
        original = training.with_name(training.name.replace("_training.jinja", ".jinja"))
        if original.is_file():
            twins[original.read_text(encoding="utf-8")] = training.read_text(encoding="utf-8")
    return twins


def training_template(template: str | None) -> str | None:
    """A template with generation markers that renders `template`'s text: itself when it has markers, else a
    known twin; None when there is none (assistant-only loss cannot work then)."""
    if not template:
        return None
    if has_generation_markers(template):
        return template
    return STUDIO_TRAINING_TWINS.get(template) or _trl_training_twins().get(template)


CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML with the assistant's answer and its <|im_end|> marked for assistant-only loss (no default system line)."""
STUDIO_TEMPLATES = {"chatml": CHATML_TEMPLATE, "smollm2": SMOLLM2_TEMPLATE}


@cache
def known_templates() -> dict[str, str]:
    """The templates a spec's chat_template may name: the studio's, then each of TRL's shipped templates that has a
    training twin (so assistant-only loss works with it), by its file's stem."""
    spec = importlib.util.find_spec("trl")
    folder = Path(spec.submodule_search_locations[0]) / "chat_templates" if spec and spec.submodule_search_locations \
        else None
    trl = {}
    for training in sorted(folder.glob("*_training.jinja")) if folder else []:
        original = training.with_name(training.name.replace("_training.jinja", ".jinja"))
        if original.is_file():
            trl[original.stem] = original.read_text(encoding="utf-8")
    return {**STUDIO_TEMPLATES, **trl}


class _GenerationTag(Extension):
    """Parses `{% generation %}...{% endgeneration %}` as transformers' AssistantTracker does, for the syntax check
    only: the template is rendered by transformers, in its own ImmutableSandboxedEnvironment."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


def template_text(choice: str) -> str | None:
    """The template a spec's chat_template means: a known one's text, the pasted text itself; None for empty (the
    base's own)."""
    if not choice:
        return None
    return known_templates().get(choice, choice)


def looks_like_jinja(text: str) -> bool:
    return "{{" in text or "{%" in text


def template_problem(choice: str, assistant_only_loss: bool) -> str | None:
    """Why `choice` cannot be a run's chat template, in words naming the fix, or None. A pasted one must parse as
    Jinja in a sandbox (nothing is rendered here); with assistant-only loss it needs generation markers or a known
    training twin."""
    if not choice or choice in known_templates():
        text = template_text(choice)
    elif not looks_like_jinja(choice):
        return (f"'{choice[:40]}' is neither a known template ({', '.join(known_templates())}) nor a Jinja template "
                "(pasted text with {{ ... }} or {% ... %})")
    else:
        text = choice
        try:
            ImmutableSandboxedEnvironment(extensions=[_GenerationTag]).parse(text)
        except jinja2.TemplateSyntaxError as error:
            return f"is not a valid Jinja template: {error.message} (line {error.lineno})"
    if text and assistant_only_loss and training_template(text) is None:
        return ("has no {% generation %} ... {% endgeneration %} markers around the assistant's answer, which "
                "assistant-only loss needs to tell the assistant's tokens apart: add them, or turn assistant_only_loss "
                "off")
    return None
