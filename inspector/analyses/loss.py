"""Per-token loss: what cross-entropy, perplexity, MLM loss and NSP look like on a real model (seeds 000, 002, 004).

- Causal LM: `causal_token_loss` (per-token CE, surprisal, entropy, rank, top-k, perplexity; long
  texts by a strided sliding window, never truncated) and `score_corpus` (bounded-memory corpus
  perplexity for benchmarks).
- Masked LM: `masked_lm_loss` (seeded BERT 15 % / 80-10-10 masking, mean CE over chosen positions),
  `pseudo_log_likelihood` (each token masked in turn) and `next_sentence` (P(IsNext)).
- `logit_gradient_check`: ∂L/∂logits by autograd against P − onehot, and where the gradient goes
  (input embedding rows; output rows, which are the embedding rows when weights are tied).

Logits are computed only for the positions that are scored, in chunks, from the model's own
body and head modules, so memory stays bounded for long texts and large vocabularies.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .. import families
from ..errors import InputError, NotAvailableError
from ._common import check_int
from ..inputs import Encoded, clean_text, display_token, display_tokens, encode
from ..tokens import text_tokens

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

__all__ = [
    "CausalLossReport", "CorpusScore", "MaskedLossReport", "PLLReport", "NSPResult", "GradientCheck",
    "causal_token_loss", "score_corpus", "masked_lm_loss", "pseudo_log_likelihood", "next_sentence",
    "logit_gradient_check", "masking_split", "MaskingSplit",
    "REPLACED_BY_MASK", "REPLACED_BY_RANDOM", "KEPT_UNCHANGED",
]

LN2 = math.log(2.0)
MAX_TOP_K = 100
# Elements of one (rows, V) logits chunk, whatever the vocabulary size: 2^24 float32 = 64 MiB on a
# GPU; 2^22 = 16 MiB on a CPU, where smaller chunks stay in cache (measured: corpus scoring at
# batch 16 went from 5.9 s to 4.6 s on 50 000 tokens of the bundled gpt2-mini, 2 cores).
_LOGIT_CHUNK_ELEMENTS = {"cuda": 1 << 24, "cpu": 1 << 22}

# Replacement kinds of BERT's masking (MaskedLossReport.replacement_kind).
REPLACED_BY_MASK, REPLACED_BY_RANDOM, KEPT_UNCHANGED = 0, 1, 2


# --------------------------------------------------------------------------- results


@dataclass
class CausalLossReport:
    """Per-token next-token loss of a causal LM on one text.

    T = number of tokens of the text, N = T − 1 scored tokens (the first token has no left
    context). Per-token arrays have shape (N,) and are aligned with `positions`, the index of the
    scored token in `tokens`. Natural logs (nats) unless the name says bits.
    """

    spec: str
    text: str
    tokens: list[str]  # (T,) display strings
    token_ids: np.ndarray  # (T,) int64
    offsets: list[tuple[int, int]]  # (T,) character span of each token in `text`
    positions: np.ndarray  # (N,) int64, index into `tokens` of each scored token
    ce_nats: np.ndarray  # (N,) −log P(token | left context), nats
    ce_bits: np.ndarray  # (N,) the same in bits
    surprisal_bits: np.ndarray  # (N,) surprisal −log2 P(token | context) (= ce_bits, named for the UI)
    prob: np.ndarray  # (N,) P(true token)
    entropy_nats: np.ndarray  # (N,) entropy of the predictive distribution, nats
    entropy_bits: np.ndarray  # (N,)
    rank: np.ndarray  # (N,) int64, 1 = the true token was the most likely
    context_len: np.ndarray  # (N,) int64, tokens of left context the prediction saw (window limits it)
    top_k: int
    top_ids: np.ndarray  # (N, k) int64, most likely next tokens, best first
    top_probs: np.ndarray  # (N, k) their probabilities
    top_tokens: list[list[str]]  # (N, k) display strings
    mean_ce_nats: float  # mean CE over the N scored tokens
    mean_ce_bits: float  # bits per token
    perplexity: float  # exp(mean_ce_nats)
    n_scored: int
    window: int  # tokens per forward pass
    stride: int  # step between window starts (each window after the first scores <= stride tokens)
    n_windows: int


@dataclass
class CorpusScore:
    """Sliding-window perplexity of a long token stream. Unpacks as (nll_sum, n_tokens, perplexity, tokens_per_s)."""

    nll_sum: float  # Σ −log P(token | context), nats
    n_tokens: int  # scored tokens (all but the first)
    perplexity: float  # exp(nll_sum / n_tokens)
    tokens_per_s: float  # scored tokens per second of wall time (tokenisation excluded)
    seconds: float
    window: int
    stride: int
    batch_size: int
    n_windows: int

    def __iter__(self):
        return iter((self.nll_sum, self.n_tokens, self.perplexity, self.tokens_per_s))


@dataclass
class MaskedLossReport:
    """BERT's MLM loss on one text with seeded masking (seed 002).

    N = content tokens of the text (special tokens excluded), M = chosen positions
    (round(mask_prob · N), at least 1). Per-chosen arrays have shape (M,), aligned with
    `positions` (index into `tokens`). Texts longer than the model's context are split into
    consecutive chunks, each wrapped in the model's special tokens (`n_chunks` says how many).
    """

    spec: str
    text: str
    seed: int
    mask_prob: float
    tokens: list[str]  # (N,) display strings of the content tokens
    token_ids: np.ndarray  # (N,) int64
    offsets: list[tuple[int, int]]  # (N,) character spans in `text`
    positions: np.ndarray  # (M,) int64, chosen positions (sorted)
    original_ids: np.ndarray  # (M,) int64, the token the model must recover
    replacement_kind: np.ndarray  # (M,) int64: 0 = [MASK], 1 = random token, 2 = unchanged
    replacement_ids: np.ndarray  # (M,) int64, the token the model saw at that position
    replacement_tokens: list[str]  # (M,)
    ce_nats: np.ndarray  # (M,) −log P(original | corrupted text)
    ce_bits: np.ndarray  # (M,)
    prob: np.ndarray  # (M,) P(original)
    rank: np.ndarray  # (M,) int64, 1 = original is the top prediction
    top_k: int
    top_ids: np.ndarray  # (M, k) int64
    top_probs: np.ndarray  # (M, k)
    top_tokens: list[list[str]]  # (M, k)
    loss: float  # mean CE over chosen positions, nats (= the model's labels= loss, −100 elsewhere)
    perplexity: float  # exp(loss)
    accuracy: float  # fraction of chosen positions where the original token ranks first
    n_candidates: int  # N
    n_chosen: int  # M
    n_mask: int  # replaced by the mask token (target 80 %)
    n_random: int  # replaced by a random token (target 10 %)
    n_unchanged: int  # left as is (target 10 %)
    n_chunks: int
    chunk_tokens: int  # content tokens per chunk (context minus special tokens)


@dataclass
class PLLReport:
    """Pseudo-log-likelihood: each content token masked in turn, log P(original | rest). Arrays (N,)."""

    spec: str
    text: str
    tokens: list[str]  # (N,)
    token_ids: np.ndarray  # (N,) int64
    offsets: list[tuple[int, int]]  # (N,)
    log_prob: np.ndarray  # (N,) log P(token | all others), nats (<= 0)
    rank: np.ndarray  # (N,) int64, 1 = the token is the top prediction at its masked position
    predicted_ids: np.ndarray  # (N,) int64, the model's top prediction
    predicted_tokens: list[str]  # (N,)
    pll: float  # Σ log_prob, nats
    pll_bits: float
    pseudo_perplexity: float  # exp(−pll / N)
    n_tokens: int
    n_chunks: int
    chunk_tokens: int


@dataclass
class NSPResult:
    """Next-sentence prediction from BERT's [CLS] head (label 0 = IsNext, 1 = NotNext)."""

    spec: str
    text_a: str
    text_b: str
    tokens: list[str]  # (T,) [CLS] A [SEP] B [SEP]
    token_type_ids: np.ndarray  # (T,) int64, segment 0 for A, 1 for B
    logits: np.ndarray  # (2,) [IsNext, NotNext]
    p_is_next: float
    p_not_next: float
    prediction: str  # "IsNext" | "NotNext"
    loss_if_next: float  # −log P(IsNext): the NSP loss if B really follows A
    truncated: bool = False  # the pair was longer than the context: cut (longest sentence first)


@dataclass
class GradientCheck:
    """Softmax-cross-entropy gradient at one position (seed 000): autograd against the closed form.

    Objective: causal LM — predict token `position + 1` from logits at `position`; masked LM —
    `position` is replaced by the mask token and its original token is the target. Gradients
    are of L = −log P(target) for that one position.
    """

    spec: str
    objective: str  # "next-token" | "masked-token"
    position: int  # position whose logits are differentiated
    target_id: int
    target_token: str
    tokens: list[str]  # (T,) model input display strings
    dtype: str
    loss: float  # L, nats
    prob_target: float  # P(target)
    logit_grad_max_abs_diff: float  # max |∂L/∂z (autograd) − (P − onehot)| over the vocabulary
    logit_grad_target: float  # ∂L/∂z_target (= P(target) − 1)
    logit_grad_sum: float  # Σ_i ∂L/∂z_i (= 0: the softmax is shift-invariant)
    logit_grad_norm: float  # ‖∂L/∂z‖
    top_k: int
    top_ids: np.ndarray  # (k,) int64, largest |∂L/∂z_i| (the target and the most likely wrong tokens)
    top_tokens: list[str]  # (k,)
    top_logit_grads: np.ndarray  # (k,) ∂L/∂z_i (autograd)
    input_grad_norm: np.ndarray  # (T,) ‖∂L/∂e_t‖, gradient reaching each input position's token-embedding row
    hidden_norm: float  # ‖h‖, the vector the output layer multiplies (final hidden state at `position`)
    tied: bool  # output matrix is the input embedding matrix (GPT-2, BERT): rows below are embedding rows
    output_formula_max_abs_diff: float  # max |∂L/∂W_out (autograd) − (P − onehot) ⊗ h|
    output_top_ids: np.ndarray  # (k,) int64, output rows with the largest gradient norm
    output_top_tokens: list[str]  # (k,)
    output_top_norms: np.ndarray  # (k,) ‖∂L/∂w_i‖ = |P(i) − y_i| · ‖h‖
    target_row_grad_norm: float  # (1 − P(target)) · ‖h‖
    target_row_cos_h: float  # cos(−∂L/∂w_target, h) = +1: a descent step pulls the target row toward h
    embedding_top_ids: np.ndarray  # (k,) int64, rows of the input embedding matrix with the largest total gradient
    embedding_top_tokens: list[str]  # (k,)
    embedding_top_norms: np.ndarray  # (k,) norm of input side (+ output side when tied), summed per row


# --------------------------------------------------------------------------- checks and small helpers


def _require_causal(lm: LoadedModel, what: str) -> None:
    if not lm.is_causal:
        kind = "an encoder-only model (no language-model head)" if not lm.has_mlm_head else "a masked language model"
        raise NotAvailableError(f"{what} is not available for {kind}.",
                                "Load a causal language model such as GPT-2, or use the masked-LM loss.")


def _require_mlm(lm: LoadedModel, what: str) -> None:
    if not lm.has_mlm_head:
        kind = "a causal language model" if lm.is_causal else "an encoder-only model (no language-model head)"
        hint = ("Use the causal (next-token) loss for this model." if lm.is_causal else
                "Load a checkpoint saved with its MLM head (BertForMaskedLM / BertForPreTraining).")
        raise NotAvailableError(f"{what} is not available for {kind}.", hint)
    if getattr(lm.tokenizer, "mask_token_id", None) is None:
        raise NotAvailableError(f"{what} is not available: this tokenizer has no mask token.")




def _logit_chunk_rows(device: torch.device, vocab_size: int) -> int:
    """Rows of hidden states projected onto the vocabulary at a time on `device`."""
    elements = _LOGIT_CHUNK_ELEMENTS.get(device.type, _LOGIT_CHUNK_ELEMENTS["cuda"])
    return max(1, elements // max(vocab_size, 1))


def _log_softmax_rows(head, hidden: torch.Tensor, vocab_size: int):
    """Yield (row slice, log-probabilities float32 (n, V)) for `hidden` (N, D) in chunks of bounded size."""
    step = _logit_chunk_rows(hidden.device, vocab_size)
    for start in range(0, hidden.shape[0], step):
        end = min(hidden.shape[0], start + step)
        yield slice(start, end), torch.log_softmax(head(hidden[start:end]).float(), dim=-1)


def _row_stats(logp: torch.Tensor, target: torch.Tensor, k: int):
    """From log-probabilities (n, V) and targets (n,): CE, entropy, rank, top-k ids and probs."""
    true = logp.gather(1, target[:, None])[:, 0]
    p = logp.exp()
    entropy = -(p * logp).nan_to_num(0.0).sum(-1)
    rank = (logp > true[:, None]).sum(-1) + 1
    top_lp, top_ids = logp.topk(k, dim=-1)
    return -true, entropy, rank, top_ids, top_lp.exp()


# --------------------------------------------------------------------------- model parts


def _vocab_out(lm: LoadedModel) -> int:
    return int(lm.model.get_output_embeddings().weight.shape[0])


def _causal_parts(lm: LoadedModel):
    """(body, head): body(input_ids) -> last hidden state (B, T, D); head(hidden) -> logits (.., V)."""
    model = lm.model
    body = model.base_model
    head = families.output_head(model)  # Gemma 2: with its final logit softcap
    if body is model or head is None:  # pragma: no cover - guarded by _require_causal
        raise NotAvailableError("This model has no language-model head.")
    kwargs = {"use_cache": False} if lm.fam.needs_use_cache_off else {}

    def run_body(input_ids, attention_mask=None, inputs_embeds=None):
        out = body(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)
        return out.last_hidden_state

    return run_body, head


def _mlm_parts(lm: LoadedModel):
    """(body, head) for BERT-family masked LMs: body -> sequence output; head = transform + decoder."""
    model = lm.model
    body = model.base_model
    predictions = getattr(getattr(model, "cls", None), "predictions", None)
    if predictions is None:  # pragma: no cover - guarded by _require_mlm
        raise NotAvailableError("This model has no masked-LM head.")

    def run_body(input_ids, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        out = body(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                   inputs_embeds=inputs_embeds)
        return out.last_hidden_state

    return run_body, predictions


# --------------------------------------------------------------------------- causal LM


def _windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
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


def _window_settings(lm: LoadedModel, window: int | None, stride: int | None) -> tuple[int, int]:
    limit = lm.max_positions or 1024
    window = limit if window is None else check_int(window, 2, limit, "window (tokens per forward pass)")
    if stride is None:
        stride = max(1, window // 2)
    else:
        stride = check_int(stride, 1, window - 1, "stride (must be smaller than the window so every token is scored)")
    return window, stride


def _window_batches(windows, batch_size: int):
    """Consecutive windows of equal length, at most `batch_size` at a time (one forward pass each)."""
    i = 0
    while i < len(windows):
        length = windows[i][1] - windows[i][0]
        j = i
        while j < len(windows) and j - i < batch_size and windows[j][1] - windows[j][0] == length:
            j += 1
        yield windows[i:j]
        i = j


def _scored_hidden(lm: LoadedModel, ids: torch.Tensor, windows, batch_size: int):
    """Yield (scored positions (n,), context lengths (n,), hidden rows predicting them (n, D)) per batch.

    Windows of equal length run together, `batch_size` per forward pass; only the hidden rows
    whose logits are needed are kept.
    """
    body, _ = _causal_parts(lm)
    for group in _window_batches(windows, batch_size):
        x = torch.stack([ids[b:e] for b, e, _ in group]).to(lm.device)  # (b, W)
        h = body(x)  # (b, W, D)
        rows, pos, ctx = [], [], []
        for r, (b, e, first) in enumerate(group):
            rows.append(h[r, first - 1 - b:e - 1 - b])  # logits at t predict token t + 1
            p = torch.arange(first, e)
            pos.append(p)
            ctx.append(p - b)
        yield torch.cat(pos), torch.cat(ctx), torch.cat(rows)


def _tokenise_causal(lm: LoadedModel, text: str):
    tok = lm.tokenizer
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=True, verbose=False)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def causal_token_loss(lm: LoadedModel, text: str, stride: int | None = None, top_k: int = 5, *, window: int | None = None,
                      batch_size: int = 8) -> CausalLossReport:
    """Per-token next-token cross-entropy, surprisal, entropy, rank and top-k alternatives, and perplexity.

    Texts longer than `window` (default: the model's context) are scored with a strided sliding
    window (default stride window // 2): every token once, never truncated.
    """
    _require_causal(lm, "Causal (next-token) loss")
    text = clean_text(text)
    top_k = check_int(top_k, 1, min(MAX_TOP_K, lm.vocab_size), "top_k")
    batch_size = check_int(batch_size, 1, 1024, "batch size")
    ids_list, offsets = _tokenise_causal(lm, text)
    n = len(ids_list)
    if n < 2:
        raise InputError(f"The text has {n} token(s); the next-token loss needs at least 2.",
                         "Use a longer text: the first token has no left context to be predicted from.")
    window, stride = _window_settings(lm, window, stride)
    ids = torch.tensor(ids_list, dtype=torch.long)
    windows = _windows(n, window, stride)
    _, head = _causal_parts(lm)

    parts = {k: [] for k in ("pos", "ctx", "ce", "ent", "rank", "top_ids", "top_p")}
    with torch.inference_mode():
        for pos, ctx, hidden in _scored_hidden(lm, ids, windows, batch_size):
            target = ids[pos].to(lm.device)
            for sl, logp in _log_softmax_rows(head, hidden, _vocab_out(lm)):
                ce, ent, rank, top_ids, top_p = _row_stats(logp, target[sl], top_k)
                for key, val in (("ce", ce), ("ent", ent), ("rank", rank), ("top_ids", top_ids), ("top_p", top_p)):
                    parts[key].append(val.cpu())
            parts["pos"].append(pos)
            parts["ctx"].append(ctx)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    ce = cat["ce"].double().numpy()
    ent = cat["ent"].double().numpy()
    top_ids = cat["top_ids"].numpy().astype(np.int64)
    mean_ce = float(ce.mean())
    return CausalLossReport(
        spec=lm.spec,
        text=text,
        tokens=text_tokens(lm.tokenizer, ids_list, offsets, text),
        token_ids=np.array(ids_list, dtype=np.int64),
        offsets=offsets,
        positions=cat["pos"].numpy().astype(np.int64),
        ce_nats=ce,
        ce_bits=ce / LN2,
        surprisal_bits=ce / LN2,
        prob=np.exp(-ce),
        entropy_nats=ent,
        entropy_bits=ent / LN2,
        rank=cat["rank"].numpy().astype(np.int64),
        context_len=cat["ctx"].numpy().astype(np.int64),
        top_k=top_k,
        top_ids=top_ids,
        top_probs=cat["top_p"].double().numpy(),
        top_tokens=[display_tokens(lm.tokenizer, row) for row in top_ids],
        mean_ce_nats=mean_ce,
        mean_ce_bits=mean_ce / LN2,
        perplexity=float(math.exp(mean_ce)),
        n_scored=int(ce.size),
        window=window,
        stride=stride,
        n_windows=len(windows),
    )


def score_corpus(lm: LoadedModel, text_or_ids, window: int | None = None, stride: int | None = None,
                 batch_size: int = 8) -> CorpusScore:
    """Perplexity of a long text or token-id stream with the sliding window, for benchmarks.

    Memory stays bounded: per batch only the scored rows' log-softmax is formed, in chunks.
    Accepts a string (tokenised here, no length limit) or a 1-D sequence of token ids.
    """
    _require_causal(lm, "Causal (next-token) loss")
    batch_size = check_int(batch_size, 1, 4096, "batch size")
    if isinstance(text_or_ids, str):
        text = clean_text(text_or_ids, max_chars=max(len(text_or_ids), 1), what="corpus")
        ids = torch.tensor(_tokenise_causal(lm, text)[0], dtype=torch.long)
    else:
        ids = torch.as_tensor(np.asarray(text_or_ids), dtype=torch.long).reshape(-1) if not isinstance(
            text_or_ids, torch.Tensor) else text_or_ids.detach().cpu().long().reshape(-1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= lm.vocab_size):
            raise InputError(f"Token ids must lie in [0, {lm.vocab_size}); got {int(ids.min())}..{int(ids.max())}.")
    n = int(ids.numel())
    if n < 2:
        raise InputError(f"The corpus has {n} token(s); scoring needs at least 2.")
    window, stride = _window_settings(lm, window, stride)
    windows = _windows(n, window, stride)
    _, head = _causal_parts(lm)

    nll_sum, n_scored = 0.0, 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for pos, _, hidden in _scored_hidden(lm, ids, windows, batch_size):
            target = ids[pos].to(lm.device)
            for sl, logp in _log_softmax_rows(head, hidden, _vocab_out(lm)):
                nll_sum -= float(logp.gather(1, target[sl, None]).double().sum())
            n_scored += int(pos.numel())
    seconds = time.perf_counter() - t0
    return CorpusScore(
        nll_sum=nll_sum,
        n_tokens=n_scored,
        perplexity=float(math.exp(nll_sum / n_scored)),
        tokens_per_s=n_scored / seconds if seconds > 0 else math.inf,
        seconds=seconds,
        window=window,
        stride=stride,
        batch_size=batch_size,
        n_windows=len(windows),
    )


# --------------------------------------------------------------------------- masked LM


@dataclass
class _Chunks:
    """Content tokens split into model inputs, each wrapped in the tokenizer's special tokens."""

    input_ids: torch.Tensor  # (C, L) padded right
    attention_mask: torch.Tensor  # (C, L)
    token_type_ids: torch.Tensor  # (C, L)
    row: np.ndarray  # (N,) chunk of each content token
    col: np.ndarray  # (N,) column of each content token in its chunk
    chunk_tokens: int


def _special_frame(tok) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sentence ([CLS] … [SEP] for BERT)."""
    full = tok("a")["input_ids"]
    bare = tok("a", add_special_tokens=False)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i], full[i + len(bare):]
    return [], []  # pragma: no cover


def _content_tokens(lm: LoadedModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = list(enc["input_ids"])
    if not ids:
        raise InputError("The text has no tokens.", "Type or paste some text.")
    return ids, [tuple(o) for o in enc["offset_mapping"]]


def _make_chunks(lm: LoadedModel, content_ids) -> _Chunks:
    prefix, suffix = _special_frame(lm.tokenizer)
    limit = (lm.max_positions or 512) - len(prefix) - len(suffix)
    n = len(content_ids)
    starts = list(range(0, n, limit))
    L = len(prefix) + min(limit, n) + len(suffix)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
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
    return _Chunks(ids, mask, torch.zeros_like(ids), row, col, limit)


def _mlm_logprobs(lm: LoadedModel, input_ids, attention_mask, token_type_ids, rows, cols, batch_size: int):
    """Yield (index slice into rows/cols, log P over the vocabulary (n, V)) for the selected (row, col) cells."""
    body, head = _mlm_parts(lm)
    rows_t, cols_t = torch.as_tensor(rows), torch.as_tensor(cols)
    for b0 in range(0, input_ids.shape[0], batch_size):
        b1 = min(input_ids.shape[0], b0 + batch_size)
        sel = ((rows_t >= b0) & (rows_t < b1)).nonzero()[:, 0]
        if sel.numel() == 0:
            continue
        h = body(input_ids[b0:b1].to(lm.device), attention_mask[b0:b1].to(lm.device),
                 token_type_ids[b0:b1].to(lm.device))
        hidden = h[rows_t[sel] - b0, cols_t[sel]]  # (n, D)
        for sl, logp in _log_softmax_rows(head, hidden, _vocab_out(lm)):
            yield sel[sl], logp


def _random_vocab(lm: LoadedModel) -> np.ndarray:
    tok = lm.tokenizer
    v = min(len(tok), lm.vocab_size)
    return np.setdiff1d(np.arange(v), np.array(tok.all_special_ids, dtype=np.int64))


def _choose_masking(lm: LoadedModel, content: list[int], seed: int, mask_prob: float):
    """BERT's seeded corruption of `content` token ids: (positions, kind, original ids, replacement ids), each (M,).

    round(mask_prob · N) positions (at least one) without replacement; each becomes the mask token
    (80 %), a random non-special token (10 %) or stays (10 %). Needs no forward pass.
    """
    n = len(content)
    rng = np.random.default_rng(seed)
    m = min(n, max(1, int(math.floor(mask_prob * n + 0.5))))
    positions = np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)
    u = rng.random(m)
    kind = np.where(u < 0.8, REPLACED_BY_MASK, np.where(u < 0.9, REPLACED_BY_RANDOM, KEPT_UNCHANGED)).astype(np.int64)
    vocab = _random_vocab(lm)
    random_ids = vocab[rng.integers(0, len(vocab), size=m)]
    original = np.array(content, dtype=np.int64)[positions]
    replacement = np.where(kind == REPLACED_BY_MASK, lm.tokenizer.mask_token_id,
                           np.where(kind == REPLACED_BY_RANDOM, random_ids, original)).astype(np.int64)
    return positions, kind, original, replacement


@dataclass(frozen=True)
class MaskingSplit:
    """How `masked_lm_loss` would corrupt a text (same seed, same choice), counted without running the model."""

    n_candidates: int  # content tokens of the text
    n_chosen: int
    n_mask: int
    n_random: int
    n_unchanged: int


def masking_split(lm: LoadedModel, text: str, seed: int = 0, mask_prob: float = 0.15) -> MaskingSplit:
    """The 15 % / 80-10-10 choice `masked_lm_loss(lm, text, seed, mask_prob)` makes, without its forward passes."""
    _require_mlm(lm, "Masked-LM masking")
    text = clean_text(text, max_chars=max(len(text or ""), 1))
    seed = check_int(seed, 0, 2 ** 63 - 1, "seed")
    content, _ = _content_tokens(lm, text)
    positions, kind, _, _ = _choose_masking(lm, content, seed, mask_prob)
    return MaskingSplit(n_candidates=len(content), n_chosen=int(len(positions)),
                        n_mask=int((kind == REPLACED_BY_MASK).sum()), n_random=int((kind == REPLACED_BY_RANDOM).sum()),
                        n_unchanged=int((kind == KEPT_UNCHANGED).sum()))


def masked_lm_loss(lm: LoadedModel, text: str, seed: int = 0, mask_prob: float = 0.15, top_k: int = 5, *,
                   batch_size: int = 8) -> MaskedLossReport:
    """BERT's masked-LM loss with seeded 15 % / 80-10-10 masking of the non-special tokens.

    round(mask_prob · N) positions (at least one) are chosen without replacement; each becomes
    the mask token (80 %), a random non-special token (10 %) or stays (10 %). The loss is the
    mean cross-entropy over the chosen positions.
    """
    _require_mlm(lm, "Masked-LM loss")
    text = clean_text(text)
    seed = check_int(seed, 0, 2 ** 63 - 1, "seed")
    if isinstance(mask_prob, bool) or not isinstance(mask_prob, (int, float)) or not 0.0 < mask_prob <= 1.0:
        raise InputError(f"The masking probability is {mask_prob!r}; it must be in (0, 1].", "BERT uses 0.15.")
    top_k = check_int(top_k, 1, min(MAX_TOP_K, lm.vocab_size), "top_k")
    batch_size = check_int(batch_size, 1, 1024, "batch size")
    tok = lm.tokenizer
    content, offsets = _content_tokens(lm, text)
    n = len(content)
    positions, kind, original, replacement = _choose_masking(lm, content, seed, mask_prob)
    m = len(positions)
    corrupted = np.array(content, dtype=np.int64)
    corrupted[positions] = replacement

    chunks = _make_chunks(lm, corrupted.tolist())
    target = torch.as_tensor(original)
    ce = torch.zeros(m, dtype=torch.float64)
    rank = torch.zeros(m, dtype=torch.long)
    top_ids = torch.zeros((m, top_k), dtype=torch.long)
    top_p = torch.zeros((m, top_k), dtype=torch.float64)
    with torch.inference_mode():
        for sel, logp in _mlm_logprobs(lm, chunks.input_ids, chunks.attention_mask, chunks.token_type_ids,
                                       chunks.row[positions], chunks.col[positions], batch_size):
            c, _, r, ti, tp = _row_stats(logp, target[sel].to(logp.device), top_k)
            ce[sel], rank[sel], top_ids[sel], top_p[sel] = c.double().cpu(), r.cpu(), ti.cpu(), tp.double().cpu()
    ce_np = ce.numpy()
    loss = float(ce_np.mean())
    top_ids_np = top_ids.numpy().astype(np.int64)
    return MaskedLossReport(
        spec=lm.spec,
        text=text,
        seed=seed,
        mask_prob=float(mask_prob),
        tokens=text_tokens(tok, content, offsets, text),
        token_ids=np.array(content, dtype=np.int64),
        offsets=offsets,
        positions=positions,
        original_ids=original,
        replacement_kind=kind,
        replacement_ids=replacement,
        replacement_tokens=display_tokens(tok, replacement),
        ce_nats=ce_np,
        ce_bits=ce_np / LN2,
        prob=np.exp(-ce_np),
        rank=rank.numpy().astype(np.int64),
        top_k=top_k,
        top_ids=top_ids_np,
        top_probs=top_p.numpy(),
        top_tokens=[display_tokens(tok, row) for row in top_ids_np],
        loss=loss,
        perplexity=float(math.exp(loss)),
        accuracy=float((rank.numpy() == 1).mean()),
        n_candidates=n,
        n_chosen=m,
        n_mask=int((kind == REPLACED_BY_MASK).sum()),
        n_random=int((kind == REPLACED_BY_RANDOM).sum()),
        n_unchanged=int((kind == KEPT_UNCHANGED).sum()),
        n_chunks=int(chunks.input_ids.shape[0]),
        chunk_tokens=chunks.chunk_tokens,
    )


def pseudo_log_likelihood(lm: LoadedModel, text: str, batch_size: int = 16) -> PLLReport:
    """Mask each content token in turn (batched copies) and sum log P(original | rest)."""
    _require_mlm(lm, "Pseudo-log-likelihood")
    text = clean_text(text)
    batch_size = check_int(batch_size, 1, 1024, "batch size")
    tok = lm.tokenizer
    content, offsets = _content_tokens(lm, text)
    n = len(content)
    chunks = _make_chunks(lm, content)

    # One masked copy per content token: copy i is chunk row[i] with column col[i] masked.
    copies = torch.as_tensor(chunks.row)
    cols = torch.as_tensor(chunks.col)
    target = torch.tensor(content, dtype=torch.long)
    log_prob = torch.zeros(n, dtype=torch.float64)
    rank = torch.zeros(n, dtype=torch.long)
    pred = torch.zeros(n, dtype=torch.long)
    with torch.inference_mode():
        for c0 in range(0, n, batch_size):
            c1 = min(n, c0 + batch_size)
            idx = torch.arange(c0, c1)
            ids = chunks.input_ids[copies[idx]].clone()
            ids[torch.arange(c1 - c0), cols[idx]] = tok.mask_token_id
            for sel, logp in _mlm_logprobs(lm, ids, chunks.attention_mask[copies[idx]],
                                           chunks.token_type_ids[copies[idx]], np.arange(c1 - c0),
                                           cols[idx].numpy(), batch_size):
                t = target[idx[sel]].to(logp.device)
                true = logp.gather(1, t[:, None])[:, 0]
                log_prob[idx[sel]] = true.double().cpu()
                rank[idx[sel]] = ((logp > true[:, None]).sum(-1) + 1).cpu()
                pred[idx[sel]] = logp.argmax(-1).cpu()
    lp = log_prob.numpy()
    pll = float(lp.sum())
    return PLLReport(
        spec=lm.spec,
        text=text,
        tokens=text_tokens(tok, content, offsets, text),
        token_ids=np.array(content, dtype=np.int64),
        offsets=offsets,
        log_prob=lp,
        rank=rank.numpy().astype(np.int64),
        predicted_ids=pred.numpy().astype(np.int64),
        predicted_tokens=display_tokens(tok, pred.tolist()),
        pll=pll,
        pll_bits=pll / LN2,
        pseudo_perplexity=float(math.exp(-pll / n)),
        n_tokens=n,
        n_chunks=int(chunks.input_ids.shape[0]),
        chunk_tokens=chunks.chunk_tokens,
    )


def next_sentence(lm: LoadedModel, text_a: str, text_b: str) -> NSPResult:
    """P(IsNext) of BERT's next-sentence head for the pair [CLS] A [SEP] B [SEP]."""
    if not lm.has_nsp_head:
        raise NotAvailableError(
            f"Next-sentence prediction is not available for a {lm.kind.label}: it has no NSP head.",
            "Load a checkpoint saved with BertForPreTraining (MLM + NSP heads).")
    if text_b is None or not str(text_b).strip():
        raise InputError("The second sentence is empty.", "Type the sentence that might follow the first.")
    enc = encode(lm, text_a, text_b)  # too long: cut like every other analysis, `truncated` says so
    with torch.inference_mode():
        out = lm.model(**{k: v.to(lm.device) for k, v in enc.batch().items()})
    logits = out.seq_relationship_logits[0].float().cpu().double()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp().numpy()
    return NSPResult(
        spec=lm.spec,
        text_a=enc.text,
        text_b=enc.text_pair,
        tokens=list(enc.tokens),
        token_type_ids=enc.token_type_ids[0].numpy().astype(np.int64),
        logits=logits.numpy(),
        p_is_next=float(p[0]),
        p_not_next=float(p[1]),
        prediction="IsNext" if p[0] >= p[1] else "NotNext",
        loss_if_next=float(-logp[0]),
        truncated=bool(enc.truncated),
    )


# --------------------------------------------------------------------------- gradient view (seed 000)


def logit_gradient_check(lm: LoadedModel, encoded: Encoded, position: int, top_k: int = 10) -> GradientCheck:
    """∂L/∂logits by autograd vs P − onehot at one position, and the gradient reaching embedding rows.

    Gradients are taken with respect to `inputs_embeds` and a detached view of the output weight
    with `torch.autograd.grad`: the shared model's parameters, their `requires_grad` flags and
    `.grad` fields are never touched.
    """
    if not (lm.is_causal or lm.has_mlm_head):
        raise NotAvailableError(
            "The logit-gradient view is not available for an encoder-only model (no language-model head).")
    if not isinstance(encoded, Encoded):
        raise InputError("Give an encoded text (inspector.inputs.encode).")
    tok = lm.tokenizer
    top_k = check_int(top_k, 1, min(MAX_TOP_K, lm.vocab_size), "top_k")
    ids = encoded.input_ids[0].clone()
    T = ids.numel()
    if lm.is_causal:
        if T < 2:
            raise InputError("The text has 1 token; the next-token gradient needs at least 2.", "Use a longer text.")
        position = check_int(position, 0, T - 2, "position (the last token has no next token)")
        target_id = int(ids[position + 1])
        objective = "next-token"
        body, head = _causal_parts(lm)
    else:
        _require_mlm(lm, "The logit-gradient view")
        position = check_int(position, 0, T - 1, "position")
        if bool(encoded.special[position]):
            raise InputError(f"Position {position} is a special token ({encoded.tokens[position]}).",
                             "Choose a position of a word piece of the text.")
        target_id = int(ids[position])
        ids[position] = tok.mask_token_id
        objective = "masked-token"
        body, head = _mlm_parts(lm)

    decoder = lm.model.get_output_embeddings()  # Linear(D, V); the last layer of `head`
    embedding = lm.model.get_input_embeddings()
    tied = decoder.weight.data_ptr() == embedding.weight.data_ptr()
    dev = lm.device
    with torch.enable_grad():
        inputs_embeds = embedding(ids[None].to(dev)).detach().requires_grad_(True)  # (1, T, D)
        kwargs = {"attention_mask": encoded.attention_mask.to(dev)}
        if not lm.is_causal and encoded.token_type_ids is not None:
            kwargs["token_type_ids"] = encoded.token_type_ids.to(dev)
        hidden = body(None, inputs_embeds=inputs_embeds, **kwargs)[0, position]  # (D,)
        if lm.is_causal:
            h = hidden
        else:
            h = head.transform(hidden)  # BERT: dense + GELU + LayerNorm before the decoder
        w_out = decoder.weight.detach().requires_grad_(True)  # a new leaf sharing storage; the parameter is untouched
        logits = F.linear(h, w_out, decoder.bias.detach() if decoder.bias is not None else None)  # (V,)
        loss = F.cross_entropy(logits[None].float(), torch.tensor([target_id], device=dev))
        g_logits, g_embeds, g_w = torch.autograd.grad(loss, [logits, inputs_embeds, w_out])

    with torch.no_grad():
        z = logits.detach().float()
        p = torch.softmax(z, dim=-1)
        onehot = torch.zeros_like(p)
        onehot[target_id] = 1.0
        closed = p - onehot  # (V,) seed 000: ∂L/∂z_i = P(i) − y_i
        g_logits = g_logits.float()
        diff_logits = float((g_logits - closed).abs().max())
        h_vec = h.detach().float()
        g_w = g_w.float()  # (V, D)
        diff_out = float((g_w - closed[:, None] * h_vec[None, :]).abs().max())
        out_norms = g_w.norm(dim=-1)  # (V,)
        k = min(top_k, out_norms.numel())
        out_top = out_norms.topk(k)
        logit_top = g_logits.abs().topk(k).indices

        # Total gradient reaching each input-embedding row: input side summed per token id,
        # plus the output side when the matrices are one (tied weights).
        g_in = g_embeds[0].float()  # (T, D)
        g_target = g_w[target_id].clone()
        if tied:
            rows = g_w.index_add_(0, ids.to(g_in.device), g_in)  # (V, D), in place: g_w is not used below
            emb_norms = rows.norm(dim=-1)
            emb_top = emb_norms.topk(k)
            emb_ids, emb_vals = emb_top.indices, emb_top.values
        else:
            uniq, inv = torch.unique(ids, return_inverse=True)
            per_id = torch.zeros((uniq.numel(), g_in.shape[1]), dtype=torch.float32).index_add_(0, inv, g_in.cpu())
            norms = per_id.norm(dim=-1)
            order = norms.argsort(descending=True)[:k]
            emb_ids, emb_vals = uniq[order], norms[order]
        cos = float(F.cosine_similarity(-g_target, h_vec, dim=0)) if float(g_target.norm()) > 0 else math.nan

    p_target = float(p[target_id])
    return GradientCheck(
        spec=lm.spec,
        objective=objective,
        position=position,
        target_id=target_id,
        target_token=display_token(tok, target_id),
        tokens=display_tokens(tok, ids.tolist()),
        dtype=str(lm.dtype).replace("torch.", ""),
        loss=float(loss.detach()),
        prob_target=p_target,
        logit_grad_max_abs_diff=diff_logits,
        logit_grad_target=float(g_logits[target_id]),
        logit_grad_sum=float(g_logits.double().sum()),
        logit_grad_norm=float(g_logits.norm()),
        top_k=k,
        top_ids=logit_top.cpu().numpy().astype(np.int64),
        top_tokens=display_tokens(tok, logit_top.tolist()),
        top_logit_grads=g_logits[logit_top].cpu().double().numpy(),
        input_grad_norm=g_in.norm(dim=-1).cpu().double().numpy(),
        hidden_norm=float(h_vec.norm()),
        tied=bool(tied),
        output_formula_max_abs_diff=diff_out,
        output_top_ids=out_top.indices.cpu().numpy().astype(np.int64),
        output_top_tokens=display_tokens(tok, out_top.indices.tolist()),
        output_top_norms=out_top.values.cpu().double().numpy(),
        target_row_grad_norm=float(g_target.norm()),
        target_row_cos_h=cos,
        embedding_top_ids=emb_ids.cpu().numpy().astype(np.int64),
        embedding_top_tokens=display_tokens(tok, emb_ids.tolist()),
        embedding_top_norms=emb_vals.cpu().double().numpy(),
    )
