"""Text from a dataset or a model written into Markdown shows as itself, whatever it holds."""

import html
import random
import re

import pytest
from nbconvert.filters.markdown import markdown2html_mistune

from crosscoder_interventions.analysis.markup import markdown_text

# Jupyter's own Markdown renderer (the report notebook's), which passes raw HTML through.
render = markdown2html_mistune


def shown(rendered: str) -> str:
    """The text a browser shows for rendered HTML of one paragraph (no elements may remain but <p>)."""
    assert re.fullmatch(r"<p>[^<]*</p>\s*", rendered), rendered
    return html.unescape(rendered.strip()[3:-4])


@pytest.mark.parametrize("text", [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[link](javascript:alert(1))", "**bold** _it_ `code` ~~x~~",
    "# heading", "1. item", "- item", "a | b", "&amp; &lt; &#60;", "back\\slash \\*", "![img](x.png)", "<https://example.com>",
])
def test_markup_renders_as_its_own_characters(text):
    assert shown(render(markdown_text(text))) == text


def test_random_punctuation_renders_as_itself():
    rng = random.Random(0)
    alphabet = "<>&;#*_`[]()!|~\\-+.=:/\"' ab1"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))).strip()
        if text:
            assert " ".join(shown(render(markdown_text(text))).split()) == " ".join(text.split()), text


def test_line_breaks_stay_inside_the_paragraph():
    assert markdown_text("a\nb\r\nc") == "a ⏎ b ⏎ c"
    assert markdown_text("a\n\n# b", line_break=" ") == "a  \\# b"
