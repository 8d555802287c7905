"""Text from a dataset or a model, written into Markdown as text.

Dataset texts, prompts, continuations and token strings may carry markup (`<script>`, `<img onerror>`,
`[link](javascript:...)`, `**`), put there by a hostile dataset or by the model itself. A Markdown
renderer that passes HTML through (nbconvert's, most viewers') would run it; one that does not would
still turn `*` into emphasis. HTML output escapes with `html.escape` (and pandas' Styler with
`escape="html"`); Markdown output goes through `markdown_text`.
"""

from __future__ import annotations

import re

# The ASCII punctuation that CommonMark and GitHub's Markdown give a meaning inline or at a line's start
# (`:` for the bare links `https://...` that some renderers make): a backslash before any of them makes it
# literal. `<`, `>` and `&` become entities instead, which every renderer shows as the character, even
# one that reads raw HTML before it reads backslash escapes.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:])")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def markdown_text(text: str, line_break: str = " ⏎ ") -> str:
    """`text` as literal inline Markdown: every character shown as itself, nothing rendered as markup.
    Line breaks, which would end a paragraph or a table row, become `line_break`."""
    escaped = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    escaped = escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _LINE_BREAK.sub(line_break, escaped)
