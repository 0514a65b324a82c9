"""The model's other embedding tables: positions (learned or sinusoidal: seed 002's claim that BERT's
are sinusoidal), segments (BERT's token types) and the output matrix (the unembedding) next to the
input table. Re-exported by `inspector.analyses.embeddings`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError, NotAvailableError
from ._common import check_int
from .embeddings_results import OutputEmbeddings, PositionEmbeddings, SegmentEmbeddings
from .embeddings_vocab import DEFAULT_BLOCK, _row_norms, input_embedding_matrix

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel


# --------------------------------------------------------------------------- output (unembedding)


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
