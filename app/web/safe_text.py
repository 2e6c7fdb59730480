"""What a person or a model wrote reaches another person's browser only as text, or as Markdown rendered on the
server (markdown-it, with raw HTML off) and then cleaned by an allow-list sanitizer (nh3): no script, no event
attribute, no `javascript:`/`data:` URL, no style, no frame, no image (a remote image would tell its author who
looked). Gradio's own Markdown, Chatbot and notices render HTML, and their sanitizer lets a `javascript:` link inside
an `<svg>` through (tests/security), so no user text reaches them unescaped: Markdown panels are `SafeMarkdown`,
chat panes get HTML made here, notices and errors get escaped text."""

from __future__ import annotations

import html

import gradio as gr
import nh3
from markdown_it import MarkdownIt
from markupsafe import escape

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])
_MARKDOWN_WITH_HTML = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable(["table", "strikethrough"])
TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "u", "s", "del", "code",
        "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "span", "div",
        "mark", "details", "summary", "sup", "sub", "kbd", "ins"}
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "*": {"class", "title"}}
URL_SCHEMES = {"http", "https", "mailto"}


def clean_html(markup: str) -> str:
    """HTML the studio composed (from escaped pieces), passed through the allow-list all the same."""
    return nh3.clean(markup, tags=TAGS, attributes=ATTRIBUTES, url_schemes=URL_SCHEMES,
                     link_rel="noopener noreferrer nofollow", strip_comments=True)


def markdown_html(text: str | None, folds: bool = False) -> str:
    """Markdown (which may quote anything a person or a model wrote) as safe HTML: raw HTML in it is text. `folds`: a
    panel of the studio's own that folds details away with <details>; raw HTML then passes, through the allow-list
    like everything else (what it quotes can lose markup, never run it)."""
    return clean_html((_MARKDOWN_WITH_HTML if folds else _MARKDOWN).render(text or ""))


def text_html(text: str | None) -> str:
    """Text shown exactly as written, line breaks and all."""
    return f'<div class="studio-text">{escape(text or "")}</div>'


def escaped(text: object) -> str:
    """Text for a place that renders HTML and cannot be given HTML of ours (Gradio's notices and error toasts).
    Only text that could start markup or an entity ('<', '&') is escaped, and then without its quotes (they matter
    only inside attributes): an API client reads every other error exactly as written."""
    text = str(text)
    return html.escape(text, quote=False) if ("<" in text or "&" in text) else text


def notify(text: str, warning: bool = False) -> None:
    """A notice on the open page; what it quotes shows as text."""
    (gr.Warning if warning else gr.Info)(escaped(text))


class SafeMarkdown(gr.HTML):
    """A Markdown panel rendered on the server and sanitized (app/web/safe_text.py), in place of gr.Markdown wherever
    what it shows can quote a person's or a model's words."""

    def __init__(self, value: str | None = None, folds: bool = False, **kwargs) -> None:
        self.folds = folds
        classes = kwargs.pop("elem_classes", None) or []
        super().__init__(value, html_template='<div class="safe-markdown">${value}</div>',
                         elem_classes=["studio-markdown", *([classes] if isinstance(classes, str) else classes)],
                         **kwargs)

    def postprocess(self, value: str | None) -> str | None:
        return None if value is None else markdown_html(value, self.folds)
