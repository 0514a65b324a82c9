"""Compare two checkpoints side by side on one text: distributions, loss, parameters, attention scale.

What can be compared depends on the pair, and the report says which parts apply and why:

- Same tokenizer and same objective (both causal or both masked LMs): per-token KL(P_A‖P_B),
  KL(P_B‖P_A) and Jensen–Shannon of the predictive distributions, per-token loss of each,
  perplexities, the identity H(P_A,P_B) = H(P_A) + KL(P_A‖P_B) checked numerically (seed 004)
  and the positions where the two disagree most (`token_divergence`).
- Any two models with a language-model head: loss per word and bits per byte, with the two
  tokenisations aligned on character offsets (`score_text`, `align_words`). A causal LM is
  scored by next-token NLL, a masked LM by pseudo-log-likelihood (each token masked in turn).
- Same architecture (same parameter names and shapes): parameter drift per tensor, per layer
  and per norm layer (`parameter_drift`), and embedding drift per token against its frequency
  in the text (`embedding_drift`).
- Same number of layers and heads: σ(QKᵀ) per layer × head of A against B (`attention_sigma`).
  These three weight-side parts live in `compare_weights` and are re-exported here.

`compare_models` runs every part that applies and records a reason for each part that does not;
it raises only on bad input (empty or one-token text, bad settings). Every probability is
computed in float64 from `log_softmax` of the model's logits; logits are formed only for the
compared positions, in chunks, so memory stays bounded for long texts and large vocabularies.

One concern that reads better whole (about 800 lines): the prediction side of a comparison, where the
tokenizer check, the hidden rows per compared position, the divergences and the word alignment feed
each other and share their reasons for not applying; the weight side is in `compare_weights` and the
scoring machinery in `scoring`.
"""
from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError, NotAvailableError
from ._common import CHUNK_ELEMENTS, MAX_TOP_K, check_int
from ..inputs import clean_text, content_ids, display_token, display_tokens
from ..tokens import same_vocabulary, text_tokens
from .compare_weights import (DRIFT_COMPONENTS, AttentionComparison, EmbeddingDrift, ParameterDrift,  # noqa: F401
                              attention_sigma, attention_unavailable_reason, drift_unavailable_reason,
                              embedding_drift, embedding_drift_unavailable_reason, parameter_drift)
from .scoring import (Chunks, causal_parts, choose_masking, log_softmax, log_softmax_rows, logit_chunk_rows,
                      make_chunks, mlm_hidden, mlm_parts, scored_hidden, special_frame, vocab_out, windows)

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

__all__ = [
    "Disagreement", "TokenDivergence", "TextScore", "WordComparison", "ParameterDrift", "EmbeddingDrift",
    "AttentionComparison", "ComparisonReport",
    "compare_models", "token_divergence", "score_text", "align_words", "word_spans", "assign_tokens_to_words",
    "parameter_drift", "embedding_drift", "attention_sigma",
    "tokenizers_match", "divergence_unavailable_reason", "drift_unavailable_reason",
    "embedding_drift_unavailable_reason", "attention_unavailable_reason",
    "MASKING_EACH", "MASKING_SEEDED", "DRIFT_COMPONENTS",
]

LN2 = math.log(2.0)

# How a masked LM is compared (TokenDivergence.masking).
MASKING_EACH = "each"  # every content token masked in turn (batched copies): all positions compared
MASKING_SEEDED = "seeded"  # one seeded BERT 15 % / 80-10-10 corruption, the same input for both models
MASK_PROB = 0.15



# --------------------------------------------------------------------------- results


@dataclass
class Disagreement:
    """One position where the two models' predictive distributions differ most (largest JS)."""

    position: int  # index into TokenDivergence.tokens of the predicted token
    token: str  # display string of the token to predict
    token_id: int
    offset: tuple[int, int]  # its character span in the text
    js_nats: float
    kl_ab_nats: float
    kl_ba_nats: float
    loss_a_nats: float  # −log P_A(token)
    loss_b_nats: float
    top_ids_a: np.ndarray  # (k,) int64, A's most likely tokens, best first
    top_probs_a: np.ndarray  # (k,)
    top_tokens_a: list[str]  # (k,) display strings
    top_ids_b: np.ndarray  # (k,)
    top_probs_b: np.ndarray  # (k,)
    top_tokens_b: list[str]  # (k,)


@dataclass
class TokenDivergence:
    """Per-position divergences between two models sharing a tokenizer and an objective (seed 004).

    T = text tokens (no special tokens), N = compared positions: every text token for a causal
    LM with a prefix token and for masking "each"; the seeded 15 % for masking "seeded".
    Per-position arrays have shape (N,), aligned with `positions`. Units: nats (natural log).
    KL(P‖Q) = Σ P log(P/Q); JS = ½ KL(P‖M) + ½ KL(Q‖M), M = ½(P + Q), in [0, ln 2].
    """

    spec_a: str
    spec_b: str
    text: str
    objective: str  # "next-token" | "masked-token"
    objective_label: str  # one sentence saying exactly what was compared
    masking: str | None  # None (causal) | "each" | "seeded"
    seed: int | None  # masking seed ("seeded" only)
    prefix_token: str | None  # token put before the text so its first token is predicted too (causal)
    tokens: list[str]  # (T,) display strings
    token_ids: np.ndarray  # (T,) int64
    offsets: list[tuple[int, int]]  # (T,) character spans in `text`
    positions: np.ndarray  # (N,) int64, index into `tokens` of each compared position
    target_ids: np.ndarray  # (N,) int64, the token to predict there (= token_ids[positions])
    input_ids: np.ndarray  # (N,) int64, what the models saw at that position (mask/random/kept); = target for causal
    kl_ab_nats: np.ndarray  # (N,) KL(P_A‖P_B)
    kl_ba_nats: np.ndarray  # (N,) KL(P_B‖P_A)
    js_nats: np.ndarray  # (N,) Jensen–Shannon divergence
    entropy_a_nats: np.ndarray  # (N,) H(P_A)
    entropy_b_nats: np.ndarray  # (N,) H(P_B)
    cross_entropy_ab_nats: np.ndarray  # (N,) H(P_A, P_B) = −Σ P_A log P_B
    cross_entropy_ba_nats: np.ndarray  # (N,) H(P_B, P_A)
    identity_max_abs_residual: float  # max |H(P_A,P_B) − H(P_A) − KL(P_A‖P_B)| over positions and both directions, nats
    loss_a_nats: np.ndarray  # (N,) −log P_A(target)
    loss_b_nats: np.ndarray  # (N,)
    loss_diff_nats: np.ndarray  # (N,) loss_b − loss_a (positive: B is worse)
    mean_loss_a_nats: float
    mean_loss_b_nats: float
    perplexity_a: float  # exp(mean loss): pseudo-perplexity for a masked LM
    perplexity_b: float
    mean_kl_ab_nats: float
    mean_kl_ba_nats: float
    mean_js_nats: float
    top_k: int
    top_ids_a: np.ndarray  # (N, k) int64
    top_probs_a: np.ndarray  # (N, k)
    top_ids_b: np.ndarray  # (N, k)
    top_probs_b: np.ndarray  # (N, k)
    disagreements: list[Disagreement]  # largest JS first
    window: int  # causal: tokens per forward pass (0 for masked)
    stride: int  # causal: step between windows (0 for masked)
    n_positions: int  # N


@dataclass
class TextScore:
    """One model's per-token NLL over a text, for comparisons across tokenizers.

    T = the model's tokens of the text (no special tokens). A causal LM is scored by next-token
    NLL (with `prefix_token` before the text every token is scored); a masked LM by
    pseudo-log-likelihood, each token masked in turn (not a true likelihood: it sees both sides).
    """

    spec: str
    text: str
    objective: str  # "next-token" | "pseudo-log-likelihood"
    prefix_token: str | None
    tokens: list[str]  # (T,) display strings
    token_ids: np.ndarray  # (T,) int64
    offsets: list[tuple[int, int]]  # (T,) character spans in `text`
    scored: np.ndarray  # (T,) bool, False only for a causal LM's first token without a prefix
    nll_nats: np.ndarray  # (T,) −log P(token | context), nats; NaN where not scored
    n_scored: int
    total_nll_nats: float
    total_nll_bits: float
    n_bytes: int  # UTF-8 bytes of the scored text (from the first scored token's start, or the whole text)
    bits_per_byte: float  # total_nll_bits / n_bytes
    bits_per_token: float
    perplexity: float  # exp(mean NLL) per token (pseudo-perplexity for PLL)
    n_unknown: int  # tokens that are the tokenizer's unknown token (their loss is cheap and lossy)
    lowercases: bool  # the tokenizer lowercases (and may strip accents): it scores a normalised text


@dataclass
class WordComparison:
    """Loss per word of two models whose tokenisations differ, aligned on character offsets.

    W = words of the text, a word being a maximal run of non-whitespace characters. Each scored
    token's NLL goes to the word containing its first non-whitespace character; a token made of
    whitespace only is credited to the next word (the last word at the end of the text). So the
    per-word sums add up to each model's total NLL and both models share the same word boundaries.
    """

    text: str
    words: list[str]  # (W,)
    spans: list[tuple[int, int]]  # (W,) character spans
    n_bytes: np.ndarray  # (W,) int64, UTF-8 bytes of each word
    token_word_a: np.ndarray  # (T_a,) int64, word of each of A's tokens (-1: not scored)
    token_word_b: np.ndarray  # (T_b,)
    n_tokens_a: np.ndarray  # (W,) int64, scored tokens of A credited to the word
    n_tokens_b: np.ndarray  # (W,)
    nll_a_nats: np.ndarray  # (W,) Σ NLL of A's tokens in the word
    nll_b_nats: np.ndarray  # (W,)
    nll_diff_nats: np.ndarray  # (W,) B − A
    bits_per_byte_a: np.ndarray  # (W,) word NLL in bits / word bytes
    bits_per_byte_b: np.ndarray  # (W,)
    comparable: np.ndarray  # (W,) bool, both models scored every token of the word, at least one each
    total_nll_a_nats: float  # = Σ nll_a_nats = score_a.total_nll_nats
    total_nll_b_nats: float
    bits_per_byte_total_a: float  # score_a.bits_per_byte (bytes of the whole scored text, spaces included)
    bits_per_byte_total_b: float
    n_whitespace_tokens_a: int  # whitespace-only tokens credited to the next word
    n_whitespace_tokens_b: int
    n_straddling_a: int  # tokens whose span covers more than one word (credited to the first)
    n_straddling_b: int
    score_a: TextScore
    score_b: TextScore


@dataclass
class ComparisonReport:
    """Everything `compare_models` could compare for models A and B on one text.

    Each part is None when it does not apply, and its `*_unavailable_reason` then says why in a
    sentence ("not comparable: A has 4 layers, B has 6"). `comparable` lists in words what was
    compared; `notes` the caveats that come with it.
    """

    spec_a: str
    spec_b: str
    text: str
    kind_a: str  # ModelKind value
    kind_b: str
    family_a: str
    family_b: str
    n_layers_a: int
    n_layers_b: int
    n_heads_a: int
    n_heads_b: int
    same_tokenizer: bool
    tokenizer_difference: str | None  # why the tokenizers count as different
    seed: int
    masking: str
    divergence: TokenDivergence | None
    divergence_unavailable_reason: str | None
    words: WordComparison | None
    words_unavailable_reason: str | None
    drift: ParameterDrift | None
    drift_unavailable_reason: str | None
    embedding_drift: EmbeddingDrift | None
    embedding_drift_unavailable_reason: str | None
    attention: AttentionComparison | None
    attention_unavailable_reason: str | None
    comparable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- small helpers




def _check_masking(masking: str) -> str:
    if masking not in (MASKING_EACH, MASKING_SEEDED):
        raise InputError(f"Unknown masking '{masking}'.",
                         f"Use '{MASKING_EACH}' (each token masked in turn) or '{MASKING_SEEDED}' (seeded 15 %).")
    return masking


def _objective(lm: LoadedModel) -> str | None:
    """"causal" | "masked" | None (no language-model head)."""
    if lm.is_causal:
        return "causal"
    if lm.has_mlm_head and getattr(lm.tokenizer, "mask_token_id", None) is not None:
        return "masked"
    return None


def _no_head_reason(lm: LoadedModel, name: str) -> str:
    if lm.has_mlm_head:
        return f"{name}'s tokenizer has no mask token, so its masked-LM head cannot be scored"
    return f"{name} is an encoder without a language-model head, so it cannot score text"


def _content(lm: LoadedModel, text: str, min_tokens: int = 2) -> tuple[list[int], list[tuple[int, int]]]:
    return content_ids(lm, text, min_tokens, needs="a comparison")


def _prefix_id(lm: LoadedModel, prepend_bos: bool) -> int | None:
    """Token put before a causal LM's text so that its first token is predicted too (GPT-2: <|endoftext|>)."""
    if not prepend_bos:
        return None
    tok = lm.tokenizer
    for tid in (tok.bos_token_id, tok.eos_token_id):
        if tid is not None:
            return int(tid)
    return None


def _lowercases(tok) -> bool:
    return bool(getattr(tok, "do_lower_case", False))


# --------------------------------------------------------------------------- hidden rows per compared position


def _head(lm: LoadedModel, objective: str):
    """Module mapping final hidden rows (n, D) to vocabulary logits (n, V)."""
    return (causal_parts(lm) if objective == "causal" else mlm_parts(lm))[1]


def _causal_window_settings(*lms) -> tuple[int, int]:
    window = min((lm.max_positions or 1024) for lm in lms)
    return window, max(1, window // 2)


@torch.inference_mode()
def _causal_hidden(lm: LoadedModel, full_ids: list[int], window: int, stride: int, batch_size: int) -> torch.Tensor:
    """Final hidden rows (n − 1, D) at positions 0..n−2 of `full_ids`, row t predicting token t + 1.

    Texts longer than `window` are read with the loss page's strided sliding window (each position
    predicted once); windows of equal length run together, `batch_size` per forward pass.
    """
    ids = torch.tensor(full_ids, dtype=torch.long)
    wins = windows(len(full_ids), window, stride)
    out = torch.cat([rows for _, _, rows in scored_hidden(lm, ids, wins, batch_size)])
    assert out.shape[0] == len(full_ids) - 1
    return out


@torch.inference_mode()
def _masked_hidden_each(lm: LoadedModel, chunks: Chunks, positions: np.ndarray, batch_size: int) -> torch.Tensor:
    """Hidden rows (N, D): copy i is content token positions[i]'s chunk with that token masked."""
    body, _ = mlm_parts(lm)
    mask_id = lm.tokenizer.mask_token_id
    out = []
    for c0 in range(0, len(positions), batch_size):
        pos = positions[c0:c0 + batch_size]
        rows, cols = torch.as_tensor(chunks.row[pos]), torch.as_tensor(chunks.col[pos])
        ids = chunks.input_ids[rows].clone()
        ids[torch.arange(len(pos)), cols] = mask_id
        am = chunks.attention_mask[rows]
        h = body(ids.to(lm.device), am.to(lm.device), torch.zeros_like(ids).to(lm.device))
        out.append(h[torch.arange(len(pos), device=h.device), cols.to(h.device)])
    return torch.cat(out)


@torch.inference_mode()
def _masked_hidden_at(lm: LoadedModel, chunks: Chunks, positions: np.ndarray, batch_size: int) -> torch.Tensor:
    """Hidden rows (M, D) at content `positions` of the (already corrupted) chunks."""
    out = torch.zeros((len(positions), lm.d_model), dtype=lm.dtype, device=lm.device)
    for sel, hidden in mlm_hidden(lm, chunks.input_ids, chunks.attention_mask, chunks.token_type_ids,
                                  chunks.row[positions], chunks.col[positions], batch_size):
        out[sel.to(lm.device)] = hidden.to(out.dtype)
    return out


def _seeded_corruption(tok, content: list[int], vocab_limit: int, seed: int):
    """BERT's masking (`scoring.choose_masking`, 15 %): (positions, what the models see there, corrupted ids)."""
    positions, _, _, replacement = choose_masking(tok, content, seed, MASK_PROB, vocab_limit)
    corrupted = np.asarray(content, dtype=np.int64)
    corrupted[positions] = replacement
    return positions, replacement, corrupted.tolist()


def _xlogy_sum(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ p · x over the last axis, with 0 · (±inf) = 0 (a token with zero probability adds nothing)."""
    out = (p * x).sum(-1)
    bad = out.isnan()
    if bad.any():  # only where a log-probability is −inf; the common case stays one fused pass
        out[bad] = torch.where(p[bad] > 0, p[bad] * x[bad], torch.zeros_like(p[bad])).sum(-1)
    return out


# --------------------------------------------------------------------------- tokenizers


def tokenizers_match(lm_a, lm_b, text: str) -> tuple[bool, str | None]:
    """Whether A and B share a tokenizer for this text: same vocabulary and the same ids for the text.

    Returns (True, None) or (False, a sentence saying what differs).
    """
    ta, tb = lm_a.tokenizer, lm_b.tokenizer
    text = clean_text(text)
    if ta is not tb:
        if not same_vocabulary(ta, tb):
            return False, f"the vocabularies differ (A: {len(ta):,} tokens, B: {len(tb):,})"
        if special_frame(ta) != special_frame(tb):
            return False, "the special tokens around a text differ"
    ia = ta(text, add_special_tokens=False, verbose=False)["input_ids"]
    ib = tb(text, add_special_tokens=False, verbose=False)["input_ids"]
    if list(ia) != list(ib):
        k = next((i for i, (x, y) in enumerate(zip(ia, ib)) if x != y), min(len(ia), len(ib)))
        return False, (f"the two tokenizers split this text differently (A: {len(ia)} tokens, B: {len(ib)}; "
                       f"first difference at token {k})")
    return True, None


def divergence_unavailable_reason(lm_a, lm_b, text: str) -> str | None:
    """Why per-token KL/JS cannot be computed for this pair on this text, or None when it can."""
    return _divergence_reason(lm_a, lm_b, tokenizers_match(lm_a, lm_b, text))


def _divergence_reason(lm_a, lm_b, match: tuple[bool, str | None]) -> str | None:
    same, why = match
    if not same:
        return (f"not comparable: {why}, so the two predictive distributions are over different token "
                "sequences; loss per word and bits per byte are compared instead")
    oa, ob = _objective(lm_a), _objective(lm_b)
    if oa is None:
        return "not comparable: " + _no_head_reason(lm_a, "A")
    if ob is None:
        return "not comparable: " + _no_head_reason(lm_b, "B")
    if oa != ob:
        return (f"not comparable: A is a {lm_a.kind.label} and B a {lm_b.kind.label}; next-token and "
                "masked-token distributions predict different things given different context")
    va, vb = vocab_out(lm_a), vocab_out(lm_b)
    if va != vb:
        return f"not comparable: the output layers have different sizes (A: {va:,}, B: {vb:,})"
    return None


# --------------------------------------------------------------------------- token divergence


def token_divergence(lm_a, lm_b, text: str, *, top_k: int = 5, n_disagreements: int = 10,
                     masking: str = MASKING_EACH, seed: int = 0, prepend_bos: bool = True,
                     batch_size: int = 16) -> TokenDivergence:
    """Per-token KL(P_A‖P_B), KL(P_B‖P_A), JS, entropies, cross-entropies and losses of two models.

    Causal LMs: next-token distributions at every text token (with `prepend_bos`, the first token
    is predicted from the tokenizer's BOS/EOS token). Masked LMs: masking "each" masks every
    token in turn (batched copies); "seeded" applies one seeded 15 % / 80-10-10 corruption, the
    same input for both. Raises NotAvailableError when the pair is not comparable (the reason is
    the message).
    """
    text = clean_text(text)
    masking = _check_masking(masking)
    seed = check_int(seed, 0, 2 ** 63 - 1, "seed")
    batch_size = check_int(batch_size, 1, 4096, "batch size")
    n_disagreements = check_int(n_disagreements, 0, 10_000, "number of disagreements")
    content, offsets = _content(lm_a, text)
    _content(lm_b, text)
    reason = divergence_unavailable_reason(lm_a, lm_b, text)
    if reason:
        raise NotAvailableError(reason[0].upper() + reason[1:] + ".")
    top_k = check_int(top_k, 1, min(MAX_TOP_K, vocab_out(lm_a)), "top_k")
    return _divergence(lm_a, lm_b, text, content, offsets, top_k, n_disagreements, masking, seed, prepend_bos,
                       batch_size)


def _divergence(lm_a, lm_b, text, content, offsets, top_k, n_disagreements, masking, seed, prepend_bos,
                batch_size) -> TokenDivergence:
    """token_divergence after its checks (compare_models has made them already)."""
    V = vocab_out(lm_a)
    tok = lm_a.tokenizer
    objective = _objective(lm_a)
    T = len(content)
    window = stride = 0
    prefix_token = None

    if objective == "causal":
        pid = _prefix_id(lm_a, prepend_bos)
        full = ([pid] if pid is not None else []) + content
        window, stride = _causal_window_settings(lm_a, lm_b)
        h_a = _causal_hidden(lm_a, full, window, stride, batch_size)
        h_b = _causal_hidden(lm_b, full, window, stride, batch_size)
        positions = np.arange(0 if pid is not None else 1, T, dtype=np.int64)
        prefix_token = display_token(tok, pid) if pid is not None else None
        input_ids = np.asarray(content, dtype=np.int64)[positions]
        mode = None
        label = (f"next-token distributions at each of {len(positions)} text tokens"
                 + (f" (the first predicted from {prefix_token!r})" if pid is not None else
                    " (the first token has no left context and is not compared)"))
        seed_out = None
    else:
        max_pos = min(lm_a.max_positions or 512, lm_b.max_positions or 512)
        if masking == MASKING_EACH:
            chunks = make_chunks(tok, content, max_pos)
            positions = np.arange(T, dtype=np.int64)
            h_a = _masked_hidden_each(lm_a, chunks, positions, batch_size)
            h_b = _masked_hidden_each(lm_b, chunks, positions, batch_size)
            input_ids = np.full(T, tok.mask_token_id, dtype=np.int64)
            label = f"masked-token distributions, each of the {T} tokens masked in turn (the rest unmasked)"
            seed_out = None
        else:
            positions, input_ids, corrupted = _seeded_corruption(tok, content, V, seed)
            chunks = make_chunks(tok, corrupted, max_pos)
            h_a = _masked_hidden_at(lm_a, chunks, positions, batch_size)
            h_b = _masked_hidden_at(lm_b, chunks, positions, batch_size)
            label = (f"masked-token distributions at {len(positions)} of {T} tokens chosen by seeded 15 % "
                     f"masking (seed {seed}; 80 % [MASK], 10 % random, 10 % kept), the same input for both")
            seed_out = seed
        mode = masking

    head_a, head_b = _head(lm_a, objective), _head(lm_b, objective)
    target = torch.as_tensor(np.asarray(content, dtype=np.int64)[positions])
    N = len(positions)
    dev = lm_a.device
    names = ("kl_ab", "kl_ba", "js", "ent_a", "ent_b", "xent_ab", "xent_ba", "loss_a", "loss_b")
    acc = {k: np.zeros(N, dtype=np.float64) for k in names}
    top = {k: np.zeros((N, top_k), dtype=np.int64 if k.startswith("ids") else np.float64)
           for k in ("ids_a", "p_a", "ids_b", "p_b")}
    step = logit_chunk_rows(dev, V, CHUNK_ELEMENTS)
    with torch.inference_mode():
        for s0 in range(0, N, step):
            sl = slice(s0, min(N, s0 + step))
            la = log_softmax(head_a, h_a[sl], torch.float64).to(dev)  # (n, V)
            lb = log_softmax(head_b, h_b[sl].to(lm_b.device), torch.float64).to(dev)
            pa, pb = la.exp(), lb.exp()
            lmix = torch.logaddexp(la, lb) - LN2  # log ½(P_A + P_B)
            vals = {
                "kl_ab": _xlogy_sum(pa, la - lb),
                "kl_ba": _xlogy_sum(pb, lb - la),
                "js": 0.5 * _xlogy_sum(pa, la - lmix) + 0.5 * _xlogy_sum(pb, lb - lmix),
                "ent_a": -_xlogy_sum(pa, la),
                "ent_b": -_xlogy_sum(pb, lb),
                "xent_ab": -_xlogy_sum(pa, lb),
                "xent_ba": -_xlogy_sum(pb, la),
            }
            t = target[sl].to(dev)[:, None]
            vals["loss_a"] = -la.gather(1, t)[:, 0]
            vals["loss_b"] = -lb.gather(1, t)[:, 0]
            for k, v in vals.items():
                acc[k][sl] = v.cpu().numpy()
            for side, lp in (("a", la), ("b", lb)):
                tp, ti = lp.topk(top_k, dim=-1)
                top[f"ids_{side}"][sl] = ti.cpu().numpy()
                top[f"p_{side}"][sl] = tp.exp().cpu().numpy()
            del la, lb, pa, pb, lmix

    residual = max(float(np.max(np.abs(acc["xent_ab"] - acc["ent_a"] - acc["kl_ab"]))),
                   float(np.max(np.abs(acc["xent_ba"] - acc["ent_b"] - acc["kl_ba"]))))
    js = acc["js"]
    order = sorted(range(N), key=lambda i: (-js[i], i))[:n_disagreements]
    disagreements = [
        Disagreement(
            position=int(positions[i]), token=display_token(tok, int(target[i])), token_id=int(target[i]),
            offset=tuple(offsets[int(positions[i])]), js_nats=float(js[i]), kl_ab_nats=float(acc["kl_ab"][i]),
            kl_ba_nats=float(acc["kl_ba"][i]), loss_a_nats=float(acc["loss_a"][i]),
            loss_b_nats=float(acc["loss_b"][i]),
            top_ids_a=top["ids_a"][i].copy(), top_probs_a=top["p_a"][i].copy(),
            top_tokens_a=display_tokens(tok, top["ids_a"][i]),
            top_ids_b=top["ids_b"][i].copy(), top_probs_b=top["p_b"][i].copy(),
            top_tokens_b=display_tokens(lm_b.tokenizer, top["ids_b"][i]),
        )
        for i in order
    ]
    mean_a, mean_b = float(acc["loss_a"].mean()), float(acc["loss_b"].mean())
    return TokenDivergence(
        spec_a=lm_a.spec, spec_b=lm_b.spec, text=text,
        objective="next-token" if objective == "causal" else "masked-token",
        objective_label=label, masking=mode, seed=seed_out, prefix_token=prefix_token,
        tokens=text_tokens(tok, content, offsets, text), token_ids=np.asarray(content, dtype=np.int64), offsets=offsets,
        positions=positions, target_ids=target.numpy().astype(np.int64), input_ids=np.asarray(input_ids, np.int64),
        kl_ab_nats=acc["kl_ab"], kl_ba_nats=acc["kl_ba"], js_nats=js,
        entropy_a_nats=acc["ent_a"], entropy_b_nats=acc["ent_b"],
        cross_entropy_ab_nats=acc["xent_ab"], cross_entropy_ba_nats=acc["xent_ba"],
        identity_max_abs_residual=residual,
        loss_a_nats=acc["loss_a"], loss_b_nats=acc["loss_b"], loss_diff_nats=acc["loss_b"] - acc["loss_a"],
        mean_loss_a_nats=mean_a, mean_loss_b_nats=mean_b,
        perplexity_a=float(math.exp(mean_a)), perplexity_b=float(math.exp(mean_b)),
        mean_kl_ab_nats=float(acc["kl_ab"].mean()), mean_kl_ba_nats=float(acc["kl_ba"].mean()),
        mean_js_nats=float(js.mean()),
        top_k=top_k, top_ids_a=top["ids_a"], top_probs_a=top["p_a"], top_ids_b=top["ids_b"], top_probs_b=top["p_b"],
        disagreements=disagreements, window=window, stride=stride, n_positions=N,
    )


# --------------------------------------------------------------------------- text scores and word alignment


def _make_text_score(lm: LoadedModel, text, objective, prefix_token, content, offsets, nll, scored) -> TextScore:
    nll_full = np.full(len(content), np.nan)
    nll_full[scored] = nll
    total = float(np.sum(nll))
    n_scored = int(scored.sum())
    start = 0 if scored[0] else offsets[int(np.argmax(scored))][0]
    n_bytes = len(text[start:].encode("utf-8"))
    unk = lm.tokenizer.unk_token_id
    return TextScore(
        spec=lm.spec, text=text, objective=objective, prefix_token=prefix_token,
        tokens=text_tokens(lm.tokenizer, content, offsets, text), token_ids=np.asarray(content, dtype=np.int64), offsets=offsets,
        scored=scored, nll_nats=nll_full, n_scored=n_scored,
        total_nll_nats=total, total_nll_bits=total / LN2, n_bytes=n_bytes,
        bits_per_byte=total / LN2 / n_bytes if n_bytes else math.nan,
        bits_per_token=total / LN2 / n_scored, perplexity=float(math.exp(total / n_scored)),
        n_unknown=int(sum(1 for i in content if unk is not None and i == unk and unk not in
                          (lm.tokenizer.bos_token_id, lm.tokenizer.eos_token_id))),
        lowercases=_lowercases(lm.tokenizer),
    )


def score_text(lm: LoadedModel, text: str, *, prepend_bos: bool = True, batch_size: int = 16) -> TextScore:
    """Per-token NLL of `text` under one model: next-token NLL (causal) or pseudo-log-likelihood (masked).

    Long texts are read with a sliding window (causal) or in context-sized chunks (masked):
    every token is scored, none is cut.
    """
    text = clean_text(text)
    batch_size = check_int(batch_size, 1, 4096, "batch size")
    objective = _objective(lm)
    if objective is None:
        raise NotAvailableError("Cannot score text: " + _no_head_reason(lm, lm.spec) + ".")
    content, offsets = _content(lm, text)
    T = len(content)
    target = torch.tensor(content, dtype=torch.long)
    head = _head(lm, objective)
    if objective == "causal":
        pid = _prefix_id(lm, prepend_bos)
        full = ([pid] if pid is not None else []) + content
        window, stride = _causal_window_settings(lm)
        hidden = _causal_hidden(lm, full, window, stride, batch_size)
        scored = np.ones(T, dtype=bool)
        if pid is None:
            scored[0] = False
        prefix_token = display_token(lm.tokenizer, pid) if pid is not None else None
        name = "next-token"
    else:
        chunks = make_chunks(lm.tokenizer, content, lm.max_positions or 512)
        hidden = _masked_hidden_each(lm, chunks, np.arange(T), batch_size)
        scored = np.ones(T, dtype=bool)
        prefix_token, name = None, "pseudo-log-likelihood"
    tgt = target[torch.as_tensor(scored)]
    nll = np.zeros(len(tgt), dtype=np.float64)
    with torch.inference_mode():
        for sl, lp in log_softmax_rows(head, hidden, vocab_out(lm), dtype=torch.float64, elements=CHUNK_ELEMENTS):
            nll[sl] = (-lp.gather(1, tgt[sl].to(lp.device)[:, None])[:, 0]).cpu().numpy()
    return _make_text_score(lm, text, name, prefix_token, content, offsets, nll, scored)


_WORD = re.compile(r"\S+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text`: maximal runs of non-whitespace characters."""
    return [(m.start(), m.end()) for m in _WORD.finditer(text)]


def assign_tokens_to_words(text: str, offsets, spans: list[tuple[int, int]]) -> tuple[np.ndarray, int, int]:
    """Word index of each token span: the word holding its first non-whitespace character.

    Byte-level BPE spans often start with the space before a word ("Ġworld" → " world") and
    several byte pieces of one emoji or CJK character share that character's span; both land in
    the right word. A whitespace-only span goes to the next word (the last word at the end); an
    empty span at the end of the text to the last word. Returns (word index per token (T,) int64,
    number of whitespace-only tokens, number of tokens straddling more than one word).
    """
    if not spans:
        raise InputError("The text has no words.", "Type or paste some text.")
    starts = [s for s, _ in spans]
    out = np.zeros(len(offsets), dtype=np.int64)
    n_ws = n_straddle = 0
    for t, (s, e) in enumerate(offsets):
        c = s
        while c < e and text[c].isspace():
            c += 1
        if c >= e and e > s:  # whitespace only
            n_ws += 1
        w = bisect.bisect_right(starts, c) - 1
        if w < 0 or c >= spans[w][1]:  # c is whitespace (or past the end): the next word
            w = min(w + 1, len(spans) - 1)
        out[t] = w
        if w + 1 < len(spans) and starts[w + 1] < e:
            n_straddle += 1
    return out, n_ws, n_straddle


def align_words(text: str, score_a: TextScore, score_b: TextScore) -> WordComparison:
    """Sum each model's token NLL into words of `text` and compare loss per word and bits per byte."""
    text = clean_text(text)
    if score_a.text != text or score_b.text != text:
        raise InputError("Both scores must be of the same text as the one given.")
    spans = word_spans(text)
    W = len(spans)
    words = [text[s:e] for s, e in spans]
    n_bytes = np.array([len(w.encode("utf-8")) for w in words], dtype=np.int64)
    per = {}
    for side, sc in (("a", score_a), ("b", score_b)):
        word_of, n_ws, n_str = assign_tokens_to_words(text, sc.offsets, spans)
        scored = np.asarray(sc.scored, dtype=bool)
        nll = np.where(scored, np.nan_to_num(sc.nll_nats), 0.0)
        total = np.zeros(W)
        np.add.at(total, word_of, nll)
        n_tok = np.bincount(word_of[scored], minlength=W).astype(np.int64)
        unscored = np.bincount(word_of[~scored], minlength=W) if (~scored).any() else np.zeros(W, np.int64)
        per[side] = (np.where(scored, word_of, -1).astype(np.int64), n_tok, total, n_ws, n_str, unscored)
    wa, na, ta, wsa, sta, ua = per["a"]
    wb, nb, tb, wsb, stb, ub = per["b"]
    comparable = (na > 0) & (nb > 0) & (ua == 0) & (ub == 0)
    return WordComparison(
        text=text, words=words, spans=spans, n_bytes=n_bytes,
        token_word_a=wa, token_word_b=wb, n_tokens_a=na, n_tokens_b=nb,
        nll_a_nats=ta, nll_b_nats=tb, nll_diff_nats=tb - ta,
        bits_per_byte_a=ta / LN2 / n_bytes, bits_per_byte_b=tb / LN2 / n_bytes,
        comparable=comparable,
        total_nll_a_nats=float(ta.sum()), total_nll_b_nats=float(tb.sum()),
        bits_per_byte_total_a=score_a.bits_per_byte, bits_per_byte_total_b=score_b.bits_per_byte,
        n_whitespace_tokens_a=wsa, n_whitespace_tokens_b=wsb, n_straddling_a=sta, n_straddling_b=stb,
        score_a=score_a, score_b=score_b,
    )


def _scores_from_divergence(lm_a, lm_b, div: TokenDivergence) -> tuple[TextScore, TextScore] | None:
    """Text scores reusing a divergence's losses when it scored every token (saves a second pass)."""
    T = len(div.tokens)
    if div.masking == MASKING_SEEDED:
        return None
    scored = np.zeros(T, dtype=bool)
    scored[div.positions] = True
    name = "next-token" if div.objective == "next-token" else "pseudo-log-likelihood"
    content = div.token_ids.tolist()
    return (_make_text_score(lm_a, div.text, name, div.prefix_token, content, div.offsets, div.loss_a_nats, scored),
            _make_text_score(lm_b, div.text, name, div.prefix_token, content, div.offsets, div.loss_b_nats, scored))


# --------------------------------------------------------------------------- everything


def compare_models(lm_a, lm_b, text: str, *, top_k: int = 5, seed: int = 0, masking: str = MASKING_EACH,
                   n_disagreements: int = 10, prepend_bos: bool = True, batch_size: int = 16) -> ComparisonReport:
    """Compare models A and B on `text`: every part that applies, and why the others do not.

    Raises InputError for an empty text, a text of fewer than two tokens for either model, or bad
    settings; never for a pair that is merely not comparable. Cost: one forward pass per model
    for a causal LM; for a masked LM one (batched) forward per token, as pseudo-log-likelihood needs.
    """
    text = clean_text(text)
    top_k = check_int(top_k, 1, MAX_TOP_K, "top_k")
    seed = check_int(seed, 0, 2 ** 63 - 1, "seed")
    masking = _check_masking(masking)
    n_disagreements = check_int(n_disagreements, 0, 10_000, "number of disagreements")
    batch_size = check_int(batch_size, 1, 4096, "batch size")
    content, offsets = _content(lm_a, text)
    _content(lm_b, text)
    same_tok, tok_why = tokenizers_match(lm_a, lm_b, text)
    comparable: list[str] = []
    notes: list[str] = []
    oa, ob = _objective(lm_a), _objective(lm_b)

    # Distributions (same tokenizer and objective).
    divergence = None
    div_reason = _divergence_reason(lm_a, lm_b, (same_tok, tok_why))
    if div_reason is None:
        divergence = _divergence(lm_a, lm_b, text, content, offsets, min(top_k, vocab_out(lm_a)), n_disagreements,
                                 masking, seed, prepend_bos, batch_size)
        comparable.append(f"Per-token KL(A‖B), KL(B‖A) and Jensen–Shannon of the {divergence.objective_label}; "
                          f"per-token loss and perplexity of each.")

    # Loss per word and bits per byte (any two models with a language-model head).
    words, words_reason = None, None
    if oa is None or ob is None:
        words_reason = "not comparable: " + (_no_head_reason(lm_a, "A") if oa is None else _no_head_reason(lm_b, "B"))
    else:
        scores = _scores_from_divergence(lm_a, lm_b, divergence) if divergence is not None else None
        if scores is None:
            scores = (score_text(lm_a, text, prepend_bos=prepend_bos, batch_size=batch_size),
                      score_text(lm_b, text, prepend_bos=prepend_bos, batch_size=batch_size))
        words = align_words(text, *scores)
        sa, sb = scores
        if sa.objective == sb.objective == "next-token":
            comparable.append("Loss per word and bits per byte (next-token NLL of each, tokens aligned on "
                              "character offsets).")
        elif sa.objective == sb.objective:
            comparable.append("Loss per word and pseudo bits per byte (pseudo-log-likelihood of each: every "
                              "token masked in turn).")
        else:
            comparable.append("Loss per word and bits per byte: next-token NLL of the causal model against "
                              "pseudo-log-likelihood (each token masked in turn) of the masked model.")
            notes.append("Causal NLL and masked-LM pseudo-log-likelihood are different quantities: PLL sees the "
                          "context on both sides of each token and is not a normalised likelihood of the text, so "
                          "its pseudo bits per byte are usually much lower; compare the shape across words, not "
                          "the level.")
        for name, sc in ((("The shared" if same_tok else "A's"), sa),) + ((("B's", sb),) if not same_tok else ()):
            if sc.lowercases:
                notes.append(f"{name} tokenizer lowercases (and may strip accents): it scores a normalised text, "
                             "which needs fewer bits than the original.")
            if sc.n_unknown:
                notes.append(f"{name} tokenizer maps {sc.n_unknown} token(s) of this text to its unknown token; "
                             "their loss is the cost of predicting 'unknown', not the characters.")
        for name, sc in (("A", sa), ("B", sb)):
            if not sc.scored.all():
                notes.append(f"{name}'s first token has no left context and is not scored.")

    # Parameters.
    drift = None
    drift_reason = drift_unavailable_reason(lm_a, lm_b)
    if drift_reason is None:
        drift = parameter_drift(lm_a, lm_b)
        comparable.append(f"Parameter drift of {len(drift.names)} tensors (relative L2 change, cosine), per layer "
                          "and per norm layer.")
        if drift.only_in_a or drift.only_in_b:
            notes.append(f"Parameters in only one model are not compared (A only: {len(drift.only_in_a)}, "
                         f"B only: {len(drift.only_in_b)}).")
    emb, emb_reason = None, embedding_drift_unavailable_reason(lm_a, lm_b)
    if emb_reason is None:
        emb = embedding_drift(lm_a, lm_b, text)
        comparable.append("Embedding drift per token (cosine of A's and B's rows) against the token's frequency in "
                          "the text (Spearman).")

    # Attention scale.
    attn, attn_reason = None, attention_unavailable_reason(lm_a, lm_b)
    if attn_reason is None:
        attn = attention_sigma(lm_a, lm_b, text)
        comparable.append("σ(QKᵀ) per layer and head, unscaled and scaled.")
        if not attn.same_tokenisation:
            notes.append("σ(QKᵀ) of A and B is measured on each model's own tokenisation of the text.")
        if attn.truncated_a or attn.truncated_b:
            notes.append("The text was cut to the model's context for the attention statistics.")

    return ComparisonReport(
        spec_a=lm_a.spec, spec_b=lm_b.spec, text=text,
        kind_a=lm_a.kind.value, kind_b=lm_b.kind.value, family_a=lm_a.family, family_b=lm_b.family,
        n_layers_a=lm_a.n_layers, n_layers_b=lm_b.n_layers, n_heads_a=lm_a.n_heads, n_heads_b=lm_b.n_heads,
        same_tokenizer=same_tok, tokenizer_difference=tok_why, seed=seed, masking=masking,
        divergence=divergence, divergence_unavailable_reason=div_reason,
        words=words, words_unavailable_reason=words_reason,
        drift=drift, drift_unavailable_reason=drift_reason,
        embedding_drift=emb, embedding_drift_unavailable_reason=emb_reason,
        attention=attn, attention_unavailable_reason=attn_reason,
        comparable=comparable, notes=notes,
    )
