"""The Modelfile's template on both bundled bases: for a battery of conversations, the prompt the translated
template gives Ollama is, character for character, what the base's Jinja chat template renders; a template that
cannot be written that way is refused with the reason."""

import json
import os
import shutil
import subprocess

import pytest
from transformers import AutoTokenizer

from jobs.models.templates import SMOLLM2_TEMPLATE, SMOLLM2_TRAINING_TEMPLATE
from jobs.training.modelfile import (
    TemplateError,
    conversations,
    measure,
    modelfile,
    sampling_defaults,
    stop_tokens,
)

LLAMA2_TEMPLATE = (  # Llama 2's: the system prompt folded into the first user turn; no per-role wrapper gives this
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set rest = messages[1:] %}"
    "{% else %}{% set sys = '' %}{% set rest = messages %}{% endif %}{% for message in rest %}"
    "{% if message['role'] == 'user' %}[INST] {% if loop.first and sys %}<<SYS>>\n{{ sys }}\n<</SYS>>\n\n{% endif %}"
    "{{ message['content'] }} [/INST]{% else %} {{ message['content'] }}</s>{% endif %}{% endfor %}")
TRIMMING_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] | trim }}<|end|>"
                     "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _render(tokenizer, template=None):
    def render(messages, add_generation_prompt):
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    return render


@pytest.fixture(scope="module")
def demo_tokenizer(demo_model_dir):
    return AutoTokenizer.from_pretrained(demo_model_dir)


def _same_on_every_conversation(found, render, adds_bos: bool, bos: str = "") -> None:
    """What Ollama feeds the model (its BOS, when the GGUF says to add one, then the template's text) against the
    Jinja rendering of the same chat turn."""
    assert len(conversations()) >= 20
    for messages in conversations():
        body = found.prompt(messages)
        fed = (bos + body.removeprefix(found.bos)) if adds_bos else body
        assert fed == render(messages, True), messages


def test_the_demo_template_translates_exactly(demo_tokenizer):
    render = _render(demo_tokenizer)
    found = measure(render, demo_tokenizer.bos_token)
    assert found.bos == "<|bos|>" and found.default_system is None
    assert found.wrappers == {role: (f"<|{role}|>", "<|end|>") for role in ("system", "user", "assistant")}
    _same_on_every_conversation(found, render, adds_bos=True, bos="<|bos|>")
    text = modelfile("model-f16.gguf", found, stop_tokens(["<|end|>"], found, {"<|end|>"}), sampling_defaults({}),
                     1024, runtime_adds_bos=True)
    # llama.cpp adds the BOS itself (the GGUF's add_bos_token): the template must not write a second one.
    assert '"<|bos|>"' not in text
    assert '{{ else if eq .Role "user" }}{{ "<|user|>" }}{{ .Content }}{{ "<|end|>" }}' in text
    assert text.splitlines()[2:] == ['PARAMETER stop "<|end|>"', "PARAMETER temperature 0", "PARAMETER top_p 1",
                                     "PARAMETER top_k 0", "PARAMETER repeat_penalty 1", "PARAMETER num_ctx 1024"]


@pytest.mark.parametrize("template", [SMOLLM2_TEMPLATE, SMOLLM2_TRAINING_TEMPLATE], ids=["chatml", "training-twin"])
def test_the_smollm2_template_translates_exactly(template, demo_tokenizer):
    """SmolLM2's ChatML (as the prepared base carries it; tests/jobs/models/test_smollm2.py checks that) and the
    studio's training twin: the same text, a default system prompt the Modelfile gives as SYSTEM."""
    render = _render(demo_tokenizer, template)  # the template reads no tokenizer variable
    found = measure(render, "<|im_start|>")  # SmolLM2's BOS text opens every turn: not taken for a BOS
    assert found.bos == "" and found.default_system.startswith("You are a helpful AI assistant named SmolLM")
    assert found.generation_prompt == "<|im_start|>assistant\n"
    _same_on_every_conversation(found, render, adds_bos=False)
    text = modelfile("model-q8_0.gguf", found, stop_tokens(["<|im_end|>"], found, {"<|im_end|>", "<|im_start|>"}),
                     sampling_defaults({"do_sample": True, "temperature": 0.6, "top_p": 0.9}), 8192, False)
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert '{{ "<|im_start|>user\\n" }}{{ .Content }}{{ "<|im_end|>\\n" }}' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0.6" in text


def test_the_prepared_smollm2_tokenizer_translates(smollm2_dir):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    found = measure(_render(tokenizer), tokenizer.bos_token)
    _same_on_every_conversation(found, _render(tokenizer), adds_bos=False)


@pytest.mark.parametrize(("template", "reason"), [
    (LLAMA2_TEMPLATE, "a user turn after a system turn is wrapped differently"),
    (TRIMMING_TEMPLATE, "cannot be written as an Ollama template without changing the prompt"),
    ("{{ raise_exception('no chats here') }}", "rendering a plain conversation failed: no chats here"),
])
def test_a_template_that_does_not_translate_is_refused_with_the_reason(template, reason, demo_tokenizer):
    with pytest.raises(TemplateError, match=reason):
        measure(_render(demo_tokenizer, template), demo_tokenizer.bos_token)


GO_RENDERER = """package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct{ Role, Content string }

func main() {
	var input struct {
		Template      string
		Conversations [][]Message
	}
	if err := json.NewDecoder(os.Stdin).Decode(&input); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("").Parse(input.Template))
	out := []string{}
	for _, messages := range input.Conversations {
		var b strings.Builder
		if err := tmpl.Execute(&b, map[string]any{"Messages": messages}); err != nil {
			panic(err)
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""


@pytest.mark.parametrize("base", ["demo", "smollm2"])
def test_go_itself_renders_the_modelfile_template_as_jinja_does(base, demo_tokenizer, tmp_path):
    """The TEMPLATE text run by Go's own text/template (what Ollama runs), over the battery, with Ollama's chat
    rule (the Modelfile's SYSTEM first when a conversation has no system turn) against the Jinja rendering."""
    if shutil.which("go") is None:
        missing = "no Go toolchain here (Debian: apt-get install golang-go; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the Modelfile's Go check cannot run in CI: {missing}", pytrace=False)
        pytest.skip(missing)
    demo = base == "demo"
    template, bos, adds_bos = (None, demo_tokenizer.bos_token, True) if demo else (SMOLLM2_TEMPLATE, "", False)
    render = _render(demo_tokenizer, template)
    found = measure(render, demo_tokenizer.bos_token if demo else "<|im_start|>")
    (tmp_path / "main.go").write_text(GO_RENDERER)
    subprocess.run(["go", "build", "-o", str(tmp_path / "render"), "main.go"], cwd=tmp_path, check=True,
                   env={**os.environ, "GOCACHE": str(tmp_path / "cache"), "GOFLAGS": "-mod=mod", "GO111MODULE": "off"})
    battery = conversations()
    with_system = [messages if found.default_system is None or messages[0]["role"] == "system"
                   else [{"role": "system", "content": found.default_system}, *messages] for messages in battery]
    payload = {"Template": found.go_template(runtime_adds_bos=adds_bos),
               "Conversations": [[{"Role": m["role"], "Content": m["content"]} for m in c] for c in with_system]}
    done = subprocess.run([str(tmp_path / "render")], input=json.dumps(payload), capture_output=True, text=True,
                          check=True)
    for messages, text in zip(battery, json.loads(done.stdout), strict=True):
        assert (bos if adds_bos else "") + text == render(messages, True), messages
