"""Scoring machinery shared by the loss analyses and the model comparison (seeds 000, 002, 004).

- Model parts: `causal_parts` / `mlm_parts` give (body, head): the body maps ids to the final
  hidden states, the head maps hidden rows to vocabulary logits, so logits are formed only for
  the rows that are scored (`vocab_out`: the head's output size).
- Sliding windows (Hugging Face's fixed-length perplexity scheme): `windows`, `window_settings`,
  `window_batches` and `scored_hidden`, which predict every token but the first exactly once.
- Chunked log-softmax: `logit_chunk_rows`, `log_softmax` / `log_softmax_rows` (bounded memory
  whatever the vocabulary) and `row_stats` (CE, entropy, rank, top-k of each row).
- Masked LM: `special_frame`, `content_tokens`, `make_chunks` (texts longer than the context
  in context-sized chunks, each wrapped in the special tokens), `mlm_hidden` / `mlm_logprobs`,
  and BERT's seeded 15 % / 80-10-10 corruption (`choose_masking`, `random_vocab`).

Every function here is pure with respect to the model: it runs forward passes and never
changes a parameter or attaches a hook.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from .. import families
from ..errors import InputError, NotAvailableError
from ._common import check_int

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

__all__ = [
    "require_causal", "require_mlm", "vocab_out", "causal_parts", "mlm_parts",
    "windows", "window_settings", "window_batches", "scored_hidden",
    "logit_chunk_rows", "log_softmax", "log_softmax_rows", "row_stats",
    "Chunks", "special_frame", "content_tokens", "make_chunks", "mlm_hidden", "mlm_logprobs",
    "random_vocab", "choose_masking", "REPLACED_BY_MASK", "REPLACED_BY_RANDOM", "KEPT_UNCHANGED",
]

# Elements of one (rows, V) logits chunk, whatever the vocabulary size: 2^24 float32 = 64 MiB on a
# GPU; 2^22 = 16 MiB on a CPU, where smaller chunks stay in cache (measured: corpus scoring at
# batch 16 went from 5.9 s to 4.6 s on 50 000 tokens of the bundled gpt2-mini, 2 cores).
LOGIT_CHUNK_ELEMENTS = {"cuda": 1 << 24, "cpu": 1 << 22}

# Replacement kinds of BERT's masking (`choose_masking`, MaskedLossReport.replacement_kind).
REPLACED_BY_MASK, REPLACED_BY_RANDOM, KEPT_UNCHANGED = 0, 1, 2


# --------------------------------------------------------------------------- checks and model parts


def require_causal(lm: LoadedModel, what: str) -> None:
    """NotAvailableError (saying what the model is instead) unless `lm` is a causal LM."""
    if not lm.is_causal:
        kind = "an encoder-only model (no language-model head)" if not lm.has_mlm_head else "a masked language model"
        raise NotAvailableError(f"{what} is not available for {kind}.",
                                "Load a causal language model such as GPT-2, or use the masked-LM loss.")


def require_mlm(lm: LoadedModel, what: str) -> None:
    """NotAvailableError unless `lm` has a masked-LM head and its tokenizer a mask token."""
    if not lm.has_mlm_head:
        kind = "a causal language model" if lm.is_causal else "an encoder-only model (no language-model head)"
        hint = ("Use the causal (next-token) loss for this model." if lm.is_causal else
                "Load a checkpoint saved with its MLM head (BertForMaskedLM / BertForPreTraining).")
        raise NotAvailableError(f"{what} is not available for {kind}.", hint)
    if getattr(lm.tokenizer, "mask_token_id", None) is None:
        raise NotAvailableError(f"{what} is not available: this tokenizer has no mask token.")


def vocab_out(lm: LoadedModel) -> int:
    """Size of the output layer (rows of the unembedding; the config's vocabulary when there is none)."""
    head = lm.model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(lm.vocab_size)


def causal_parts(lm: LoadedModel):
    """(body, head): body(input_ids) -> last hidden state (B, T, D); head(hidden) -> logits (.., V)."""
    model = lm.model
    body = model.base_model
    head = families.output_head(model)  # Gemma 2: with its final logit softcap
    if body is model or head is None:  # pragma: no cover - guarded by require_causal
        raise NotAvailableError(f"{lm.spec} has no language-model head.")
    kwargs = {"use_cache": False} if lm.fam.needs_use_cache_off else {}

    def run_body(input_ids, attention_mask=None, inputs_embeds=None):
        out = body(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)
        return out.last_hidden_state

    return run_body, head


def mlm_parts(lm: LoadedModel):
    """(body, head) for BERT-family masked LMs: body -> sequence output; head = transform + decoder."""
    model = lm.model
    body = model.base_model
    predictions = getattr(getattr(model, "cls", None), "predictions", None)
    if body is model or predictions is None:  # pragma: no cover - guarded by require_mlm
        raise NotAvailableError(f"{lm.spec} has no masked-LM head.")

    def run_body(input_ids, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        out = body(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                   inputs_embeds=inputs_embeds)
        return out.last_hidden_state

    return run_body, predictions


# --------------------------------------------------------------------------- sliding windows (causal LM)


def windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Hugging Face's fixed-length perplexity scheme: (begin, end, first scored position) per window.

    Windows start every `stride` tokens; each scores the tokens after the previous window's end,
    so every token but the first is scored exactly once, with at least window − stride tokens of
    left context after the first window.
    """
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
    return out


def window_settings(lm: LoadedModel, window: int | None, stride: int | None) -> tuple[int, int]:
    """(window, stride) checked against the model's context: default window = context, stride = window // 2."""
    limit = lm.max_positions or 1024
    window = limit if window is None else check_int(window, 2, limit, "window (tokens per forward pass)")
    if stride is None:
        stride = max(1, window // 2)
    else:
        stride = check_int(stride, 1, window - 1, "stride (must be smaller than the window so every token is scored)")
    return window, stride


def window_batches(wins, batch_size: int):
    """Consecutive windows of equal length, at most `batch_size` at a time (one forward pass each)."""
    i = 0
    while i < len(wins):
        length = wins[i][1] - wins[i][0]
        j = i
        while j < len(wins) and j - i < batch_size and wins[j][1] - wins[j][0] == length:
            j += 1
        yield wins[i:j]
        i = j


def scored_hidden(lm: LoadedModel, ids: torch.Tensor, wins, batch_size: int):
    """Yield (scored positions (n,), context lengths (n,), hidden rows predicting them (n, D)) per batch.

    `ids` is the whole (T,) token stream. Windows of equal length run together, `batch_size` per
    forward pass; only the hidden rows whose logits are needed are kept (row t predicts t + 1).
    """
    body, _ = causal_parts(lm)
    for group in window_batches(wins, batch_size):
        x = torch.stack([ids[b:e] for b, e, _ in group]).to(lm.device)  # (b, W)
        h = body(x)  # (b, W, D)
        rows, pos, ctx = [], [], []
        for r, (b, e, first) in enumerate(group):
            rows.append(h[r, first - 1 - b:e - 1 - b])  # logits at t predict token t + 1
            p = torch.arange(first, e)
            pos.append(p)
            ctx.append(p - b)
        yield torch.cat(pos), torch.cat(ctx), torch.cat(rows)


# --------------------------------------------------------------------------- chunked log-softmax


def logit_chunk_rows(device: torch.device, vocab_size: int, elements: int | None = None) -> int:
    """Rows of hidden states projected onto the vocabulary at a time on `device` (`elements` per chunk)."""
    if elements is None:
        elements = LOGIT_CHUNK_ELEMENTS.get(device.type, LOGIT_CHUNK_ELEMENTS["cuda"])
    return max(1, elements // max(vocab_size, 1))


def log_softmax(head, hidden: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """log_softmax of head(hidden) (n, V), the logits cast to `dtype` first (float64 for divergences)."""
    return torch.log_softmax(head(hidden).to(dtype), dim=-1)


def log_softmax_rows(head, hidden: torch.Tensor, vocab_size: int, *, dtype: torch.dtype = torch.float32,
                     elements: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (row slice, log-probabilities (n, V) in `dtype`) for `hidden` (N, D) in chunks of bounded size.

    Each row is normalised on its own, so the chunk size changes memory, never a value.
    """
    step = logit_chunk_rows(hidden.device, vocab_size, elements)
    for start in range(0, hidden.shape[0], step):
        end = min(hidden.shape[0], start + step)
        yield slice(start, end), log_softmax(head, hidden[start:end], dtype)


def row_stats(logp: torch.Tensor, target: torch.Tensor, k: int):
    """From log-probabilities (n, V) and targets (n,): CE (n,), entropy (n,), rank (n,, 1 = top), top-k ids and probs."""
    true = logp.gather(1, target[:, None])[:, 0]
    p = logp.exp()
    entropy = -(p * logp).nan_to_num(0.0).sum(-1)
    rank = (logp > true[:, None]).sum(-1) + 1
    top_lp, top_ids = logp.topk(k, dim=-1)
    return -true, entropy, rank, top_ids, top_lp.exp()


# --------------------------------------------------------------------------- masked LM inputs


@dataclass
class Chunks:
    """Content tokens split into masked-LM inputs, each wrapped in the tokenizer's special tokens."""

    input_ids: torch.Tensor  # (C, L) padded right
    attention_mask: torch.Tensor  # (C, L)
    token_type_ids: torch.Tensor  # (C, L) zeros: one segment
    row: np.ndarray  # (N,) chunk of each content token
    col: np.ndarray  # (N,) column of each content token in its chunk
    chunk_tokens: int  # content tokens per chunk (context minus special tokens)


def special_frame(tok) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sentence ([CLS] … [SEP] for BERT)."""
    full = list(tok("a")["input_ids"])
    bare = list(tok("a", add_special_tokens=False)["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i], full[i + len(bare):]
    return [], []  # pragma: no cover


def content_tokens(lm: LoadedModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """(token ids, character spans) of `text` without special tokens; InputError when there are none."""
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = list(enc["input_ids"])
    if not ids:
        raise InputError("The text has no tokens.", "Type or paste some text.")
    return ids, [tuple(o) for o in enc["offset_mapping"]]


def make_chunks(tok, content_ids, max_positions: int) -> Chunks:
    """`content_ids` in consecutive chunks of at most max_positions − (special tokens) tokens each."""
    prefix, suffix = special_frame(tok)
    limit = max(1, max_positions - len(prefix) - len(suffix))
    n = len(content_ids)
    starts = list(range(0, n, limit))
    L = len(prefix) + min(limit, n) + len(suffix)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(starts), L), pad, dtype=torch.long)
    mask = torch.zeros((len(starts), L), dtype=torch.long)
    row = np.zeros(n, dtype=np.int64)
    col = np.zeros(n, dtype=np.int64)
    for c, s in enumerate(starts):
        piece = list(content_ids[s:s + limit])
        seq = prefix + piece + suffix
        ids[c, :len(seq)] = torch.tensor(seq)
        mask[c, :len(seq)] = 1
        row[s:s + len(piece)] = c
        col[s:s + len(piece)] = np.arange(len(prefix), len(prefix) + len(piece))
    return Chunks(ids, mask, torch.zeros_like(ids), row, col, limit)


def mlm_hidden(lm: LoadedModel, input_ids, attention_mask, token_type_ids, rows, cols, batch_size: int):
    """Yield (indices into rows/cols (n,), final hidden rows (n, D)) at the selected (row, col) cells.

    `batch_size` chunks per forward pass; only the selected rows are kept.
    """
    body, _ = mlm_parts(lm)
    rows_t, cols_t = torch.as_tensor(rows), torch.as_tensor(cols)
    for b0 in range(0, input_ids.shape[0], batch_size):
        b1 = min(input_ids.shape[0], b0 + batch_size)
        sel = ((rows_t >= b0) & (rows_t < b1)).nonzero()[:, 0]
        if sel.numel() == 0:
            continue
        h = body(input_ids[b0:b1].to(lm.device), attention_mask[b0:b1].to(lm.device),
                 token_type_ids[b0:b1].to(lm.device))  # (b, L, D)
        yield sel, h[(rows_t[sel] - b0).to(h.device), cols_t[sel].to(h.device)]


def mlm_logprobs(lm: LoadedModel, input_ids, attention_mask, token_type_ids, rows, cols, batch_size: int):
    """Yield (indices into rows/cols, log P over the vocabulary (n, V) float32) for the selected cells."""
    _, head = mlm_parts(lm)
    for sel, hidden in mlm_hidden(lm, input_ids, attention_mask, token_type_ids, rows, cols, batch_size):
        for sl, logp in log_softmax_rows(head, hidden, vocab_out(lm)):
            yield sel[sl], logp


# --------------------------------------------------------------------------- BERT's seeded masking


def random_vocab(tok, vocab_limit: int) -> np.ndarray:
    """Ids a random replacement is drawn from: the first min(len(tok), vocab_limit) ids minus the special ones."""
    v = min(len(tok), vocab_limit)
    return np.setdiff1d(np.arange(v), np.array(tok.all_special_ids, dtype=np.int64))


def choose_masking(tok, content, seed: int, mask_prob: float, vocab_limit: int):
    """BERT's seeded corruption of `content` token ids: (positions, kind, original ids, replacement ids), each (M,).

    round(mask_prob · N) positions (at least one, half up) without replacement; each becomes the
    mask token (80 %), a random non-special token (10 %) or stays (10 %). Draws from
    `np.random.default_rng(seed)`, in this order: the positions, M uniforms for the kinds, M
    random-token indices. Needs no forward pass.
    """
    n = len(content)
    rng = np.random.default_rng(seed)
    m = min(n, max(1, int(math.floor(mask_prob * n + 0.5))))
    positions = np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)
    u = rng.random(m)
    kind = np.where(u < 0.8, REPLACED_BY_MASK, np.where(u < 0.9, REPLACED_BY_RANDOM, KEPT_UNCHANGED)).astype(np.int64)
    vocab = random_vocab(tok, vocab_limit)
    random_ids = vocab[rng.integers(0, len(vocab), size=m)]
    original = np.asarray(content, dtype=np.int64)[positions]
    replacement = np.where(kind == REPLACED_BY_MASK, tok.mask_token_id,
                           np.where(kind == REPLACED_BY_RANDOM, random_ids, original)).astype(np.int64)
    return positions, kind, original, replacement
