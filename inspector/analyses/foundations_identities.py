"""Seed 000's cross-entropy identities checked on one prediction of a loaded model.

`loss_identities`: ∂L/∂logits = P − onehot by autograd, the Hessian diag(P) − PPᵀ is PSD
(torch.autograd.functional.hessian on a vocabulary slice), H(p, q) = H(p) + KL(p‖q) with a smoothed
target, and CE = NLL ∘ log-softmax. Gradients are taken on a detached float64 copy of the logits,
never on the shared model's parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, NotAvailableError
from ..inputs import display_token, encode
from ._common import check_int
from .foundations_experiments import _check_float
from .foundations_verdicts import _kind_phrase

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel


@dataclass
class LossIdentities:
    """Seed 000's cross-entropy facts checked on one prediction of a loaded model (float64 on its logits).

    `position` is the index of the predicted token (causal: read from the logits at position − 1;
    masked: that token is replaced by the mask token first). Top arrays have shape (k,).
    """

    spec: str
    objective: str  # "next-token" | "masked-token"
    position: int
    target_id: int
    target_token: str
    tokens: list[str]  # (T,) model input (mask token at `position` for a masked LM)
    loss: float  # −log P(target), nats
    prob_target: float
    # ∂L/∂z = P − onehot
    grad_max_abs_diff: float  # max over the vocabulary of |autograd − (P − onehot)|
    grad_sum: float  # Σ ∂L/∂z_i (0: softmax is shift-invariant)
    top_ids: np.ndarray  # (k,) int64: the target and the most probable tokens
    top_tokens: list[str]
    grad_top: np.ndarray  # (k,) autograd ∂L/∂z_i
    p_minus_onehot_top: np.ndarray  # (k,) P(i) − y_i
    # Hessian of CE in the logits, on a slice of `hessian_k` logits renormalised
    hessian_k: int
    hessian_ids: np.ndarray  # (k_h,) int64 vocabulary ids of the slice (top logits plus the target)
    hessian_eigenvalues: np.ndarray  # (k_h,) ascending
    hessian_min_eig: float  # >= −psd_tol ⇒ PSD (one eigenvalue is 0: direction of all-ones)
    hessian_max_eig: float
    hessian_analytic_max_abs_diff: float  # max |autograd Hessian − (diag(P) − PPᵀ)|
    psd_tol: float
    # H(p, q) = H(p) + KL(p‖q) with p = smoothed target, q = model distribution
    smoothing: float  # p = (1 − ε) onehot + ε / V
    cross_entropy: float  # H(p, q), nats
    entropy_p: float  # H(p)
    kl_pq: float  # KL(p‖q)
    ce_identity_gap: float  # |H(p,q) − H(p) − KL(p‖q)|
    ce_torch_label_smoothing: float  # F.cross_entropy(z, y, label_smoothing=ε): the same H(p, q) by PyTorch
    ce_torch_gap: float  # |H(p,q) − that|
    nll_gap: float  # |F.cross_entropy(z, y) − F.nll_loss(log_softmax(z), y)| (seed 001: CE = NLL ∘ log-softmax)


@dataclass(frozen=True)
class _Prediction:
    """One prediction of an encoded text: the model input and where its target is read."""

    enc: object  # the Encoded text
    ids: torch.Tensor  # (1, T) model input ids (mask token at `position` for a masked LM)
    position: int  # index of the predicted token
    read_at: int  # index of the logits that predict it (causal: position − 1)
    target: int  # vocabulary id of the predicted token
    objective: str  # "next-token" | "masked-token"


def _require_head(lm: LoadedModel) -> None:
    if not (lm.is_causal or lm.has_mlm_head):
        raise NotAvailableError(f"This check needs a language-model head; {_kind_phrase(lm)}.",
                                "Load a causal LM (GPT-2) or a BERT checkpoint with its masked-LM head.")


def _prediction_of(lm: LoadedModel, enc, position: int | None) -> _Prediction:
    """The prediction at `position` (default: the last token, or the middle ordinary token for a masked LM)
    of an already encoded text; the same checks and messages as encoding it for a prediction."""
    _require_head(lm)
    min_tokens = 2 if lm.is_causal else 1
    n_real = int((~np.asarray(enc.special, dtype=bool)).sum())
    if n_real < min_tokens:  # as `encode(..., min_tokens=...)` says it
        raise InputError(f"The text has {n_real} token(s); this analysis needs at least {min_tokens}.",
                         "Use a longer text.")
    T = enc.n_tokens
    ids = enc.input_ids.clone()
    if lm.is_causal:
        if T < 2:
            raise InputError("The text has 1 token; a next-token prediction needs at least 2.", "Use a longer text.")
        position = T - 1 if position is None else check_int(position, 1, T - 1, "position (predicted token)")
        return _Prediction(enc, ids, position, position - 1, int(ids[0, position]), "next-token")
    content = [i for i in range(T) if not enc.special[i]]
    if position is None:
        position = content[len(content) // 2]
    position = check_int(position, 0, T - 1, "position")
    if enc.special[position]:
        raise InputError(f"Position {position} is the special token {enc.tokens[position]!r}.",
                         "Choose an ordinary token.")
    target = int(ids[0, position])
    ids[0, position] = lm.tokenizer.mask_token_id
    return _Prediction(enc, ids, position, position, target, "masked-token")


def _model_logits(lm: LoadedModel, enc, ids: torch.Tensor) -> torch.Tensor:
    """(T, V) float32 logits of one forward pass (no hooks, no gradients)."""
    from ..capture import CaptureOptions, run

    batch = enc.batch()
    batch["input_ids"] = ids
    res = run(lm, batch, CaptureOptions(attention_stats=False, logits=True))
    return res.logits[0]


def _check_identity_settings(smoothing: float, hessian_k: int, top_k: int) -> tuple[float, int, int]:
    smoothing = _check_float(smoothing, "smoothing")
    if not 0.0 <= smoothing < 1.0:
        raise InputError(f"smoothing must be in [0, 1), got {smoothing}.")
    return smoothing, check_int(hessian_k, 2, 512, "hessian_k"), check_int(top_k, 1, 100, "top_k")


def loss_identities(lm: LoadedModel, text: str, position: int | None = None, *, smoothing: float = 0.1,
                    hessian_k: int = 50, top_k: int = 10, psd_tol: float = 1e-10) -> LossIdentities:
    """∂L/∂logits = P − onehot, Hessian PSD and CE = H + KL on one prediction of `lm` (float64, autograd)."""
    smoothing, hessian_k, top_k = _check_identity_settings(smoothing, hessian_k, top_k)
    _require_head(lm)
    pred = _prediction_of(lm, encode(lm, text, min_tokens=2 if lm.is_causal else 1), position)
    return _identities_at(lm, pred, _model_logits(lm, pred.enc, pred.ids)[pred.read_at], smoothing=smoothing,
                          hessian_k=hessian_k, top_k=top_k, psd_tol=psd_tol)


def _identities_at(lm: LoadedModel, pred: _Prediction, logits: torch.Tensor, *, smoothing: float = 0.1,
                   hessian_k: int = 50, top_k: int = 10, psd_tol: float = 1e-10) -> LossIdentities:
    """The identities on the (V,) logits of one prediction (computed by the caller: one forward pass)."""
    enc, ids, position, target, objective = pred.enc, pred.ids, pred.position, pred.target, pred.objective
    z = logits.double()  # (V,)
    V = z.numel()
    y = torch.tensor([target])

    with torch.inference_mode(False), torch.enable_grad():
        zl = z.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(zl[None], y)
        (g,) = torch.autograd.grad(loss, zl)
    p = torch.softmax(z, dim=-1)
    onehot = torch.zeros_like(p)
    onehot[target] = 1.0
    closed = p - onehot
    order = torch.argsort(p, descending=True)
    top = [target] + [int(i) for i in order[: top_k + 1] if int(i) != target][: top_k - 1]
    top_t = torch.tensor(top)

    # Hessian on a slice: the top logits plus the target, renormalised by the softmax over the slice.
    kh = min(hessian_k, V)
    sl = [int(i) for i in order[:kh]]
    if target not in sl:
        sl = sl[:-1] + [target]
    sl_t = torch.tensor(sl)
    t_in = sl.index(target)
    zs = z[sl_t].detach().clone()

    def ce_slice(v: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(v[None], torch.tensor([t_in]))

    with torch.inference_mode(False), torch.enable_grad():
        H = torch.autograd.functional.hessian(ce_slice, zs)  # (k_h, k_h)
    ps = torch.softmax(zs, dim=-1)
    analytic = torch.diag(ps) - torch.outer(ps, ps)
    eig = torch.linalg.eigvalsh(H)

    # CE = H + KL with a smoothed target distribution.
    pt = (1.0 - smoothing) * onehot + smoothing / V
    logq = torch.log_softmax(z, dim=-1)
    ce = float(-(pt * logq).sum())
    h_p = float(-(pt * torch.log(pt)).sum()) if smoothing > 0 else 0.0
    kl = float((pt * (torch.log(pt.clamp_min(1e-300)) - logq)).sum())
    ce_torch = float(F.cross_entropy(z[None], y, label_smoothing=smoothing))
    nll_gap = abs(float(F.cross_entropy(z[None], y)) - float(F.nll_loss(torch.log_softmax(z[None], -1), y)))

    tokens = list(enc.tokens)
    if objective == "masked-token":
        tokens[position] = display_token(lm.tokenizer, int(ids[0, position]))
    return LossIdentities(
        spec=lm.spec, objective=objective, position=position, target_id=target,
        target_token=display_token(lm.tokenizer, target), tokens=tokens,
        loss=float(loss.detach()), prob_target=float(p[target]),
        grad_max_abs_diff=float((g - closed).abs().max()), grad_sum=float(g.sum()),
        top_ids=top_t.numpy().astype(np.int64), top_tokens=[display_token(lm.tokenizer, i) for i in top],
        grad_top=g[top_t].numpy(), p_minus_onehot_top=closed[top_t].numpy(),
        hessian_k=len(sl), hessian_ids=sl_t.numpy().astype(np.int64), hessian_eigenvalues=eig.numpy(),
        hessian_min_eig=float(eig.min()), hessian_max_eig=float(eig.max()),
        hessian_analytic_max_abs_diff=float((H - analytic).abs().max()), psd_tol=psd_tol,
        smoothing=smoothing, cross_entropy=ce, entropy_p=h_p, kl_pq=kl, ce_identity_gap=abs(ce - h_p - kl),
        ce_torch_label_smoothing=ce_torch, ce_torch_gap=abs(ce - ce_torch), nll_gap=nll_gap)
