"""The result dataclasses of the embedding analyses (documented shapes and units).

They are shown, and stored in JSON reports, as `inspector.analyses.embeddings.<Name>` (the name a
report file records for each part: `report._type_name`), so `__module__` says that module, which
re-exports them. No `from __future__ import annotations` here on purpose: the annotations are real
types, so `typing.get_type_hints` (used by `_common.from_dict`) needs no module globals to read them.
"""
from dataclasses import dataclass

import numpy as np

PUBLIC_MODULE = "inspector.analyses.embeddings"


def _public(cls):
    """Name the class as the public module does (JSON reports and pickles record module.QualName)."""
    cls.__module__ = PUBLIC_MODULE
    return cls


@_public
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


@_public
@dataclass
class Neighbours:
    """Cosine nearest neighbours of Q query tokens in the input-embedding matrix."""

    query_ids: np.ndarray  # (Q,) int
    query_tokens: list[str]  # (Q,) display strings (str(id) when no tokenizer)
    ids: np.ndarray  # (Q, k) int, most similar first; the query itself excluded
    tokens: list[list[str]]  # (Q, k)
    cosine: np.ndarray  # (Q, k) float32 cosine similarity
    k: int


@_public
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


@_public
@dataclass
class TokenClusters:
    """Clusters of a chosen token set, with the tokens nearest each centre."""

    ids: np.ndarray  # (N,) token ids clustered
    tokens: list[str]  # (N,)
    selection: str  # "ids" | "frequent" | "all"
    clusters: ClusterResult
    exemplars: list[list[str]]  # (n_clusters, ≤ n_exemplars) tokens nearest each centre


@_public
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


@_public
@dataclass
class Anisotropy:
    """How much all vectors point one way: mean cosine of random distinct pairs (0 = isotropic)."""

    mean_cosine: float
    std_cosine: float
    n_pairs: int
    mean_vector_ratio: float  # ‖mean row‖ / mean ‖row‖: 0 centred, 1 all identical
    seed: int


@_public
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


@_public
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


@_public
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


@_public
@dataclass
class SegmentEmbeddings:
    """BERT token-type (segment) table: sentence A = 0, sentence B = 1."""

    n_types: int
    norms: np.ndarray  # (n_types,)
    cosine: np.ndarray  # (n_types, n_types)
    cosine_0_1: float  # cosine between segment 0 and 1 (NaN when only one type)
    mean_token_norm: float  # for scale: mean norm of the token table's rows


@_public
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
