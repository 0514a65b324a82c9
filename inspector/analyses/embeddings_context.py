"""Contextual embeddings of one text: its hidden states at every layer, token × token cosines and
how far each token's vector moves from layer to layer. Re-exported by `inspector.analyses.embeddings`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError
from .embeddings_results import ContextualEmbeddings
from .embeddings_vocab import _unit_rows

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel


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
