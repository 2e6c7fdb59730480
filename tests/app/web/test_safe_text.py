"""What people and models wrote, made safe on the server: the payloads of tests/security/payloads.py come out as text
or as harmless markup, and no module of the app hands user text to a Gradio component that renders HTML."""

import ast
from pathlib import Path

import pytest

from app.web.safe_text import clean_html, escaped, markdown_html, text_html
from tests.conftest import REPO_ROOT
from tests.security.payloads import PAYLOADS, dangerous_markup


@pytest.mark.parametrize("payload", PAYLOADS)
def test_markdown_and_text_never_carry_script(payload):
    for render in (markdown_html, text_html, clean_html):
        shown = render(payload)
        assert not dangerous_markup(shown), (render.__name__, shown)


def test_markdown_keeps_what_a_chat_answer_needs():
    shown = markdown_html("**bold** and `code`\n\n```python\nprint('<b>')\n```\n\n- a\n- [site](https://example.org)")
    assert "<strong>bold</strong>" in shown and "<code>code</code>" in shown
    assert "print('&lt;b&gt;')" in shown and "<li>a</li>" in shown
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">site</a>' in shown
    assert markdown_html("[x](javascript:alert(1))") == "<p>[x](javascript:alert(1))</p>\n"


def test_escaped_text_reads_as_written_unless_it_could_be_markup():
    assert escaped("line 1 has '=>' but no answer") == "line 1 has '=>' but no answer"  # API clients read it as is
    assert escaped("no dataset named '<img src=x onerror=alert(1)>'") == (
        "no dataset named '&lt;img src=x onerror=alert(1)&gt;'")


# Gradio components that render what they are given as HTML or Markdown. Each use in app/ must be one of these
# (a fixed text, or markup the studio made and cleaned): anything else goes through app/web/safe_text.py.
REVIEWED = {("web/server.py", "Markdown"), ("datasets/tab.py", "HTML"), ("chat/suites_panel.py", "HTML"),
            ("train/spec_form.py", "HTML")}  # the spec's own help text (no person's), each piece html.escape'd
RENDERS_HTML = {"Markdown", "HTML", "Info", "Warning"}


def test_no_module_hands_text_to_a_component_that_renders_html():
    found = set()
    for path in sorted((REPO_ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in RENDERS_HTML and isinstance(node.value, ast.Name)
                    and node.value.id == "gr" and Path(path).name != "safe_text.py"):
                found.add((path.relative_to(REPO_ROOT / "app").as_posix(), node.attr))
    assert found <= REVIEWED, found - REVIEWED
