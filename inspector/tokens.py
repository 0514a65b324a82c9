"""How tokens are shown: as the text they cover, never as byte-level glyphs, "##" markers or mojibake.

One place for token display, used by the encoder (`inputs.encode`), the analyses' token lists,
the app's token strips and the reports:

- `sequence_texts(tokenizer, ids, offsets, texts, segments, special)`: the tokens of a text in
  context. Each token is the original text from the end of the previous token to its own end, so
  word pieces join back into words and the original spaces and newlines are kept ("light", "ho",
  "use" show as "lighthouse"; " said" keeps its space). A byte-level token that holds only part of
  a multi-byte character (GPT-2 splits "ر" into two byte tokens) shows that character marked with
  the bytes it holds: "⟨ر 1/2⟩", "⟨ر 2/2⟩"; an unknown token shows "[UNK: <the text>]".
- `piece_text(tokenizer, id)`: one token on its own (top-k predictions, vocabulary lists): the
  decoded text; bytes that are no complete character are shown as "⟨byte D8⟩".
- `split_gap(token)`: (leading whitespace, rest), so a strip can let lines wrap at the spaces.
- `strip_html(tokens, ...)`: an escaped, wrapping token strip (never wider than its container).

No Streamlit, no model: only a tokenizer's vocabulary and the character offsets it returns.
"""
from __future__ import annotations

import html
import re
from functools import lru_cache
from typing import Sequence

__all__ = ["PARTIAL_OPEN", "PARTIAL_CLOSE", "piece_text", "token_bytes", "sequence_texts", "text_tokens", "split_gap",
           "visible", "strip_html"]

PARTIAL_OPEN, PARTIAL_CLOSE = "⟨", "⟩"
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece byte-fallback pieces
_INVISIBLE = {"\n": "⏎", "\r": "␍", "\t": "⇥"}


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable stand-in character -> byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return type(tokenizer).__name__.startswith(("GPT2", "Roberta", "Bart"))
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in repr(decoder)


def token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The raw bytes a byte-level (or byte-fallback) token stands for; None when it is not such a token."""
    try:
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
    except (IndexError, KeyError, TypeError, ValueError, OverflowError):
        return None
    if not isinstance(piece, str):
        return None
    m = _BYTE_FALLBACK.match(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    if not _is_byte_level(tokenizer):
        return None
    dec = _byte_decoder()
    if not all(ch in dec for ch in piece):
        return None
    return bytes(dec[ch] for ch in piece)


def _utf8_length(lead: int) -> int:
    """Bytes of a UTF-8 character from its first byte (0 for a continuation or invalid byte)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _decode_bytes_marked(data: bytes) -> str:
    """Bytes as text; bytes that are no complete character become '⟨byte D8⟩' (never U+FFFD or glyphs)."""
    out, i = [], 0
    while i < len(data):
        n = _utf8_length(data[i])
        chunk = data[i:i + n] if n else b""
        try:
            if n and len(chunk) == n:
                out.append(chunk.decode("utf-8"))
                i += n
                continue
        except UnicodeDecodeError:
            pass
        j = i + 1
        while j < len(data) and 0x80 <= data[j] <= 0xBF and not _utf8_length(data[j]):
            j += 1  # the rest of this broken character
        out.append(f"{PARTIAL_OPEN}byte{'s' if j - i > 1 else ''} {' '.join(f'{b:02X}' for b in data[i:j])}"
                   f"{PARTIAL_CLOSE}")
        i = j
    return "".join(out)


def piece_text(tokenizer, token_id: int) -> str:
    """A readable form of one token on its own: decoded text (spaces kept), never raw byte-level glyphs."""
    try:
        s = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    except (IndexError, KeyError, TypeError, ValueError, OverflowError):
        s = ""
    if s and "\ufffd" not in s:
        return s
    raw = token_bytes(tokenizer, token_id)
    if raw is not None:
        return _decode_bytes_marked(raw)
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    return str(piece) if piece is not None else s


def _byte_level_segment(tokenizer, ids: list[int]) -> list[str] | None:
    """Texts of consecutive byte-level tokens; a token holding part of a character shows it marked."""
    raws = [token_bytes(tokenizer, i) for i in ids]
    if any(r is None for r in raws):
        return None
    stream = b"".join(raws)
    # each character of the stream: (first byte, end byte, text or None when the bytes are broken)
    chars, i = [], 0
    while i < len(stream):
        n = _utf8_length(stream[i])
        ch = None
        if n and i + n <= len(stream):
            try:
                ch = stream[i:i + n].decode("utf-8")
            except UnicodeDecodeError:
                ch = None
        if ch is None:
            n = 1
        chars.append((i, i + n, ch))
        i += n
    out, start, c = [], 0, 0
    for raw in raws:
        end = start + len(raw)
        parts = []
        while c < len(chars) and chars[c][0] < end:
            b0, b1, ch = chars[c]
            lo, hi = max(b0, start), min(b1, end)
            if ch is None:
                parts.append(f"{PARTIAL_OPEN}byte {stream[b0]:02X}{PARTIAL_CLOSE}")
            elif lo == b0 and hi == b1:
                parts.append(ch)
            else:
                held = f"{lo - b0 + 1}" if hi - lo == 1 else f"{lo - b0 + 1}–{hi - b0}"
                parts.append(f"{PARTIAL_OPEN}{ch} {held}/{b1 - b0}{PARTIAL_CLOSE}")
            if b1 <= end:
                c += 1
            else:
                break  # the character continues in the next token
        out.append("".join(parts))
        start = end
    return out


def sequence_texts(tokenizer, ids: Sequence[int], offsets: Sequence[tuple[int, int]] | None,
                   texts: Sequence[str], segments: Sequence[int | None] | None = None,
                   special: Sequence[bool] | None = None) -> list[str]:
    """Display text of every token of an encoded text, in context (see the module docstring).

    `offsets[i]` is token i's character span in `texts[segments[i]]` (segment 0 when `segments` is
    None); special tokens (and tokens without a segment) show their own string ("[CLS]").
    """
    ids = [int(i) for i in ids]
    n = len(ids)
    special = [bool(s) for s in special] if special is not None else [False] * n
    if segments is None:
        segments = [None if special[i] else 0 for i in range(n)]
    out: list[str | None] = [None] * n
    # runs of consecutive ordinary tokens of one segment
    runs, i = [], 0
    while i < n:
        seg = segments[i]
        if special[i] or seg is None:
            out[i] = piece_text(tokenizer, ids[i])
            i += 1
            continue
        j = i
        while j < n and not special[j] and segments[j] == seg:
            j += 1
        runs.append((i, j, seg))
        i = j
    unk = getattr(tokenizer, "unk_token_id", None)
    for a, b, seg in runs:
        text = texts[seg] if 0 <= seg < len(texts) and texts[seg] is not None else None
        decoded = _byte_level_segment(tokenizer, ids[a:b])
        if decoded is not None:
            out[a:b] = decoded
            continue
        if offsets is None or text is None:
            out[a:b] = [piece_text(tokenizer, t) for t in ids[a:b]]
            continue
        prev_end = None
        for k in range(a, b):
            s, e = (int(x) for x in offsets[k])
            gap = text[prev_end:s] if prev_end is not None and s >= prev_end else ""
            covered = text[s:e]
            if unk is not None and ids[k] == unk and covered:
                shown = f"[UNK: {covered}]"
            elif prev_end is not None and s < prev_end:  # overlaps the previous token: part of a character
                shown = f"{PARTIAL_OPEN}{covered} part{PARTIAL_CLOSE}"
            elif covered:
                shown = covered
            else:
                shown = piece_text(tokenizer, ids[k])
            out[k] = gap + shown
            prev_end = max(e, prev_end or 0)
    return [s if s is not None else "" for s in out]


def text_tokens(tokenizer, ids: Sequence[int], offsets: Sequence[tuple[int, int]] | None, text: str) -> list[str]:
    """`sequence_texts` for the tokens of one text (special tokens found by the tokenizer's special ids)."""
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    return sequence_texts(tokenizer, ids, offsets, (text,), special=[int(i) in specials for i in ids])


def split_gap(token: str) -> tuple[str, str]:
    """(leading whitespace, the rest) of a token; a token that is all whitespace keeps it as its body."""
    s = str(token)
    body = s.lstrip()
    if not body:
        return "", s
    return s[: len(s) - len(body)], body


def visible(token: str) -> str:
    """A token as a reader can see it: newlines and tabs as symbols, a blank token's spaces as ␣."""
    s = "".join(_INVISIBLE.get(ch, ch) for ch in str(token))
    return s.replace(" ", "␣") if s.strip() == "" else (s if s else "∅")


def guesses(tokens, probs) -> str:
    """A model's top predictions as 'token (p), ...' (each token visible)."""
    return ", ".join(f"{visible(t)} ({float(p):.2f})" for t, p in zip(tokens, probs))


def _gap_html(gap: str) -> str:
    """Whitespace between tokens: spaces stay breakable, a newline is shown (⏎) and breaks the line."""
    out = []
    for ch in gap:
        if ch == "\n":
            out.append('<span style="color:#999">⏎</span><br>')
        elif ch == "\t":
            out.append("&emsp;")
        elif ch != "\r":
            out.append(" ")
    return "".join(out)


def strip_html(tokens: Sequence[str], *, backgrounds: Sequence[str] | None = None,
               titles: Sequence[str] | None = None, special: Sequence[bool] | None = None,
               muted: Sequence[bool] | None = None, chips: bool = False, data_index: bool = False) -> str:
    """Tokens as one wrapping line of escaped spans, the original spaces between them (outside the spans).

    Word pieces without a space between them touch, so a word reads as a word; lines wrap at the
    spaces and, for a very long token, anywhere (`overflow-wrap:anywhere`): never past the right edge.
    `chips` draws a thin border round each token (reports); `data_index` adds data-token="i".
    """
    parts = []
    for i, tok in enumerate(tokens):
        gap, body = split_gap(tok)
        is_special = bool(special[i]) if special is not None and i < len(special) else False
        style = "border-radius:3px;padding:1px 0;white-space:pre-wrap;"
        if chips:
            style += "border:1px solid #d0d7de;padding:1px 2px;margin-right:1px;"
        if backgrounds is not None and i < len(backgrounds) and backgrounds[i]:
            style += f"background:{html.escape(backgrounds[i], quote=True)};"
        if is_special or (muted is not None and i < len(muted) and muted[i]):
            style += "color:#888;"
        if is_special:
            style += "font-style:italic;"
        title = titles[i] if titles is not None and i < len(titles) else f"#{i}"
        attrs = f' data-token="{i}"' if data_index else ""
        shown = html.escape(visible(body), quote=False)
        parts.append(f"{_gap_html(gap)}<span{attrs} title=\"{html.escape(str(title), quote=True)}\" "
                     f"style=\"{style}\">{shown}</span>")
    return ('<div style="font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;line-height:2;'
            f'overflow-wrap:anywhere;word-break:normal;max-width:100%">{"".join(parts)}</div>')


def same_vocabulary(ta, tb) -> bool:
    """Same token → id map (cheap length test first: get_vocab builds a dict of the whole vocabulary)."""
    return ta is tb or (len(ta) == len(tb) and ta.get_vocab() == tb.get_vocab())
