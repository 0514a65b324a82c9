"""Attribution (Captum over inputs_embeds): completeness, independent gradient checks, causal zeros, no side effects."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import tiny_bert_model, tiny_gpt2_model
from inspector.analyses._common import from_dict, results_equal, to_dict
from inspector.analyses.attribution import AttributionResult, attribute
from inspector.errors import InputError, NotAvailableError
from inspector.inputs import encode
from inspector.models import wrap

TEXT = "The quick brown fox jumps over the lazy dog. A model reads tokens and predicts the next one."


@pytest.fixture(scope="module")
def sharp_gpt2():
    """Init range 0.3: far from linear, so a small convergence delta means something (FACTS.md)."""
    return wrap(*tiny_gpt2_model(seed=1, init_range=0.3))


@pytest.fixture(scope="module")
def sharp_bert_mlm():
    return wrap(*tiny_bert_model(seed=1, cls_name="BertForMaskedLM", init_range=0.3))


def _full_model_logprob(lm, ids: torch.Tensor, read_at: int, target: int, embeds=None, **kw) -> torch.Tensor:
    """log P(target) from the model's own full forward (its LM head on every position), not attribution's path."""
    if embeds is None:
        embeds = lm.model.get_input_embeddings()(ids)
    out = lm.model(inputs_embeds=embeds, **kw)
    logits = out.logits if getattr(out, "logits", None) is not None else out.prediction_logits
    return torch.log_softmax(logits[0, read_at].double(), -1)[target]


# --------------------------------------------------------------------------- completeness


def test_ig_completeness_and_delta_shrinks_causal(sharp_gpt2):
    deltas = []
    for steps in (4, 16, 64):
        r = attribute(sharp_gpt2, TEXT, steps=steps)
        gap = r.scores.sum() - (r.f_input - r.f_baseline)
        # Captum's delta is exactly this gap (up to float32 rounding of the sum).
        assert abs(gap) <= abs(r.delta) + 1e-4
        assert abs(gap - r.delta) < 1e-4
        deltas.append(abs(r.delta))
    assert deltas[0] > deltas[1] > deltas[2]
    assert deltas[0] > 1e-3  # the model is not linear: the coarse run is visibly off
    assert deltas[2] / abs(r.f_input - r.f_baseline) < 1e-3


def test_ig_completeness_masked_lm(sharp_bert_mlm):
    coarse = attribute(sharp_bert_mlm, TEXT, steps=4, baseline="mask")
    fine = attribute(sharp_bert_mlm, TEXT, steps=64, baseline="mask")
    for r in (coarse, fine):
        assert abs(r.scores.sum() - (r.f_input - r.f_baseline)) <= abs(r.delta) + 1e-4
    assert abs(fine.delta) < abs(coarse.delta)
    assert fine.target_kind == "masked_token" and fine.tokens[fine.position].strip() == "[MASK]"
    # Special tokens and the masked position keep their embedding in the baseline: exactly 0.
    assert fine.scores[fine.position] == 0.0
    assert np.all(fine.scores[fine.special] == 0.0)


def test_sequence_loss_completeness(sharp_gpt2):
    r = attribute(sharp_gpt2, TEXT, target="sequence_loss", steps=32)
    assert r.target_kind == "sequence_loss" and r.position is None
    ids = encode(sharp_gpt2, TEXT).input_ids
    with torch.no_grad():
        model_loss = float(sharp_gpt2.model(input_ids=ids, labels=ids, use_cache=False).loss)
    assert r.f_input == pytest.approx(model_loss, abs=1e-4)
    assert abs(r.scores.sum() - (r.f_input - r.f_baseline)) <= abs(r.delta) + 1e-4


# --------------------------------------------------------------------------- independent gradient checks


@pytest.mark.parametrize("position", [5, None])
def test_input_x_gradient_matches_autograd(sharp_gpt2, position):
    lm = sharp_gpt2
    r = attribute(lm, TEXT, method="input_x_gradient", position=position)
    ids = encode(lm, TEXT).input_ids
    p = r.position
    with torch.enable_grad():
        e = lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)  # (1, T, D): the whole text
        logp = _full_model_logprob(lm, ids, p - 1, r.target_token_id, embeds=e, use_cache=False)
        (g,) = torch.autograd.grad(logp, e)
    expected = (g * e.detach()).double().sum(-1)[0].numpy()
    np.testing.assert_allclose(r.scores, expected, atol=1e-5)
    assert r.f_input == pytest.approx(float(logp.detach()), abs=1e-5)
    # Nothing after the predicting context influences the prediction.
    assert np.all(r.scores[p:] == 0.0)
    assert np.all(r.scores_l2[p:] == 0.0)


def test_input_x_gradient_masked_matches_autograd(sharp_bert_mlm):
    lm = sharp_bert_mlm
    r = attribute(lm, TEXT, method="input_x_gradient", position=4)
    enc = encode(lm, TEXT)
    ids = enc.input_ids.clone()
    original = int(ids[0, 4])
    ids[0, 4] = lm.tokenizer.mask_token_id
    assert r.target_token_id == original and r.target_source == "actual"
    with torch.enable_grad():
        e = lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logp = _full_model_logprob(lm, ids, 4, original, embeds=e, token_type_ids=enc.token_type_ids)
        (g,) = torch.autograd.grad(logp, e)
    np.testing.assert_allclose(r.scores, (g * e.detach()).double().sum(-1)[0].numpy(), atol=1e-5)
    assert r.f_input == pytest.approx(float(logp.detach()), abs=1e-5)


def test_saliency_is_gradient_norm(sharp_gpt2):
    r = attribute(sharp_gpt2, TEXT, method="saliency", position=8)
    ids = encode(sharp_gpt2, TEXT).input_ids
    with torch.enable_grad():
        e = sharp_gpt2.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(_full_model_logprob(sharp_gpt2, ids, 7, r.target_token_id, embeds=e,
                                                       use_cache=False), e)
    np.testing.assert_allclose(r.scores, g[0].double().norm(dim=-1).numpy(), atol=1e-5)
    assert not r.scores_signed and np.all(r.scores >= 0)
    assert r.f_baseline is None and r.delta is None and r.steps is None


def test_ig_causal_zero_after_target(sharp_gpt2):
    r = attribute(sharp_gpt2, TEXT, position=6, steps=16)
    assert np.all(r.scores[6:] == 0.0)
    assert np.any(r.scores[:6] != 0.0)
    assert all(t.index < 6 for t in r.top)


def test_ig_matches_layer_integrated_gradients(sharp_gpt2):
    """FACTS.md: IG on inputs_embeds equals LayerIG over the embedding layer (run here on a private model)."""
    from captum.attr import LayerIntegratedGradients

    model, tok = tiny_gpt2_model(seed=1, init_range=0.3)
    private = wrap(model, tok)
    r = attribute(sharp_gpt2, TEXT, position=10, steps=16, baseline="pad")
    ids = encode(private, TEXT).input_ids[:, :10]
    base_ids = torch.full_like(ids, tok.eos_token_id)

    def f(input_ids):
        logits = private.model(input_ids=input_ids, use_cache=False).logits
        return torch.log_softmax(logits[:, 9], -1)[:, r.target_token_id]

    with private.lock:
        lig = LayerIntegratedGradients(f, private.model.get_input_embeddings())
        attr = lig.attribute(ids, baselines=base_ids, n_steps=16, internal_batch_size=16)
    np.testing.assert_allclose(r.scores[:10], attr[0].double().sum(-1).numpy(), atol=1e-5)


# --------------------------------------------------------------------------- targets, baselines, options


def test_targets_and_baselines(tiny_gpt2, tiny_bert_mlm):
    n = encode(tiny_gpt2, TEXT).n_tokens
    after = attribute(tiny_gpt2, TEXT, position=n, steps=8)  # the token after the text
    assert after.target_source == "model's top prediction" and after.target_token_id is not None
    the = tiny_gpt2.tokenizer.encode(" the")
    assert len(the) == 1
    chosen = attribute(tiny_gpt2, TEXT, position=5, target_token=" the", steps=8)
    assert chosen.target_token_id == the[0] and chosen.target_source == "user"
    zero = attribute(tiny_gpt2, TEXT, baseline="zero", steps=8)
    assert zero.baseline == "zero" and "zero" in zero.baseline_description
    with pytest.raises(InputError):
        attribute(tiny_gpt2, TEXT, baseline="mask")  # GPT-2 has no mask token
    with pytest.raises(InputError):
        attribute(tiny_gpt2, TEXT, position=0)
    with pytest.raises(InputError):
        attribute(tiny_gpt2, TEXT, method="occlusion")
    with pytest.raises(InputError):
        attribute(tiny_gpt2, TEXT, target="masked_token")
    with pytest.raises(InputError):
        attribute(tiny_bert_mlm, TEXT, target="sequence_loss")
    with pytest.raises(InputError):
        attribute(tiny_bert_mlm, TEXT, position=0)  # [CLS]
    with pytest.raises(InputError):
        attribute(tiny_gpt2, TEXT, steps=1)


def test_encoder_only_not_available():
    lm = wrap(*tiny_bert_model(cls_name="BertModel"))
    with pytest.raises(NotAvailableError):
        attribute(lm, TEXT)


def test_pretraining_model_and_sentence_pair(tiny_bert):
    r = attribute(tiny_bert, "The cat sat on the mat.", text_pair="It was warm there.", steps=8)
    assert r.target_kind == "masked_token"
    assert r.tokens.count("[SEP]") == 2
    assert abs(r.scores.sum() - (r.f_input - r.f_baseline)) <= abs(r.delta) + 1e-4


def test_long_text_is_truncated_with_message(tiny_gpt2):
    long_text = " ".join([TEXT] * 20)
    r = attribute(tiny_gpt2, long_text, steps=4, target="sequence_loss")
    assert r.truncated and r.n_tokens == tiny_gpt2.max_positions
    assert "cut to" in r.message and str(tiny_gpt2.max_positions) in r.message
    assert r.scores.shape == (r.n_tokens,) and len(r.tokens) == r.n_tokens


def test_internal_batch_size_does_not_change_result(tiny_gpt2):
    a = attribute(tiny_gpt2, TEXT, steps=12, internal_batch_size=1)
    b = attribute(tiny_gpt2, TEXT, steps=12, internal_batch_size=12)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


# --------------------------------------------------------------------------- no side effects, serialisation


def test_shared_model_untouched(tiny_gpt2):
    model = tiny_gpt2.model
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def hooks():  # transformers may install its own permanent output-capturing hooks: compare, don't expect none
        return [(name, tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
                for name, m in model.named_modules()]

    hooks_before = hooks()
    for method in ("integrated_gradients", "input_x_gradient", "saliency"):
        attribute(tiny_gpt2, TEXT, method=method, steps=8)
    assert not model.training
    for n, p in model.named_parameters():
        assert p.requires_grad == flags[n]
        assert p.grad is None
        assert torch.equal(p, before[n])
    assert hooks() == hooks_before


def test_result_serialises(tiny_bert_mlm):
    r = attribute(tiny_bert_mlm, TEXT, steps=8, top_k=5)
    assert len(r.top) == 5
    assert [abs(t.score) for t in r.top] == sorted((abs(t.score) for t in r.top), reverse=True)
    d = json.loads(json.dumps(to_dict(r)))
    back = from_dict(AttributionResult, d)
    assert results_equal(back, r)
    assert r.relative_delta is not None and r.relative_delta >= 0


def test_two_threads_on_one_shared_model(tiny_gpt2):
    """No hooks on the shared model: concurrent attributions equal sequential ones."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [dict(position=p, steps=8) for p in (3, 7, 11, 15)] * 2
    expected = [attribute(tiny_gpt2, TEXT, **kw).scores for kw in jobs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(lambda kw: attribute(tiny_gpt2, TEXT, **kw).scores, jobs))
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a, b, atol=1e-6)


# --------------------------------------------------------------------------- the report section (contract)


def _section_html(html: str, name: str) -> str:
    start = html.index(f'<section id="sec-{name}">')
    return html[start:html.index("</section>", start)]


def _blocks(rep):
    from inspector import report as R

    return R.contract_view("attribution", rep.section("attribution"))


def test_report_section_shows_gradients_computed_by_hand(sharp_gpt2):
    from inspector import analysis as contract
    from inspector import report as R
    from inspector.tokens import visible

    lm = sharp_gpt2
    rep = R.build_report(lm, TEXT, sections=("attribution",), strict=True,
                         settings={"attribution_method": "input_x_gradient", "attribution_position": 9})
    assert list(rep.section("attribution").results) == ["attribution"]
    enc = encode(lm, TEXT)
    ids, T = enc.input_ids, enc.n_tokens
    target = int(ids[0, 9])
    with torch.enable_grad():
        e = lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logp = _full_model_logprob(lm, ids, 8, target, embeds=e, use_cache=False)
        (g,) = torch.autograd.grad(logp, e)
    logp = logp.detach()
    expected = (g * e.detach()).double().sum(-1)[0].numpy()  # (T,) gradient × input, by hand

    blocks = _blocks(rep)
    metrics = {b.label: b.value for b in blocks if isinstance(b, contract.Metric)}
    assert list(metrics) == ["method", "target", "units", "f(input)"]  # no baseline without IG
    assert metrics["method"] == "input_x_gradient" and "as token 9 (actual)" in metrics["target"]
    assert metrics["f(input)"] == pytest.approx(float(logp), abs=1e-5)
    (bar,) = [b for b in blocks if isinstance(b, contract.Chart)]
    assert bar.kind == "bar" and bar.title == "attribution per input token" and bar.y_title == "score"
    assert bar.series[0][1] == tuple(visible(t) for t in enc.tokens)
    np.testing.assert_allclose(bar.series[0][2], expected, atol=1e-5)
    assert bar.width == max(440, min(1100, 120 + 14 * T))
    (coloured,) = [b for b in blocks if isinstance(b, contract.ColouredTokens)]
    assert coloured.signed and coloured.caption.startswith("Tokens coloured by score (red raises the target")
    np.testing.assert_allclose(coloured.values, expected, atol=1e-5)
    (top,) = [b for b in blocks if isinstance(b, contract.Table)]
    assert top.columns == ("rank", "position", "token", "score")
    order = sorted(range(9), key=lambda i: -abs(expected[i]))[:10]  # tokens 0..8 predict token 9
    assert [r[1] for r in top.rows] == order and [r[0] for r in top.rows] == list(range(1, len(order) + 1))
    np.testing.assert_allclose([r[3] for r in top.rows], expected[order], atol=1e-5)

    html = _section_html(R.to_html(rep), "attribution")
    assert f"<tr><td>f(input)</td><td>{R._fmt(float(logp))}</td></tr>" in html
    assert f'<tr><td class="num">1</td><td class="num">{order[0]}</td>' in html  # rank 1: the largest |score|
    assert f'<td class="num">{R._fmt(float(expected[order[0]]))}</td>' in html
    assert "Tokens 9.. come after the predicting context" in html and html.count("<svg") == 1
    md = R.to_markdown(rep)
    assert f"| 1 | {order[0]} | " in md and f"| f(input) | {R._fmt(float(logp))} |" in md
    back = R.report_from_json(R.to_json(rep))
    assert _section_html(R.to_html(back), "attribution") == html


def test_report_section_integrated_gradients_metrics_add_up(sharp_gpt2):
    from inspector import analysis as contract
    from inspector import report as R

    rep = R.build_report(sharp_gpt2, TEXT, sections=("attribution",), strict=True, settings={"attribution_steps": 16})
    blocks = _blocks(rep)
    m = {b.label: b.value for b in blocks if isinstance(b, contract.Metric)}
    assert list(m) == ["method", "target", "units", "f(input)", "f(baseline)", "baseline", "convergence delta",
                       "|delta| / |f(input) − f(baseline)|", "steps"]
    (bar,) = [b for b in blocks if isinstance(b, contract.Chart)]
    total = float(np.sum(bar.series[0][2]))
    # completeness: Σ scores = f(input) − f(baseline) + delta, from the figures the view shows
    assert total == pytest.approx(m["f(input)"] - m["f(baseline)"] + m["convergence delta"], abs=1e-4)
    assert m["|delta| / |f(input) − f(baseline)|"] == pytest.approx(
        abs(m["convergence delta"]) / abs(m["f(input)"] - m["f(baseline)"]))
    assert m["steps"] == 16 and m["baseline"].startswith("'<|endoftext|>' embedding")
    html = _section_html(R.to_html(rep), "attribution")
    assert f"<tr><td>convergence delta</td><td>{R._fmt(m['convergence delta'])}</td></tr>" in html


def test_report_section_saliency_on_masked_lm_and_max_tokens(sharp_bert_mlm, sharp_gpt2):
    from inspector import analysis as contract
    from inspector import report as R

    lm = sharp_bert_mlm
    rep = R.build_report(lm, TEXT, sections=("attribution",), strict=True,
                         settings={"attribution_method": "saliency", "attribution_position": 4})
    enc = encode(lm, TEXT)
    ids = enc.input_ids.clone()
    original = int(ids[0, 4])
    ids[0, 4] = lm.tokenizer.mask_token_id
    with torch.enable_grad():
        e = lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(_full_model_logprob(lm, ids, 4, original, embeds=e,
                                                       token_type_ids=enc.token_type_ids), e)
    norms = g[0].double().norm(dim=-1).numpy()
    blocks = _blocks(rep)
    (coloured,) = [b for b in blocks if isinstance(b, contract.ColouredTokens)]
    assert not coloured.signed and coloured.caption == "Tokens coloured by gradient norm:"
    np.testing.assert_allclose(coloured.values, norms, atol=1e-5)
    assert coloured.special == tuple(enc.special) and coloured.tokens[4].strip() == "[MASK]"
    html = _section_html(R.to_html(rep), "attribution")
    assert "at masked position 4" in html and "f(baseline)" not in html
    # the report's max_tokens cuts what is attributed, as for every section
    rep = R.build_report(sharp_gpt2, " ".join([TEXT] * 3), sections=("attribution",), strict=True,
                         settings={"max_tokens": 50, "attribution_steps": 4})
    a = rep.section("attribution").results["attribution"]
    assert a.n_tokens == 50 and len(a.scores) == 50
    (bar,) = [b for b in _blocks(rep) if isinstance(b, contract.Chart)]
    assert len(bar.series[0][2]) == 50 and bar.width == 120 + 14 * 50


def test_report_section_settings_are_checked_before_work(sharp_gpt2):
    from inspector import report as R

    for bad in ({"attribution_method": "shap"}, {"attribution_steps": 1}, {"attribution_baseline": "noise"}):
        with pytest.raises(InputError):
            R.build_report(sharp_gpt2, TEXT, sections=("attribution",), settings=bad)
    encoder = wrap(*tiny_bert_model(cls_name="BertModel"))
    rep = R.build_report(encoder, TEXT, sections=("attribution",), strict=True)
    sec = rep.section("attribution")
    assert sec.status == "unavailable" and sec.reason.startswith("Attribution needs a language-model head")
