"""The seed articles' experiments that need no model: seeded numpy / torch runs of their claims.

- Seed 003 (scaling in attention): `random_qk_scaling`, `sigma_vs_dim`, `softmax_scaling`,
  `softmax_temperature`.
- Seed 001 (custom losses): `loss_race` — one parameter, real `torch.optim.SGD`, L1 vs L2 vs Huber.
- Seed 004 (KL divergence): `gaussian_kl` (closed form vs seeded Monte Carlo), `discrete_kl` (asymmetry, JS).

Each returns a plain dataclass of numpy arrays (`_common.to_dict` serialises it); the app's
Foundations page draws them. Everything is importable from `inspector.analyses.foundations`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ._common import check_int

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
