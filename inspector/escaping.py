"""Quote user input literally in Markdown (Streamlit messages, captions, tooltips, Markdown reports).

A model name, a text, a token or a file name the user typed must never be interpreted: `**bold**`
stays two asterisks, `[a](http://x)` is no link, `$x^2$` is no formula, `<b>` is no tag.
"""
from __future__ import annotations

import re

# Every ASCII punctuation character CommonMark lets a backslash escape that Markdown, Streamlit's
# extensions (`$` maths, `~` strike-through, `:emoji:` / `:material/...:` / `:color[...]` directives)
# or GitHub-flavoured tables (`|`) give a meaning to.
_MD_SPECIAL = frozenset("\\`*_{}[]()#+-.!|$<>~:&=")


# Streamlit turns `:material/home:`, `:smile:` and `:red[...]` into icons, emoji and colours on the parsed text,
# after backslash escapes are resolved, so `\:` does not stop them. A WORD JOINER (U+2060, invisible, no width)
# after the opening colon of such a directive does; only there, so that `bundled:gpt2-mini` stays copyable.
WORD_JOINER = "\u2060"
_DIRECTIVE = re.compile(r":(?=[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)?:|[A-Za-z]+\[)")
# GitHub-flavoured Markdown links bare URLs, www. names and e-mail addresses in text, escapes or not:
# the same joiner inside "://", after "www" and after the "@" of an address keeps them plain text.
_AUTOLINK = re.compile(r"(?<=[A-Za-z])(?=://)|(?<=\bwww)(?=\.)|(?<=@)(?=[A-Za-z0-9-]+\.[A-Za-z])", re.IGNORECASE)


def md_literal(text: object) -> str:
    """`str(text)` with every Markdown-significant character backslash-escaped, so it shows as typed.

    Newlines are kept (a message may have a hint paragraph); a backslash becomes a visible backslash;
    Streamlit's icon / emoji / colour directives and bare URLs / e-mail addresses get an invisible word
    joiner (U+2060) that keeps them plain text.
    """
    s = _DIRECTIVE.sub(":" + WORD_JOINER, str(text))
    s = _AUTOLINK.sub(WORD_JOINER, s)
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in s)
