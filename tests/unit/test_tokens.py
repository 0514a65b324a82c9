"""Token display: the text each token covers, word pieces joined, partial characters marked, never mojibake."""
from __future__ import annotations

import re

import pytest

from inspector import inputs, models, tokens


@pytest.fixture(scope="module")
def gpt2():
    return models.load("bundled:gpt2-mini")


@pytest.fixture(scope="module")
def bert():
    return models.load("bundled:bert-mini")


MOJIBAKE = re.compile("[ÃØÙðĠĊ]")  # byte-level stand-ins of UTF-8 lead bytes, space and newline


def test_byte_level_tokens_show_the_text_and_mark_partial_characters(gpt2):
    text = "said مرحبا 😀 chào.\nNext"
    enc = inputs.encode(gpt2, text)
    shown = enc.tokens
    assert not any(MOJIBAKE.search(t) for t in shown), shown
    # hand-worked: "ر" is U+0631 = D8 B1 in UTF-8; GPT-2's byte-level BPE splits it into two tokens here
    assert "⟨ر 1/2⟩" in shown and "⟨ر 2/2⟩" in shown
    assert [t for t in shown if "😀" in t] == ["⟨😀 1/4⟩", "⟨😀 2/4⟩", "⟨😀 3/4⟩", "⟨😀 4/4⟩"]
    # every other token is exactly its slice of the text: removing the markers gives the text back
    rebuilt = re.sub(r"⟨(.) (\d)/(\d)⟩", lambda m: m.group(1) if m.group(2) == m.group(3) else "", "".join(shown))
    assert rebuilt == text


def test_piece_text_alone_never_returns_glyphs(gpt2):
    tok = gpt2.tokenizer
    lead = tok.convert_tokens_to_ids("Ø")  # the byte-level token of the single byte D8
    assert tokens.piece_text(tok, lead) == "⟨byte D8⟩"
    assert inputs.display_token(tok, tok.convert_tokens_to_ids("Ġthe")) == " the"


def test_bert_word_pieces_join_into_words_with_the_original_spaces(bert):
    text = "The lighthousekeeper said  hello.\nNew line"
    enc = inputs.encode(bert, text, "Second one")
    body = [t for t, s in zip(enc.tokens, enc.special) if not s]
    assert not any(t.startswith("##") for t in body)
    # the first segment's tokens concatenate to its original text (case, double space and newline kept)
    first = enc.tokens[1:enc.tokens.index("[SEP]")]
    assert "".join(first) == text
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    assert "".join(enc.tokens[enc.tokens.index("[SEP]") + 1:-1]) == "Second one"


def test_unknown_token_shows_what_it_covers(bert):
    enc = inputs.encode(bert, "hi مرحبا")
    assert " [UNK: مرحبا]" in enc.tokens


def test_strip_html_escapes_keeps_spaces_outside_spans_and_wraps():
    html = tokens.strip_html(["<b>", " light", "house", "\nnext"], backgrounds=["red", "", "", ""])
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert "overflow-wrap:anywhere" in html
    # the space before "light" is outside the span (a line can break there), "house" touches "light"
    assert '</span> <span title="#1"' in html
    assert ">light</span><span" in html
    assert "⏎</span><br><span" in html
