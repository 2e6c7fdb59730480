"""The Ollama Modelfile beside a GGUF: the base's chat template as Ollama's Go template, stop tokens, sampling.

A Jinja chat template is a program; Ollama's is a Go text/template. No translator of one language into the other
exists, so the template is not translated line by line: its *output* is measured. Rendering probe conversations
through the real Jinja template finds the text it puts around each role's content, the generation prompt, the
leading BOS and any system prompt it adds by default. That shape is written as a Go template, and then checked:
a battery of conversations (with and without a system turn, several turns, contents with newlines, quotes, braces,
Jinja and Go delimiters, spaces at the ends, non-ASCII) must render to exactly the text the Jinja template gives.
A template whose output depends on anything else (position of a turn, trimming, a system prompt folded into the
first user turn, tools) fails the check and is refused with the first conversation that differs: never an
approximation a model was not trained on."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

ROLES = ("system", "user", "assistant")
# Contents nothing in a template would produce by itself, so where they land shows the template's own text.
_MARK = {"system": "Qz7SystemText", "user": "Qz7UserText", "assistant": "Qz7AssistantText", "again": "Qz7LaterText"}
Render = Callable[[list[dict], bool], str]
"""(messages, add_generation_prompt) -> the chat template's text."""


class TemplateError(ValueError):
    """The chat template cannot be written as an Ollama template without changing what the model sees."""


@dataclass(frozen=True)
class ChatFormat:
    bos: str
    """Text the template starts every conversation with (the BOS token's text), "" for none."""
    wrappers: dict[str, tuple[str, str]]
    """role -> (text before its content, text after it)."""
    generation_prompt: str
    default_system: str | None
    """The system prompt the template adds when the conversation has none (Ollama's SYSTEM does the same)."""

    def prompt(self, messages: list[dict]) -> str:
        """The text Ollama gives the model for `messages` (a chat turn: the last message is the person's), BOS
        included, as the Go template of `go_template` renders it: the Modelfile's SYSTEM is put first when the
        conversation has no system turn (Ollama's chat does this), each message is wrapped, and after the last one the
        generation prompt follows."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        text = self.bos
        for index, message in enumerate(messages):
            before, after = self.wrappers[message["role"]]
            last = index == len(messages) - 1
            text += before + message["content"] + ("" if last and message["role"] == "assistant" else after)
            if last and message["role"] != "assistant":
                text += self.generation_prompt
        return text

    def go_template(self, runtime_adds_bos: bool) -> str:
        """Ollama's TEMPLATE: every literal is a quoted Go string (no whitespace trimming can eat a newline, and a
        `{{` in a template's text stays text). The last assistant turn stays open, so Ollama continues it."""
        parts = [] if runtime_adds_bos or not self.bos else [_go(self.bos)]
        parts.append("{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}")
        for number, role in enumerate(ROLES):
            before, after = self.wrappers[role]
            keyword = "if" if number == 0 else "else if"
            close = f"{{{{ if not $last }}}}{_go(after)}{{{{ end }}}}" if role == "assistant" else _go(after)
            parts.append(f'{{{{ {keyword} eq .Role "{role}" }}}}{_go(before)}{{{{ .Content }}}}{close}')
        parts.append(f'{{{{ end }}}}{{{{ if and $last (ne .Role "assistant") }}}}{_go(self.generation_prompt)}'
                     "{{ end }}{{ end }}")
        return "".join(parts)


def _go(text: str) -> str:
    """A Go string literal action: JSON's escapes (\\n, \\", \\\\, \\u00XX) are Go's; non-ASCII stays UTF-8."""
    return f"{{{{ {json.dumps(text, ensure_ascii=False)} }}}}" if text else ""


def measure(render: Render, bos_token: str | None) -> ChatFormat:
    """The template's shape, from probe renders; then `check` it. Raises TemplateError with the reason."""
    try:
        plain = render([_msg("user")], False)
        user = _split(plain, ["user"])
        system = _split(render([_msg("system"), _msg("user")], False), ["system", "user"])
        turn = _split(render([_msg("user"), _msg("assistant")], False), ["user", "assistant"])
        second = _split(render([_msg("user"), _msg("assistant"), _msg("user", "again")], False),
                        ["user", "assistant", "again"])
        asked = render([_msg("user")], True)
    except TemplateError:
        raise
    except Exception as error:  # the template's own raise_exception, or a role it refuses
        raise TemplateError(f"chat_template: rendering a plain conversation failed: {error}") from None
    if not asked.startswith(plain):
        raise TemplateError("chat_template: the generation prompt changes the text before it, not only what follows")
    after_assistant = turn[2]
    if not second[2].startswith(after_assistant):
        raise TemplateError("chat_template: an assistant turn ends differently when another turn follows")
    user_before = second[2][len(after_assistant):]
    user_after = user[1]
    if not user[0].endswith(user_before) or not turn[1].startswith(user_after):
        raise TemplateError("chat_template: the first user turn is wrapped differently from the later ones")
    # A BOS opens the text once; a token that also opens each later turn (ChatML's <|im_start|>) is the turn's own.
    bos = bos_token if (bos_token and user[0].startswith(bos_token) and system[0].startswith(bos_token)
                        and not user_before.startswith(bos_token)) else ""
    if not system[1].endswith(user_before):
        raise TemplateError("chat_template: a user turn after a system turn is wrapped differently")
    system_after = system[1][:len(system[1]) - len(user_before)]
    wrappers = {"system": (system[0][len(bos):], system_after), "user": (user_before, user_after),
                "assistant": (turn[1][len(user_after):], after_assistant)}
    default_block = user[0][len(bos):len(user[0]) - len(user_before)]
    default_system = None
    if default_block:
        before, after = wrappers["system"]
        if not (default_block.startswith(before) and default_block.endswith(after)
                and len(default_block) >= len(before) + len(after)):
            raise TemplateError("chat_template: it writes text before the first turn that is not a system turn")
        default_system = default_block[len(before):len(default_block) - len(after)]
    found = ChatFormat(bos, wrappers, asked[len(plain):], default_system)
    check(found, render)
    return found


def _msg(role: str, mark: str = "") -> dict:
    return {"role": role, "content": _MARK[mark or role]}


def _split(text: str, roles: list[str]) -> list[str]:
    """The text between the marked contents: before the first, between each pair, after the last."""
    pieces, rest = [], text
    for role in roles:
        mark = _MARK[role]
        if rest.count(mark) != 1:
            said = role.replace("again", "user")
            raise TemplateError(f"chat_template: a {said} message's content does not appear exactly once, unchanged, "
                                "in what the template writes")
        before, rest = rest.split(mark)
        pieces.append(before)
    return [*pieces, rest]


CONTENTS = ("Hello", "two\nlines\n", "  spaced  ", 'quotes " and \' and \\ backslash', "{{ .Prompt }} {% if %} {#",
            "héllo wörld 🦙 中文", "")
SYSTEMS = (None, "Be brief.", "You answer\nin French.")


def conversations() -> list[list[dict]]:
    """The battery: chat turns (the last message is the person's) over every system choice, one to three turns."""
    found = []
    for number, content in enumerate(CONTENTS):
        for system in SYSTEMS:
            head = [{"role": "system", "content": system}] if system is not None else []
            turns = [{"role": "user", "content": content}]
            for earlier in range(number % 3):
                turns = [{"role": "user", "content": f"q{earlier} {content}"},
                         {"role": "assistant", "content": f"a{earlier} {content}"}, *turns]
            found.append(head + turns)
    return found


def check(found: ChatFormat, render: Render) -> None:
    """Every battery conversation renders to the Jinja template's text exactly, or TemplateError says where not."""
    for messages in conversations():
        try:
            expected = render(messages, True)
        except Exception as error:
            raise TemplateError(f"chat_template: it refuses a plain conversation ({error})") from None
        got = found.prompt(messages)
        if got != expected:
            at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                      min(len(got), len(expected)))
            raise TemplateError(f"chat_template: cannot be written as an Ollama template without changing the "
                                f"prompt: for {json.dumps(messages)[:300]} it gives "
                                f"{json.dumps(expected[max(0, at - 40):at + 40])} where the translation gives "
                                f"{json.dumps(got[max(0, at - 40):at + 40])}")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repeat_penalty: float = 1.0


def sampling_defaults(generation_config: dict) -> Sampling:
    """The base's own sampling where its generation_config samples; else the studio chat's default (greedy), so
    Ollama answers as the Chat tab did."""
    if not generation_config.get("do_sample"):
        return Sampling()
    return Sampling(float(generation_config.get("temperature", 1.0)), float(generation_config.get("top_p", 1.0)),
                    int(generation_config.get("top_k", 0) or 0),
                    float(generation_config.get("repetition_penalty", 1.0)))


def modelfile(gguf_name: str, found: ChatFormat, stops: list[str], sampling: Sampling, context_length: int,
              runtime_adds_bos: bool) -> str:
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_triple(found.go_template(runtime_adds_bos))}"]
    if found.default_system is not None:
        lines.append(f"SYSTEM {_triple(found.default_system)}")
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    lines += [f"PARAMETER temperature {sampling.temperature:g}", f"PARAMETER top_p {sampling.top_p:g}",
              f"PARAMETER top_k {sampling.top_k}", f"PARAMETER repeat_penalty {sampling.repeat_penalty:g}",
              f"PARAMETER num_ctx {min(context_length, 8192)}"]
    return "\n".join(lines) + "\n"


def _triple(text: str) -> str:
    if '"""' in text:
        raise TemplateError('chat_template: its text holds """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def stop_tokens(eos_tokens: list[str], found: ChatFormat, special_tokens: set[str]) -> list[str]:
    """The end-of-turn tokens: the base's EOS tokens, and the special token that closes an assistant turn."""
    stops = [token for token in eos_tokens if token]
    closing = found.wrappers["assistant"][1]
    stops += [token for token in special_tokens if closing.startswith(token)]
    return list(dict.fromkeys(stops))
