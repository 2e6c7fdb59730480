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
