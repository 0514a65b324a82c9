"""Turn user text into model inputs, with limits and clear messages instead of surprises."""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import InputError, ResourceLimitError

if TYPE_CHECKING:  # pragma: no cover
    from .models import LoadedModel

MAX_TEXT_CHARS = int(os.environ.get("INSPECTOR_MAX_TEXT_CHARS", "20000"))
MAX_BATCH = int(os.environ.get("INSPECTOR_MAX_BATCH", "16"))


@dataclass
class Encoded:
    """One tokenised text (or sentence pair), ready for the model."""

    text: str
    text_pair: str | None
    input_ids: torch.Tensor  # (1, T)
    attention_mask: torch.Tensor  # (1, T)
    token_type_ids: torch.Tensor | None  # (1, T) BERT segment ids
    offsets: list[tuple[int, int]]  # character span of each token in `text` (pair tokens: in text_pair)
    tokens: list[str]  # readable token strings for display (never HTML-escaped here)
    special: np.ndarray  # (T,) bool, [CLS]/[SEP]/<|endoftext|> etc.
    truncated: bool  # True when the text was cut to the model's context

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def batch(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out


def clean_text(text: str, *, max_chars: int | None = None, what: str = "text") -> str:
    """Validate raw user text: not empty, within the size limit, no NUL/control characters."""
    if text is None or not isinstance(text, str):
        raise InputError(f"No {what} given.", "Type or paste some text, or pick a sample.")
    limit = MAX_TEXT_CHARS if max_chars is None else max_chars
    if len(text) > limit:
        raise ResourceLimitError(
            f"The {what} has {len(text):,} characters; the limit is {limit:,}.",
            "Shorten the text, or score long documents with the CLI's sliding window "
            "(python -m inspector report ...); the limit is set by INSPECTOR_MAX_TEXT_CHARS.")
    # NUL and other C0/C1 control characters (tab/newline/carriage return are fine) are removed.
    text = "".join(ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch) != "Cc")
    if not text.strip():
        raise InputError(f"The {what} is empty (or only whitespace/control characters).",
                         "Type or paste some text, or pick a sample.")
    return text


def display_token(tokenizer, token_id: int) -> str:
    """A readable form of one token on its own: decoded text (spaces shown), never the raw byte-level glyphs
    (see `inspector.tokens.piece_text`)."""
    from .tokens import piece_text

    return piece_text(tokenizer, token_id)


def display_tokens(tokenizer, ids) -> list[str]:
    """`display_token` of each id."""
    return [display_token(tokenizer, int(i)) for i in ids]


def content_ids(lm: LoadedModel, text: str, min_tokens: int = 1, *, needs: str = "this analysis"
                ) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character spans of `text` without special tokens; at least `min_tokens` of them."""
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = list(enc["input_ids"])
    if len(ids) < min_tokens:
        raise InputError(f"The text has {len(ids)} token(s) for {lm.spec}; {needs} needs at least {min_tokens}.",
                         "Use a longer text.")
    return ids, [tuple(int(x) for x in o) for o in enc["offset_mapping"]]


def _token_texts(tok, enc, text: str, text_pair: str | None) -> list[str]:
    """Each token as the text it covers, in context (word pieces joined, spaces kept): inspector.tokens."""
    from .tokens import sequence_texts

    try:
        segments = enc.sequence_ids()
    except (ValueError, AttributeError):  # slow tokenizer: no offsets to rely on
        segments = None
    offsets = enc.get("offset_mapping")
    return sequence_texts(tok, enc["input_ids"], offsets, (text, text_pair), segments=segments,
                          special=enc["special_tokens_mask"])


def encode(lm: LoadedModel, text: str, text_pair: str | None = None, *, max_tokens: int | None = None,
           truncate: bool = True, min_tokens: int = 1, max_chars: int | None = None) -> Encoded:
    """Tokenise `text` (and an optional second sentence for BERT) for `lm`.

    Texts longer than the model's context are cut only when `truncate` is true, and
    `Encoded.truncated` says so (the UI tells the user); otherwise a clear error is raised.
    """
    text = clean_text(text, max_chars=max_chars)
    if text_pair is not None and text_pair.strip() == "":
        text_pair = None
    if text_pair is not None:
        text_pair = clean_text(text_pair, max_chars=max_chars, what="second sentence")
    tok = lm.tokenizer
    limit = max_tokens or lm.max_positions or 512
    limit = min(limit, lm.max_positions or limit)
    enc = tok(text, text_pair, return_offsets_mapping=True, return_special_tokens_mask=True,
              return_token_type_ids=lm.family == "bert", add_special_tokens=True)
    ids = enc["input_ids"]
    truncated = len(ids) > limit
    if truncated and not truncate:
        raise ResourceLimitError(f"The text has {len(ids)} tokens; this model reads at most {limit}.",
                                 "Shorten the text (the CLI's `python -m inspector perplexity` scores long "
                                 "texts with a sliding window).")
    if truncated:
        enc = tok(text, text_pair, return_offsets_mapping=True, return_special_tokens_mask=True,
                  return_token_type_ids=lm.family == "bert", truncation=True, max_length=limit)
        ids = enc["input_ids"]
    n_real = len(ids) - int(sum(enc["special_tokens_mask"]))
    if n_real < min_tokens:
        raise InputError(f"The text has {n_real} token(s); this analysis needs at least {min_tokens}.",
                         "Use a longer text.")
    input_ids = torch.tensor([ids], dtype=torch.long)
    tti = enc.get("token_type_ids")
    return Encoded(
        text=text,
        text_pair=text_pair,
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        token_type_ids=torch.tensor([tti], dtype=torch.long) if tti is not None and lm.family == "bert" else None,
        offsets=[tuple(o) for o in enc["offset_mapping"]],
        tokens=_token_texts(tok, enc, text, text_pair),
        special=np.array(enc["special_tokens_mask"], dtype=bool),
        truncated=truncated,
    )


def encode_batch(lm: LoadedModel, texts: list[str], *, padding_side: str = "right", max_tokens: int | None = None
                 ) -> dict[str, torch.Tensor]:
    """Pad several texts into one batch (attention_mask marks the real tokens)."""
    if not texts:
        raise InputError("No texts given.")
    if len(texts) > MAX_BATCH:
        raise ResourceLimitError(f"{len(texts)} texts in one request; the limit is {MAX_BATCH}.",
                                 "Split the request, or raise INSPECTOR_MAX_BATCH.")
    texts = [clean_text(t) for t in texts]
    tok = lm.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    limit = min(max_tokens or lm.max_positions or 512, lm.max_positions or 512)
    # Padded by hand: changing the shared tokenizer's padding_side would race with other sessions.
    encs = [tok(t, truncation=True, max_length=limit, return_token_type_ids=lm.family == "bert") for t in texts]
    T = max(len(e["input_ids"]) for e in encs)
    ids = torch.full((len(encs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encs), T), dtype=torch.long)
    tti = torch.zeros((len(encs), T), dtype=torch.long)
    for row, e in enumerate(encs):
        n = len(e["input_ids"])
        sl = slice(T - n, T) if padding_side == "left" else slice(0, n)
        ids[row, sl] = torch.tensor(e["input_ids"])
        mask[row, sl] = 1
        if "token_type_ids" in e:
            tti[row, sl] = torch.tensor(e["token_type_ids"])
    out = {"input_ids": ids, "attention_mask": mask}
    if lm.family == "bert":
        out["token_type_ids"] = tti
    return out
