"""A token set of the embedding table, clustered (k-means by cosine) and mapped to 2-D (PCA / t-SNE).

Seed 000 claims embeddings form semantic clusters: `cluster_tokens` measures it on the most frequent
tokens of a corpus (or any chosen set); `project_tokens` draws the same set on a plane. The matrix-level
functions (`cluster_matrix`, `project_matrix`) take any (N, D) torch tensor or numpy array. Re-exported
by `inspector.analyses.embeddings`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError
from ._common import check_int
from .embeddings_results import ClusterResult, Projection, TokenClusters
from .embeddings_vocab import _as_tensor, _unit_np, input_embedding_matrix, resolve_token, token_counts, token_strings

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

MINIBATCH_ABOVE = 20_000  # rows; larger sets are clustered with MiniBatchKMeans
SILHOUETTE_SAMPLE = 3000  # rows scored for the silhouette (its cost is quadratic)
TSNE_MAX_POINTS = 5000


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
