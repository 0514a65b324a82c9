"""Embedding geometry: token table (norms, neighbours, clusters, projection, anisotropy, norm vs
frequency), position and segment tables, the output matrix, and contextual embeddings of a text.

Seed 000 claims frequent tokens get larger norms and that embeddings form semantic clusters;
seed 002 claims BERT's positions are sinusoidal. These functions measure each claim.

This module is the public face of the embedding analyses and the report's "Embeddings" section
(`EmbeddingsAnalysis`); the work is done in one module per concern, re-exported here:

- `embeddings_results`: the result dataclasses (named `inspector.analyses.embeddings.<Name>`);
- `embeddings_vocab`: the token table: access, token strings, norms, neighbours, anisotropy, frequency;
- `embeddings_map`: token sets, k-means clusters by cosine, 2-D projections;
- `embeddings_tables`: position, segment and output (unembedding) tables;
- `embeddings_context`: the hidden states of one text, layer by layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..analysis import Analysis, Chart, Heading, Metric, Note, Table, Unavailable, part, setting, unavailable_note
from ..errors import InputError, NotAvailableError
from ..tokens import visible
from .embeddings_context import contextual_embeddings, contextual_from_hidden
from .embeddings_map import (MINIBATCH_ABOVE, SILHOUETTE_SAMPLE, TSNE_MAX_POINTS, cluster_matrix, cluster_tokens,
                             project_matrix, project_tokens, select_tokens)
from .embeddings_results import (Anisotropy, ClusterResult, ContextualEmbeddings, Neighbours, NormFrequency,
                                 OutputEmbeddings, PositionEmbeddings, Projection, SegmentEmbeddings, TokenClusters,
                                 TokenNorms)
from .embeddings_tables import (output_embedding_matrix, output_embeddings, position_embeddings, segment_embeddings,
                                sinusoidal_similarity, sinusoidal_table)
from .embeddings_vocab import (DEFAULT_BLOCK, DEFAULT_CORPUS, anisotropy_of_matrix, input_embedding_matrix,
                               nearest_neighbours, neighbours_of_matrix, norm_frequency_correlation, resolve_token,
                               token_anisotropy, token_counts, token_norms, token_strings)

if TYPE_CHECKING:  # pragma: no cover
    from ..inputs import Encoded
    from ..models import LoadedModel

__all__ = [
    "DEFAULT_BLOCK", "DEFAULT_CORPUS", "MINIBATCH_ABOVE", "SILHOUETTE_SAMPLE", "TSNE_MAX_POINTS",
    "Anisotropy", "ClusterResult", "ContextualEmbeddings", "Neighbours", "NormFrequency", "OutputEmbeddings",
    "PositionEmbeddings", "Projection", "SegmentEmbeddings", "TokenClusters", "TokenNorms",
    "anisotropy_of_matrix", "cluster_matrix", "cluster_tokens", "contextual_embeddings", "contextual_from_hidden",
    "input_embedding_matrix", "nearest_neighbours", "neighbours_of_matrix", "norm_frequency_correlation",
    "output_embedding_matrix", "output_embeddings", "position_embeddings", "project_matrix", "project_tokens",
    "resolve_token", "segment_embeddings", "select_tokens", "sinusoidal_similarity", "sinusoidal_table",
    "token_anisotropy", "token_counts", "token_norms", "token_strings",
    "EmbeddingsAnalysis", "EmbeddingsResult",
]

POSITION_MATRIX_SHOWN = 40  # positions of the position × position cosine drawn (an even subsample)
TOKEN_MATRIX_SHOWN = 64  # the token × token cosine of the last layer is drawn up to this many tokens
CLUSTER_TOKENS = 1000  # most frequent tokens clustered by the report


def _content_token_ids(enc, n: int) -> list[int]:
    """Up to `n` distinct ordinary tokens of the text, longest display string first (content words)."""
    seen, cand = set(), []
    for i, (tid, tok) in enumerate(zip(enc.input_ids[0].tolist(), enc.tokens)):
        if enc.special[i] or tid in seen or not tok.strip() or not any(ch.isalnum() for ch in tok):
            continue
        seen.add(tid)
        cand.append((-len(tok.strip()), i, tid))
    return [tid for _, _, tid in sorted(cand)[:n]]


@dataclass(frozen=True)
class EmbeddingsResult:
    """The report's Embeddings section: one field per part (Unavailable: does not apply; None: not computed)."""

    token_norms: TokenNorms | Unavailable | None = None
    anisotropy: Anisotropy | Unavailable | None = None
    norm_frequency: NormFrequency | Unavailable | None = None  # None: embeddings_corpus is None
    positions: PositionEmbeddings | Unavailable | None = None
    segments: SegmentEmbeddings | Unavailable | None = None
    output_embeddings: OutputEmbeddings | Unavailable | None = None
    contextual: ContextualEmbeddings | Unavailable | None = None
    neighbours: Neighbours | Unavailable | None = None  # None: no neighbour asked for, or no content token
    clusters: TokenClusters | Unavailable | None = None  # None: embeddings_clusters is 0


# --------------------------------------------------------------------------- views of the parts


def token_norm_blocks(tn: TokenNorms) -> list:
    rows = tuple((visible(a), visible(b)) for a, b in zip(tn.largest_tokens[:10], tn.smallest_tokens[:10]))
    return [
        Chart("histogram", "token-embedding norms", x_title="‖e‖", log_y=True,
              series=(("norms", tuple(float(v) for v in tn.hist_edges), tuple(int(v) for v in tn.hist_counts)),),
              markers=(("mean", float(tn.mean)),)),
        Metric("mean ‖e‖", tn.mean), Metric("std ‖e‖", tn.std), Metric("min ‖e‖", tn.min), Metric("max ‖e‖", tn.max),
        Table("", ("largest norm", "smallest norm"), rows),
    ]


def anisotropy_blocks(a: Anisotropy) -> list:
    return [Metric("mean cosine of random token pairs", a.mean_cosine), Metric("std", a.std_cosine),
            Metric("pairs", int(a.n_pairs)), Metric("‖mean vector‖ / mean ‖vector‖", a.mean_vector_ratio)]


def norm_frequency_blocks(nf: NormFrequency) -> list:
    from pathlib import Path

    edges = np.asarray(nf.bin_edges, dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    corpus = Path(str(nf.corpus)).name if nf.corpus not in ("text", "counts") else nf.corpus
    return [
        Metric("Spearman ρ (tokens seen)", nf.rho_seen), Metric("p", nf.p_seen), Metric("tokens seen", int(nf.n_seen)),
        Metric("Spearman ρ (all, unseen = 0)", nf.rho_all), Metric("corpus tokens", int(nf.n_corpus_tokens)),
        Metric("corpus", corpus),
        Chart("line", "norm against corpus frequency", x_title="log10 count", y_title="‖e‖",
              series=(("mean norm", tuple(float(v) for v in centres), tuple(float(v) for v in nf.bin_mean_norm)),)),
    ]


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=float).ravel())


def position_blocks(p: PositionEmbeddings) -> list:
    idx = tuple(range(len(p.norms)))
    cm, cp = np.asarray(p.cos_matrix, dtype=float), np.asarray(p.cos_positions)
    if cm.shape[0] > POSITION_MATRIX_SHOWN:  # keep the file small: an even subsample of the kept positions
        keep = np.unique(np.linspace(0, cm.shape[0] - 1, POSITION_MATRIX_SHOWN).round().astype(int))
        cm, cp = cm[np.ix_(keep, keep)], cp[keep]
    labels = tuple(str(int(i)) for i in cp)
    return [
        Metric("positions × dim", f"{p.n_positions} × {p.dim}"), Metric("learned", bool(p.learned)),
        Metric("similarity to sinusoidal (Pearson of cosine matrices)", p.sinusoidal_similarity),
        Metric("mean best |r| per dim vs sinusoids", p.best_dim_correlation),
        Chart("line", "position-embedding norm", x_title="position", series=(("norm", idx, _floats(p.norms)),),
              points=False),
        Chart("line", "cosine of neighbouring positions", x_title="position",
              series=(("cos(p, p+1)", idx[:-1], _floats(p.adjacent_cosine)),), points=False),
        Chart("heatmap", "position × position cosine", z=tuple(_floats(row) for row in cm), row_labels=labels,
              col_labels=labels, signed=True, zmin=-1.0, zmax=1.0),
    ]


def segment_blocks(s: SegmentEmbeddings) -> list:
    return [Metric("segment types", int(s.n_types)), Metric("cosine(segment 0, segment 1)", s.cosine_0_1),
            Metric("segment norms", ", ".join(f"{float(v):.4g}" for v in np.asarray(s.norms).ravel())),
            Metric("mean token norm", s.mean_token_norm)]


def output_embedding_blocks(o: OutputEmbeddings) -> list:
    return [Metric("tied to the input table", bool(o.tied)), Metric("rows × dim", f"{o.n_rows} × {o.dim}"),
            Metric("mean ‖output row‖", o.mean_output_norm), Metric("mean ‖input row‖", o.mean_input_norm),
            Metric("mean cos(input row, output row)", o.mean_row_cosine),
            Metric("Spearman ρ(‖input‖, ‖output‖)", o.norm_spearman)]


def contextual_blocks(c: ContextualEmbeddings) -> list:
    layers = tuple(range(len(c.mean_pairwise_cosine)))
    blocks: list = [Chart("line", "contextual embeddings by layer", x_title="layer (0 = embeddings)",
                          series=(("mean cosine between tokens", layers, _floats(c.mean_pairwise_cosine)),
                                  ("cosine with final layer", layers, _floats(c.mean_self_sim_final))))]
    if len(c.tokens) <= TOKEN_MATRIX_SHOWN and c.token_cosine is not None:
        labels = tuple(visible(t) for t in c.tokens)
        last = np.asarray(c.token_cosine[-1], dtype=float)
        blocks.append(Chart("heatmap", "token × token cosine, last layer", z=tuple(_floats(row) for row in last),
                            row_labels=labels, col_labels=labels, signed=True, zmin=-1.0, zmax=1.0))
    else:
        blocks.append(Note(f"The token × token cosine of the last layer is drawn for texts of up to "
                           f"{TOKEN_MATRIX_SHOWN} tokens whose cosines are kept (embeddings_cosine_max_tokens); "
                           f"this one has {len(c.tokens)}."))
    return blocks


def neighbour_blocks(nb: Neighbours) -> list:
    rows = tuple((visible(q), ", ".join(f"{visible(t)} ({float(c):.2f})" for t, c in zip(toks, cos)))
                 for q, toks, cos in zip(nb.query_tokens, nb.tokens, nb.cosine))
    return [Table("", ("token", f"{nb.k} nearest by cosine"), rows)]


def cluster_blocks(tc: TokenClusters) -> list:
    rows = tuple((i, int(size), ", ".join(ex)) for i, (size, ex) in enumerate(zip(tc.clusters.sizes, tc.exemplars)))
    return [Metric("algorithm", tc.clusters.algorithm), Metric("silhouette", tc.clusters.silhouette),
            Table("", ("cluster", "size", "tokens nearest the centre"), rows)]


# part name, heading, view of a computed part (the order of the report section)
PARTS = (
    ("token_norms", "Token-embedding norms", token_norm_blocks),
    ("anisotropy", "Anisotropy", anisotropy_blocks),
    ("norm_frequency", "Norm against frequency", norm_frequency_blocks),
    ("positions", "Position embeddings", position_blocks),
    ("segments", "Segment embeddings", segment_blocks),
    ("output_embeddings", "Output embeddings (unembedding)", output_embedding_blocks),
    ("contextual", "Contextual embeddings of this text", contextual_blocks),
    ("neighbours", "Nearest neighbours of tokens in this text", neighbour_blocks),
    ("clusters", "Clusters of frequent tokens", cluster_blocks),
)


# --------------------------------------------------------------------------- the analysis


class EmbeddingsAnalysis(Analysis):
    name = "embeddings"
    title = "Embeddings"
    description = ("The token table's geometry (norms, anisotropy, norm against frequency, neighbours, clusters), "
                   "the position, segment and output tables, and the text's vectors layer by layer.")
    own_page = "embeddings"
    report_parts = True
    result_type = EmbeddingsResult

    @dataclass(frozen=True)
    class Settings:
        corpus: str | None = setting("bundled", "Token frequencies for norm against frequency (and the clusters): "
                                     "the bundled corpus, the text itself, or None (skip).",
                                     choices=("bundled", "text", None))
        cosine_max_tokens: int = setting(128, "Token × token cosines of every layer are kept only up to this many "
                                         "tokens ((L + 1) × T × T values).", min=0)
        neighbours: int = setting(5, "Tokens of the text that get a nearest-neighbour list (0: skip).", min=0,
                                  max=1000)
        k: int = setting(8, "Nearest neighbours per token.", min=1, max=1000)
        clusters: int = setting(0, "k-means clusters of the most frequent tokens (0: skip; costs seconds).", min=0,
                                max=1000)

    def run(self, lm: LoadedModel, encoded: Encoded, settings: EmbeddingsAnalysis.Settings) -> EmbeddingsResult:
        enc, corpus = encoded, settings.corpus
        if corpus not in ("bundled", "text", None):
            raise InputError(f"embeddings_corpus is {corpus!r}.", "Choose 'bundled', 'text' or None.")
        out: dict = {"token_norms": part(lambda: token_norms(lm)), "anisotropy": part(lambda: token_anisotropy(lm))}
        if corpus is not None:
            def freq():
                if corpus == "bundled" and not DEFAULT_CORPUS.is_file():
                    raise NotAvailableError(f"The bundled corpus ({DEFAULT_CORPUS.name}) is not installed.")
                try:
                    if corpus == "bundled":
                        return norm_frequency_correlation(lm, path=DEFAULT_CORPUS)
                    return norm_frequency_correlation(lm, enc.text)
                except InputError as exc:  # too few distinct tokens in a short text
                    raise NotAvailableError(exc.message) from None
            out["norm_frequency"] = part(freq)
        out["positions"] = part(lambda: position_embeddings(lm))
        out["segments"] = part(lambda: segment_embeddings(lm))
        out["output_embeddings"] = part(lambda: output_embeddings(lm))
        keep = enc.n_tokens <= int(settings.cosine_max_tokens)
        out["contextual"] = part(lambda: contextual_embeddings(lm, enc, keep_token_cosine=keep))
        n_nb = int(settings.neighbours or 0)
        if n_nb > 0:
            ids = _content_token_ids(enc, n_nb)
            if ids:
                out["neighbours"] = part(lambda: nearest_neighbours(lm, ids, k=int(settings.k)))
        n_clusters = int(settings.clusters or 0)
        if n_clusters > 0:
            source = {"path": DEFAULT_CORPUS} if corpus == "bundled" else {"text": enc.text}
            out["clusters"] = part(lambda: cluster_tokens(lm, n_clusters, n_tokens=CLUSTER_TOKENS, **source))
        return EmbeddingsResult(**out)

    def view(self, result: EmbeddingsResult) -> list:
        blocks: list = []
        for name, heading, render in PARTS:
            value = getattr(result, name)
            if value is None:
                continue
            blocks.append(Heading(heading))
            if isinstance(value, Unavailable):
                blocks.append(unavailable_note(value))
                continue
            blocks.extend(render(value))
        return blocks
