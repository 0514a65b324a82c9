"""Attention-logit analyses: report fields, the √d_head ratio, scaling what-if and patterns.

Expected values are recomputed here from q and k taken out of the model's own projection
weights (GPT-2: c_attn on ln_1 of the hidden state entering the block), in float64 numpy.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import tiny_bert_model, tiny_gpt2_model
from inspector.analyses import attention as A
from inspector.analyses._common import from_dict, results_equal, to_dict
from inspector.errors import InputError
from inspector.inputs import encode, encode_batch
from inspector.models import wrap

TEXT = "The quick brown fox jumps over the lazy dog. Attention compares queries with keys."


@pytest.fixture(scope="module")
def gpt2():
    model, tok = tiny_gpt2_model(seed=5, init_range=0.3)
    return wrap(model, tok)


@pytest.fixture(scope="module")
def bert():
    model, tok = tiny_bert_model(seed=5, init_range=0.3, cls_name="BertForMaskedLM")
    return wrap(model, tok)


def _gpt2_scores(lm, input_ids, layer) -> np.ndarray:
    """Unscaled q·k (H, T, T) of one layer for one unpadded text, by hand."""
    model = lm.model
    with torch.no_grad():
        hs = model(input_ids, output_hidden_states=True, use_cache=False).hidden_states
        block = model.transformer.h[layer]
        x = block.ln_1(hs[layer])[0]  # (T, D)
        q, k, _ = block.attn.c_attn(x).split(x.shape[-1], dim=-1)
    T, D = q.shape
    H = lm.n_heads
    q = q.reshape(T, H, D // H).permute(1, 0, 2).double().numpy()
    k = k.reshape(T, H, D // H).permute(1, 0, 2).double().numpy()
    return q @ np.swapaxes(k, -1, -2)


def _row_stats_by_hand(scores: np.ndarray, factor: float):
    """Mean over query rows of softmax entropy and max-probability under causal masking, per head."""
    H, T, _ = scores.shape
    ent = np.zeros(H)
    maxp = np.zeros(H)
    for h in range(H):
        for i in range(T):
            z = scores[h, i, :i + 1] * factor
            p = np.exp(z - z.max())
            p /= p.sum()
            ent[h] += -(p * np.log(p)).sum() / T
            maxp[h] += p.max() / T
    return ent, maxp


# --------------------------------------------------------------------------- the report


def test_report_fields_and_shapes(gpt2):
    enc = encode(gpt2, TEXT)
    rep = A.attention_logit_report(gpt2, enc, keep_layers=(1,))
    L, H, T = gpt2.n_layers, gpt2.n_heads, enc.n_tokens
    for name in ("count", "mean", "std", "min", "max", "mean_scaled", "std_scaled", "max_scaled", "ratio",
                 "entropy", "entropy_fraction", "max_prob"):
        assert getattr(rep, name).shape == (L, H), name
    assert rep.scaling.shape == (L,)
    assert rep.d_head == gpt2.d_head and rep.sqrt_d_head == pytest.approx(math.sqrt(gpt2.d_head))
    assert rep.n_items == 1 and rep.n_tokens.tolist() == [T] and rep.tokens == enc.tokens
    np.testing.assert_array_equal(rep.count, T * (T + 1) // 2)  # causal pairs
    np.testing.assert_allclose(rep.ratio, rep.std / math.sqrt(gpt2.d_head), rtol=1e-12)
    np.testing.assert_allclose(rep.std_scaled, rep.std * rep.scaling[:, None], rtol=1e-12)
    np.testing.assert_allclose(rep.scaling, 1 / math.sqrt(gpt2.d_head))
    assert np.all((rep.entropy_fraction >= 0) & (rep.entropy_fraction <= 1))
    assert np.all((rep.max_prob > 0) & (rep.max_prob <= 1))
    assert rep.fidelity_quantity == "logits"
    assert rep.fidelity_max_abs_diff == 0.0  # fp32: the instrumented forward is the plain one
    assert rep.kept_layers.tolist() == [1]
    assert rep.kept_probs.shape == (1, 1, H, T, T) and rep.kept_valid.shape == (1, T, T)
    assert rep.dtype == "float32" and rep.family == "gpt2"

    # The std of one head against q·k by hand.
    scores = _gpt2_scores(gpt2, enc.input_ids, 1)
    tril = np.tril(np.ones((T, T), dtype=bool))
    expected_std = np.array([scores[h][tril].std() for h in range(H)])
    np.testing.assert_allclose(rep.std[1], expected_std, rtol=1e-4)
    ent, maxp = _row_stats_by_hand(scores, 1 / math.sqrt(gpt2.d_head))
    np.testing.assert_allclose(rep.entropy[1], ent, rtol=1e-4)
    np.testing.assert_allclose(rep.max_prob[1], maxp, rtol=1e-4)


def test_report_on_padded_batch_and_bert(bert):
    batch = encode_batch(bert, ["the cat sat on the mat.", "a dog.", "queries meet keys in every head."])
    rep = A.attention_logit_report(bert, batch, keep_layers=(0, 1))
    real = batch["attention_mask"].sum(1).numpy()
    assert rep.n_items == 3 and rep.n_tokens.tolist() == real.tolist()
    np.testing.assert_array_equal(rep.count, (real ** 2).sum())  # full (unmasked) attention over real tokens
    assert rep.fidelity_max_abs_diff == 0.0
    assert rep.tokens[0] == "[CLS]" and len(rep.tokens) == real[0]
    pat = rep.pattern(1, 2, item=1)
    assert pat.probs.shape == (real[1], real[1])
    np.testing.assert_allclose(pat.probs.sum(-1), 1.0, atol=1e-5)


def test_fidelity_for_encoder_only_model():
    from transformers import BertModel

    model, tok = tiny_bert_model(seed=5, init_range=0.3, cls_name="BertModel")
    assert type(model) is BertModel
    lm = wrap(model, tok)
    rep = A.attention_logit_report(lm, encode(lm, "hello world, once more."))
    assert rep.fidelity_quantity == "last hidden state"
    assert rep.fidelity_max_abs_diff == 0.0


# --------------------------------------------------------------------------- scaling what-if


def test_what_if_at_temperature_one_equals_captured(gpt2):
    enc = encode(gpt2, TEXT)
    rep = A.attention_logit_report(gpt2, enc)
    temps = (0.5, 1.0, 2.0, 4.0)
    for layer in range(gpt2.n_layers):
        w = A.scaling_what_if(gpt2, enc, layer, temperatures=temps)
        assert w.entropy.shape == (4, gpt2.n_heads) and w.entropy_unscaled.shape == (gpt2.n_heads,)
        np.testing.assert_allclose(w.entropy[1], rep.entropy[layer], rtol=1e-5)
        np.testing.assert_allclose(w.max_prob[1], rep.max_prob[layer], rtol=1e-5)
        np.testing.assert_allclose(w.entropy_fraction[1], rep.entropy_fraction[layer], rtol=1e-5)
        np.testing.assert_allclose(w.entropy_model, rep.entropy[layer], rtol=1e-5)
        np.testing.assert_allclose(w.logit_std_unscaled, rep.std[layer], rtol=1e-5)
        np.testing.assert_allclose(w.logit_std_model, rep.std_scaled[layer], rtol=1e-5)
        np.testing.assert_allclose(w.logit_std, rep.std_scaled[layer][None] / np.array(temps)[:, None], rtol=1e-5)
        # Softmax entropy rises and saturation falls with the temperature.
        assert np.all(np.diff(w.entropy, axis=0) >= -1e-12)
        assert np.all(np.diff(w.max_prob, axis=0) <= 1e-12)


def test_what_if_no_scaling_equals_softmax_of_unscaled_scores_by_hand(gpt2):
    enc = encode(gpt2, TEXT)
    layer = 1
    w = A.scaling_what_if(gpt2, enc, layer, temperatures=(2.0,))
    scores = _gpt2_scores(gpt2, enc.input_ids, layer)
    ent, maxp = _row_stats_by_hand(scores, 1.0)
    np.testing.assert_allclose(w.entropy_unscaled, ent, rtol=1e-4)
    np.testing.assert_allclose(w.max_prob_unscaled, maxp, rtol=1e-4)
    ent2, maxp2 = _row_stats_by_hand(scores, 1 / (2.0 * math.sqrt(gpt2.d_head)))
    np.testing.assert_allclose(w.entropy[0], ent2, rtol=1e-4)
    np.testing.assert_allclose(w.max_prob[0], maxp2, rtol=1e-4)
    # Without 1/√d the logits are √d times wider: the softmax is more saturated.
    assert np.all(w.max_prob_unscaled >= w.max_prob_model - 1e-12)
    assert w.model_scaling == pytest.approx(1 / math.sqrt(gpt2.d_head))


# --------------------------------------------------------------------------- patterns


def test_pattern_rows_sum_to_one_over_valid_keys(gpt2):
    enc = encode(gpt2, TEXT)
    T = enc.n_tokens
    pat = A.attention_pattern(gpt2, enc, layer=1, head=3)
    assert pat.probs.shape == (T, T) and pat.valid.shape == (T, T) and pat.tokens == enc.tokens
    np.testing.assert_array_equal(pat.valid, np.tril(np.ones((T, T), dtype=bool)))
    np.testing.assert_allclose(pat.probs.sum(-1), 1.0, atol=1e-5)
    assert np.all(pat.probs[~pat.valid] == 0)
    np.testing.assert_array_equal(pat.n_keys, np.arange(1, T + 1))
    # Against softmax(q·k/√d) by hand.
    scores = _gpt2_scores(gpt2, enc.input_ids, 1)[3] / math.sqrt(gpt2.d_head)
    expected = np.zeros((T, T))
    for i in range(T):
        z = scores[i, :i + 1]
        e = np.exp(z - z.max())
        expected[i, :i + 1] = e / e.sum()
    np.testing.assert_allclose(pat.probs, expected, atol=1e-5)
    np.testing.assert_allclose(pat.entropy, -(expected * np.log(np.where(expected > 0, expected, 1.0))).sum(-1),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pat.max_prob, expected.max(-1), rtol=1e-5)
    # The same pattern comes out of a report that kept the layer.
    rep = A.attention_logit_report(gpt2, enc, keep_layers=(1,))
    assert results_equal(rep.pattern(1, 3), pat)


def test_pattern_of_padded_item_drops_padding(bert):
    batch = encode_batch(bert, ["a much longer sentence than the other one.", "short."])
    n_real = int(batch["attention_mask"][1].sum())
    pat = A.attention_pattern(bert, batch, layer=0, head=1, item=1)
    assert pat.probs.shape == (n_real, n_real) and pat.valid.all()
    np.testing.assert_allclose(pat.probs.sum(-1), 1.0, atol=1e-5)
    assert pat.tokens[0] == "[CLS]" and pat.tokens[-1] == "[SEP]"


# --------------------------------------------------------------------------- bad input and serialisation


def test_bad_input(gpt2):
    enc = encode(gpt2, TEXT)
    with pytest.raises(InputError):
        A.attention_pattern(gpt2, enc, layer=gpt2.n_layers, head=0)
    with pytest.raises(InputError):
        A.attention_pattern(gpt2, enc, layer=0, head=-1)
    with pytest.raises(InputError):
        A.attention_logit_report(gpt2, enc, keep_layers=(7,))
    for temps in ((0.0,), (-1.0, 1.0), (), (float("inf"),)):
        with pytest.raises(InputError):
            A.scaling_what_if(gpt2, enc, 0, temperatures=temps)
    with pytest.raises(InputError):
        A.scaling_what_if(gpt2, enc, 2)
    rep = A.attention_logit_report(gpt2, enc)
    with pytest.raises(InputError, match="not kept"):
        rep.pattern(0, 0)
    with pytest.raises(InputError):
        A.attention_logit_report(gpt2, "raw text is not encoded")


def test_results_round_trip_through_json(gpt2):
    enc = encode(gpt2, TEXT)
    results = [
        A.attention_logit_report(gpt2, enc, keep_layers=(0,)),
        A.attention_logit_report(gpt2, enc),
        A.attention_pattern(gpt2, enc, 0, 1),
        A.scaling_what_if(gpt2, enc, 0),
    ]
    for res in results:
        back = from_dict(type(res), json.loads(json.dumps(to_dict(res))))
        assert results_equal(res, back), type(res).__name__


def test_report_inside_an_outer_capture_block_leaves_it_untouched(gpt2):
    from inspector import capture

    enc = encode(gpt2, TEXT)
    alone = A.attention_logit_report(gpt2, enc)
    with capture.capture(gpt2) as outer:
        nested = A.attention_logit_report(gpt2, enc)
        assert capture.is_capturing()
    assert not capture.is_capturing()
    assert outer.acc == {}  # neither the instrumented nor the plain forward reached the outer collector
    assert nested.fidelity_max_abs_diff == 0.0
    assert results_equal(alone, nested)


# --------------------------------------------------------------------------- the report section (contract)


def _std_over_causal_pairs(scores: np.ndarray) -> np.ndarray:
    """(H,) population σ of q·k over the (query, key) pairs a causal model attends to."""
    T = scores.shape[-1]
    keep = np.tril(np.ones((T, T), dtype=bool))
    return np.array([s[keep].std() for s in scores])


def _entropy_fraction_by_hand(scores: np.ndarray, factor: float) -> np.ndarray:
    """(H,) mean over causal query rows with >= 2 keys of entropy / log(n keys)."""
    H, T, _ = scores.shape
    out = np.zeros(H)
    for h in range(H):
        for i in range(1, T):
            z = scores[h, i, :i + 1] * factor
            p = np.exp(z - z.max())
            p /= p.sum()
            out[h] += -(p * np.log(p)).sum() / math.log(i + 1) / (T - 1)
    return out


def _section_html(html: str, name: str) -> str:
    start = html.index(f'<section id="sec-{name}">')
    return html[start:html.index("</section>", start)]


def test_report_section_shows_the_figures_computed_by_hand(gpt2):
    from inspector import analysis as contract
    from inspector import report as R

    rep = R.build_report(gpt2, TEXT, sections=("attention",), strict=True)
    sec = rep.section("attention")
    assert sec.available and list(sec.results) == ["logits", "pattern", "what_if"]
    enc = encode(gpt2, TEXT)
    L, H, T, d = gpt2.n_layers, gpt2.n_heads, enc.n_tokens, gpt2.d_head
    scores = [_gpt2_scores(gpt2, enc.input_ids, layer) for layer in range(L)]  # (H, T, T) each, by hand
    std = np.array([_std_over_causal_pairs(s) for s in scores])  # (L, H) unscaled
    scaled = std / math.sqrt(d)

    blocks = R.contract_view("attention", sec)
    tables = {b.title: b for b in blocks if isinstance(b, contract.Table)}
    per_layer = tables["Attention logits per layer"]
    assert per_layer.columns == ("layer", "σ(q·k)", "σ min (head)", "σ max (head)", "σ scaled", "σ/√d_head",
                                 "entropy (nats)", "entropy / log n", "mean max prob", "max scaled logit")
    assert [r[0] for r in per_layer.rows] == list(range(L))
    for layer, row in enumerate(per_layer.rows):
        ent, maxp = _row_stats_by_hand(scores[layer], 1 / math.sqrt(d))
        fraction = _entropy_fraction_by_hand(scores[layer], 1 / math.sqrt(d))
        max_scaled = max(s[np.tril(np.ones((T, T), dtype=bool))].max() for s in scores[layer]) / math.sqrt(d)
        np.testing.assert_allclose(row[1:], [std[layer].mean(), std[layer].min(), std[layer].max(),
                                             scaled[layer].mean(), scaled[layer].mean(), ent.mean(),
                                             fraction.mean(), maxp.mean(), max_scaled], rtol=1e-4)
    # the what-if table: "no scaling" is the softmax of q·k itself, by hand
    what_if = tables[""]
    assert what_if.columns == ("softmax input", "σ of logits", "entropy (nats)", "entropy / log n", "mean max prob")
    labels = [r[0] for r in what_if.rows]
    assert labels == ["model (× 0.3536)", "no scaling (× 1)", "temperature 0.25", "temperature 0.5",
                      "temperature 1", "temperature 2", "temperature 4"]
    ent_u, maxp_u = _row_stats_by_hand(scores[L - 1], 1.0)
    no_scaling = what_if.rows[1]
    np.testing.assert_allclose([no_scaling[1], no_scaling[2], no_scaling[4]],
                               [std[L - 1].mean(), ent_u.mean(), maxp_u.mean()], rtol=1e-4)
    # the charts: titles, one line at √d scaling with its reference at 1, probabilities on [0, 1]
    charts = {b.title: b for b in blocks if isinstance(b, contract.Chart)}
    assert list(charts) == ["σ of scaled logits (what the softmax sees)", "logit scale per layer (mean over heads)",
                            "softmax entropy / log(n keys) (1 = uniform)",
                            "mean max attention probability (1 = saturated)", f"attention probabilities L{L - 1} H0"]
    heat = charts["σ of scaled logits (what the softmax sees)"]
    np.testing.assert_allclose(heat.z, scaled, rtol=1e-4)
    assert heat.col_labels == tuple(f"h{j}" for j in range(H)) and per_layer.note.startswith(f"Means over the {H} heads")
    line = charts["logit scale per layer (mean over heads)"]
    assert line.reference == 1.0 and [s[0] for s in line.series] == ["σ scaled = σ(q·k)/√d_head"]
    np.testing.assert_allclose(line.series[0][2], scaled.mean(axis=1), rtol=1e-4)
    for title in ("softmax entropy / log(n keys) (1 = uniform)", "mean max attention probability (1 = saturated)"):
        assert (charts[title].zmin, charts[title].zmax) == (0.0, 1.0)
    pattern = np.asarray(charts[f"attention probabilities L{L - 1} H0"].z)
    by_hand = np.full((T, T), np.nan)
    for i in range(T):
        z = scores[L - 1][0, i, :i + 1] / math.sqrt(d)
        by_hand[i, :i + 1] = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(pattern, by_hand, atol=1e-5)  # NaN above the diagonal: keys not attended
    assert any(isinstance(b, contract.Heading) and b.text == f"Attention pattern, layer {L - 1}, head 0"
               for b in blocks)

    # the HTML report carries the same figures (as the writers print numbers) and the sentence
    html = _section_html(R.to_html(rep), "attention")
    assert f"d_head = {d}, √d_head = {math.sqrt(d):.4g}" in html
    assert f"× {R._fmt(1 / math.sqrt(d))} (“scaled”)" in html and "max |Δ logits| = 0." in html
    for layer in range(L):
        assert f'<td class="num">{R._fmt(float(scaled[layer].mean()))}</td>' in html
        assert f'<td class="num">{R._fmt(float(std[layer].max()))}</td>' in html
    assert f'<td class="num">{R._fmt(float(ent_u.mean()))}</td>' in html
    assert html.count("<svg") == 5 and f"What the 1/√d scaling buys (layer {L - 1})" in html
    # and the Markdown report its tables
    md = R.to_markdown(rep)
    assert f"| {L - 1} | {R._fmt(float(std[L - 1].mean()))} | {R._fmt(float(std[L - 1].min()))} |" in md
    assert f"| no scaling (× 1) | {R._fmt(float(std[L - 1].mean()))} | {R._fmt(float(ent_u.mean()))} |" in md
    # a report read back from JSON draws the same section
    back = R.report_from_json(R.to_json(rep))
    assert _section_html(R.to_html(back), "attention") == html


def test_report_section_settings(gpt2, bert):
    from inspector import report as R

    long_text = " ".join([TEXT] * 3)
    rep = R.build_report(gpt2, long_text, sections=("attention",), strict=True,
                         settings={"attention_pattern_max_tokens": 8, "attention_what_if_layer": -2,
                                   "attention_temperatures": [3.0]})
    sec = rep.section("attention")
    assert list(sec.results) == ["logits", "what_if"]  # the text is longer than the pattern's limit
    wi = sec.results["what_if"]
    assert wi.layer == 0 and wi.temperatures.tolist() == [3.0]
    assert "temperature 3" in R.to_markdown(rep)
    rep = R.build_report(bert, TEXT, sections=("attention",), strict=True,
                         settings={"attention_pattern_layer": 0, "attention_pattern_head": 2,
                                   "attention_what_if_layer": None})
    sec = rep.section("attention")
    assert list(sec.results) == ["logits", "pattern"]
    pat = sec.results["pattern"]
    assert (pat.layer, pat.head) == (0, 2) and pat.valid.all()  # BERT attends to every key
    html = _section_html(R.to_html(rep), "attention")
    assert "Attention pattern, layer 0, head 2" in html and "What the 1/√d scaling buys" not in html
    rep = R.build_report(gpt2, TEXT, sections=("attention",), settings={"attention_pattern_layer": 7})
    assert rep.section("attention").status == "failed" and "Layer 7 does not exist" in rep.section("attention").reason
    with pytest.raises(InputError):
        R.build_report(gpt2, TEXT, sections=("attention",), settings={"attention_pattern_head": -1})
    assert A.layer_index(-1, 4) == 3 and A.layer_index(None, 4) is None and A.layer_index(2, 4) == 2
