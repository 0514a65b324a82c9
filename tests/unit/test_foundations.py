"""Seed experiments (003, 001, 004), seed 000's identities on a model, and the claims table."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import _TRAIN_TEXT, tiny_bert_model, tiny_gpt2_model
from inspector.analyses import foundations as fd
from inspector.analyses._common import from_dict, results_equal, to_dict
from inspector.capture import CaptureOptions, run
from inspector.errors import InputError, NotAvailableError
from inspector.inputs import encode
from inspector.models import wrap

TEXT = "The quick brown fox jumps over the lazy dog. A model reads tokens and predicts the next one."
VERDICTS = {fd.HOLDS, fd.DOES_NOT_HOLD, fd.NOT_APPLICABLE}


# --------------------------------------------------------------------------- seed 003


def test_random_matrix_sigma_tracks_sqrt_d():
    r = fd.random_qk_scaling(n=50, d=50, seed=0)
    assert r.sigma_q == pytest.approx(1.0, abs=0.05) and r.sigma_k == pytest.approx(1.0, abs=0.05)
    assert r.sigma_qk == pytest.approx(math.sqrt(50), rel=0.1)
    assert r.sigma_qk_scaled == pytest.approx(1.0, rel=0.1)

    s = fd.sigma_vs_dim(range(2, 101), n=50, seed=0)
    assert s.dims.tolist() == list(range(2, 101))
    big = s.dims >= 16
    assert np.all(np.abs(s.sigma_qk[big] / np.sqrt(s.dims[big]) - 1.0) < 0.10)
    np.testing.assert_allclose(s.ratio, s.sigma_qk / s.sqrt_d)
    # Independent: the first d reproduces a direct numpy draw from the same generator.
    rng = np.random.default_rng(0)
    Q, K = rng.standard_normal((50, 2)), rng.standard_normal((50, 2))
    assert s.sigma_qk[0] == pytest.approx((Q @ K.T).std())


def test_softmax_before_and_after_scaling():
    r = fd.softmax_scaling(n=50, d=50, seed=0)
    np.testing.assert_allclose(r.softmax, torch.softmax(torch.from_numpy(r.logits), 0).numpy(), atol=1e-12)
    np.testing.assert_allclose(r.neg_log_softmax_scaled,
                               -torch.log_softmax(torch.from_numpy(r.logits / math.sqrt(50)), 0).numpy(), atol=1e-12)
    assert r.softmax.sum() == pytest.approx(1.0) and r.softmax_scaled.sum() == pytest.approx(1.0)
    # Before scaling a few keys take the mass (saturated, small Jacobian); after it the row spreads out.
    assert r.max_prob > r.max_prob_scaled
    assert r.entropy < r.entropy_scaled <= r.max_entropy
    jac = torch.autograd.functional.jacobian(lambda z: torch.softmax(z, 0), torch.from_numpy(r.logits))
    assert r.jacobian_norm == pytest.approx(float(jac.norm()), rel=1e-9)
    # A fully saturated row (a much larger d) has a vanishing softmax Jacobian.
    assert fd.softmax_scaling(n=50, d=4000, seed=0).jacobian_norm < 0.05


def test_temperature_slider():
    base = fd.softmax_scaling(n=50, d=50, seed=0)
    at_sqrt_d = fd.softmax_temperature(math.sqrt(50), n=50, d=50, seed=0)
    assert at_sqrt_d.scaling_temperature == pytest.approx(math.sqrt(50))
    assert at_sqrt_d.entropy == pytest.approx(base.entropy_scaled)
    assert np.all(np.diff(at_sqrt_d.curve_entropy) >= -1e-12)  # hotter → flatter
    hot = fd.softmax_temperature(1e4, logits=[1.0, 2.0, 3.0])
    assert hot.entropy == pytest.approx(math.log(3), abs=1e-6) and hot.scaling_temperature is None
    cold = fd.softmax_temperature(1e-3, logits=[1.0, 2.0, 3.0])
    assert cold.max_prob == pytest.approx(1.0)
    with pytest.raises(InputError):
        fd.softmax_temperature(0.0)


# --------------------------------------------------------------------------- seed 001


def test_l1_oscillates_l2_converges_smoothly():
    race = fd.loss_race(start=2.0, target=5.0, lr=0.05, steps=100)
    assert race.initial_losses["l1"] == pytest.approx(3.0)
    assert race.initial_losses["l2"] == pytest.approx(9.0)
    l1, l2, huber = race.run("l1"), race.run("l2"), race.run("huber")
    # L1: constant-size steps (lr · sign) overshoot and flip around the target.
    assert l1.first_cross_step is not None
    assert l1.sign_changes_after_cross >= 2
    signs = np.sign(l1.errors[l1.first_cross_step:])
    assert np.count_nonzero(signs[1:] != signs[:-1]) >= 2
    assert l1.max_abs_error_after_cross <= race.lr + 1e-6
    np.testing.assert_allclose(np.abs(l1.grads), 1.0)
    # L2: the error shrinks by (1 − 2·lr) every step, monotonically, without crossing.
    assert l2.first_cross_step is None and l2.error_monotone
    assert np.all(np.diff(np.abs(l2.errors)) < 0)
    np.testing.assert_allclose(l2.errors[1:40] / l2.errors[:39], 1 - 2 * race.lr, rtol=1e-4)  # float32
    assert huber.error_monotone
    with pytest.raises(InputError):
        fd.loss_race(losses=("l3",))


# --------------------------------------------------------------------------- seed 004


def test_gaussian_kl_closed_form_vs_monte_carlo():
    from scipy.integrate import quad
    from scipy.stats import norm

    g = fd.gaussian_kl(0.0, 1.0, 1.0, 2.0, n_samples=200_000, seed=0)
    assert g.rel_diff < 0.02
    assert g.kl_pq_mc == pytest.approx(g.kl_pq, rel=0.02)
    p, q = norm(0.0, 1.0), norm(1.0, 2.0)
    numeric, _ = quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -20, 20)
    assert g.kl_pq == pytest.approx(numeric, rel=1e-8)
    assert g.kl_qp != pytest.approx(g.kl_pq, rel=0.1)  # asymmetric
    assert fd.gaussian_kl(0.5, 1.3, 0.5, 1.3).kl_pq == pytest.approx(0.0, abs=1e-12)


def test_discrete_kl_asymmetry_and_js():
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import entropy

    p, q = [0.36, 0.48, 0.16], [1 / 3, 1 / 3, 1 / 3]
    d = fd.discrete_kl(p, q)
    assert d.kl_pq == pytest.approx(entropy(p, q))
    assert d.kl_qp == pytest.approx(entropy(q, p))
    assert d.kl_pq != pytest.approx(d.kl_qp)
    assert d.js == pytest.approx(jensenshannon(p, q) ** 2)
    assert 0 <= d.js <= math.log(2)
    assert d.identity_gap < 1e-12
    assert d.kl_pq_terms.sum() == pytest.approx(d.kl_pq)
    missing = fd.discrete_kl([0.5, 0.5, 0.0], [1.0, 0.0, 0.0])
    assert not missing.support_ok and math.isnan(missing.kl_pq)
    assert missing.support_ok_reverse and missing.kl_qp == pytest.approx(math.log(2))
    assert math.isfinite(missing.js)
    with pytest.raises(InputError):
        fd.discrete_kl([0.5, -0.5], [0.5, 0.5])


# --------------------------------------------------------------------------- seed 000 on a model


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_bert_mlm", "tiny_bert"])
def test_loss_identities_on_model(request, fixture):
    lm = request.getfixturevalue(fixture)
    li = fd.loss_identities(lm, TEXT)
    assert li.grad_max_abs_diff < 1e-6
    assert abs(li.grad_sum) < 1e-9
    np.testing.assert_allclose(li.grad_top, li.p_minus_onehot_top, atol=1e-9)
    assert li.hessian_k == 50 and li.hessian_min_eig >= -li.psd_tol
    assert li.hessian_eigenvalues[0] == pytest.approx(0.0, abs=1e-10)  # the all-ones direction
    assert li.hessian_analytic_max_abs_diff < 1e-9
    assert li.ce_identity_gap < 1e-9 and li.ce_torch_gap < 1e-9
    assert li.kl_pq > 0 and li.nll_gap < 1e-9
    # Independent: P(target) from the model's own forward pass.
    enc = encode(lm, TEXT)
    ids = enc.input_ids.clone()
    if lm.is_causal:
        read_at = li.position - 1
        assert li.target_id == int(ids[0, li.position])
    else:
        read_at = li.position
        assert li.target_id == int(ids[0, li.position])
        ids[0, li.position] = lm.tokenizer.mask_token_id
    with torch.no_grad():
        out = lm.model(input_ids=ids, attention_mask=enc.attention_mask,
                       **({"token_type_ids": enc.token_type_ids} if enc.token_type_ids is not None else {}))
    logits = out.logits if getattr(out, "logits", None) is not None else out.prediction_logits
    assert li.prob_target == pytest.approx(float(torch.softmax(logits[0, read_at].double(), -1)[li.target_id]),
                                           rel=1e-5)


def test_loss_identities_not_available_for_encoder():
    lm = wrap(*tiny_bert_model(cls_name="BertModel"))
    with pytest.raises(NotAvailableError):
        fd.loss_identities(lm, TEXT)


# --------------------------------------------------------------------------- claims on a model


def _row(rows, key):
    matches = [r for r in rows if r.key == key]
    assert len(matches) == 1, key
    return matches[0]


def test_claims_table_gpt2(tiny_gpt2):
    rows = fd.claims_on_model(tiny_gpt2, TEXT, corpus_text=_TRAIN_TEXT * 3)
    keys = [r.key for r in rows]
    assert len(set(keys)) == len(keys)
    for key in ("qk_std_sqrt_d", "qk_std_scaled", "gamma_band", "beta_near_zero", "norm_frequency",
                "sinusoidal_positions", "mlm_80_10_10", "perplexity", "dl_dlogits", "ce_h_plus_kl", "hessian_psd"):
        assert key in keys
    for r in rows:
        assert r.verdict in VERDICTS and r.threshold and r.seed in {"000", "001", "002", "003", "004"}
    assert _row(rows, "mlm_80_10_10").verdict == fd.NOT_APPLICABLE
    for key in ("dl_dlogits", "ce_h_plus_kl", "hessian_psd", "perplexity", "ce_equals_nll", "input_embedding_sum"):
        assert _row(rows, key).verdict == fd.HOLDS, key
    # σ(QKᵀ)/√d per layer is the capture's figure (mean over heads).
    cap = run(tiny_gpt2, encode(tiny_gpt2, TEXT).batch(), CaptureOptions())
    sigma = _row(rows, "qk_std_sqrt_d")
    expected = cap.attention.ratio_to_sqrt_d.mean(axis=1)
    assert [sigma.figures[f"layer {i}"] for i in range(tiny_gpt2.n_layers)] == pytest.approx(expected.tolist())
    lo, hi = fd.SIGMA_BAND
    assert sigma.verdict == (fd.HOLDS if np.all((expected >= lo) & (expected <= hi)) else fd.DOES_NOT_HOLD)
    # Spearman from scipy on the same counts.
    from scipy.stats import spearmanr

    from inspector.analyses.embeddings import token_counts
    counts = token_counts(tiny_gpt2, _TRAIN_TEXT * 3)
    norms = tiny_gpt2.model.get_input_embeddings().weight.detach().double().norm(dim=-1).numpy()
    seen = counts > 0
    assert _row(rows, "norm_frequency").figures["rho"] == pytest.approx(spearmanr(norms[seen], counts[seen])[0])
    json.dumps(to_dict(rows))
    back = [from_dict(fd.ClaimRow, d) for d in json.loads(json.dumps(to_dict(rows)))]
    assert results_equal(back, rows)


def test_gamma_fraction_moves_when_gamma_changes():
    model, tok = tiny_gpt2_model()
    lm = wrap(model, tok)
    before = _row(fd.claims_on_model(lm, TEXT), "gamma_band")
    assert before.figures["transformer.h.0.ln_1"] == 0.0  # default init: γ = 1
    assert before.verdict == fd.DOES_NOT_HOLD
    with torch.no_grad():
        model.transformer.h[0].ln_1.weight.fill_(0.3)
    after = _row(fd.claims_on_model(lm, TEXT), "gamma_band")
    assert after.figures["transformer.h.0.ln_1"] == 1.0
    assert after.figures["transformer.h.0.ln_2"] == 0.0
    assert after.figures["pooled"] > before.figures["pooled"]
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(0.25)
    assert _row(fd.claims_on_model(lm, TEXT), "gamma_band").verdict == fd.HOLDS


def test_claims_table_masked_and_encoder(tiny_bert_mlm):
    rows = fd.claims_on_model(tiny_bert_mlm, TEXT, corpus_text=_TRAIN_TEXT * 5)
    split = _row(rows, "mlm_80_10_10")
    assert split.verdict in (fd.HOLDS, fd.DOES_NOT_HOLD)
    assert split.figures["mask"] + split.figures["random"] + split.figures["unchanged"] == pytest.approx(1.0)
    assert split.figures["chosen_fraction"] == pytest.approx(0.15, abs=0.01)
    form = _row(rows, "mlm_loss_form")
    assert form.figures["rel_diff_mean_ce"] < 1e-4  # the real loss is the mean CE ...
    assert form.verdict == fd.DOES_NOT_HOLD  # ... not the article's sum of squares
    assert _row(rows, "perplexity").verdict == fd.HOLDS
    assert _row(rows, "input_embedding_sum").verdict == fd.HOLDS  # BERT: LayerNorm(token + segment + position)

    encoder = wrap(*tiny_bert_model(cls_name="BertModel"))
    enc_rows = fd.claims_on_model(encoder, TEXT)
    for key in ("mlm_80_10_10", "perplexity", "dl_dlogits", "hessian_psd", "ce_h_plus_kl", "tied_gradient"):
        assert _row(enc_rows, key).verdict == fd.NOT_APPLICABLE, key
    assert _row(enc_rows, "gamma_band").verdict in (fd.HOLDS, fd.DOES_NOT_HOLD)


def test_results_serialise():
    for res in (fd.random_qk_scaling(), fd.sigma_vs_dim(range(2, 10)), fd.softmax_scaling(),
                fd.softmax_temperature(2.0), fd.loss_race(steps=10), fd.gaussian_kl(n_samples=1000),
                fd.discrete_kl()):
        d = json.loads(json.dumps(to_dict(res)))
        assert results_equal(from_dict(type(res), d), res), type(res).__name__


def test_mlm_split_claim_counts_the_masking_of_masked_lm_loss_without_forward_passes(tiny_bert_mlm, monkeypatch):
    """The 80/10/10 claim needs only the seeded choice: the same counts as masked_lm_loss, no model call."""
    from inspector.analyses import loss

    text = "The quick brown fox jumps over the lazy dog. " * 12
    full = loss.masked_lm_loss(tiny_bert_mlm, text, seed=3)
    calls = []
    monkeypatch.setattr(tiny_bert_mlm.model, "forward", lambda *a, **k: calls.append(1))
    split = loss.masking_split(tiny_bert_mlm, text, seed=3)
    assert not calls
    assert (split.n_candidates, split.n_chosen, split.n_mask, split.n_random, split.n_unchanged) == (
        full.n_candidates, full.n_chosen, full.n_mask, full.n_random, full.n_unchanged)


# --------------------------------------------------------------------------- the split modules, the report section


def test_split_keeps_every_name_and_the_stored_type_name():
    from inspector.analyses import foundations_claims, foundations_experiments, foundations_identities

    assert fd.random_qk_scaling is foundations_experiments.random_qk_scaling
    assert fd.loss_identities is foundations_identities.loss_identities
    assert fd.claims_on_model is foundations_claims.claims_on_model
    for name in fd.__all__:
        assert hasattr(fd, name), name
    # Reports name a result's type "module.QualName": the claim rows keep the name stored reports use.
    assert f"{fd.ClaimRow.__module__}.{fd.ClaimRow.__qualname__}" == "inspector.analyses.foundations.ClaimRow"


def test_claims_share_the_prediction_and_the_masked_pass(tiny_gpt2, tiny_bert_mlm, monkeypatch):
    """One capture serves the causal gradient checks; one prediction both gradient checks; one masked pass both
    masked-LM claims: the figures are those of the stand-alone functions."""
    from inspector.analyses import foundations_claims as fc

    calls = {"prediction": 0, "masked": 0, "model_logits": 0}

    def counting(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(fc, "_prediction_of", counting("prediction", fc._prediction_of))
    monkeypatch.setattr(fc, "_masked_loss_parts", counting("masked", fc._masked_loss_parts))
    monkeypatch.setattr(fc, "_model_logits", counting("model_logits", fc._model_logits))
    rows = fd.claims_on_model(tiny_gpt2, TEXT)
    assert calls == {"prediction": 1, "masked": 0, "model_logits": 0}  # the capture's logits are read
    li = fd.loss_identities(tiny_gpt2, TEXT)  # its own forward pass: the same figures
    assert _row(rows, "dl_dlogits").figures == {"max_abs_diff": li.grad_max_abs_diff, "grad_sum": li.grad_sum,
                                                "grad_target": float(li.grad_top[0])}
    assert _row(rows, "ce_h_plus_kl").figures["kl_pq"] == li.kl_pq
    assert f"at position {li.position}" in _row(rows, "dl_dlogits").measured

    calls.update(prediction=0, masked=0, model_logits=0)
    rows = fd.claims_on_model(tiny_bert_mlm, TEXT)
    assert calls == {"prediction": 1, "masked": 1, "model_logits": 1}  # the masked input needs its own pass
    li = fd.loss_identities(tiny_bert_mlm, TEXT)
    assert _row(rows, "hessian_psd").figures["min_eigenvalue"] == li.hessian_min_eig
    form, ppl = _row(rows, "mlm_loss_form"), _row(rows, "perplexity")
    assert form.figures["model_loss"] == ppl.figures["model_loss"]
    assert ppl.figures["perplexity"] == pytest.approx(math.exp(form.figures["model_loss"]), rel=1e-12)


def _section_html(html: str) -> str:
    start = html.index('<section id="sec-foundations">')
    return html[start:html.index("</section>", start)]


def test_report_section_shows_the_claims_table(tiny_gpt2):
    from inspector import analysis as contract
    from inspector import report as R
    from inspector.analyses import foundations_claims

    rep = R.build_report(tiny_gpt2, TEXT, sections=("foundations",), strict=True,
                         settings={"foundations_corpus": "text"})
    assert list(rep.section("foundations").results) == ["claims"]
    rows = rep.result("foundations", "claims")
    assert all(type(r) is fd.ClaimRow for r in rows)
    assert results_equal(rows, fd.claims_on_model(tiny_gpt2, TEXT))

    # Independent figures: exp(mean next-token CE) by plain torch, and σ(QKᵀ)/√d from the capture.
    enc = encode(tiny_gpt2, TEXT)
    with torch.no_grad():
        logits = tiny_gpt2.model(input_ids=enc.input_ids).logits[0]
    ce = torch.nn.functional.cross_entropy(logits[:-1].double(), enc.input_ids[0, 1:])
    ppl_row = _row(rows, "perplexity")
    assert ppl_row.figures["geometric_mean_inverse_p"] == pytest.approx(math.exp(float(ce)), rel=1e-9)
    cap = run(tiny_gpt2, enc.batch(), CaptureOptions())
    ratio = cap.attention.ratio_to_sqrt_d.mean(axis=1)
    assert "σ(QKᵀ)/√d_head per layer: " + ", ".join(foundations_claims._fmt(float(v)) for v in ratio) in \
        _row(rows, "qk_std_sqrt_d").measured

    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    sentence = (f"{len(rows)} claims about transformers measured on this model and text: "
                + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".")
    blocks = R.contract_view("foundations", rep.section("foundations"))
    note, *metrics, table = blocks
    assert isinstance(note, contract.Note) and note.text == sentence
    assert [(m.label, m.value) for m in metrics] == [("claims", len(rows)), *counts.items()]
    assert isinstance(table, contract.Table)
    assert table.columns == ("claim", "measured on this model", "rule for the verdict", "verdict", "note")
    assert table.verdict_column == "verdict"
    assert table.rows == tuple((r.claim, r.measured, r.threshold, r.verdict, r.note) for r in rows)

    html = _section_html(R.to_html(rep))
    assert "<h2>Claims checked on this model</h2>" in html and sentence in html
    head = "".join(f"<th>{c}</th>" for c in table.columns)
    assert f"<thead><tr>{head}</tr></thead>" in html
    # each verdict cell coloured by its value, beside the measured figures
    assert html.count('<td style="background:#e3f4e8">holds</td>') == counts.get(fd.HOLDS, 0)
    assert html.count('<td style="background:#fbe4e4">does not hold</td>') == counts.get(fd.DOES_NOT_HOLD, 0)
    assert html.count('<td style="background:#f0f0f0;color:#666">not applicable</td>') == \
        counts.get(fd.NOT_APPLICABLE, 0)
    assert f"exp(model loss) = {foundations_claims._fmt(ppl_row.figures['perplexity'], 6)}" in html
    md = R.to_markdown(rep)
    block = md.split("## Claims checked on this model")[1].split("\n## ")[0]
    assert sentence in block and "| claim | measured on this model | rule for the verdict | verdict | note |" in block
    claims_table = block[block.index("| claim | measured on this model"):]
    assert claims_table.count("\n| ") == len(rows)  # one line per claim after the header (the separator starts "|-")
    assert f"| claims | {len(rows)} |" in block

    # The JSON report names the rows' type as before and loads back to the same rows, view and HTML.
    import json

    stored = json.loads(R.to_json(rep))["sections"]["foundations"]["results"]["claims"]
    assert stored["type"] == "list" and stored["item_type"] == "inspector.analyses.foundations.ClaimRow"
    back = R.report_from_json(R.to_json(rep))
    assert all(type(r) is fd.ClaimRow for r in back.result("foundations", "claims"))
    assert results_equal(back.result("foundations", "claims"), rows)
    assert R.contract_view("foundations", back.section("foundations")) == blocks
    assert _section_html(R.to_html(back)) == html


def test_report_setting_chooses_the_corpus(tiny_gpt2, tmp_path, monkeypatch):
    from inspector import analysis as contract
    from inspector import report as R
    from inspector.analyses import embeddings

    analysis = contract.get("foundations")
    assert isinstance(analysis, fd.FoundationsAnalysis) and analysis.own_page == "foundations"
    (f,) = contract.settings_fields(analysis)
    assert contract.settings_key(analysis, f) == "foundations_corpus" and f.default == "bundled"
    assert R.DEFAULT_SETTINGS["foundations_corpus"] == "bundled"
    with pytest.raises(InputError):
        analysis.settings_from({"corpus": "elsewhere"})

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(_TRAIN_TEXT * 3, encoding="utf-8")
    monkeypatch.setattr(embeddings, "DEFAULT_CORPUS", corpus)
    rows = R.build_report(tiny_gpt2, TEXT, sections=("foundations",), strict=True).result("foundations", "claims")
    assert results_equal(rows, fd.claims_on_model(tiny_gpt2, TEXT, corpus_text=_TRAIN_TEXT * 3))
    assert "seen in the corpus" in _row(rows, "norm_frequency").threshold
    for setting in ("text", None):
        rows = R.build_report(tiny_gpt2, TEXT, sections=("foundations",), strict=True,
                              settings={"foundations_corpus": setting}).result("foundations", "claims")
        assert "seen in the text" in _row(rows, "norm_frequency").threshold
