"""Sinks, massive activations, γ outliers and the distance profile against independent computations:
eager attention probabilities, hidden states from plain forwards (with hooks of the test's own), numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from family_models import reference_logits, reference_qk, reference_valid, tiny_family_model
from inspector import analysis as contract
from inspector.analyses import decoder_signals as ds
from inspector.inputs import encode
from inspector.models import wrap

TEXT = "The quick brown fox jumps over the lazy dog. Attention compares queries with keys."


@pytest.fixture(scope="module", params=["llama", "mistral", "gemma2"])
def trio(request):
    model, tok = tiny_family_model(request.param, seed=3)
    eager, _ = tiny_family_model(request.param, seed=4, attn="eager", tok=tok)
    eager.load_state_dict(model.state_dict())
    lm = wrap(model, tok)
    enc = encode(lm, TEXT)
    return request.param, lm, eager.eval(), enc, ds.decoder_signals(lm, enc, top_k=3, distance_max=5)


def test_sink_mass_equals_eager_probability_on_first_token(trio):
    _, lm, eager, enc, r = trio
    with torch.no_grad():
        att = eager(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_attentions=True,
                    use_cache=False).attentions
    ref = np.stack([a[0, :, :, 0].double().numpy().mean(axis=-1) for a in att])  # (L, H): rows' mass on key 0
    np.testing.assert_allclose(r.sink_mass, ref, rtol=1e-4, atol=1e-6)
    assert r.first_position == 0 and r.kv_groups == ((0, 1), (2, 3))


def test_uniform_baseline_by_hand(trio):
    _, lm, eager, enc, r = trio
    T = enc.input_ids.shape[1]
    for layer, w in enumerate(r.windows):
        keys = [min(i + 1, w) if w else i + 1 for i in range(T)]
        sees = [(w is None or i < w) for i in range(T)]
        np.testing.assert_allclose(r.uniform_sink[layer], np.mean([s / k for s, k in zip(sees, keys)]))


def test_massive_activations_match_hidden_states(trio):
    _, lm, eager, enc, r = trio
    mids = {}
    hooks = [layer.self_attn.register_forward_hook(lambda m, a, o, _i=i: mids.__setitem__(_i, o[0]))
             for i, layer in enumerate(eager.model.layers)]
    try:
        with torch.no_grad():
            hs = eager(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True,
                       use_cache=False).hidden_states
    finally:
        for h in hooks:
            h.remove()
    by_name = {a.name: a for a in r.massive}
    for i in range(lm.n_layers):
        x_in = hs[i][0].double().numpy()  # residual stream entering block i = input of input_layernorm
        checks = [(f"model.layers.{i}.input_layernorm", x_in)]
        if lm.family == "llama":  # pre-norm: the second norm sees residual + attention output
            checks.append((f"model.layers.{i}.post_attention_layernorm", x_in + mids[i][0].double().numpy()))
        for name, x in checks:
            a = by_name[name]
            flat = np.abs(x).ravel()
            order = np.argsort(-flat)[:3]
            np.testing.assert_allclose(np.abs(a.top_values), flat[order], rtol=1e-5)
            tok, dim = np.unravel_index(order[0], x.shape)
            assert (a.top_tokens[0], a.top_dims[0]) == (tok, dim)
            np.testing.assert_allclose(a.median_abs, np.median(flat), rtol=1e-5)
            np.testing.assert_allclose(a.ratio, flat[order[0]] / np.median(flat), rtol=1e-5)


def test_distance_profile_pooled_over_heads(trio):
    _, lm, eager, enc, r = trio
    batch = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
    T = enc.input_ids.shape[1]
    D = r.distance_max
    dist = np.minimum(np.abs(np.arange(T)[:, None] - np.arange(T)[None, :]), D)
    for layer, (q, k) in enumerate(reference_qk(eager, batch)):
        scores, _ = reference_logits(eager.config, q, k)
        valid = np.broadcast_to(reference_valid(eager.config, batch, layer), scores.shape)
        for d in range(D + 1):
            vals = scores[valid & (dist == d)[None, None]]
            assert r.distance_count[layer, d] == vals.size
            if vals.size:
                np.testing.assert_allclose(r.distance_std[layer, d], vals.std(), rtol=1e-4)
                np.testing.assert_allclose(r.distance_mean[layer, d], vals.mean(), rtol=1e-4, atol=1e-6)
            else:
                assert np.isnan(r.distance_std[layer, d])


def test_gamma_outliers_planted_dims_and_recurrence():
    model, tok = tiny_family_model("llama", seed=5)
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.input_layernorm.weight.copy_(1.0 + 0.01 * torch.randn(32))
            layer.input_layernorm.weight[7] = 9.0  # in every layer
            if i == 0:
                layer.input_layernorm.weight[3] = -4.0  # once
    lm = wrap(model, tok)
    r = ds.decoder_signals(lm, encode(lm, TEXT), z_threshold=6.0)
    by = {o.name: o for o in r.gamma_outliers}
    o0 = by["model.layers.0.input_layernorm"]
    assert list(o0.dims[:2]) == [7, 3]
    g = model.model.layers[0].input_layernorm.weight.detach().double().numpy()
    med = np.median(g)
    z = (g - med) / (1.4826 * np.median(np.abs(g - med)))
    np.testing.assert_allclose(o0.z, z[o0.dims], rtol=1e-12)
    assert set(o0.dims) == set(np.nonzero(np.abs(z) > 6.0)[0])
    assert (7, 2) in r.recurring_gamma_dims and all(d != 3 for d, _ in r.recurring_gamma_dims)


def test_gamma_uses_gemma_effective_scale():
    model, tok = tiny_family_model("gemma", seed=6)
    with torch.no_grad():
        model.model.norm.weight.zero_()
        model.model.norm.weight[5] = 3.0  # effective γ: 1 everywhere, 4 at dim 5
    lm = wrap(model, tok)
    r = ds.decoder_signals(lm, encode(lm, TEXT))
    o = next(o for o in r.gamma_outliers if o.name == "model.norm")
    assert o.median == 1.0 and list(o.dims) == [5] and o.gamma[0] == 4.0


def test_registered_and_view_blocks(trio):
    _, lm, _, enc, r = trio
    a = contract.get("decoder_signals")
    ok, _ = a.available(lm)
    assert ok
    blocks = a.view(r)
    texts = " ".join(getattr(b, "text", "") for b in blocks)
    assert "no position-embedding table" in texts and "Attention sinks" in texts
    heat = next(b for b in blocks if getattr(b, "kind", "") == "heatmap")
    np.testing.assert_allclose(np.array(heat.z), r.sink_mass)
    table = next(b for b in blocks if getattr(b, "title", "").startswith("Grouped-query"))
    assert table.rows[0][1] == "h0, h1" and table.rows[1][1] == "h2, h3"


def test_works_on_gpt2(tiny_gpt2):
    enc = encode(tiny_gpt2, TEXT)
    r = ds.decoder_signals(tiny_gpt2, enc)
    assert r.positions == "learned" and r.sink_mass.shape == (tiny_gpt2.n_layers, tiny_gpt2.n_heads)
    assert r.n_kv_heads == r.n_heads
    assert {a.name for a in r.massive} >= {"transformer.h.0.ln_1", "transformer.ln_f"}
