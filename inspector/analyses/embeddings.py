"""Embedding geometry: token table (norms, neighbours, clusters, projection, anisotropy, norm vs
frequency), position and segment tables, and contextual embeddings of a text layer by layer.

Seed 000 claims frequent tokens get larger norms and that embeddings form semantic clusters;
seed 002 claims BERT's positions are sinusoidal. These functions measure each claim.

Memory stays bounded for a 50 000 × 768 vocabulary: no V × V matrix is ever built; neighbour
search runs over row blocks with `torch.topk` and merges the running top-k. Matrix-level
functions (`neighbours_of_matrix`, `cluster_matrix`, `anisotropy_of_matrix`, `project_matrix`)
take any (V, D) torch tensor or numpy array; the `lm`-level ones add token strings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError, NotAvailableError
from ._common import QUANTILE_LEVELS, bin_edges, check_int, histogram

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

DEFAULT_BLOCK = 4096
MINIBATCH_ABOVE = 20_000  # rows; larger sets are clustered with MiniBatchKMeans
SILHOUETTE_SAMPLE = 3000  # rows scored for the silhouette (its cost is quadratic)
TSNE_MAX_POINTS = 5000
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus" / "train.txt"


# --------------------------------------------------------------------------- results


@dataclass
class TokenNorms:
    """L2 norm of every row of the input-embedding matrix."""

    norms: np.ndarray  # (V,) float64
    mean: float
    std: float  # population std
    min: float
    max: float
    quantiles: np.ndarray  # (7,) at QUANTILE_LEVELS
    quantile_levels: np.ndarray  # (7,)
    largest_ids: np.ndarray  # (n,) int, largest norm first
    largest_tokens: list[str]
    smallest_ids: np.ndarray  # (n,) int, smallest norm first
    smallest_tokens: list[str]
    hist_edges: np.ndarray  # (bins + 1,)
    hist_counts: np.ndarray  # (bins,) int


@dataclass
class Neighbours:
    """Cosine nearest neighbours of Q query tokens in the input-embedding matrix."""

    query_ids: np.ndarray  # (Q,) int
    query_tokens: list[str]  # (Q,) display strings (str(id) when no tokenizer)
    ids: np.ndarray  # (Q, k) int, most similar first; the query itself excluded
    tokens: list[list[str]]  # (Q, k)
    cosine: np.ndarray  # (Q, k) float32 cosine similarity
    k: int


@dataclass
class ClusterResult:
    """k-means on unit-normalised rows (i.e. by cosine). Labels are canonical: 0 = largest cluster."""

    labels: np.ndarray  # (N,) int in [0, n_clusters)
    centers: np.ndarray  # (n_clusters, D) float32, in the unit-vector space (not renormalised)
    sizes: np.ndarray  # (n_clusters,) int, non-increasing
    inertia: float  # sum of squared distances of unit rows to their centre
    silhouette: float  # euclidean silhouette on unit rows (monotone in cosine distance); NaN if undefined
    silhouette_sample: int  # rows used for the silhouette (a seeded sample of big sets)
    algorithm: str  # "kmeans" | "minibatch-kmeans"
    seed: int


@dataclass
class TokenClusters:
    """Clusters of a chosen token set, with the tokens nearest each centre."""

    ids: np.ndarray  # (N,) token ids clustered
    tokens: list[str]  # (N,)
    selection: str  # "ids" | "frequent" | "all"
    clusters: ClusterResult
    exemplars: list[list[str]]  # (n_clusters, ≤ n_exemplars) tokens nearest each centre


@dataclass
class Projection:
    """2-D map of a token set (or any rows) for a scatter plot."""

    coords: np.ndarray  # (N, 2) float64
    ids: np.ndarray  # (N,) int row ids
    tokens: list[str]  # (N,)
    method: str  # "pca" | "tsne"
    normalized: bool  # rows were unit-normalised first (cosine geometry)
    explained_variance_ratio: np.ndarray  # (2,) for PCA; NaN for t-SNE
    seed: int


@dataclass
class Anisotropy:
    """How much all vectors point one way: mean cosine of random distinct pairs (0 = isotropic)."""

    mean_cosine: float
    std_cosine: float
    n_pairs: int
    mean_vector_ratio: float  # ‖mean row‖ / mean ‖row‖: 0 centred, 1 all identical
    seed: int


@dataclass
class NormFrequency:
    """Spearman correlation of token norm against corpus frequency (seed 000's claim)."""

    rho_seen: float  # over tokens seen at least `min_count` times
    p_seen: float
    n_seen: int
    rho_all: float  # over every row, unseen tokens as frequency 0 (many ties)
    p_all: float
    n_all: int
    min_count: int
    n_corpus_tokens: int  # tokens counted in the corpus
    corpus: str  # "text" or the corpus file path
    bin_edges: np.ndarray  # (B + 1,) log10(count) bin edges over seen tokens
    bin_mean_norm: np.ndarray  # (B,) mean norm per frequency bin (NaN when empty)
    bin_counts: np.ndarray  # (B,) tokens per bin
    sample_ids: np.ndarray  # (S,) seeded sample of seen tokens for a scatter plot
    sample_counts: np.ndarray  # (S,)
    sample_norms: np.ndarray  # (S,)


@dataclass
class PositionEmbeddings:
    """Learned position table versus a sinusoidal table of the same size (seed 002's claim).

    `sinusoidal_similarity` is the Pearson correlation between the off-diagonal entries of
    the position × position cosine-similarity matrices of the two tables. It is our main
    score because it compares geometry, not coordinates: it does not change under any rotation,
    permutation or global rescaling of the embedding dimensions, so a table that encodes
    sinusoids in a rotated basis (or interleaves sin/cos differently) still scores ~1, while
    unstructured (random) tables score ~0. `best_dim_correlation` — the mean over learned
    dimensions of the best |Pearson| against any sinusoid column — is reported beside it, but is
    basis-dependent and biased upwards for short tables (a max over D candidates).
    """

    n_positions: int
    dim: int
    learned: bool  # a trainable table (nn.Embedding) rather than a fixed buffer
    norms: np.ndarray  # (P,) L2 norm per position
    adjacent_cosine: np.ndarray  # (P - 1,) cosine of position p with p + 1 (smoothness)
    cos_positions: np.ndarray  # (n,) positions kept in `cos_matrix` (all, or an even subsample ≤ 128)
    cos_matrix: np.ndarray  # (n, n) cosine similarity between those positions
    sinusoidal_similarity: float  # Pearson of off-diagonal cosine matrices, learned vs sinusoidal
    sinusoidal_positions_used: int  # positions used for that score (even subsample when P > 2048)
    best_dim_correlation: float  # mean over dims of the best |Pearson| against a sinusoid column
    best_dim_correlation_per_dim: np.ndarray  # (D,)


@dataclass
class OutputEmbeddings:
    """The output (unembedding) matrix next to the input table. Shapes use V = shared vocabulary rows."""

    tied: bool  # the head's weight is the input table itself (GPT-2, Gemma); then the figures below are trivial
    n_rows: int  # V
    dim: int
    output_norms: np.ndarray  # (V,) ‖w_out[v]‖
    mean_output_norm: float
    mean_input_norm: float
    row_cosine: np.ndarray  # (V,) cos(e_in[v], w_out[v]); NaN where a row is all zeros (padding rows)
    mean_row_cosine: float  # over the rows where it is defined
    norm_spearman: float  # Spearman ρ between ‖e_in[v]‖ and ‖w_out[v]‖ over the V rows


@dataclass
class SegmentEmbeddings:
    """BERT token-type (segment) table: sentence A = 0, sentence B = 1."""

    n_types: int
    norms: np.ndarray  # (n_types,)
    cosine: np.ndarray  # (n_types, n_types)
    cosine_0_1: float  # cosine between segment 0 and 1 (NaN when only one type)
    mean_token_norm: float  # for scale: mean norm of the token table's rows


@dataclass
class ContextualEmbeddings:
    """Hidden states of one text at every layer: token × token cosines and self-similarity.

    Layer 0 is the embedding output; layer l the output of block l; for GPT-2 the last entry is
    after the final LayerNorm `ln_f` (transformers applies it there). Shapes use L = n_layers.
    """

    tokens: list[str]  # (T,)
    special: np.ndarray  # (T,) bool, [CLS]/[SEP]/<|endoftext|>
    included: np.ndarray  # (T,) bool, tokens counted in the means (special excluded on request)
    token_cosine: np.ndarray | None  # (L + 1, T, T) float32 cosine between tokens per layer; None if not kept
    mean_pairwise_cosine: np.ndarray  # (L + 1,) mean over included pairs i != j (NaN if < 2 tokens)
    norms: np.ndarray  # (L + 1, T) L2 norm of every token vector
    self_sim_next: np.ndarray  # (L, T) cosine of token t at layer l and l + 1
    self_sim_final: np.ndarray  # (L + 1, T) cosine of token t at layer l and the last layer
    mean_self_sim_next: np.ndarray  # (L,) over included tokens
    mean_self_sim_final: np.ndarray  # (L + 1,)


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


def output_embedding_matrix(lm: LoadedModel) -> torch.Tensor:
    """The (V, D) weight of the output head (causal / masked LM decoder), detached."""
    head = lm.model.get_output_embeddings() if hasattr(lm.model, "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise NotAvailableError("This model has no output (unembedding) matrix.")
    return head.weight.detach()


def output_embeddings(lm: LoadedModel) -> OutputEmbeddings:
    """Norms of the output matrix's rows and their cosine with the same token's input row.

    Untied decoders (Llama, Qwen2, Mistral) learn a separate unembedding: how far it is from the input
    table is a property of the checkpoint. Tied ones report cosine 1 exactly."""
    from scipy.stats import spearmanr

    from .. import families

    W_in, W_out = input_embedding_matrix(lm), output_embedding_matrix(lm)
    V = min(W_in.shape[0], W_out.shape[0])
    if W_in.shape[1] != W_out.shape[1]:
        raise NotAvailableError(f"Input and output matrices differ in width ({W_in.shape[1]} vs {W_out.shape[1]}).")
    n_in, n_out = _row_norms(W_in[:V]), _row_norms(W_out[:V])
    cos = np.empty(V)
    for b0 in range(0, V, DEFAULT_BLOCK):
        a = W_in[b0:b0 + DEFAULT_BLOCK].to(torch.float64)
        b = W_out[b0:b0 + DEFAULT_BLOCK].to(torch.float64)
        na, nb = torch.linalg.vector_norm(a, dim=1), torch.linalg.vector_norm(b, dim=1)
        c = (a * b).sum(dim=1) / (na * nb)
        cos[b0:b0 + len(a)] = torch.where((na > 0) & (nb > 0), c, torch.nan).cpu().numpy()  # zero rows (padding)
    rho = float(spearmanr(n_in, n_out).statistic) if V >= 3 and np.ptp(n_in) > 0 and np.ptp(n_out) > 0 \
        else math.nan
    return OutputEmbeddings(tied=families.tied_embeddings(lm.model), n_rows=int(V), dim=int(W_in.shape[1]),
                            output_norms=n_out, mean_output_norm=float(n_out.mean()),
                            mean_input_norm=float(n_in.mean()), row_cosine=cos,
                            mean_row_cosine=float(np.nanmean(cos)) if np.isfinite(cos).any() else math.nan,
                            norm_spearman=rho)


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


# --------------------------------------------------------------------------- token sets


def select_tokens(lm: LoadedModel, *, token_ids=None, n_tokens: int | None = 2000, text: str | None = None,
                  path: str | Path | None = None, counts: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Token ids to cluster / project: explicit ids, the `n_tokens` most frequent in a corpus, or all (n_tokens=None).

    Frequencies come from `counts`, else `text`, else the corpus file `path` (default: bundled corpus).
    Ties in frequency are broken by lower id; tokens never seen are not selected.
    """
    V = int(input_embedding_matrix(lm).shape[0])
    if token_ids is not None:
        items = token_ids.tolist() if isinstance(token_ids, np.ndarray) else list(token_ids)
        if not items:
            raise InputError("The token set is empty.")
        vocab = lm.tokenizer.get_vocab() if any(isinstance(t, str) for t in items) else None
        return np.unique(np.asarray([resolve_token(lm, t, vocab) for t in items], dtype=np.int64)), "ids"
    if n_tokens is None:
        return np.arange(V, dtype=np.int64), "all"
    n_tokens = check_int(n_tokens, 1, None, "n_tokens")
    if counts is None:
        counts = token_counts(lm, text, path=path)
    counts = np.asarray(counts)
    order = np.lexsort((np.arange(V), -counts))  # most frequent first, then lower id
    order = order[counts[order] > 0][:n_tokens]
    return np.sort(order).astype(np.int64), "frequent"


# --------------------------------------------------------------------------- clusters


def _canonical_labels(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Relabel so cluster 0 is the largest; ties by the first row that carries the label."""
    sizes = np.bincount(labels, minlength=n_clusters)
    first = np.full(n_clusters, labels.size)
    for lab in range(n_clusters):
        hit = np.flatnonzero(labels == lab)
        if hit.size:
            first[lab] = hit[0]
    order = np.lexsort((first, -sizes))  # old labels, new order
    mapping = np.empty(n_clusters, dtype=np.int64)
    mapping[order] = np.arange(n_clusters)
    return mapping


def cluster_matrix(E, n_clusters: int, seed: int = 0, *, minibatch: bool | None = None,
                   silhouette_sample: int = SILHOUETTE_SAMPLE) -> ClusterResult:
    """k-means of the unit-normalised rows of `E` (N, D): same seed, same labels.

    MiniBatchKMeans is used above MINIBATCH_ABOVE rows (or when `minibatch` is True). The
    silhouette is computed on a seeded sample of at most `silhouette_sample` rows.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import silhouette_score

    X = _unit_np(_as_tensor(E).float().cpu().numpy())  # (N, D)
    N = X.shape[0]
    if N < 3:
        raise InputError(f"Clustering needs at least 3 rows, got {N}.")
    n_clusters = check_int(n_clusters, 2, N - 1, "n_clusters")
    seed = check_int(seed, 0, None, "seed")
    silhouette_sample = check_int(silhouette_sample, 10, None, "silhouette_sample")
    use_mb = N > MINIBATCH_ABOVE if minibatch is None else bool(minibatch)
    if use_mb:
        # bounded work: ~20 passes in 8192-row batches (50 257 × 768 into 50 clusters: ~5 s on 2 cores)
        km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=1, max_iter=20, batch_size=8192)
    else:
        km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=4)
    raw = km.fit_predict(X).astype(np.int64)
    mapping = _canonical_labels(raw, n_clusters)
    labels = mapping[raw]
    centers = np.empty_like(km.cluster_centers_, dtype=np.float32)
    centers[mapping] = km.cluster_centers_
    sizes = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    n_used = min(N, silhouette_sample)
    sil = math.nan
    if len(np.unique(labels)) >= 2:
        if n_used < N:
            idx = np.random.default_rng(seed).choice(N, size=n_used, replace=False)
            Xs, ls = X[idx], labels[idx]
        else:
            Xs, ls = X, labels
        if 2 <= len(np.unique(ls)) <= len(ls) - 1:
            sil = float(silhouette_score(Xs, ls, metric="euclidean"))
    inertia = float(((X - centers[labels]) ** 2).sum())
    return ClusterResult(labels=labels, centers=centers, sizes=sizes, inertia=inertia, silhouette=sil,
                         silhouette_sample=int(n_used), algorithm="minibatch-kmeans" if use_mb else "kmeans",
                         seed=seed)


def cluster_tokens(lm: LoadedModel, n_clusters: int = 20, *, token_ids=None, n_tokens: int | None = 2000,
                   text: str | None = None, path: str | Path | None = None, counts: np.ndarray | None = None,
                   seed: int = 0, n_exemplars: int = 10) -> TokenClusters:
    """Cluster a token set by cosine (see `select_tokens` for how the set is chosen)."""
    n_exemplars = check_int(n_exemplars, 1, None, "n_exemplars")
    ids, selection = select_tokens(lm, token_ids=token_ids, n_tokens=n_tokens, text=text, path=path, counts=counts)
    E = input_embedding_matrix(lm)
    X = E[torch.as_tensor(ids, device=E.device)].float().cpu()
    res = cluster_matrix(X, n_clusters, seed)
    Xu = _unit_np(X.numpy())
    exemplars = []
    for c in range(res.centers.shape[0]):
        members = np.flatnonzero(res.labels == c)
        d = ((Xu[members] - res.centers[c]) ** 2).sum(axis=1)
        best = members[np.argsort(d, kind="stable")[:n_exemplars]]
        exemplars.append(token_strings(lm, ids[best]))
    return TokenClusters(ids=ids, tokens=token_strings(lm, ids), selection=selection, clusters=res,
                         exemplars=exemplars)


# --------------------------------------------------------------------------- projection


def project_matrix(X, method: str = "pca", seed: int = 0, *, normalize: bool = True,
                   perplexity: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) coordinates of the rows of X by PCA or t-SNE; returns (coords, explained_variance_ratio)."""
    X = _as_tensor(X).float().cpu().numpy()
    N = X.shape[0]
    if N < 3:
        raise InputError(f"A 2-D projection needs at least 3 points, got {N}.")
    if normalize:
        X = _unit_np(X)
    if method == "pca":
        from sklearn.decomposition import PCA

        n_comp = min(2, X.shape[1])
        pca = PCA(n_components=n_comp, random_state=seed)
        coords = pca.fit_transform(X).astype(np.float64)
        evr = np.asarray(pca.explained_variance_ratio_, dtype=np.float64)
        if n_comp < 2:
            coords = np.hstack([coords, np.zeros((N, 1))])
            evr = np.append(evr, 0.0)
        return coords, evr
    if method == "tsne":
        from sklearn.manifold import TSNE

        if N > TSNE_MAX_POINTS:
            raise InputError(f"t-SNE on {N} points would be slow; the limit is {TSNE_MAX_POINTS}.",
                             "Use PCA, or choose fewer tokens.")
        perp = min(float(perplexity), max(1.0, (N - 1) / 3.0))
        coords = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(X)
        return coords.astype(np.float64), np.full(2, np.nan)
    raise InputError(f"Unknown projection method '{method}'.", "Choose 'pca' or 'tsne'.")


def project_tokens(lm: LoadedModel, *, method: str = "pca", token_ids=None, n_tokens: int | None = 2000,
                   text: str | None = None, path: str | Path | None = None, counts: np.ndarray | None = None,
                   seed: int = 0, normalize: bool = True) -> Projection:
    """2-D map of a token set (see `select_tokens`) with token labels; PCA by default, t-SNE on request."""
    ids, _ = select_tokens(lm, token_ids=token_ids, n_tokens=n_tokens, text=text, path=path, counts=counts)
    E = input_embedding_matrix(lm)
    coords, evr = project_matrix(E[torch.as_tensor(ids, device=E.device)], method, seed, normalize=normalize)
    return Projection(coords=coords, ids=ids, tokens=token_strings(lm, ids), method=method, normalized=normalize,
                      explained_variance_ratio=evr, seed=seed)


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


# --------------------------------------------------------------------------- positions / segments


def sinusoidal_table(n_positions: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """(P, D) sinusoidal table of Vaswani et al.: [p, 2i] = sin(p / base^(2i/D)), [p, 2i+1] = cos(...)."""
    n_positions = check_int(n_positions, 1, None, "n_positions")
    dim = check_int(dim, 1, None, "dim")
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    i = np.arange(0, dim, 2, dtype=np.float64)
    angle = pos / np.power(base, i / dim)[None, :]  # (P, ceil(D/2))
    table = np.zeros((n_positions, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : dim // 2])
    return table


def _cos_matrix(X: np.ndarray) -> np.ndarray:
    U = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return U @ U.T


def sinusoidal_similarity(table: np.ndarray, max_positions: int = 2048) -> tuple[float, int]:
    """Pearson r between off-diagonal position cosine similarities of `table` and a sinusoidal table.

    Returns (r, positions used). Tables longer than `max_positions` are evenly subsampled.
    """
    T = np.asarray(table, dtype=np.float64)
    if T.ndim != 2 or T.shape[0] < 3:
        raise InputError("A position table needs at least 3 positions.")
    P, D = T.shape
    keep = np.unique(np.linspace(0, P - 1, min(P, max_positions)).round().astype(np.int64))
    S = sinusoidal_table(P, D)[keep]
    A, B = _cos_matrix(T[keep]), _cos_matrix(S)
    off = ~np.eye(keep.size, dtype=bool)
    a, b = A[off], B[off]
    if a.std() == 0 or b.std() == 0:
        return math.nan, int(keep.size)
    return float(np.corrcoef(a, b)[0, 1]), int(keep.size)


def _best_dim_correlation(table: np.ndarray) -> np.ndarray:
    T = np.asarray(table, dtype=np.float64)
    S = sinusoidal_table(*T.shape)

    def z(M):
        M = M - M.mean(axis=0)
        sd = np.linalg.norm(M, axis=0)
        return np.divide(M, sd, out=np.zeros_like(M), where=sd > 0)

    C = z(T).T @ z(S)  # (D, D) Pearson between learned dim and sinusoid column
    return np.abs(C).max(axis=1)


def _position_module(lm: LoadedModel):
    base = lm.model.base_model
    for path in ("wpe", "embeddings.position_embeddings", "embed_positions"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and isinstance(getattr(obj, "weight", None), torch.Tensor):
            return obj
    if getattr(lm, "fam", None) is not None and lm.fam.positions == "rotary":
        raise NotAvailableError(
            f"{lm.fam.label} uses rotary positions (RoPE): there is no position-embedding table. Positions act by "
            "rotating q and k; σ(QKᵀ) against query–key distance (section 'Sinks, massive activations, γ outliers') "
            "shows their effect.")
    raise NotAvailableError("This model has no absolute position-embedding table (it may use rotary or "
                            "relative positions).")


def position_embeddings(lm: LoadedModel, *, max_matrix: int = 128) -> PositionEmbeddings:
    """Norms, smoothness and sinusoidal resemblance of the position-embedding table."""
    max_matrix = check_int(max_matrix, 2, None, "max_matrix")
    module = _position_module(lm)
    W = module.weight.detach().to("cpu", torch.float64).numpy()  # (P, D)
    P, D = W.shape
    if P < 3:
        raise NotAvailableError(f"The position table has only {P} positions.")
    U = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    keep = np.unique(np.linspace(0, P - 1, min(P, max_matrix)).round().astype(np.int64))
    r, used = sinusoidal_similarity(W)
    per_dim = _best_dim_correlation(W)
    return PositionEmbeddings(
        n_positions=P, dim=D, learned=isinstance(module.weight, torch.nn.Parameter),
        norms=np.linalg.norm(W, axis=1), adjacent_cosine=(U[:-1] * U[1:]).sum(axis=1),
        cos_positions=keep, cos_matrix=U[keep] @ U[keep].T, sinusoidal_similarity=r,
        sinusoidal_positions_used=used, best_dim_correlation=float(per_dim.mean()),
        best_dim_correlation_per_dim=per_dim)


def segment_embeddings(lm: LoadedModel) -> SegmentEmbeddings:
    """Norms and cosine of BERT's token-type (segment) embeddings."""
    emb = getattr(lm.model.base_model, "embeddings", None)
    table = getattr(emb, "token_type_embeddings", None) if emb is not None else None
    if table is None or not isinstance(getattr(table, "weight", None), torch.Tensor):
        raise NotAvailableError("This model has no segment (token-type) embeddings; BERT-style models have them.")
    W = table.weight.detach().to("cpu", torch.float64).numpy()  # (n_types, D)
    C = _cos_matrix(W)
    return SegmentEmbeddings(n_types=int(W.shape[0]), norms=np.linalg.norm(W, axis=1), cosine=C,
                             cosine_0_1=float(C[0, 1]) if W.shape[0] >= 2 else math.nan,
                             mean_token_norm=float(_row_norms(input_embedding_matrix(lm)).mean()))


# --------------------------------------------------------------------------- contextual


def contextual_from_hidden(hidden_states, tokens: list[str], special: np.ndarray | None = None, *,
                           exclude_special: bool = False, keep_token_cosine: bool = True) -> ContextualEmbeddings:
    """Contextual-similarity statistics from hidden states: a sequence of L + 1 tensors (1, T, D) or (T, D)."""
    H = torch.stack([torch.as_tensor(h).detach().float().reshape(-1, h.shape[-1]) for h in hidden_states])  # (L+1,T,D)
    n_states, T, _ = H.shape
    if len(tokens) != T:
        raise InputError(f"{len(tokens)} token strings for {T} positions.")
    special = np.zeros(T, dtype=bool) if special is None else np.asarray(special, dtype=bool)
    included = ~special if exclude_special else np.ones(T, dtype=bool)
    U = _unit_rows(H)  # (L+1, T, D)
    cos = (U @ U.transpose(1, 2)).numpy()  # (L+1, T, T)
    inc = np.flatnonzero(included)
    if inc.size >= 2:
        sub = cos[:, inc][:, :, inc]
        off = ~np.eye(inc.size, dtype=bool)
        mean_pair = sub[:, off].astype(np.float64).mean(axis=1)
    else:
        mean_pair = np.full(n_states, np.nan)
    next_sim = (U[:-1] * U[1:]).sum(-1).double().numpy()  # (L, T)
    final_sim = (U * U[-1:]).sum(-1).double().numpy()  # (L+1, T)

    def mean_inc(a):
        return a[:, inc].mean(axis=1) if inc.size else np.full(a.shape[0], np.nan)

    return ContextualEmbeddings(
        tokens=list(tokens), special=special, included=included,
        token_cosine=cos.astype(np.float32) if keep_token_cosine else None,
        mean_pairwise_cosine=mean_pair, norms=torch.linalg.vector_norm(H, dim=-1).double().numpy(),
        self_sim_next=next_sim, self_sim_final=final_sim, mean_self_sim_next=mean_inc(next_sim),
        mean_self_sim_final=mean_inc(final_sim))


def contextual_embeddings(lm: LoadedModel, encoded, *, exclude_special: bool = False,
                          keep_token_cosine: bool = True) -> ContextualEmbeddings:
    """Per-layer token × token cosines and self-similarity of one text (an `Encoded` or a string).

    `keep_token_cosine=False` drops the (L + 1, T, T) matrices (≈ 3.4 M values for 12 layers ×
    512 tokens) and keeps only the per-layer means and self-similarities: use it for reports.
    """
    from .. import capture
    from ..inputs import Encoded, encode

    if isinstance(encoded, str):
        encoded = encode(lm, encoded)
    if not isinstance(encoded, Encoded):
        raise InputError("contextual_embeddings needs a text or an Encoded input.")
    res = capture.run(lm, encoded.batch(), capture.CaptureOptions(attention_stats=False, logits=False,
                                                                  hidden_states=True))
    return contextual_from_hidden(res.hidden_states, encoded.tokens, encoded.special,
                                  exclude_special=exclude_special, keep_token_cosine=keep_token_cosine)
