"""LayerNorm γ/β statistics and activations, checked against direct numpy/torch computations."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import tiny_gpt2_model
from inspector.analyses import layernorm as L
from inspector.analyses._common import from_dict, results_equal, to_dict
from inspector.errors import InputError
from inspector.models import wrap

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def spread_gpt2():
    """Tiny GPT-2 whose γ/β are spread out (default init is all ones / zeros: nothing to count)."""
    model, tok = tiny_gpt2_model(seed=1)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.8)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.08)
    return wrap(model, tok)


def _hooks(model: torch.nn.Module) -> dict:
    """Every forward / pre-forward hook on every module, by module path."""
    return {name: (list(m._forward_hooks.values()), list(m._forward_pre_hooks.values()))
            for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks}


def _warm(lm) -> dict:
    """transformers installs its own permanent output-capturing hooks on the first forward (on blocks and
    attention, never on norms); run one plain forward first, then snapshot the hooks."""
    with torch.no_grad():
        lm.model(torch.tensor([[1, 2, 3]]), output_hidden_states=True)
    return _hooks(lm.model)


def _no_hooks_left(lm, before: dict) -> bool:
    norms_clean = all(not m._forward_hooks and not m._forward_pre_hooks for _, m in L.find_norm_layers(lm.model))
    return norms_clean and _hooks(lm.model) == before


# --------------------------------------------------------------------------- layer discovery


def test_gpt2_norm_layer_names(tiny_gpt2):
    rep = L.layernorm_stats(tiny_gpt2)
    n = tiny_gpt2.n_layers
    expected = [f"transformer.h.{i}.ln_{j}" for i in range(n) for j in (1, 2)] + ["transformer.ln_f"]
    assert rep.names == expected
    assert len(rep.layers) == 2 * n + 1
    assert [l.role for l in rep.layers] == ["ln_1", "ln_2"] * n + ["ln_f"]
    assert [l.block for l in rep.layers] == [i for i in range(n) for _ in (1, 2)] + [None]
    assert all(l.kind == "layernorm" and l.size == tiny_gpt2.d_model for l in rep.layers)


def test_bert_norm_layer_names(tiny_bert):
    rep = L.layernorm_stats(tiny_bert)
    expected = ["bert.embeddings.LayerNorm"]
    for i in range(tiny_bert.n_layers):
        expected += [f"bert.encoder.layer.{i}.attention.output.LayerNorm", f"bert.encoder.layer.{i}.output.LayerNorm"]
    expected.append("cls.predictions.transform.LayerNorm")
    assert rep.names == expected
    assert [l.role for l in rep.layers] == (["embeddings"] + ["attention-output", "ffn-output"] * tiny_bert.n_layers
                                            + ["mlm-head"])


def test_rmsnorm_and_gemma_offset_detected():
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    class CustomNorm(torch.nn.Module):  # RMS-style, neither LayerNorm nor a transformers class
        def __init__(self, d):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.linspace(0.1, 0.5, d))
            self.variance_epsilon = 1e-6

        def forward(self, x):
            return self.weight * x / x.pow(2).mean(-1, keepdim=True).add(self.variance_epsilon).sqrt()

    model = torch.nn.ModuleDict({
        "llama": LlamaRMSNorm(8), "gemma": GemmaRMSNorm(8), "custom": CustomNorm(8),
        "plain": torch.nn.LayerNorm(8, elementwise_affine=False),  # no learned gain: not reported
        "proj": torch.nn.Linear(8, 8),
    })
    with torch.no_grad():
        model["gemma"].weight.fill_(-0.7)
    rep = L.layernorm_stats(SimpleNamespace(model=model, spec="toy"))
    assert rep.names == ["llama", "gemma", "custom"]
    gemma = rep.layer("gemma")
    assert gemma.gamma_offset == 1.0 and np.allclose(gemma.gamma, 0.3)  # effective gain 1 + weight
    assert rep.layer("llama").gamma_offset == 0.0 and np.allclose(rep.layer("llama").gamma, 1.0)
    assert all(l.kind == "rmsnorm" and l.beta is None for l in rep.layers)
    assert rep.pooled_beta is None
    np.testing.assert_allclose(rep.layer("custom").gamma, np.linspace(0.1, 0.5, 8), rtol=1e-6)


# --------------------------------------------------------------------------- statistics


def test_pooled_stats_equal_numpy(spread_gpt2):
    rep = L.layernorm_stats(spread_gpt2, bins=25)
    lns = [m for m in spread_gpt2.model.modules() if isinstance(m, torch.nn.LayerNorm)]
    g = torch.cat([m.weight.detach() for m in lns]).double().numpy()
    b = torch.cat([m.bias.detach() for m in lns]).double().numpy()
    for stats, v in ((rep.pooled_gamma, g), (rep.pooled_beta, b)):
        assert stats.n == v.size
        assert stats.mean == pytest.approx(v.mean(), abs=1e-12)
        assert stats.std == pytest.approx(v.std(), abs=1e-12)
        assert (stats.min, stats.max) == (v.min(), v.max())
        np.testing.assert_allclose(stats.quantiles, np.percentile(v, [1, 5, 25, 50, 75, 95, 99]))
        counts, edges = np.histogram(v, bins=25)
        np.testing.assert_allclose(stats.hist_edges, edges)
        np.testing.assert_array_equal(stats.hist_counts, counts)
    assert rep.pooled_gamma.frac_in_band == pytest.approx(np.count_nonzero((g >= 0.2) & (g <= 0.4)) / g.size)
    assert rep.pooled_beta.frac_near_zero == pytest.approx(np.count_nonzero(np.abs(b) < 0.05) / b.size)


def test_per_layer_fractions_equal_direct_count(spread_gpt2):
    rep = L.layernorm_stats(spread_gpt2)
    modules = dict(spread_gpt2.model.named_modules())
    for layer in rep.layers:
        w = modules[layer.name].weight.detach().numpy().astype(np.float64)
        bias = modules[layer.name].bias.detach().numpy().astype(np.float64)
        np.testing.assert_array_equal(layer.gamma, w)
        np.testing.assert_array_equal(rep.gammas()[layer.name], w)
        np.testing.assert_array_equal(rep.betas()[layer.name], bias)
        in_band = sum(1 for x in w if 0.2 <= x <= 0.4)
        assert layer.gamma_stats.frac_in_band == pytest.approx(in_band / w.size)
        assert layer.beta_stats.frac_near_zero == pytest.approx(sum(1 for x in bias if abs(x) < 0.05) / bias.size)
        # layers share the pooled bin edges, so their counts add up to the pooled histogram
        np.testing.assert_array_equal(layer.gamma_stats.hist_edges, rep.pooled_gamma.hist_edges)
        assert layer.gamma_stats.hist_counts.sum() == w.size
    total = sum(l.gamma_stats.hist_counts for l in rep.layers)
    np.testing.assert_array_equal(total, rep.pooled_gamma.hist_counts)


def test_constant_gamma_histogram_is_defined(tiny_gpt2):
    rep = L.layernorm_stats(tiny_gpt2, bins=10)  # default init: every γ is exactly 1
    assert rep.pooled_gamma.hist_counts.sum() == rep.pooled_gamma.n
    assert rep.pooled_gamma.hist_edges[0] < 1.0 < rep.pooled_gamma.hist_edges[-1]
    assert rep.pooled_gamma.frac_in_band == 0.0 and rep.pooled_beta.frac_near_zero == 1.0


def test_bad_arguments(tiny_gpt2):
    with pytest.raises(InputError):
        L.layernorm_stats(tiny_gpt2, bins=0)
    with pytest.raises(InputError, match="No norm layer named"):
        L.layernorm_stats(tiny_gpt2).layer("transformer.h.9.ln_1")


def test_report_round_trips_through_json(spread_gpt2, tiny_bert):
    for lm in (spread_gpt2, tiny_bert):
        rep = L.layernorm_stats(lm)
        back = from_dict(L.LayerNormReport, json.loads(json.dumps(to_dict(rep))))
        assert results_equal(rep, back)
        assert isinstance(back.layers[0].gamma, np.ndarray) and isinstance(back.gamma_band, tuple)
        assert len(rep.table()) == len(rep.layers)


# --------------------------------------------------------------------------- _common helpers


def test_to_dict_nan_and_nested_round_trip():
    from dataclasses import dataclass

    @dataclass
    class Inner:
        x: np.ndarray
        v: float

    @dataclass
    class Outer:
        items: list[Inner]
        maybe: np.ndarray | None
        pair: tuple[int, int]
        by_name: dict[str, Inner]
        label: str = "a"

    # local classes: from_dict resolves annotations through the module, so register them there
    globals().update(Inner=Inner, Outer=Outer)
    o = Outer(items=[Inner(np.array([1.0, np.nan]), np.nan)], maybe=None, pair=(1, 2),
              by_name={"k": Inner(np.arange(3), 2.5)})
    d = to_dict(o)
    assert d["items"][0] == {"x": [1.0, None], "v": None}
    assert json.loads(json.dumps(d)) == d
    back = from_dict(Outer, json.loads(json.dumps(d)))
    assert results_equal(o, back)
    assert back.by_name["k"].x.dtype.kind == "i" and back.pair == (1, 2)
    assert to_dict(np.float32(0.5)) == 0.5 and to_dict(np.int64(3)) == 3


# --------------------------------------------------------------------------- activations


def test_activation_stats_match_hidden_states(tiny_gpt2):
    from inspector.inputs import encode

    enc = encode(tiny_gpt2, TEXT)
    before = _warm(tiny_gpt2)
    acts = {a.name: a for a in L.layernorm_activations(tiny_gpt2, enc)}
    assert list(acts) == L.layernorm_stats(tiny_gpt2).names
    with torch.no_grad():
        hs = tiny_gpt2.model(enc.input_ids, output_hidden_states=True, use_cache=False).hidden_states
    h0 = hs[0][0].double()  # (T, D): input of block 0's ln_1
    a = acts["transformer.h.0.ln_1"]
    assert a.n_tokens == enc.n_tokens
    assert a.input_mean == pytest.approx(h0.mean().item(), abs=1e-6)
    assert a.input_std == pytest.approx(h0.std(correction=0).item(), rel=1e-5)
    np.testing.assert_allclose(a.input_token_std, h0.std(dim=-1, correction=0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(a.input_token_rms, h0.pow(2).mean(-1).sqrt().numpy(), rtol=1e-5)
    ln = tiny_gpt2.model.transformer.h[0].ln_1
    out = torch.nn.functional.layer_norm(hs[0][0], (h0.shape[-1],), ln.weight, ln.bias, ln.eps)
    assert a.output_std == pytest.approx(out.std(correction=0).item(), rel=1e-5)
    h1 = hs[1][0].double()
    assert acts["transformer.h.1.ln_1"].input_std == pytest.approx(h1.std(correction=0).item(), rel=1e-5)
    hf = hs[-1][0].double()  # transformers applies ln_f to the last hidden state
    assert acts["transformer.ln_f"].output_mean == pytest.approx(hf.mean().item(), abs=1e-6)
    assert _no_hooks_left(tiny_gpt2, before)


def test_bert_activations_include_mlm_head(tiny_bert):
    before = _warm(tiny_bert)
    acts = L.layernorm_activations(tiny_bert, TEXT)
    assert [a.name for a in acts] == L.layernorm_stats(tiny_bert).names
    assert _no_hooks_left(tiny_bert, before)


def test_no_hooks_left_when_forward_raises():
    model, tok = tiny_gpt2_model(seed=2)
    lm = wrap(model, tok)

    seen = []

    def boom(*args, **kwargs):
        seen.append(bool(model.transformer.h[1].ln_2._forward_hooks))  # hooks were attached at this point
        raise RuntimeError("boom mid-forward")

    before = _warm(lm)
    model.transformer.h[1].mlp.forward = boom
    with pytest.raises(RuntimeError, match="boom"):
        L.layernorm_activations(lm, TEXT)
    assert seen == [True]
    assert _no_hooks_left(lm, before)
    got = []
    t = threading.Thread(target=lambda: got.append(lm.lock.acquire(timeout=2) and (lm.lock.release() or True)))
    t.start()
    t.join()
    assert got == [True]  # the lock was released too


def test_hooks_ignore_other_threads(tiny_gpt2):
    from inspector import capture
    from inspector.inputs import encode

    enc = encode(tiny_gpt2, TEXT)
    before = _warm(tiny_gpt2)
    options = capture.CaptureOptions(attention_stats=False, logits=False, norms=True)
    with capture.capture(tiny_gpt2, options) as col:
        t = threading.Thread(target=lambda: tiny_gpt2.model(enc.input_ids, use_cache=False))
        t.start()
        t.join()
        assert col.norms.data == {}  # another session's forward is not recorded
        with torch.no_grad():
            tiny_gpt2.model(enc.input_ids, use_cache=False)
        assert set(col.norms.data) == set(L.layernorm_stats(tiny_gpt2).names)
    assert _no_hooks_left(tiny_gpt2, before)


# --------------------------------------------------------------------------- the report section (contract)


def _layernorm_section(lm, text=TEXT, **settings):
    from inspector import report as R

    rep = R.build_report(lm, text, sections=("layernorm",), strict=True, settings=settings or None)
    sec = rep.section("layernorm")
    assert sec.available, str(sec)
    return rep, R.contract_view("layernorm", sec)


def _blocks(view, kind):
    return [b for b in view if isinstance(b, kind)]


def test_section_view_carries_gamma_beta_figures(spread_gpt2):
    from inspector import report as R
    from inspector.analysis import Chart, Metric, Note, Table

    rep, view = _layernorm_section(spread_gpt2, layernorm_bins=25)
    modules = dict(spread_gpt2.model.named_modules())
    names = [n for n, m in spread_gpt2.model.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    g = np.concatenate([modules[n].weight.detach().double().numpy() for n in names])
    b = np.concatenate([modules[n].bias.detach().double().numpy() for n in names])
    in_band = np.count_nonzero((g >= 0.2) & (g <= 0.4)) / g.size
    near_zero = np.count_nonzero(np.abs(b) < 0.05) / b.size
    sentence = _blocks(view, Note)[0].text
    assert sentence == (f"{len(names)} normalisation layers. Over all of them: γ mean {R._fmt(g.mean())}, "
                        f"median {R._fmt(np.median(g))}; {in_band:.1%} of γ lie in [0.2, 0.4]; "
                        f"{near_zero:.1%} of β have |β| < 0.05.")
    metrics = {m.label: m.value for m in _blocks(view, Metric)}
    assert metrics["Norm layers"] == len(names)
    assert metrics["γ mean (all layers)"] == pytest.approx(g.mean(), abs=1e-12)
    assert metrics["Share of γ in [0.2, 0.4]"] == pytest.approx(in_band)
    assert metrics["Share of β with |β| < 0.05"] == pytest.approx(near_zero)

    charts = {c.title: c for c in _blocks(view, Chart)}
    hist_g, hist_b = charts["γ over all layers"], charts["β over all layers"]
    counts, edges = np.histogram(g, bins=25)
    assert hist_g.kind == "histogram" and hist_g.log_y and hist_g.markers == (("band lo", 0.2), ("band hi", 0.4))
    np.testing.assert_allclose(hist_g.series[0][1], edges)
    np.testing.assert_array_equal(hist_g.series[0][2], counts)
    np.testing.assert_array_equal(hist_b.series[0][2], np.histogram(b, bins=25)[0])
    assert hist_b.log_y and hist_b.markers == (("0", 0.0),)
    short = [n.removeprefix("transformer.") for n in names]
    bar = charts["median γ per layer"]
    assert bar.kind == "bar" and bar.series[0][1] == tuple(short)
    np.testing.assert_allclose(bar.series[0][2], [np.median(modules[n].weight.detach().double().numpy())
                                                  for n in names])
    heat = charts["γ histogram per layer (count)"]
    assert heat.kind == "heatmap" and heat.row_labels == tuple(short) and len(heat.col_labels) == 25
    for n, row in zip(names, heat.z):  # every layer binned on the pooled edges
        np.testing.assert_array_equal(row, np.histogram(modules[n].weight.detach().double().numpy(), bins=edges)[0])

    table = next(t for t in _blocks(view, Table) if t.title == "LayerNorm summary")
    assert table.columns == ("layer", "role", "kind", "d", "γ mean", "γ std", "γ min", "γ max", "γ median",
                             "γ in [0.2, 0.4]", "β mean", "β std", "|β| < 0.05")
    assert [r[0] for r in table.rows] == names + ["all layers"]
    first = modules[names[0]].weight.detach().double().numpy()
    assert table.rows[0][3] == first.size and table.rows[0][4] == pytest.approx(first.mean(), abs=1e-12)
    assert table.rows[0][8] == pytest.approx(np.median(first))
    pooled = table.rows[-1]
    assert pooled[3] == g.size and pooled[4] == pytest.approx(g.mean(), abs=1e-12)
    assert pooled[6:8] == (g.min(), g.max()) and pooled[9] == pytest.approx(in_band)
    assert pooled[10] == pytest.approx(b.mean(), abs=1e-12) and pooled[12] == pytest.approx(near_zero)

    html, md = R.to_html(rep), R.to_markdown(rep)
    assert f"γ mean {R._fmt(g.mean())}, median {R._fmt(np.median(g))}" in html
    assert "|β| &lt; 0.05" in html and "γ over all layers" in html and "γ histogram per layer (count)" in html
    assert f"<td>all layers</td><td></td><td></td><td class=\"num\">{g.size:,}</td>" in html
    block = md.split("### LayerNorm summary")[1].split("\n## ")[0]
    for n in names:
        assert f"| {n} | " in block
    assert f"| all layers |  |  | {g.size:,} | {R._fmt(g.mean())} |" in block


def test_section_activations_match_hidden_states(tiny_gpt2):
    from inspector import report as R
    from inspector.analysis import Chart, Heading, Table
    from inspector.inputs import encode

    rep, view = _layernorm_section(tiny_gpt2)
    enc = encode(tiny_gpt2, TEXT)
    with torch.no_grad():
        hs = tiny_gpt2.model(enc.input_ids, output_hidden_states=True, use_cache=False).hidden_states
    h0 = hs[0][0].double()
    ln = tiny_gpt2.model.transformer.h[0].ln_1
    out0 = torch.nn.functional.layer_norm(hs[0][0], (h0.shape[-1],), ln.weight, ln.bias, ln.eps).double()
    assert any(isinstance(b, Heading) and b.text == "What the norm layers do to this text" for b in view)
    line = next(c for c in _blocks(view, Chart) if c.title == "activation std before and after each norm layer")
    assert line.kind == "line" and line.log_y and [s[0] for s in line.series] == ["input std", "output std"]
    assert line.series[0][2][0] == pytest.approx(h0.std(correction=0).item(), rel=1e-5)
    assert line.series[1][2][0] == pytest.approx(out0.std(correction=0).item(), rel=1e-5)
    table = next(t for t in _blocks(view, Table) if t.columns[2] == "tokens")
    assert table.columns == ("layer", "role", "tokens", "input mean", "input std", "output mean", "output std")
    assert [r[0] for r in table.rows] == L.layernorm_stats(tiny_gpt2).names
    row = table.rows[0]
    assert row[1:3] == ("ln_1", enc.n_tokens)
    assert row[3] == pytest.approx(h0.mean().item(), abs=1e-6) and row[4] == pytest.approx(h0.std(correction=0).item(),
                                                                                             rel=1e-5)
    html = R.to_html(rep)
    assert (f"<td>transformer.h.0.ln_1</td><td>ln_1</td><td class=\"num\">{enc.n_tokens}</td>"
            f"<td class=\"num\">{R._fmt(row[3])}</td><td class=\"num\">{R._fmt(row[4])}</td>") in html
    # the stored parts are the old ones, and a report read back from JSON gives the same view
    assert set(rep.section("layernorm").results) == {"params", "activations"}
    back = R.report_from_json(R.to_json(rep))
    assert R.to_html(back).split('<section id="sec-layernorm">')[1].split("Computed in")[0] == \
        html.split('<section id="sec-layernorm">')[1].split("Computed in")[0]


def test_section_without_beta_and_unavailable_part(monkeypatch):
    from family_models import tiny_family_model

    from inspector import report as R
    from inspector.analysis import Note
    from inspector.errors import NotAvailableError

    model, tok = tiny_family_model("llama")
    lm = wrap(model, tok)
    rep, view = _layernorm_section(lm)
    norms = [m for _, m in L.find_norm_layers(model)]
    g = torch.cat([m.weight.detach() for m in norms]).double().numpy()
    assert _blocks(view, Note)[0].text.endswith(f"median {R._fmt(np.median(g))}; "
                                                f"{np.count_nonzero((g >= 0.2) & (g <= 0.4)) / g.size:.1%} of γ lie "
                                                "in [0.2, 0.4]; no β (RMSNorm: a gain γ only, no bias).")
    summary = next(t for t in view if getattr(t, "title", "") == "LayerNorm summary")
    assert summary.rows[-1][10:] == (None, None, None)
    assert not any(getattr(c, "title", "") == "β over all layers" for c in view)

    def unavailable(*args, **kwargs):
        raise NotAvailableError("no norm inputs here")

    monkeypatch.setattr(L, "layernorm_activations", unavailable)
    rep, view = _layernorm_section(lm)
    assert isinstance(rep.section("layernorm").results["activations"], L.Unavailable)
    assert view[-1] == Note("not available: no norm inputs here", level="warning")
    assert "no norm inputs here" in R.to_html(rep)


def test_settings_key_and_default():
    from inspector import analysis, report as R

    a = analysis.get("layernorm")
    assert isinstance(a, L.LayerNormAnalysis) and a.own_page == "layernorm" and a.report_parts
    (f,) = analysis.settings_fields(a)
    assert analysis.settings_key(a, f) == "layernorm_bins" and f.default == R.DEFAULT_SETTINGS["layernorm_bins"]
    with pytest.raises(InputError):
        a.settings_from({"bins": 0})
