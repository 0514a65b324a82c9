"""The claims of the seed articles measured on a loaded model: `claims_on_model`.

One `ClaimRow` per claim that a loaded model can test, with the measured figures, the threshold
(`foundations_verdicts`) and a computed verdict. The measurements share what one call computes once:
one capture of the text (attention statistics, logits, hidden states, embeddings), one prediction
setup for the gradient checks, one masked forward pass for the masked-LM claims.
Nothing here changes the shared model: gradients are taken on detached copies of logits or
inputs, never on parameters.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError, NotAvailableError
from ..inputs import encode
from .foundations_identities import _identities_at, _model_logits, _prediction_of
from .foundations_verdicts import (GRAD_TOL, IDENTITY_TOL, MAJORITY, MLM_ALPHA, MLM_MIN_CHOSEN, MLM_SPLIT_CHARS,
                                   ORACLE_REL_TOL, SIGMA_BAND, SINUSOIDAL_MIN, SPEARMAN_ALPHA, ClaimRow, _fmt,
                                   _kind_phrase, _na, _verdict)

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel
    from .foundations_identities import _Prediction


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


def _claim_mlm_loss(lm: LoadedModel, masked) -> ClaimRow:
    """`masked`: `_masked_loss_parts` of the text (computed once for this claim and the perplexity one)."""
    claim = "MLM loss = sum of squared losses over the masked tokens"
    thr = f"relative difference from the model's own MLM loss < {ORACLE_REL_TOL}"
    if not lm.has_mlm_head:
        return _na("mlm_loss_form", "002", claim, thr, f"Needs a masked LM; {_kind_phrase(lm)}.")
    model_loss, ce, m = masked
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


def _claim_perplexity(lm: LoadedModel, enc, logits: torch.Tensor | None, masked=None) -> ClaimRow:
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
        model_loss, ce, m = masked
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


def _claims_identities(lm: LoadedModel, pred: _Prediction | Exception, logits: torch.Tensor | None
                       ) -> list[ClaimRow]:
    """`pred`: the prediction checked (or why there is none); `logits`: the capture's (T, V) logits, which a
    causal prediction reads (the same forward pass); a masked one runs its own on the masked input."""
    grad_claim = "∂L/∂z_i = P(i) − y_i for softmax cross-entropy"
    hess_claim = "Softmax-CE is convex in the logits: Hessian diag(P) − PPᵀ is PSD"
    ce_claim = "H(p, q) = H(p) + KL(p‖q): minimising CE minimises KL"
    nll_claim = "Cross-entropy and NLL (on log-softmax) are the same loss"
    thr_g = f"max |autograd − (P − onehot)| < {GRAD_TOL}"
    thr_h = "smallest eigenvalue ≥ −1e-10 (autograd Hessian on the top-50 logits, renormalised)"
    thr_c = f"|H(p,q) − H(p) − KL(p‖q)| < {IDENTITY_TOL} (p = target smoothed by ε = 0.1, q = model)"
    thr_n = f"|CE − NLL(log-softmax)| < {GRAD_TOL}"

    def not_applicable(why: str) -> list[ClaimRow]:
        return [_na("dl_dlogits", "000", grad_claim, thr_g, why), _na("hessian_psd", "000", hess_claim, thr_h, why),
                _na("ce_h_plus_kl", "004", ce_claim, thr_c, why), _na("ce_equals_nll", "001", nll_claim, thr_n, why)]

    if isinstance(pred, Exception):
        return not_applicable(str(pred))
    try:
        z = logits if lm.is_causal and logits is not None else _model_logits(lm, pred.enc, pred.ids)  # (T, V)
        li = _identities_at(lm, pred, z[pred.read_at])
    except (NotAvailableError, InputError) as exc:
        return not_applicable(str(exc))
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


def _claim_tying(lm: LoadedModel, enc, pred: _Prediction | Exception) -> ClaimRow:
    claim = ("With tied weights the true token's embedding gets gradient (P(y) − 1)·h, every other "
             "token's P(i)·h")
    thr = "weights tied, max |autograd ∂L/∂W − (P − onehot) ⊗ h| < 1e-5 and cos(−∂L/∂w_y, h) > 0.999"
    if not (lm.is_causal or lm.has_mlm_head):
        return _na("tied_gradient", "000", claim, thr, f"Needs a language-model head; {_kind_phrase(lm)}.")
    from .loss import logit_gradient_check

    if isinstance(pred, Exception):
        return _na("tied_gradient", "000", claim, thr, str(pred))
    try:
        gc = logit_gradient_check(lm, enc, pred.read_at if lm.is_causal else pred.position)
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
    masked = _masked_loss_parts(lm, enc) if lm.has_mlm_head else None  # one masked forward pass for both
    rows.append(_claim_mlm_loss(lm, masked))
    rows.append(_claim_perplexity(lm, enc, logits, masked))
    try:  # one prediction (the last token; a masked LM: its middle word piece) for both gradient checks
        pred = _prediction_of(lm, enc, None)
    except (NotAvailableError, InputError) as exc:
        pred = exc
    rows += _claims_identities(lm, pred, logits)
    rows.append(_claim_tying(lm, enc, pred))
    return rows
