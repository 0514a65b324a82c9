"""The token-embedding table: access, token strings, row norms, nearest neighbours, anisotropy,
and norm against corpus frequency (seed 000's claim that frequent tokens get larger norms).

Memory stays bounded for a 50 000 × 768 vocabulary: no V × V matrix is ever built; neighbour
search runs over row blocks with `torch.topk` and merges the running top-k. The matrix-level
functions (`neighbours_of_matrix`, `anisotropy_of_matrix`) take any (V, D) torch tensor or numpy
array; the `lm`-level ones add token strings. Re-exported by `inspector.analyses.embeddings`.
"""
from __future__ import annotations

import hashlib
import math
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError, NotAvailableError
from ._common import QUANTILE_LEVELS, bin_edges, check_int, histogram
from .embeddings_results import Anisotropy, Neighbours, NormFrequency, TokenNorms

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

DEFAULT_BLOCK = 4096  # rows scored at a time (neighbours, norms)
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus" / "train.txt"


# --------------------------------------------------------------------------- helpers


def _as_tensor(E) -> torch.Tensor:
    if isinstance(E, np.ndarray):
        E = torch.from_numpy(E)
    if not isinstance(E, torch.Tensor):
        raise InputError(f"Expected a (V, D) matrix, got {type(E).__name__}.")
    if E.dim() != 2 or E.shape[0] < 1 or E.shape[1] < 1:
        raise InputError(f"Expected a (V, D) matrix, got shape {tuple(E.shape)}.")
    return E.detach()


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)


def _unit_np(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(n, 1e-12)


def input_embedding_matrix(lm: LoadedModel) -> torch.Tensor:
    """The (V, D) token-embedding weight of `lm` (detached view, no copy; may be larger than the tokenizer)."""
    emb = lm.model.get_input_embeddings()
    if emb is None or not isinstance(getattr(emb, "weight", None), torch.Tensor):
        raise NotAvailableError("This model has no token-embedding table.")
    return emb.weight.detach()


def token_strings(lm: LoadedModel, ids) -> list[str]:
    """Readable token strings (decoded, spaces kept); rows beyond the tokenizer shown as [id]."""
    from ..inputs import display_token

    tok = lm.tokenizer
    n_tok = len(tok)
    out = []
    for i in np.asarray(ids, dtype=np.int64).ravel().tolist():
        if 0 <= i < n_tok:
            try:
                out.append(display_token(tok, i))
                continue
            except Exception:  # noqa: BLE001 - odd tokenizers: fall back to the id
                pass
        out.append(f"[{i}]")
    return out


def resolve_token(lm: LoadedModel, query, vocab: dict | None = None) -> int:
    """Token id for a query: an int id, an exact vocabulary entry, or text that encodes to one token."""
    V = int(input_embedding_matrix(lm).shape[0])
    if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
        if not 0 <= int(query) < V:
            raise InputError(f"Token id {int(query)} is out of range: this vocabulary has ids 0 to {V - 1}.")
        return int(query)
    if not isinstance(query, str):
        raise InputError(f"A token query must be a token string or an id, got {type(query).__name__}.")
    if query == "":
        raise InputError("The token query is empty.", "Type a token (e.g. ' the' or 'the') or its id.")
    tok = lm.tokenizer
    vocab = vocab if vocab is not None else tok.get_vocab()
    if query in vocab and vocab[query] < V:
        return int(vocab[query])
    ids = tok(query, add_special_tokens=False)["input_ids"]
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None and unk in ids and query != getattr(tok, "unk_token", None):
        raise InputError(f"'{query}' is not in this vocabulary (it encodes to the unknown token "
                         f"{getattr(tok, 'unk_token', '')!r}).", "Query another token, or a token id.")
    if len(ids) == 1 and ids[0] < V:
        return int(ids[0])
    if not ids:
        raise InputError(f"'{query}' is not a token of this vocabulary and encodes to nothing.")
    pieces = ", ".join(repr(s) for s in token_strings(lm, ids[:8]))
    raise InputError(f"'{query}' is not a single token of this vocabulary: it splits into {len(ids)} tokens "
                     f"({pieces}{', ...' if len(ids) > 8 else ''}).",
                     "Query one of those tokens, or a token id.")


def _resolve_queries(lm: LoadedModel, query) -> list[int]:
    if isinstance(query, (str, int, np.integer)):
        query = [query]
    query = list(query)
    if not query:
        raise InputError("No query token given.")
    vocab = lm.tokenizer.get_vocab() if any(isinstance(q, str) for q in query) else None
    return [resolve_token(lm, q, vocab) for q in query]


# --------------------------------------------------------------------------- token norms


def _row_norms(E: torch.Tensor, block: int = DEFAULT_BLOCK) -> np.ndarray:
    return torch.cat([torch.linalg.vector_norm(E[i:i + block].float(), dim=1)
                      for i in range(0, E.shape[0], block)]).double().cpu().numpy()


def token_norms(lm: LoadedModel, *, top: int = 20, bins: int = 60) -> TokenNorms:
    """Row norms of the token-embedding table, with extremes and a histogram."""
    top = check_int(top, 1, None, "top")
    bins = check_int(bins, 1, 10_000, "bins")
    norms = _row_norms(input_embedding_matrix(lm))
    order = np.argsort(norms, kind="stable")
    n = min(top, norms.size)
    largest, smallest = order[::-1][:n].copy(), order[:n].copy()
    edges = bin_edges(norms, bins)
    return TokenNorms(
        norms=norms, mean=float(norms.mean()), std=float(norms.std()), min=float(norms.min()),
        max=float(norms.max()), quantiles=np.quantile(norms, QUANTILE_LEVELS),
        quantile_levels=np.asarray(QUANTILE_LEVELS), largest_ids=largest, largest_tokens=token_strings(lm, largest),
        smallest_ids=smallest, smallest_tokens=token_strings(lm, smallest), hist_edges=edges,
        hist_counts=histogram(norms, edges))


# --------------------------------------------------------------------------- neighbours


@torch.no_grad()
def neighbours_of_matrix(E, query_ids, k: int, block: int = DEFAULT_BLOCK, *, exclude_self: bool = True,
                         query_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours of rows `query_ids` among all rows of `E` (V, D).

    Returns (ids (Q, k) int64, cosine (Q, k) float32), most similar first. The query row itself
    is excluded when `exclude_self`. Rows are scored in blocks of `block` and queries in chunks,
    so memory is O(query_chunk × (block + k)) beyond E itself; E is never copied or normalised
    as a whole. Runs on E's device (a CUDA tensor is searched on the GPU).
    """
    E = _as_tensor(E)
    V = int(E.shape[0])
    q = np.asarray(query_ids).reshape(-1)
    if q.size == 0:
        raise InputError("No query ids given.")
    if q.dtype.kind not in "iu":
        raise InputError("query_ids must be integers.")
    if q.min() < 0 or q.max() >= V:
        bad = int(q[(q < 0) | (q >= V)][0])
        raise InputError(f"Query id {bad} is out of range: the matrix has rows 0 to {V - 1}.")
    k_max = V - 1 if exclude_self else V
    if k_max < 1:
        raise InputError("The matrix has a single row: it has no neighbours.")
    k = check_int(k, 1, k_max, "k")
    block = check_int(block, 1, None, "block")
    query_chunk = check_int(query_chunk, 1, None, "query_chunk")
    dev = E.device
    qt = torch.as_tensor(q, dtype=torch.long, device=dev)
    inv_norm = torch.cat([torch.linalg.vector_norm(E[i:i + block].float(), dim=1)
                          for i in range(0, V, block)]).clamp_min(1e-12).reciprocal()  # (V,)

    out_ids, out_sims = [], []
    for c0 in range(0, q.size, query_chunk):
        qc = qt[c0:c0 + query_chunk]  # (Qc,)
        Qn = E[qc].float() * inv_norm[qc, None]  # (Qc, D) unit queries
        rows = torch.arange(qc.numel(), device=dev)
        best_s = torch.empty(qc.numel(), 0, device=dev)
        best_i = torch.empty(qc.numel(), 0, dtype=torch.long, device=dev)
        for b0 in range(0, V, block):
            b1 = min(V, b0 + block)
            sims = (Qn @ E[b0:b1].float().T) * inv_norm[None, b0:b1]  # (Qc, b) cosine
            if exclude_self:
                inside = (qc >= b0) & (qc < b1)
                sims[rows[inside], qc[inside] - b0] = -math.inf
            kk = min(k, b1 - b0)
            s, i = torch.topk(sims, kk, dim=1)  # (Qc, kk)
            cand_s = torch.cat([best_s, s], dim=1)
            cand_i = torch.cat([best_i, i + b0], dim=1)
            kk = min(k, cand_s.shape[1])
            best_s, pos = torch.topk(cand_s, kk, dim=1)
            best_i = torch.gather(cand_i, 1, pos)
            del sims
        out_ids.append(best_i.cpu())
        out_sims.append(best_s.cpu())
    return torch.cat(out_ids).numpy().astype(np.int64), torch.cat(out_sims).numpy().astype(np.float32)


def nearest_neighbours(source, query, k: int = 10, *, block: int = DEFAULT_BLOCK) -> Neighbours:
    """Cosine nearest neighbours of one or many tokens (strings or ids) among the token embeddings.

    `source` is a LoadedModel (queries may be token strings; results carry token strings) or a
    raw (V, D) matrix (queries are row ids; tokens are the ids as strings).
    """
    if isinstance(source, (torch.Tensor, np.ndarray)):
        E, lm = _as_tensor(source), None
        q = np.atleast_1d(np.asarray(query))
        if q.size == 0:
            raise InputError("No query token given.")
        ids = q.astype(np.int64) if q.dtype.kind in "iu" else None
        if ids is None:
            raise InputError("With a raw matrix, queries must be row ids (integers).")
    else:
        lm = source
        E = input_embedding_matrix(lm)
        ids = np.asarray(_resolve_queries(lm, query), dtype=np.int64)
    V = int(E.shape[0])
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= V - 1:
        raise InputError(f"k must be between 1 and {V - 1} (the vocabulary size minus the query itself), got {k!r}.")
    nn_ids, sims = neighbours_of_matrix(E, ids, int(k), block)
    if lm is None:
        q_tokens = [str(i) for i in ids]
        tokens = [[str(j) for j in row] for row in nn_ids]
    else:
        q_tokens = token_strings(lm, ids)
        flat = token_strings(lm, nn_ids.ravel())
        tokens = [flat[r * nn_ids.shape[1]:(r + 1) * nn_ids.shape[1]] for r in range(nn_ids.shape[0])]
    return Neighbours(query_ids=ids, query_tokens=q_tokens, ids=nn_ids, tokens=tokens, cosine=sims, k=int(k))


# --------------------------------------------------------------------------- frequencies


def token_counts(lm: LoadedModel, text: str | None = None, *, path: str | Path | None = None,
                 chunk_chars: int = 200_000) -> np.ndarray:
    """(V,) int64 count of each token id in `text`, or in the corpus file `path` (default: the bundled one).

    The text is tokenised in chunks cut at whitespace (no special tokens), so memory stays small
    and tokens are the same as a whole-text encode except, rarely, at a chunk boundary.
    """
    if text is None:
        p = Path(path) if path is not None else DEFAULT_CORPUS
        if not p.is_file():
            raise InputError(f"Corpus file '{p}' does not exist.", "Pass a text, or the path of a corpus file.")
        text = p.read_text(encoding="utf-8", errors="replace")
    if not isinstance(text, str) or not text.strip():
        raise InputError("The corpus text is empty.", "Pass some text to count token frequencies on.")
    chunk_chars = check_int(chunk_chars, 1000, None, "chunk_chars")
    V = int(input_embedding_matrix(lm).shape[0])
    key = (hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest(), V, chunk_chars)
    with _COUNTS_LOCK:
        for tok_ref, k, counts in _COUNTS:
            if k == key and tok_ref() is lm.tokenizer:
                return counts.copy()  # the same corpus counted once per tokenizer (a report's sections share it)
    counts = _count_tokens(lm, text, V, chunk_chars)
    with _COUNTS_LOCK:
        _COUNTS.append((weakref.ref(lm.tokenizer), key, counts))
        del _COUNTS[:-_COUNTS_KEPT]
    return counts.copy()


# Recent token counts: (weak reference to the tokenizer, (text hash, vocabulary size, chunk size), counts). A dead
# reference never matches, so a tokenizer freed and another allocated at its address cannot see old counts.
_COUNTS: list[tuple] = []
_COUNTS_KEPT = 4
_COUNTS_LOCK = threading.Lock()


def _count_tokens(lm: LoadedModel, text: str, V: int, chunk_chars: int) -> np.ndarray:
    chunks, start = [], 0
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            if cut > start:
                end = cut  # the space goes with the next word (GPT-2 style "Ġword")
        chunks.append(text[start:end])
        start = end
    counts = np.zeros(V, dtype=np.int64)
    tok = lm.tokenizer
    for i in range(0, len(chunks), 16):
        for ids in tok(chunks[i:i + 16], add_special_tokens=False, verbose=False)["input_ids"]:
            ids = np.asarray(ids, dtype=np.int64)
            counts += np.bincount(ids[ids < V], minlength=V)
    return counts


def norm_frequency_correlation(lm: LoadedModel, text: str | None = None, *, path: str | Path | None = None,
                               counts: np.ndarray | None = None, min_count: int = 1, n_bins: int = 20,
                               sample: int = 3000, seed: int = 0) -> NormFrequency:
    """Spearman ρ of token-embedding norm against token frequency on a corpus (or given `counts`)."""
    from scipy.stats import spearmanr

    min_count = check_int(min_count, 1, None, "min_count")
    n_bins = check_int(n_bins, 1, 1000, "n_bins")
    sample = check_int(sample, 1, None, "sample")
    norms = _row_norms(input_embedding_matrix(lm))
    corpus = "counts"
    if counts is None:
        counts = token_counts(lm, text, path=path)
        corpus = "text" if text is not None else str(Path(path) if path is not None else DEFAULT_CORPUS)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != norms.shape:
        raise InputError(f"counts has shape {counts.shape}; the vocabulary has {norms.size} rows.")
    seen = counts >= min_count
    n_seen = int(seen.sum())
    if n_seen < 3:
        raise InputError(f"Only {n_seen} token(s) occur at least {min_count} time(s) in the corpus; "
                         "a correlation needs at least 3.", "Use a longer text.")

    def rho(a, b):
        if np.all(a == a[0]) or np.all(b == b[0]):
            return math.nan, math.nan
        r = spearmanr(a, b)
        return float(r.statistic), float(r.pvalue)

    rho_seen, p_seen = rho(norms[seen], counts[seen])
    rho_all, p_all = rho(norms, counts)
    logc = np.log10(counts[seen].astype(np.float64))
    edges = bin_edges(logc, n_bins)
    which = np.clip(np.searchsorted(edges, logc, side="right") - 1, 0, n_bins - 1)
    bin_counts = np.bincount(which, minlength=n_bins).astype(np.int64)
    sums = np.bincount(which, weights=norms[seen], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_mean = np.where(bin_counts > 0, sums / np.maximum(bin_counts, 1), np.nan)
    seen_ids = np.flatnonzero(seen)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(seen_ids, size=min(sample, seen_ids.size), replace=False))
    return NormFrequency(
        rho_seen=rho_seen, p_seen=p_seen, n_seen=n_seen, rho_all=rho_all, p_all=p_all, n_all=int(norms.size),
        min_count=min_count, n_corpus_tokens=int(counts.sum()), corpus=corpus, bin_edges=edges,
        bin_mean_norm=bin_mean, bin_counts=bin_counts, sample_ids=pick.astype(np.int64),
        sample_counts=counts[pick], sample_norms=norms[pick])


# --------------------------------------------------------------------------- anisotropy


@torch.no_grad()
def anisotropy_of_matrix(E, n_pairs: int = 20_000, seed: int = 0) -> Anisotropy:
    """Mean cosine of `n_pairs` seeded random pairs of distinct rows (Ethayarajh 2019's baseline)."""
    E = _as_tensor(E)
    V = int(E.shape[0])
    if V < 2:
        raise InputError("Anisotropy needs at least 2 rows.")
    n_pairs = check_int(n_pairs, 1, 10_000_000, "n_pairs")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, V, size=n_pairs)
    j = (i + rng.integers(1, V, size=n_pairs)) % V  # uniform over rows != i
    cos = []
    for s in range(0, n_pairs, 65536):
        a = _unit_rows(E[torch.as_tensor(i[s:s + 65536], device=E.device)])
        b = _unit_rows(E[torch.as_tensor(j[s:s + 65536], device=E.device)])
        cos.append((a * b).sum(dim=1).double().cpu())
    cos = torch.cat(cos).numpy()
    total = torch.zeros(E.shape[1], dtype=torch.float64, device=E.device)
    for s in range(0, V, DEFAULT_BLOCK):
        total += E[s:s + DEFAULT_BLOCK].double().sum(dim=0)
    mean_norm = float(_row_norms(E).mean())
    ratio = float(torch.linalg.vector_norm(total / V)) / mean_norm if mean_norm > 0 else math.nan
    return Anisotropy(mean_cosine=float(cos.mean()), std_cosine=float(cos.std()), n_pairs=n_pairs,
                      mean_vector_ratio=ratio, seed=seed)


def token_anisotropy(lm: LoadedModel, n_pairs: int = 20_000, seed: int = 0) -> Anisotropy:
    """Anisotropy of the token-embedding table of `lm`."""
    return anisotropy_of_matrix(input_embedding_matrix(lm), n_pairs, seed)
