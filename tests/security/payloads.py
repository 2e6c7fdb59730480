"""Markup that runs script where a page renders it as HTML: tags with event attributes, `javascript:` URLs in HTML
and Markdown (inside <svg>, where Gradio's sanitizer let one through), breakouts from code spans and fences, frames
with their own documents, CSS that fetches or runs, and template syntax (Gradio's HTML component is a JS template)."""

from __future__ import annotations

from html.parser import HTMLParser

PAYLOADS = [
    "<script>alert('script')</script>",
    "<img src=x onerror=alert('img')>",
    "<svg onload=alert('svg')><a href=\"javascript:alert('svg-link')\"><text>svg link</text></a></svg>",
    "<a href=\"javascript:alert('link')\">html link</a>",
    "<a href=\"jav&#x61;script:alert('entity')\">entity link</a>",
    "[markdown link](javascript:alert('md'))",
    "![markdown image](javascript:alert('md-img'))",
    "` <img src=y onerror=alert('code-span')> `",
    "```\n</code></pre><img src=z onerror=alert('fence')>\n```",
    "<iframe srcdoc=\"<script>alert('srcdoc')</script>\"></iframe>",
    "<div style=\"background:url(javascript:alert('css'))\">css url</div>",
    "<p style=\"width:expression(alert('expression'))\">css expression</p>",
    "<a href=\"data:text/html,<script>alert('data')</script>\">data link</a>",
    "<form action=\"javascript:alert('form')\"><button>go</button></form>",
    "${alert('template')}",
    "{{constructor.constructor('alert(\"handlebars\")')()}}",
]
"""Each is self-contained; a test may also join them."""

SCRIPTY_TAGS = {"script", "iframe", "frame", "object", "embed", "style", "form", "base", "meta", "link", "img"}
SAFE_SCHEMES = ("http:", "https:", "mailto:", "/", "#")
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data", "srcdoc", "background", "poster"}


class _Elements(HTMLParser):
    """The elements and attributes a browser would build from a piece of HTML (text stays text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SCRIPTY_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on") or name == "style":
                self.found.append(f"<{tag} {name}>")
            elif name in URL_ATTRIBUTES and ":" in value and not value.startswith(SAFE_SCHEMES):
                self.found.append(f"<{tag} {name}={value[:40]}>")


def dangerous_markup(markup: str) -> list[str]:
    """What in a piece of HTML could run script or fetch from elsewhere (empty: nothing)."""
    parser = _Elements()
    parser.feed(markup)
    parser.close()
    return parser.found


# The page-wide check the browser tests run after each step: a dialog, an element with an on* attribute, or a
# link/source/action that runs script fails the test.
PAGE_CHECK = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase(), value = attr.value.trim().toLowerCase();
      const where = (el.closest('[id]') || {}).id || el.tagName;
      if (name.startsWith('on')) bad.push(`${el.tagName} ${name} in ${where}`);
      const url = ['href', 'src', 'action', 'formaction', 'xlink:href', 'data'].includes(name);
      if (url && /^(javascript|vbscript|data:text\\/html)/.test(value)) bad.push(`${el.tagName} ${name} in ${where}`);
      if (name === 'srcdoc') bad.push(`${el.tagName} srcdoc in ${where}`);
    }
  }
  return bad;
}"""
