"""Per-token loss: what cross-entropy, perplexity, MLM loss and NSP look like on a real model (seeds 000, 002, 004).

- Causal LM: `causal_token_loss` (per-token CE, surprisal, entropy, rank, top-k, perplexity; long
  texts by a strided sliding window, never truncated) and `score_corpus` (bounded-memory corpus
  perplexity for benchmarks).
- Masked LM: `masked_lm_loss` (seeded BERT 15 % / 80-10-10 masking, mean CE over chosen positions),
  `pseudo_log_likelihood` (each token masked in turn) and `next_sentence` (P(IsNext)).
- `logit_gradient_check`: ∂L/∂logits by autograd against P − onehot, and where the gradient goes
  (input embedding rows; output rows, which are the embedding rows when weights are tied).

Logits are computed only for the positions that are scored, in chunks, from the model's own
body and head modules (`analyses.scoring`, shared with the comparison), so memory stays bounded
for long texts and large vocabularies. The result dataclasses live here under the names the
reports store; the Loss report section and its view are `analyses.loss_view.LossAnalysis`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError, NotAvailableError
from ..inputs import clean_text, display_tokens, encode
from ..tokens import text_tokens
from ._common import MAX_TOP_K, check_int
from .logit_gradient import logit_gradient_check
from .scoring import (KEPT_UNCHANGED, REPLACED_BY_MASK, REPLACED_BY_RANDOM, causal_parts, choose_masking,
                      content_tokens, log_softmax_rows, make_chunks, mlm_logprobs, require_causal,
                      require_mlm, row_stats, scored_hidden, vocab_out, window_settings, windows)

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

__all__ = [
    "CausalLossReport", "CorpusScore", "MaskedLossReport", "PLLReport", "NSPResult", "GradientCheck",
    "causal_token_loss", "score_corpus", "masked_lm_loss", "pseudo_log_likelihood", "next_sentence",
    "logit_gradient_check", "masking_split", "MaskingSplit",
    "REPLACED_BY_MASK", "REPLACED_BY_RANDOM", "KEPT_UNCHANGED",
]

LN2 = math.log(2.0)

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


# --------------------------------------------------------------------------- causal LM


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
    require_causal(lm, "Causal (next-token) loss")
    text = clean_text(text)
    top_k = check_int(top_k, 1, min(MAX_TOP_K, lm.vocab_size), "top_k")
    batch_size = check_int(batch_size, 1, 1024, "batch size")
    ids_list, offsets = _tokenise_causal(lm, text)
    n = len(ids_list)
    if n < 2:
        raise InputError(f"The text has {n} token(s); the next-token loss needs at least 2.",
                         "Use a longer text: the first token has no left context to be predicted from.")
    window, stride = window_settings(lm, window, stride)
    ids = torch.tensor(ids_list, dtype=torch.long)
    wins = windows(n, window, stride)
    _, head = causal_parts(lm)

    parts = {k: [] for k in ("pos", "ctx", "ce", "ent", "rank", "top_ids", "top_p")}
    with torch.inference_mode():
        for pos, ctx, hidden in scored_hidden(lm, ids, wins, batch_size):
            target = ids[pos].to(lm.device)
            for sl, logp in log_softmax_rows(head, hidden, vocab_out(lm)):
                ce, ent, rank, top_ids, top_p = row_stats(logp, target[sl], top_k)
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
        spec=lm.spec, text=text, tokens=text_tokens(lm.tokenizer, ids_list, offsets, text),
        token_ids=np.array(ids_list, dtype=np.int64), offsets=offsets, positions=cat["pos"].numpy().astype(np.int64),
        ce_nats=ce, ce_bits=ce / LN2, surprisal_bits=ce / LN2, prob=np.exp(-ce), entropy_nats=ent,
        entropy_bits=ent / LN2, rank=cat["rank"].numpy().astype(np.int64),
        context_len=cat["ctx"].numpy().astype(np.int64), top_k=top_k, top_ids=top_ids,
        top_probs=cat["top_p"].double().numpy(), top_tokens=[display_tokens(lm.tokenizer, row) for row in top_ids],
        mean_ce_nats=mean_ce, mean_ce_bits=mean_ce / LN2, perplexity=float(math.exp(mean_ce)), n_scored=int(ce.size),
        window=window, stride=stride, n_windows=len(wins),
    )


def score_corpus(lm: LoadedModel, text_or_ids, window: int | None = None, stride: int | None = None,
                 batch_size: int = 8) -> CorpusScore:
    """Perplexity of a long text or token-id stream with the sliding window, for benchmarks.

    Memory stays bounded: per batch only the scored rows' log-softmax is formed, in chunks.
    Accepts a string (tokenised here, no length limit) or a 1-D sequence of token ids.
    """
    require_causal(lm, "Causal (next-token) loss")
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
    window, stride = window_settings(lm, window, stride)
    wins = windows(n, window, stride)
    _, head = causal_parts(lm)

    nll_sum, n_scored = 0.0, 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for pos, _, hidden in scored_hidden(lm, ids, wins, batch_size):
            target = ids[pos].to(lm.device)
            for sl, logp in log_softmax_rows(head, hidden, vocab_out(lm)):
                nll_sum -= float(logp.gather(1, target[sl, None]).double().sum())
            n_scored += int(pos.numel())
    seconds = time.perf_counter() - t0
    return CorpusScore(
        nll_sum=nll_sum, n_tokens=n_scored, perplexity=float(math.exp(nll_sum / n_scored)),
        tokens_per_s=n_scored / seconds if seconds > 0 else math.inf, seconds=seconds, window=window, stride=stride,
        batch_size=batch_size, n_windows=len(wins),
    )


# --------------------------------------------------------------------------- masked LM


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
    require_mlm(lm, "Masked-LM masking")
    text = clean_text(text, max_chars=max(len(text or ""), 1))
    seed = check_int(seed, 0, 2 ** 63 - 1, "seed")
    content, _ = content_tokens(lm, text)
    positions, kind, _, _ = choose_masking(lm.tokenizer, content, seed, mask_prob, lm.vocab_size)
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
    require_mlm(lm, "Masked-LM loss")
    text = clean_text(text)
    seed = check_int(seed, 0, 2 ** 63 - 1, "seed")
    if isinstance(mask_prob, bool) or not isinstance(mask_prob, (int, float)) or not 0.0 < mask_prob <= 1.0:
        raise InputError(f"The masking probability is {mask_prob!r}; it must be in (0, 1].", "BERT uses 0.15.")
    top_k = check_int(top_k, 1, min(MAX_TOP_K, lm.vocab_size), "top_k")
    batch_size = check_int(batch_size, 1, 1024, "batch size")
    tok = lm.tokenizer
    content, offsets = content_tokens(lm, text)
    n = len(content)
    positions, kind, original, replacement = choose_masking(tok, content, seed, mask_prob, lm.vocab_size)
    m = len(positions)
    corrupted = np.array(content, dtype=np.int64)
    corrupted[positions] = replacement

    chunks = make_chunks(tok, corrupted.tolist(), lm.max_positions or 512)
    target = torch.as_tensor(original)
    ce = torch.zeros(m, dtype=torch.float64)
    rank = torch.zeros(m, dtype=torch.long)
    top_ids = torch.zeros((m, top_k), dtype=torch.long)
    top_p = torch.zeros((m, top_k), dtype=torch.float64)
    with torch.inference_mode():
        for sel, logp in mlm_logprobs(lm, chunks.input_ids, chunks.attention_mask, chunks.token_type_ids,
                                      chunks.row[positions], chunks.col[positions], batch_size):
            c, _, r, ti, tp = row_stats(logp, target[sel].to(logp.device), top_k)
            ce[sel], rank[sel], top_ids[sel], top_p[sel] = c.double().cpu(), r.cpu(), ti.cpu(), tp.double().cpu()
    ce_np = ce.numpy()
    loss = float(ce_np.mean())
    top_ids_np = top_ids.numpy().astype(np.int64)
    return MaskedLossReport(
        spec=lm.spec, text=text, seed=seed, mask_prob=float(mask_prob),
        tokens=text_tokens(tok, content, offsets, text), token_ids=np.array(content, dtype=np.int64), offsets=offsets,
        positions=positions, original_ids=original, replacement_kind=kind, replacement_ids=replacement,
        replacement_tokens=display_tokens(tok, replacement), ce_nats=ce_np, ce_bits=ce_np / LN2, prob=np.exp(-ce_np),
        rank=rank.numpy().astype(np.int64), top_k=top_k, top_ids=top_ids_np, top_probs=top_p.numpy(),
        top_tokens=[display_tokens(tok, row) for row in top_ids_np], loss=loss, perplexity=float(math.exp(loss)),
        accuracy=float((rank.numpy() == 1).mean()), n_candidates=n, n_chosen=m,
        n_mask=int((kind == REPLACED_BY_MASK).sum()), n_random=int((kind == REPLACED_BY_RANDOM).sum()),
        n_unchanged=int((kind == KEPT_UNCHANGED).sum()), n_chunks=int(chunks.input_ids.shape[0]),
        chunk_tokens=chunks.chunk_tokens,
    )


def pseudo_log_likelihood(lm: LoadedModel, text: str, batch_size: int = 16) -> PLLReport:
    """Mask each content token in turn (batched copies) and sum log P(original | rest)."""
    require_mlm(lm, "Pseudo-log-likelihood")
    text = clean_text(text)
    batch_size = check_int(batch_size, 1, 1024, "batch size")
    tok = lm.tokenizer
    content, offsets = content_tokens(lm, text)
    n = len(content)
    chunks = make_chunks(tok, content, lm.max_positions or 512)

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
            for sel, logp in mlm_logprobs(lm, ids, chunks.attention_mask[copies[idx]],
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
        spec=lm.spec, text=text, tokens=text_tokens(tok, content, offsets, text),
        token_ids=np.array(content, dtype=np.int64), offsets=offsets, log_prob=lp, rank=rank.numpy().astype(np.int64),
        predicted_ids=pred.numpy().astype(np.int64), predicted_tokens=display_tokens(tok, pred.tolist()), pll=pll,
        pll_bits=pll / LN2, pseudo_perplexity=float(math.exp(-pll / n)), n_tokens=n,
        n_chunks=int(chunks.input_ids.shape[0]), chunk_tokens=chunks.chunk_tokens,
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
        spec=lm.spec, text_a=enc.text, text_b=enc.text_pair, tokens=list(enc.tokens),
        token_type_ids=enc.token_type_ids[0].numpy().astype(np.int64), logits=logits.numpy(), p_is_next=float(p[0]),
        p_not_next=float(p[1]), prediction="IsNext" if p[0] >= p[1] else "NotNext", loss_if_next=float(-logp[0]),
        truncated=bool(enc.truncated),
    )
