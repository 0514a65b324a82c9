"""The seed articles' experiments, made runnable, and their claims measured on a loaded model.

- Seed 003 (scaling in attention): `random_qk_scaling`, `sigma_vs_dim`, `softmax_scaling`,
  `softmax_temperature`.
- Seed 001 (custom losses): `loss_race` — one parameter, real `torch.optim.SGD`, L1 vs L2 vs Huber.
- Seed 004 (KL divergence): `gaussian_kl` (closed form vs seeded Monte Carlo), `discrete_kl` (asymmetry, JS).
- Seed 000 (cross-entropy) on a model: `loss_identities` — ∂L/∂logits = P − onehot by autograd,
  the Hessian diag(P) − PPᵀ is PSD (torch.autograd.functional.hessian on a vocabulary slice),
  H(p, q) = H(p) + KL(p‖q) with a smoothed target.
- `claims_on_model(lm, text, corpus_text)`: one `ClaimRow` per claim of SEEDS.md that a loaded
  model can test, with the measured figures, the threshold and a computed verdict.

Everything returns plain dataclasses holding numpy arrays (`_common.to_dict` serialises them).
Nothing here changes the shared model: gradients are taken on detached copies of logits or
inputs, never on parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, NotAvailableError
from ._common import check_int
from ..inputs import display_token, encode

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
NOT_APPLICABLE = "not applicable"

DEFAULT_DIMS = tuple(range(2, 101))
TEMPERATURE_CURVE = tuple(float(t) for t in np.geomspace(0.05, 50.0, 61))




def _check_float(value, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InputError(f"{what} must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise InputError(f"{what} must be a {'positive ' if positive else ''}finite number, got {value}.")
    return value


def _softmax_np(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def _log_softmax_np(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    m = z.max()
    return z - m - math.log(np.exp(z - m).sum())


def _entropy_np(p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64)
    nz = p > 0
    return float(-(p[nz] * np.log(p[nz])).sum())


# =========================================================================== seed 003


@dataclass
class RandomQKScaling:
    """Seed 003, experiment 1: Q, K (n × d) standard Gaussian; σ of QKᵀ before and after dividing by √d."""

    n: int
    d: int
    seed: int
    sigma_q: float  # population std of Q's entries (≈ 1)
    sigma_k: float
    sigma_qk: float  # std of QKᵀ's n × n entries (≈ √d)
    sqrt_d: float
    ratio: float  # sigma_qk / sqrt_d (≈ 1)
    sigma_qk_scaled: float  # std of QKᵀ / √d (≈ 1)


def _qk(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((n, d)), rng.standard_normal((n, d))


def random_qk_scaling(n: int = 50, d: int = 50, seed: int = 0) -> RandomQKScaling:
    """σ(Q), σ(K), σ(QKᵀ) against √d for one seeded draw (the seed's 50 × 50 example by default)."""
    n = check_int(n, 2, 4096, "n")
    d = check_int(d, 1, 4096, "d")
    seed = check_int(seed, 0, None, "seed")
    Q, K = _qk(np.random.default_rng(seed), n, d)
    A = Q @ K.T  # (n, n)
    sqrt_d = math.sqrt(d)
    return RandomQKScaling(n=n, d=d, seed=seed, sigma_q=float(Q.std()), sigma_k=float(K.std()),
                           sigma_qk=float(A.std()), sqrt_d=sqrt_d, ratio=float(A.std() / sqrt_d),
                           sigma_qk_scaled=float((A / sqrt_d).std()))


@dataclass
class SigmaVsDim:
    """Seed 003, experiment 2: σ(QKᵀ) for Q, K of shape (n, d) as d varies. Arrays have shape (M,)."""

    n: int
    seed: int
    trials: int  # independent draws pooled per d (1 = the seed's single draw)
    dims: np.ndarray  # (M,) int64
    sigma_qk: np.ndarray  # (M,) std of the QKᵀ entries (pooled over trials)
    sqrt_d: np.ndarray  # (M,)
    ratio: np.ndarray  # (M,) sigma_qk / sqrt_d
    sigma_scaled: np.ndarray  # (M,) std of QKᵀ / √d


def sigma_vs_dim(dims=DEFAULT_DIMS, n: int = 50, seed: int = 0, trials: int = 1) -> SigmaVsDim:
    """σ(QKᵀ) against √d for every d in `dims` (data for one chart)."""
    n = check_int(n, 2, 4096, "n")
    seed = check_int(seed, 0, None, "seed")
    trials = check_int(trials, 1, 1000, "trials")
    dims_arr = np.asarray(list(dims), dtype=np.int64)
    if dims_arr.size == 0 or dims_arr.min() < 1 or dims_arr.max() > 4096:
        raise InputError("dims must be a non-empty list of integers in 1..4096.")
    rng = np.random.default_rng(seed)
    sig = np.empty(dims_arr.size)
    for i, d in enumerate(dims_arr):
        entries = np.concatenate([(lambda QK: (QK[0] @ QK[1].T).ravel())(_qk(rng, n, int(d)))
                                  for _ in range(trials)])
        sig[i] = entries.std()
    sqrt_d = np.sqrt(dims_arr.astype(np.float64))
    return SigmaVsDim(n=n, seed=seed, trials=trials, dims=dims_arr, sigma_qk=sig, sqrt_d=sqrt_d,
                      ratio=sig / sqrt_d, sigma_scaled=sig / sqrt_d)


@dataclass
class SoftmaxScaling:
    """Seed 003, experiment 3: one row of QKᵀ through softmax before and after dividing by √d. Arrays (n,)."""

    n: int
    d: int
    seed: int
    row: int
    logits: np.ndarray  # (n,) the unscaled row q·k
    logits_scaled: np.ndarray  # (n,) q·k / √d
    softmax: np.ndarray  # (n,)
    softmax_scaled: np.ndarray  # (n,)
    neg_log_softmax: np.ndarray  # (n,) −log softmax, nats
    neg_log_softmax_scaled: np.ndarray  # (n,)
    entropy: float  # nats; at most max_entropy = log n
    entropy_scaled: float
    max_entropy: float
    max_prob: float
    max_prob_scaled: float
    effective_keys: float  # exp(entropy): how many keys share the mass
    effective_keys_scaled: float
    jacobian_norm: float  # Frobenius norm of the softmax Jacobian diag(p) − ppᵀ (→ 0 when saturated)
    jacobian_norm_scaled: float


def _jacobian_norm(p: np.ndarray) -> float:
    return float(np.linalg.norm(np.diag(p) - np.outer(p, p)))


def softmax_scaling(n: int = 50, d: int = 50, seed: int = 0, row: int = 0) -> SoftmaxScaling:
    """Softmax and −log-softmax of row `row` of QKᵀ (same draw as `random_qk_scaling`) before/after scaling."""
    n = check_int(n, 2, 4096, "n")
    d = check_int(d, 1, 4096, "d")
    seed = check_int(seed, 0, None, "seed")
    row = check_int(row, 0, n - 1, "row")
    Q, K = _qk(np.random.default_rng(seed), n, d)
    z = (Q @ K.T)[row]
    zs = z / math.sqrt(d)
    p, ps = _softmax_np(z), _softmax_np(zs)
    h, hs = _entropy_np(p), _entropy_np(ps)
    return SoftmaxScaling(
        n=n, d=d, seed=seed, row=row, logits=z, logits_scaled=zs, softmax=p, softmax_scaled=ps,
        neg_log_softmax=-_log_softmax_np(z), neg_log_softmax_scaled=-_log_softmax_np(zs),
        entropy=h, entropy_scaled=hs, max_entropy=math.log(n), max_prob=float(p.max()),
        max_prob_scaled=float(ps.max()), effective_keys=math.exp(h), effective_keys_scaled=math.exp(hs),
        jacobian_norm=_jacobian_norm(p), jacobian_norm_scaled=_jacobian_norm(ps))


@dataclass
class TemperatureResult:
    """Softmax of one logit row at temperature T (softmax(z / T)), plus the entropy-vs-T curve."""

    temperature: float
    logits: np.ndarray  # (n,) the row before dividing by T
    probs: np.ndarray  # (n,) softmax(logits / T)
    entropy: float  # nats at this T
    max_entropy: float  # log n (uniform)
    entropy_fraction: float  # entropy / max_entropy
    max_prob: float
    curve_temperatures: np.ndarray  # (K,)
    curve_entropy: np.ndarray  # (K,) nats
    curve_max_prob: np.ndarray  # (K,)
    scaling_temperature: float | None  # √d: the temperature that 1/√d scaling amounts to (None: user logits)


def softmax_temperature(temperature: float = 1.0, logits=None, *, n: int = 50, d: int = 50, seed: int = 0,
                        row: int = 0, curve=TEMPERATURE_CURVE) -> TemperatureResult:
    """Entropy of softmax(z / T) for a slider over T.

    Default row: the unscaled QKᵀ row of `softmax_scaling` (T = √d reproduces attention's scaling).
    """
    temperature = _check_float(temperature, "temperature", positive=True)
    if logits is None:
        z = softmax_scaling(n=n, d=d, seed=seed, row=row).logits
        scaling_t = math.sqrt(d)
    else:
        z = np.asarray(logits, dtype=np.float64).ravel()
        if z.size < 2 or not np.all(np.isfinite(z)):
            raise InputError("logits must hold at least two finite numbers.")
        scaling_t = None
    temps = np.asarray(list(curve), dtype=np.float64)
    if temps.size == 0 or np.any(~np.isfinite(temps)) or np.any(temps <= 0):
        raise InputError("curve temperatures must be positive finite numbers.")
    p = _softmax_np(z / temperature)
    h = _entropy_np(p)
    curve_p = [_softmax_np(z / t) for t in temps]
    return TemperatureResult(
        temperature=temperature, logits=z, probs=p, entropy=h, max_entropy=math.log(z.size),
        entropy_fraction=h / math.log(z.size), max_prob=float(p.max()), curve_temperatures=temps,
        curve_entropy=np.array([_entropy_np(q) for q in curve_p]),
        curve_max_prob=np.array([float(q.max()) for q in curve_p]), scaling_temperature=scaling_t)


# =========================================================================== seed 001


LOSSES = ("l1", "l2", "huber")


@dataclass
class LossTrajectory:
    """One loss trained by SGD on one parameter. Arrays over steps: (S + 1,) values, (S,) gradients."""

    loss: str  # "l1" | "l2" | "huber"
    predictions: np.ndarray  # (S + 1,) the parameter before step 0 .. after the last step
    errors: np.ndarray  # (S + 1,) prediction − target
    losses: np.ndarray  # (S + 1,) loss value at each prediction
    grads: np.ndarray  # (S,) ∂loss/∂parameter used by each step
    first_cross_step: int | None  # first index where the error changed sign (or hit 0); None if never
    sign_changes_after_cross: int  # sign flips of the error after that: > 0 means it oscillates
    error_monotone: bool  # |error| never increased
    final_error: float
    max_abs_error_after_cross: float | None  # amplitude of the oscillation (lr for L1)


@dataclass
class LossRace:
    """Seed 001: one parameter, `torch.optim.SGD`, L1 vs L2 vs Huber (smooth L1) toward one target."""

    start: float
    target: float
    lr: float
    steps: int
    huber_delta: float
    initial_losses: dict[str, float]  # loss at the start, e.g. {"l1": 3.0, "l2": 9.0} for 2 → 5
    runs: list[LossTrajectory]

    def run(self, loss: str) -> LossTrajectory:
        for r in self.runs:
            if r.loss == loss:
                return r
        raise InputError(f"No run for loss '{loss}'.", f"Runs: {', '.join(r.loss for r in self.runs)}.")


def _loss_module(name: str, huber_delta: float) -> torch.nn.Module:
    if name == "l1":
        return torch.nn.L1Loss()
    if name == "l2":
        return torch.nn.MSELoss()
    if name == "huber":
        return torch.nn.HuberLoss(delta=huber_delta)
    raise InputError(f"Unknown loss '{name}'.", f"Choose from: {', '.join(LOSSES)}.")


def _sign_stats(errors: np.ndarray) -> tuple[int | None, int, float | None]:
    s = np.sign(errors)
    s0 = s[0]
    cross = None
    for i in range(1, s.size):
        if s[i] != s0:
            cross = i
            break
    if cross is None:
        return None, 0, None
    tail = s[cross:]
    tail_nz = tail[tail != 0]
    flips = int(np.count_nonzero(tail_nz[1:] != tail_nz[:-1])) if tail_nz.size > 1 else 0
    return cross, flips, float(np.abs(errors[cross:]).max())


def loss_race(start: float = 2.0, target: float = 5.0, lr: float = 0.05, steps: int = 100,
              losses=LOSSES, huber_delta: float = 1.0) -> LossRace:
    """Train one scalar parameter toward `target` with each loss (float32, like the seed's PyTorch code)."""
    start = _check_float(start, "start")
    target = _check_float(target, "target")
    lr = _check_float(lr, "learning rate", positive=True)
    huber_delta = _check_float(huber_delta, "Huber delta", positive=True)
    steps = check_int(steps, 1, 100_000, "steps")
    names = list(losses)
    if not names:
        raise InputError("Give at least one loss.", f"Choose from: {', '.join(LOSSES)}.")
    y = torch.tensor(target, dtype=torch.float32)
    runs, initial = [], {}
    for name in names:
        fn = _loss_module(name, huber_delta)
        param = torch.nn.Parameter(torch.tensor(start, dtype=torch.float32))
        opt = torch.optim.SGD([param], lr=lr)
        preds, vals, grads = [], [], []
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad()
                loss = fn(param, y)
                loss.backward()
                preds.append(float(param.detach()))
                vals.append(float(loss.detach()))
                grads.append(float(param.grad))
                opt.step()
            preds.append(float(param.detach()))
            vals.append(float(fn(param.detach(), y)))
        preds_np = np.array(preds)
        errors = preds_np - target
        cross, flips, amp = _sign_stats(errors)
        initial[name] = vals[0]
        runs.append(LossTrajectory(
            loss=name, predictions=preds_np, errors=errors, losses=np.array(vals), grads=np.array(grads),
            first_cross_step=cross, sign_changes_after_cross=flips,
            error_monotone=bool(np.all(np.diff(np.abs(errors)) <= 0)), final_error=float(errors[-1]),
            max_abs_error_after_cross=amp))
    return LossRace(start=start, target=target, lr=lr, steps=steps, huber_delta=huber_delta,
                    initial_losses=initial, runs=runs)


# =========================================================================== seed 004


@dataclass
class GaussianKL:
    """KL(P‖Q) for P = N(μ_p, σ_p²), Q = N(μ_q, σ_q²): closed form vs a seeded Monte-Carlo estimate (nats)."""

    mu_p: float
    sigma_p: float
    mu_q: float
    sigma_q: float
    kl_pq: float  # closed form KL(P‖Q)
    kl_qp: float  # closed form KL(Q‖P): differs (asymmetry)
    kl_pq_mc: float  # mean of log p(x) − log q(x), x ~ P
    kl_pq_mc_stderr: float  # standard error of that mean
    rel_diff: float  # |MC − closed| / closed
    n_samples: int
    seed: int
    grid: np.ndarray  # (G,) x values for a chart
    pdf_p: np.ndarray  # (G,)
    pdf_q: np.ndarray  # (G,)


def _kl_gauss(m1: float, s1: float, m2: float, s2: float) -> float:
    return math.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5


def _log_pdf(x: np.ndarray, m: float, s: float) -> np.ndarray:
    return -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def gaussian_kl(mu_p: float = 0.0, sigma_p: float = 1.0, mu_q: float = 1.0, sigma_q: float = 2.0,
                n_samples: int = 200_000, seed: int = 0, grid_points: int = 200) -> GaussianKL:
    """Closed form log(σ_q/σ_p) + (σ_p² + (μ_p − μ_q)²) / (2σ_q²) − ½ against Monte Carlo."""
    mu_p, mu_q = _check_float(mu_p, "μ_p"), _check_float(mu_q, "μ_q")
    sigma_p = _check_float(sigma_p, "σ_p", positive=True)
    sigma_q = _check_float(sigma_q, "σ_q", positive=True)
    n_samples = check_int(n_samples, 2, 10_000_000, "n_samples")
    seed = check_int(seed, 0, None, "seed")
    grid_points = check_int(grid_points, 2, 10_000, "grid_points")
    closed = _kl_gauss(mu_p, sigma_p, mu_q, sigma_q)
    x = np.random.default_rng(seed).normal(mu_p, sigma_p, size=n_samples)
    terms = _log_pdf(x, mu_p, sigma_p) - _log_pdf(x, mu_q, sigma_q)
    mc = float(terms.mean())
    lo = min(mu_p - 4 * sigma_p, mu_q - 4 * sigma_q)
    hi = max(mu_p + 4 * sigma_p, mu_q + 4 * sigma_q)
    grid = np.linspace(lo, hi, grid_points)
    return GaussianKL(
        mu_p=mu_p, sigma_p=sigma_p, mu_q=mu_q, sigma_q=sigma_q, kl_pq=closed,
        kl_qp=_kl_gauss(mu_q, sigma_q, mu_p, sigma_p), kl_pq_mc=mc,
        kl_pq_mc_stderr=float(terms.std(ddof=1) / math.sqrt(n_samples)),
        rel_diff=abs(mc - closed) / closed if closed > 0 else abs(mc - closed),
        n_samples=n_samples, seed=seed, grid=grid,
        pdf_p=np.exp(_log_pdf(grid, mu_p, sigma_p)), pdf_q=np.exp(_log_pdf(grid, mu_q, sigma_q)))


@dataclass
class DiscreteKL:
    """KL both ways, cross-entropies and Jensen–Shannon for two discrete distributions (nats). Arrays (n,)."""

    p: np.ndarray  # (n,) normalised
    q: np.ndarray  # (n,)
    kl_pq: float  # KL(p‖q); NaN when q = 0 somewhere p > 0 (infinite), see `support_ok`
    kl_qp: float  # KL(q‖p)
    kl_pq_terms: np.ndarray  # (n,) p log(p/q) (terms can be negative; the sum is >= 0)
    js: float  # Jensen–Shannon divergence, nats (<= log 2; symmetric, always finite)
    js_distance: float  # sqrt(js): a metric
    entropy_p: float
    entropy_q: float
    cross_entropy_pq: float  # H(p, q) = −Σ p log q
    identity_gap: float  # |H(p,q) − (H(p) + KL(p‖q))| (0 up to rounding)
    support_ok: bool  # q > 0 wherever p > 0 (KL(p‖q) finite)
    support_ok_reverse: bool  # p > 0 wherever q > 0


def _as_distribution(x, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size < 2 or not np.all(np.isfinite(a)) or np.any(a < 0) or a.sum() <= 0:
        raise InputError(f"{what} must be at least two non-negative numbers with a positive sum.")
    return a / a.sum()


def _kl_np(p: np.ndarray, q: np.ndarray) -> tuple[float, np.ndarray, bool]:
    nz = p > 0
    ok = bool(np.all(q[nz] > 0))
    terms = np.zeros_like(p)
    with np.errstate(divide="ignore"):
        terms[nz] = p[nz] * (np.log(p[nz]) - np.log(q[nz]))
    return (float(terms.sum()) if ok else math.nan), np.where(np.isfinite(terms), terms, np.nan), ok


def discrete_kl(p=(0.36, 0.48, 0.16), q=(1 / 3, 1 / 3, 1 / 3)) -> DiscreteKL:
    """KL(p‖q) ≠ KL(q‖p) on two small distributions, and the symmetric Jensen–Shannon divergence."""
    p = _as_distribution(p, "p")
    q = _as_distribution(q, "q")
    if p.size != q.size:
        raise InputError(f"p has {p.size} entries and q {q.size}; they must be equal.")
    kl_pq, terms, ok = _kl_np(p, q)
    kl_qp, _, ok_rev = _kl_np(q, p)
    m = 0.5 * (p + q)
    js = 0.5 * _kl_np(p, m)[0] + 0.5 * _kl_np(q, m)[0]
    h_p, h_q = _entropy_np(p), _entropy_np(q)
    nz = p > 0
    ce = float(-(p[nz] * np.log(q[nz])).sum()) if ok else math.nan
    return DiscreteKL(p=p, q=q, kl_pq=kl_pq, kl_qp=kl_qp, kl_pq_terms=terms, js=js,
                      js_distance=math.sqrt(max(js, 0.0)), entropy_p=h_p, entropy_q=h_q, cross_entropy_pq=ce,
                      identity_gap=abs(ce - (h_p + kl_pq)) if ok else math.nan, support_ok=ok,
                      support_ok_reverse=ok_rev)


# =========================================================================== seed 000 on a model


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


def _encode_for_prediction(lm: LoadedModel, text: str, position: int | None):
    """Encoded text, model input ids, predicted index, logits index and target id for one prediction."""
    if not (lm.is_causal or lm.has_mlm_head):
        raise NotAvailableError(f"This check needs a language-model head; {_kind_phrase(lm)}.",
                                "Load a causal LM (GPT-2) or a BERT checkpoint with its masked-LM head.")
    enc = encode(lm, text, min_tokens=2 if lm.is_causal else 1)
    T = enc.n_tokens
    ids = enc.input_ids.clone()
    if lm.is_causal:
        if T < 2:
            raise InputError("The text has 1 token; a next-token prediction needs at least 2.", "Use a longer text.")
        position = T - 1 if position is None else check_int(position, 1, T - 1, "position (predicted token)")
        return enc, ids, position, position - 1, int(ids[0, position]), "next-token"
    content = [i for i in range(T) if not enc.special[i]]
    if position is None:
        position = content[len(content) // 2]
    position = check_int(position, 0, T - 1, "position")
    if enc.special[position]:
        raise InputError(f"Position {position} is the special token {enc.tokens[position]!r}.",
                         "Choose an ordinary token.")
    target = int(ids[0, position])
    ids[0, position] = lm.tokenizer.mask_token_id
    return enc, ids, position, position, target, "masked-token"


def _model_logits(lm: LoadedModel, enc, ids: torch.Tensor) -> torch.Tensor:
    """(T, V) float32 logits of one forward pass (no hooks, no gradients)."""
    from ..capture import CaptureOptions, run

    batch = enc.batch()
    batch["input_ids"] = ids
    res = run(lm, batch, CaptureOptions(attention_stats=False, logits=True))
    return res.logits[0]


def loss_identities(lm: LoadedModel, text: str, position: int | None = None, *, smoothing: float = 0.1,
                    hessian_k: int = 50, top_k: int = 10, psd_tol: float = 1e-10) -> LossIdentities:
    """∂L/∂logits = P − onehot, Hessian PSD and CE = H + KL on one prediction of `lm` (float64, autograd)."""
    smoothing = _check_float(smoothing, "smoothing")
    if not 0.0 <= smoothing < 1.0:
        raise InputError(f"smoothing must be in [0, 1), got {smoothing}.")
    hessian_k = check_int(hessian_k, 2, 512, "hessian_k")
    top_k = check_int(top_k, 1, 100, "top_k")
    enc, ids, position, read_at, target, objective = _encode_for_prediction(lm, text, position)
    z = _model_logits(lm, enc, ids)[read_at].double()  # (V,)
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


# =========================================================================== claims on a model


@dataclass
class ClaimRow:
    """One claim of the seed articles measured on the loaded model."""

    key: str  # stable identifier, e.g. "gamma_band"
    seed: str  # "000" .. "004"
    claim: str  # the claim as the article states it
    measured: str  # the figures in words
    figures: dict[str, float]  # named measured values (per layer / per norm layer where relevant)
    verdict: str  # "holds" | "does not hold" | "not applicable"
    threshold: str  # the rule the verdict applies
    note: str = ""


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.2e}"
    return f"{x:.{digits}g}"


def _na(key, seed, claim, threshold, why) -> ClaimRow:
    return ClaimRow(key=key, seed=seed, claim=claim, measured="—", figures={}, verdict=NOT_APPLICABLE,
                    threshold=threshold, note=why)


def _verdict(ok: bool) -> str:
    return HOLDS if ok else DOES_NOT_HOLD


SIGMA_BAND = (0.5, 2.0)
MAJORITY = 0.5
SPEARMAN_ALPHA = 0.05
SINUSOIDAL_MIN = 0.9
GRAD_TOL = 1e-6
IDENTITY_TOL = 1e-9
ORACLE_REL_TOL = 1e-4
MLM_ALPHA = 1e-3
MLM_MIN_CHOSEN = 20


def _kind_phrase(lm: LoadedModel) -> str:
    label = lm.kind.label
    return f"this model is {'an' if label[0] in 'aeiou' else 'a'} {label}"


def _claim_sigma(cap, lm: LoadedModel) -> list[ClaimRow]:
    lo, hi = SIGMA_BAND
    thr = f"{lo} ≤ value ≤ {hi} in every layer (mean over heads)"
    stats = cap.attention if cap is not None else None
    if stats is None:
        why = "No attention statistics were captured for this model."
        return [_na("qk_std_sqrt_d", "003", "σ(QKᵀ) ≈ √d_head", thr, why),
                _na("qk_std_scaled", "003", "σ(QKᵀ/√d) ≈ 1", thr, why)]
    rows = []
    for key, claim, per_head in (
            ("qk_std_sqrt_d", "σ(QKᵀ) ≈ √d_head (unit-variance q, k)", stats.ratio_to_sqrt_d),
            ("qk_std_scaled", "Dividing by √d brings σ back to ≈ 1 (σ of the scaled logits)", stats.std_scaled)):
        per_layer = np.nanmean(per_head, axis=1)
        figs = {f"layer {i}": float(v) for i, v in enumerate(per_layer)}
        ok = bool(np.all((per_layer >= lo) & (per_layer <= hi)))
        name = "σ(QKᵀ)/√d_head" if key == "qk_std_sqrt_d" else "σ(scaled QKᵀ)"
        measured = f"{name} per layer: " + ", ".join(_fmt(v) for v in per_layer) + f" (d_head = {stats.d_head})"
        note = ("Same figures as the row above when the model scales by exactly 1/√d_head."
                if key == "qk_std_scaled" else "Heads: min " + _fmt(float(np.nanmin(per_head))) + ", max "
                + _fmt(float(np.nanmax(per_head))) + ".")
        rows.append(ClaimRow(key=key, seed="003", claim=claim, measured=measured, figures=figs,
                             verdict=_verdict(ok), threshold=thr, note=note))
    return rows


def _claim_layernorm(lm: LoadedModel) -> list[ClaimRow]:
    from .layernorm import BETA_TOL, GAMMA_BAND, layernorm_stats

    thr_g = f"pooled fraction of γ in [{GAMMA_BAND[0]}, {GAMMA_BAND[1]}] ≥ {MAJORITY} ('mostly')"
    thr_b = f"pooled fraction of |β| < {BETA_TOL} ≥ {MAJORITY}"
    try:
        rep = layernorm_stats(lm)
    except InputError as exc:
        return [_na("gamma_band", "003", "LayerNorm γ lie mostly in 0.2–0.4", thr_g, str(exc)),
                _na("beta_near_zero", "003", "LayerNorm β are near 0", thr_b, str(exc))]
    g_figs = {layer.name: layer.gamma_stats.frac_in_band for layer in rep.layers}
    g_pooled = rep.pooled_gamma.frac_in_band
    rows = [ClaimRow(
        key="gamma_band", seed="003", claim="LayerNorm γ lie mostly in 0.2–0.4",
        measured=f"fraction of γ in band: {_fmt(g_pooled)} pooled over {len(rep.layers)} norm layers; "
                 f"median γ {_fmt(float(rep.pooled_gamma.quantiles[3]))}",
        figures={"pooled": g_pooled, **g_figs}, verdict=_verdict(g_pooled >= MAJORITY), threshold=thr_g,
        note="Per norm layer figures are keyed by module path.")]
    if rep.pooled_beta is None:
        rows.append(_na("beta_near_zero", "003", "LayerNorm β are near 0", thr_b, "No norm layer has a bias."))
    else:
        b_figs = {layer.name: layer.beta_stats.frac_near_zero for layer in rep.layers if layer.beta_stats}
        b_pooled = rep.pooled_beta.frac_near_zero
        rows.append(ClaimRow(
            key="beta_near_zero", seed="003", claim="LayerNorm β are near 0",
            measured=f"fraction of |β| < {BETA_TOL}: {_fmt(b_pooled)} pooled; "
                     f"median |β| {_fmt(float(np.median(np.abs(np.concatenate(list(rep.betas().values()))))))}",
            figures={"pooled": b_pooled, **b_figs}, verdict=_verdict(b_pooled >= MAJORITY), threshold=thr_b))
    return rows


def _claim_norm_frequency(lm: LoadedModel, corpus: str, corpus_name: str) -> ClaimRow:
    from .embeddings import norm_frequency_correlation

    claim = "Frequent tokens get larger embedding norms"
    thr = f"Spearman ρ(norm, frequency) > 0 with p < {SPEARMAN_ALPHA} over tokens seen in the {corpus_name}"
    try:
        nf = norm_frequency_correlation(lm, text=corpus)
    except InputError as exc:
        return _na("norm_frequency", "000", claim, thr, str(exc))
    if math.isnan(nf.rho_seen):
        return _na("norm_frequency", "000", claim, thr, "All seen tokens have the same count or norm.")
    ok = nf.rho_seen > 0 and nf.p_seen < SPEARMAN_ALPHA
    return ClaimRow(
        key="norm_frequency", seed="000", claim=claim,
        measured=f"Spearman ρ = {_fmt(nf.rho_seen)} (p = {_fmt(nf.p_seen)}) over {nf.n_seen} distinct tokens, "
                 f"{nf.n_corpus_tokens} corpus tokens",
        figures={"rho": nf.rho_seen, "p_value": nf.p_seen, "n_tokens": float(nf.n_seen),
                 "corpus_tokens": float(nf.n_corpus_tokens)},
        verdict=_verdict(ok), threshold=thr,
        note="Short texts give few distinct tokens: pass a corpus for a meaningful figure." if nf.n_seen < 50 else "")


def _claim_positions(lm: LoadedModel) -> ClaimRow:
    from .embeddings import position_embeddings

    claim = "Position embeddings are sinusoidal (the article says so for BERT)"
    thr = f"cosine-geometry correlation with a sinusoidal table ≥ {SINUSOIDAL_MIN}"
    try:
        pe = position_embeddings(lm)
    except (NotAvailableError, InputError) as exc:
        return _na("sinusoidal_positions", "002", claim, thr, str(exc))
    ok = (not math.isnan(pe.sinusoidal_similarity)) and pe.sinusoidal_similarity >= SINUSOIDAL_MIN
    return ClaimRow(
        key="sinusoidal_positions", seed="002", claim=claim,
        measured=f"similarity to sinusoidal {_fmt(pe.sinusoidal_similarity)}; table is "
                 f"{'learned (a trained parameter)' if pe.learned else 'a fixed buffer'}, "
                 f"{pe.n_positions} × {pe.dim}",
        figures={"sinusoidal_similarity": pe.sinusoidal_similarity, "learned": float(pe.learned),
                 "best_dim_correlation": pe.best_dim_correlation},
        verdict=_verdict(ok), threshold=thr,
        note="Correlation between the position × position cosine matrices of the two tables "
             "(basis-independent).")


MLM_SPLIT_CHARS = 20_000  # text masked for the 80/10/10 claim: ~3 000 chosen tokens, whatever the process' text limit


def _claim_mlm_split(lm: LoadedModel, text: str) -> ClaimRow:
    claim = "MLM masks 15 % of tokens: 80 % → [MASK], 10 % → random token, 10 % unchanged"
    thr = (f"χ² goodness of fit of the split against 80/10/10 with p ≥ {MLM_ALPHA}, "
           f"at least {MLM_MIN_CHOSEN} chosen tokens")
    if not lm.has_mlm_head:
        return _na("mlm_80_10_10", "002", claim, thr, f"Needs a masked LM; {_kind_phrase(lm)}.")
    from .loss import masking_split

    try:  # the claim is about the masking recipe: count inspector's own choice, no forward pass needed
        rep = masking_split(lm, text, seed=0)
    except (InputError, NotAvailableError) as exc:
        return _na("mlm_80_10_10", "002", claim, thr, str(exc))
    from scipy.stats import chisquare

    m = rep.n_chosen
    counts = np.array([rep.n_mask, rep.n_random, rep.n_unchanged], dtype=np.float64)
    shares = counts / max(m, 1)
    target = np.array([0.8, 0.1, 0.1])
    p_val = float(chisquare(counts, target * counts.sum()).pvalue) if m > 0 else math.nan
    ok = m >= MLM_MIN_CHOSEN and p_val >= MLM_ALPHA
    figs = {"chosen_fraction": m / max(rep.n_candidates, 1), "mask": float(shares[0]),
            "random": float(shares[1]), "unchanged": float(shares[2]), "n_chosen": float(m),
            "chi2_p_value": p_val}
    note = "Measures inspector's seeded masking (the recipe), not the original pre-training run."
    if m < MLM_MIN_CHOSEN:
        note += f" Only {m} tokens were chosen: use a longer text (corpus) for a verdict."
    return ClaimRow(key="mlm_80_10_10", seed="002", claim=claim,
                    measured=f"{m} of {rep.n_candidates} tokens chosen ({_fmt(figs['chosen_fraction'])}); "
                             f"split {shares[0]:.0%} / {shares[1]:.0%} / {shares[2]:.0%} (χ² p = {_fmt(p_val)})",
                    figures=figs, verdict=_verdict(ok), threshold=thr, note=note)


def _masked_loss_parts(lm: LoadedModel, enc, seed: int = 0, mask_prob: float = 0.15):
    """Mask ~15 % of the ordinary tokens of `enc` with [MASK] (seeded); the model's own MLM loss and per-token CE."""
    ids = enc.input_ids.clone()
    content = np.flatnonzero(~enc.special)
    rng = np.random.default_rng(seed)
    m = min(content.size, max(1, int(round(mask_prob * content.size))))
    pos = np.sort(rng.choice(content, size=m, replace=False))
    labels = torch.full_like(ids, -100)
    labels[0, pos] = ids[0, pos]
    ids[0, pos] = lm.tokenizer.mask_token_id
    batch = {k: v.to(lm.device) for k, v in enc.batch().items()}
    batch["input_ids"] = ids.to(lm.device)
    with torch.no_grad():
        out = lm.model(**batch, labels=labels.to(lm.device)) if lm.kind.value == "masked-lm" else lm.model(**batch)
    logits = (out.logits if getattr(out, "logits", None) is not None else out.prediction_logits).double().cpu()
    model_loss = getattr(out, "loss", None)
    if model_loss is None:  # BertForPreTraining returns a loss only with NSP labels: apply its MLM criterion
        model_loss = torch.nn.CrossEntropyLoss()(logits.view(-1, logits.shape[-1]), labels.view(-1))
    ce = -torch.log_softmax(logits[0, pos], dim=-1).gather(-1, labels[0, pos][:, None]).squeeze(-1)
    return float(model_loss), ce.numpy(), m


def _claim_mlm_loss(lm: LoadedModel, enc) -> ClaimRow:
    claim = "MLM loss = sum of squared losses over the masked tokens"
    thr = f"relative difference from the model's own MLM loss < {ORACLE_REL_TOL}"
    if not lm.has_mlm_head:
        return _na("mlm_loss_form", "002", claim, thr, f"Needs a masked LM; {_kind_phrase(lm)}.")
    model_loss, ce, m = _masked_loss_parts(lm, enc)
    sq = float((ce ** 2).sum())
    mean_ce = float(ce.mean())
    rel_sq = abs(sq - model_loss) / max(abs(model_loss), 1e-12)
    rel_mean = abs(mean_ce - model_loss) / max(abs(model_loss), 1e-12)
    return ClaimRow(
        key="mlm_loss_form", seed="002", claim=claim,
        measured=f"model loss {_fmt(model_loss)}; Σ CE² {_fmt(sq)}; mean CE {_fmt(mean_ce)} over {m} masked tokens",
        figures={"model_loss": model_loss, "sum_squared_ce": sq, "mean_ce": mean_ce,
                 "rel_diff_sum_squared": rel_sq, "rel_diff_mean_ce": rel_mean},
        verdict=_verdict(rel_sq < ORACLE_REL_TOL), threshold=thr,
        note=("The model's loss is the mean cross-entropy over masked tokens." if rel_mean < ORACLE_REL_TOL
              else "Neither form matches the model's loss."))


def _claim_perplexity(lm: LoadedModel, enc, logits: torch.Tensor | None) -> ClaimRow:
    claim = "Perplexity = exp(cross-entropy)"
    thr = f"relative difference between exp(model loss) and the geometric mean of 1/P < {ORACLE_REL_TOL}"
    if lm.is_causal:
        if enc.n_tokens < 2 or logits is None:
            return _na("perplexity", "004", claim, thr, "Needs at least two tokens.")
        ids = enc.input_ids.to(lm.device)
        with torch.no_grad():
            out = lm.model(input_ids=ids, attention_mask=enc.attention_mask.to(lm.device), labels=ids,
                           use_cache=False)
        model_loss = float(out.loss)
        logp = torch.log_softmax(logits[:-1].double(), -1).gather(-1, enc.input_ids[0, 1:, None]).squeeze(-1)
        what = f"{enc.n_tokens - 1} next-token predictions"
    elif lm.has_mlm_head:
        model_loss, ce, m = _masked_loss_parts(lm, enc)
        logp = -torch.from_numpy(ce)
        what = f"{m} masked tokens"
    else:
        return _na("perplexity", "004", claim, thr, f"Needs a language-model head; {_kind_phrase(lm)}.")
    ppl = math.exp(model_loss)
    geo = float(torch.exp(-logp.mean()))  # (Π 1/P)^(1/N)
    rel = abs(ppl - geo) / geo
    return ClaimRow(key="perplexity", seed="004", claim=claim,
                    measured=f"exp(model loss) = {_fmt(ppl, 6)}; geometric mean of 1/P = {_fmt(geo, 6)} over {what}",
                    figures={"model_loss": model_loss, "perplexity": ppl, "geometric_mean_inverse_p": geo,
                             "rel_diff": rel},
                    verdict=_verdict(rel < ORACLE_REL_TOL), threshold=thr)


def _claims_identities(lm: LoadedModel, text: str) -> list[ClaimRow]:
    grad_claim = "∂L/∂z_i = P(i) − y_i for softmax cross-entropy"
    hess_claim = "Softmax-CE is convex in the logits: Hessian diag(P) − PPᵀ is PSD"
    ce_claim = "H(p, q) = H(p) + KL(p‖q): minimising CE minimises KL"
    nll_claim = "Cross-entropy and NLL (on log-softmax) are the same loss"
    thr_g = f"max |autograd − (P − onehot)| < {GRAD_TOL}"
    thr_h = "smallest eigenvalue ≥ −1e-10 (autograd Hessian on the top-50 logits, renormalised)"
    thr_c = f"|H(p,q) − H(p) − KL(p‖q)| < {IDENTITY_TOL} (p = target smoothed by ε = 0.1, q = model)"
    thr_n = f"|CE − NLL(log-softmax)| < {GRAD_TOL}"
    try:
        li = loss_identities(lm, text)
    except (NotAvailableError, InputError) as exc:
        return [_na("dl_dlogits", "000", grad_claim, thr_g, str(exc)), _na("hessian_psd", "000", hess_claim, thr_h,
                str(exc)), _na("ce_h_plus_kl", "004", ce_claim, thr_c, str(exc)),
                _na("ce_equals_nll", "001", nll_claim, thr_n, str(exc))]
    where = f"{li.objective} prediction of {li.target_token!r} at position {li.position}"
    return [
        ClaimRow(key="dl_dlogits", seed="000", claim=grad_claim,
                 measured=f"max |Δ| = {_fmt(li.grad_max_abs_diff)} over {lm.vocab_size} logits "
                          f"({where}); Σ ∂L/∂z = {_fmt(li.grad_sum)}",
                 figures={"max_abs_diff": li.grad_max_abs_diff, "grad_sum": li.grad_sum,
                          "grad_target": float(li.grad_top[0])},
                 verdict=_verdict(li.grad_max_abs_diff < GRAD_TOL), threshold=thr_g),
        ClaimRow(key="hessian_psd", seed="000", claim=hess_claim,
                 measured=f"eigenvalues in [{_fmt(li.hessian_min_eig)}, {_fmt(li.hessian_max_eig)}] "
                          f"on {li.hessian_k} logits; max |autograd − analytic| = "
                          f"{_fmt(li.hessian_analytic_max_abs_diff)}",
                 figures={"min_eigenvalue": li.hessian_min_eig, "max_eigenvalue": li.hessian_max_eig,
                          "analytic_max_abs_diff": li.hessian_analytic_max_abs_diff},
                 verdict=_verdict(li.hessian_min_eig >= -li.psd_tol), threshold=thr_h,
                 note="One eigenvalue is 0 (adding a constant to all logits changes nothing). Convex in the "
                      "logits only, not in the embeddings."),
        ClaimRow(key="ce_h_plus_kl", seed="004", claim=ce_claim,
                 measured=f"H(p,q) = {_fmt(li.cross_entropy, 6)}, H(p) = {_fmt(li.entropy_p, 6)}, "
                          f"KL = {_fmt(li.kl_pq, 6)}; gap {_fmt(li.ce_identity_gap)}; PyTorch label-smoothed CE "
                          f"{_fmt(li.ce_torch_label_smoothing, 6)}",
                 figures={"cross_entropy": li.cross_entropy, "entropy_p": li.entropy_p, "kl_pq": li.kl_pq,
                          "gap": li.ce_identity_gap, "torch_label_smoothing_gap": li.ce_torch_gap},
                 verdict=_verdict(li.ce_identity_gap < IDENTITY_TOL), threshold=thr_c),
        ClaimRow(key="ce_equals_nll", seed="001", claim=nll_claim,
                 measured=f"|CE − NLL| = {_fmt(li.nll_gap)} ({where})",
                 figures={"abs_diff": li.nll_gap}, verdict=_verdict(li.nll_gap < GRAD_TOL), threshold=thr_n),
    ]


def _claim_tying(lm: LoadedModel, enc, text: str) -> ClaimRow:
    claim = ("With tied weights the true token's embedding gets gradient (P(y) − 1)·h, every other "
             "token's P(i)·h")
    thr = "weights tied, max |autograd ∂L/∂W − (P − onehot) ⊗ h| < 1e-5 and cos(−∂L/∂w_y, h) > 0.999"
    if not (lm.is_causal or lm.has_mlm_head):
        return _na("tied_gradient", "000", claim, thr, f"Needs a language-model head; {_kind_phrase(lm)}.")
    from .loss import logit_gradient_check

    try:
        _, _, position, read_at, _, _ = _encode_for_prediction(lm, text, None)
        gc = logit_gradient_check(lm, enc, read_at if lm.is_causal else position)
    except (InputError, NotAvailableError) as exc:
        return _na("tied_gradient", "000", claim, thr, str(exc))
    if not gc.tied:
        return _na("tied_gradient", "000", claim, thr, "The output matrix is not the input embedding matrix.")
    ok = gc.output_formula_max_abs_diff < 1e-5 and gc.target_row_cos_h > 0.999
    return ClaimRow(key="tied_gradient", seed="000", claim=claim,
                    measured=f"max |Δ| = {_fmt(gc.output_formula_max_abs_diff)}; cos(−grad of target row, h) = "
                             f"{_fmt(gc.target_row_cos_h, 6)} ({gc.objective} target {gc.target_token!r})",
                    figures={"max_abs_diff": gc.output_formula_max_abs_diff, "target_row_cos_h": gc.target_row_cos_h,
                             "target_row_grad_norm": gc.target_row_grad_norm},
                    verdict=_verdict(ok), threshold=thr,
                    note="Output side only: the input side of the same row gets its own gradient through the body.")


def _claim_input_sum(lm: LoadedModel, cap) -> ClaimRow:
    if lm.fam.positions == "rotary":
        claim, key = (f"{lm.fam.label} input = token embedding alone (rotary positions: no position table)",
                      "input_embedding_sum")
    elif lm.family == "gpt2":
        claim, key = "GPT-2 input = token embedding + position embedding", "input_embedding_sum"
    else:
        claim, key = "BERT input embedding = token + segment + position", "input_embedding_sum"
    thr = "max |first hidden state − sum| < 1e-4 × max |first hidden state|"
    if cap is None or cap.hidden_states is None or cap.embeddings is None:
        return _na(key, "002" if lm.family == "bert" else "000", claim, thr, "Hidden states were not captured.")
    e = cap.embeddings
    total = e["token"] + e.get("position", 0) + (e["segment"] if "segment" in e else 0)
    note = ""
    if lm.family == "bert":
        ln = lm.model.base_model.embeddings.LayerNorm
        with torch.no_grad():
            total = ln(total.to(lm.device, lm.dtype)).float().cpu()
        note = "BERT applies LayerNorm to the sum (compared after it)."
    h0 = cap.hidden_states[0]
    diff = float((h0 - total).abs().max())
    scale = float(h0.abs().max())
    return ClaimRow(key=key, seed="002" if lm.family == "bert" else "000", claim=claim,
                    measured=f"max |h₀ − sum| = {_fmt(diff)} (|h₀| up to {_fmt(scale)})",
                    figures={"max_abs_diff": diff, "max_abs_hidden": scale},
                    verdict=_verdict(diff <= 1e-4 * max(scale, 1e-12)), threshold=thr, note=note)


def _claim_cooccurrence(lm: LoadedModel, corpus: str, corpus_name: str, seed: int = 0, max_chars: int = 200_000) -> ClaimRow:
    from scipy.stats import mannwhitneyu

    claim = "Tokens that co-occur get a higher eᵀe (embeddings cluster by meaning)"
    thr = "mean eᵀe of adjacent token pairs > that of random pairs of the same tokens, Mann–Whitney p < 0.05"
    ids = np.asarray(lm.tokenizer(corpus[:max_chars], add_special_tokens=False, verbose=False)["input_ids"],
                     dtype=np.int64)
    E = lm.model.get_input_embeddings().weight.detach().to("cpu", torch.float64).numpy()
    ids = ids[ids < E.shape[0]]
    pairs = np.unique(np.sort(np.stack([ids[:-1], ids[1:]], axis=1), axis=1), axis=0) if ids.size > 1 else \
        np.zeros((0, 2), dtype=np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    seen = np.unique(ids)
    if pairs.shape[0] < 10 or seen.size < 5:
        return _na("cooccurrence_dot", "000", claim, thr,
                   f"Only {pairs.shape[0]} distinct co-occurring pairs in the {corpus_name}: use a longer text.")
    rng = np.random.default_rng(seed)
    pair_set = {tuple(p) for p in pairs.tolist()}
    rand = []
    while len(rand) < pairs.shape[0] and len(rand) < 10 * pairs.shape[0] + 1000:
        a, b = sorted(rng.choice(seen, size=2, replace=False).tolist())
        if (a, b) not in pair_set:
            rand.append((a, b))
        if len(pair_set) >= seen.size * (seen.size - 1) // 2:
            break
    if len(rand) < 10:
        return _na("cooccurrence_dot", "000", claim, thr, "Almost every pair of seen tokens co-occurs.")
    rand = np.array(rand, dtype=np.int64)
    dot = lambda P: np.einsum("ij,ij->i", E[P[:, 0]], E[P[:, 1]])  # noqa: E731
    unit = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    cos = lambda P: np.einsum("ij,ij->i", unit[P[:, 0]], unit[P[:, 1]])  # noqa: E731
    d_co, d_r = dot(pairs), dot(rand)
    p_val = float(mannwhitneyu(d_co, d_r, alternative="greater").pvalue)
    ok = d_co.mean() > d_r.mean() and p_val < 0.05
    return ClaimRow(key="cooccurrence_dot", seed="000", claim=claim,
                    measured=f"mean eᵀe adjacent {_fmt(float(d_co.mean()))} vs random {_fmt(float(d_r.mean()))} "
                             f"(p = {_fmt(p_val)}); mean cosine {_fmt(float(cos(pairs).mean()))} vs "
                             f"{_fmt(float(cos(rand).mean()))}; {pairs.shape[0]} pairs",
                    figures={"mean_dot_cooccurring": float(d_co.mean()), "mean_dot_random": float(d_r.mean()),
                             "mean_cos_cooccurring": float(cos(pairs).mean()),
                             "mean_cos_random": float(cos(rand).mean()), "p_value": p_val,
                             "n_pairs": float(pairs.shape[0])},
                    verdict=_verdict(ok), threshold=thr,
                    note=f"Pairs from the first {max_chars:,} characters of the {corpus_name}.")


def claims_on_model(lm: LoadedModel, text: str, corpus_text: str | None = None) -> list[ClaimRow]:
    """Every claim of SEEDS.md a loaded model can test: measured figures, threshold, computed verdict.

    `text` drives the per-text measurements (attention logits, losses, gradients); token
    frequencies, co-occurrences and the MLM masking split use `corpus_text` when given (else `text`).
    """
    from ..capture import CaptureOptions, run

    enc = encode(lm, text)
    corpus = corpus_text if corpus_text is not None and corpus_text.strip() else enc.text
    corpus_name = "corpus" if corpus is not enc.text else "text"
    cap = run(lm, enc.batch(), CaptureOptions(attention_stats=True, logits=True, hidden_states=True,
                                              embeddings=True))
    logits = cap.logits[0] if cap.logits is not None else None
    rows: list[ClaimRow] = []
    rows += _claim_sigma(cap, lm)
    rows += _claim_layernorm(lm)
    rows.append(_claim_norm_frequency(lm, corpus, corpus_name))
    rows.append(_claim_cooccurrence(lm, corpus, corpus_name))
    rows.append(_claim_positions(lm))
    rows.append(_claim_input_sum(lm, cap))
    rows.append(_claim_mlm_split(lm, corpus[:MLM_SPLIT_CHARS]))
    rows.append(_claim_mlm_loss(lm, enc))
    rows.append(_claim_perplexity(lm, enc, logits))
    rows += _claims_identities(lm, enc.text)
    rows.append(_claim_tying(lm, enc, enc.text))
    return rows
