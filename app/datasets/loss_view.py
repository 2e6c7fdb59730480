"""What the model sees, as HTML: a row's text through the base's chat template, the tokens that carry loss
highlighted, and the point where max_length cuts it. Pure: token ids and flags in, markup out."""

from __future__ import annotations

import html

from jobs.data.stats import TokenizedRow

LEGEND = ('<p><span class="loss">green</span>: tokens that carry loss; <span class="cut">struck</span>: '
          'beyond max_length, cut off; <span class="mark">✂</span>: where the cut falls.</p>')


def spans(row: TokenizedRow, max_length: int) -> list[tuple[int, int, str]]:
    """(start, end, kind) runs of tokens: kind 'loss', 'plain' or 'cut' (past max_length)."""
    kinds = ["cut" if i >= max_length else ("loss" if flag else "plain") for i, flag in enumerate(row.loss)]
    runs, start = [], 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            runs.append((start, i, kinds[start]))
            start = i
    return runs


def row_html(tokenizer, row: TokenizedRow, max_length: int) -> str:
    parts = []
    for start, end, kind in spans(row, max_length):
        if start == max_length and kind == "cut":
            parts.append('<span class="mark">✂</span>')
        text = html.escape(tokenizer.decode(row.ids[start:end], skip_special_tokens=False))
        parts.append(text if kind == "plain" else f'<span class="{kind}">{text}</span>')
    return f'<div class="seen">{"".join(parts)}</div>'


def rows_html(tokenizer, rows: list[tuple[int, TokenizedRow]], max_length: int) -> str:
    blocks = [f"<h4>Row {number}: {len(row.ids)} tokens, {_loss_words(row, max_length)}</h4>"
              f"{row_html(tokenizer, row, max_length)}" for number, row in rows]
    return f'<div class="seen-view">{LEGEND}{"".join(blocks)}</div>'


def _loss_words(row: TokenizedRow, max_length: int) -> str:
    kept = sum(row.loss[:max_length])
    if kept == 0 and any(row.loss):
        return "no loss left after the cut: the trainer skips this row"
    return f"{kept} carry loss"
