"""Quote user input literally in Markdown (Streamlit messages, captions, tooltips, Markdown reports).

A model name, a text, a token or a file name the user typed must never be interpreted: `**bold**`
stays two asterisks, `[a](http://x)` is no link, `$x^2$` is no formula, `<b>` is no tag.
"""
from __future__ import annotations

# Every ASCII punctuation character CommonMark lets a backslash escape that Markdown, Streamlit's
# extensions (`$` maths, `~` strike-through, `:emoji:` / `:material/...:` / `:color[...]` directives)
# or GitHub-flavoured tables (`|`) give a meaning to.
_MD_SPECIAL = frozenset("\\`*_{}[]()#+-.!|$<>~:&=")


def md_literal(text: object) -> str:
    """`str(text)` with every Markdown-significant character backslash-escaped, so it shows as typed.

    Newlines are kept (a message may have a hint paragraph); a backslash becomes a visible backslash.
    """
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text))
