"""The capture engine against QKᵀ statistics recomputed by hand from each model's own weights.

The reference splits q and k out of the model's own projections applied to the hidden states a
plain forward returns (GPT-2: c_attn on ln_1(h_l); BERT: query/key Linear on h_l), builds the
causal/padding mask itself, and reduces in float64 numpy. Nothing of inspector.capture is used
to compute an expected value.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from conftest import tiny_bert_model, tiny_gpt2_model
from inspector import capture
from inspector.inputs import encode_batch
from inspector.models import wrap

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention compares queries with keys.",
    "A model reads tokens and predicts the next one, again and again.",
    "Embeddings.",
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gpt2_pair():
    """(inspector-wrapped model, separately built plain SDPA model with the same weights)."""
    model, tok = tiny_gpt2_model(seed=1, init_range=0.3)
    plain, _ = tiny_gpt2_model(seed=99, init_range=0.3)
    plain.load_state_dict(model.state_dict())
    return wrap(model, tok), plain.eval()


@pytest.fixture(scope="module")
def bert_pair():
    model, tok = tiny_bert_model(seed=1, init_range=0.3, cls_name="BertForMaskedLM")
    plain, _ = tiny_bert_model(seed=99, init_range=0.3, cls_name="BertForMaskedLM")
    plain.load_state_dict(model.state_dict())
    return wrap(model, tok), plain.eval()


def _batch(lm, padding: str, texts=TEXTS):
    if padding == "none":
        return encode_batch(lm, texts[:1])
    return encode_batch(lm, texts, padding_side=padding)


# --------------------------------------------------------------------------- independent reference


def _qk_per_layer(model, family: str, batch) -> list[tuple[np.ndarray, np.ndarray]]:
    """(q, k) as float64 arrays (B, H, T, d) per layer, from the model's own projection weights."""
    with torch.no_grad():
        kwargs = dict(batch, output_hidden_states=True)
        if family == "gpt2":
            kwargs["use_cache"] = False
        hs = model(**kwargs).hidden_states
        out = []
        if family == "gpt2":
            blocks = model.transformer.h
            H = model.config.n_head
            for layer, block in enumerate(blocks):
                x = block.ln_1(hs[layer])
                D = x.shape[-1]
                q, k, _ = block.attn.c_attn(x).split(D, dim=2)
                out.append((q, k, H))
        else:
            H = model.config.num_attention_heads
            for layer, block in enumerate(model.bert.encoder.layer):
                sa = block.attention.self
                out.append((sa.query(hs[layer]), sa.key(hs[layer]), H))
    res = []
    for q, k, H in out:
        B, T, D = q.shape
        split = lambda t: t.reshape(B, T, H, D // H).permute(0, 2, 1, 3).double().numpy()  # noqa: E731
        res.append((split(q), split(k)))
    return res


def _head_stats(scores: np.ndarray, valid: np.ndarray, scale: float) -> dict[str, list]:
    """Per head of scores (B, H, Tq, Tk) over the valid pairs: count, mean, std, min, max; and per valid
    query row, averaged: softmax(scale·scores) entropy, entropy / log(n keys), largest probability."""
    row = {k: [] for k in ("count", "mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob",
                           "sink_mass")}
    for h in range(scores.shape[1]):
        s = scores[:, h][valid[:, h]]
        row["count"].append(s.size)
        row["mean"].append(s.mean())
        row["std"].append(s.std())
        row["min"].append(s.min())
        row["max"].append(s.max())
        ents, fracs, maxps, sinks = [], [], [], []
        for b in range(scores.shape[0]):
            for i in range(scores.shape[2]):
                keys = valid[b, h, i]
                if not keys.any():
                    continue
                z = scores[b, h, i, keys] * scale
                p = np.exp(z - z.max())
                p /= p.sum()
                ent = -(p * np.log(np.where(p > 0, p, 1))).sum()
                ents.append(ent)
                maxps.append(p.max())
                sinks.append(p[0])  # p is over the valid keys in order: p[0] is the first attended key
                if keys.sum() >= 2:
                    fracs.append(ent / math.log(keys.sum()))
        row["entropy"].append(np.mean(ents))
        row["entropy_fraction"].append(np.mean(fracs) if fracs else np.nan)
        row["max_prob"].append(np.mean(maxps))
        row["sink_mass"].append(np.mean(sinks))
    return row


def _reference_stats(model, family: str, batch) -> dict[str, np.ndarray]:
    """Per layer × head mean/std/min/max of q·k, softmax entropy, entropy fraction and max prob."""
    mask = batch["attention_mask"].numpy().astype(bool)  # (B, T)
    B, T = mask.shape
    valid = mask[:, None, :, None] & mask[:, None, None, :]  # (B, 1, T, T)
    if family == "gpt2":
        valid = valid & np.tril(np.ones((T, T), dtype=bool))[None, None]
    stats = {k: [] for k in ("mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob", "count",
                             "sink_mass")}
    for q, k in _qk_per_layer(model, family, batch):
        d = q.shape[3]
        scores = q @ np.swapaxes(k, -1, -2)  # (B, H, T, T)
        v = np.broadcast_to(valid, scores.shape)
        row = _head_stats(scores, v, 1 / math.sqrt(d))
        for key in stats:
            stats[key].append(row[key])
    return {k: np.array(v) for k, v in stats.items()}


def _reference_scores_probs(model, family, batch, layer):
    q, k = _qk_per_layer(model, family, batch)[layer]
    scores = q @ np.swapaxes(k, -1, -2)
    mask = batch["attention_mask"].numpy().astype(bool)
    T = mask.shape[1]
    valid = mask[:, None, :, None] & mask[:, None, None, :]
    if family == "gpt2":
        valid = valid & np.tril(np.ones((T, T), dtype=bool))[None, None]
    valid = np.broadcast_to(valid, scores.shape)
    z = np.where(valid, scores / math.sqrt(q.shape[-1]), -np.inf)
    zmax = np.max(z, axis=-1, keepdims=True)
    zmax = np.where(np.isfinite(zmax), zmax, 0.0)
    e = np.where(valid, np.exp(z - zmax), 0.0)
    denom = e.sum(-1, keepdims=True)
    probs = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
    return scores, probs, valid


# --------------------------------------------------------------------------- statistics match the reference


CASES = [("gpt2", "none"), ("gpt2", "left"), ("gpt2", "right"), ("bert", "none"), ("bert", "right")]


@pytest.mark.parametrize("family,padding", CASES)
def test_statistics_match_independent_reference(family, padding, gpt2_pair, bert_pair):
    lm, plain = gpt2_pair if family == "gpt2" else bert_pair
    batch = _batch(lm, padding)
    if padding != "none":
        assert (batch["attention_mask"] == 0).any(), "the batch must really be padded"
    got = capture.run(lm, batch).attention
    ref = _reference_stats(plain, family, batch)
    assert got.std.shape == (lm.n_layers, lm.n_heads)
    np.testing.assert_array_equal(got.count, ref["count"])
    for name in ("mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob", "sink_mass"):
        np.testing.assert_allclose(getattr(got, name), ref[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert got.d_head == lm.d_head
    np.testing.assert_allclose(got.scaling, 1 / math.sqrt(lm.d_head), rtol=1e-12)
    # Derived figures are plain transformations of the above.
    np.testing.assert_allclose(got.std_scaled, ref["std"] / math.sqrt(lm.d_head), rtol=1e-4)
    np.testing.assert_allclose(got.ratio_to_sqrt_d, ref["std"] / math.sqrt(lm.d_head), rtol=1e-4)


@pytest.mark.parametrize("family,padding", [("gpt2", "left"), ("bert", "right")])
def test_kept_scores_and_probs_match_reference(family, padding, gpt2_pair, bert_pair):
    lm, plain = gpt2_pair if family == "gpt2" else bert_pair
    batch = _batch(lm, padding)
    layer = lm.n_layers - 1
    res = capture.run(lm, batch, capture.CaptureOptions(keep_scores_layers=(layer,), keep_probs_layers=(layer,)))
    kept = res.kept[layer]
    scores, probs, valid = _reference_scores_probs(plain, family, batch, layer)
    np.testing.assert_array_equal(kept.valid, valid)
    np.testing.assert_allclose(np.where(valid, kept.scores, 0), np.where(valid, scores, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(kept.probs, probs, atol=1e-5)
    assert set(res.kept) == {layer}


@pytest.mark.parametrize("norms", [False, True])
@pytest.mark.parametrize("family,padding", CASES)
def test_outputs_unchanged_by_capture(family, padding, norms, gpt2_pair, bert_pair):
    lm, plain = gpt2_pair if family == "gpt2" else bert_pair
    assert plain.config._attn_implementation == "sdpa"
    batch = _batch(lm, padding)
    res = capture.run(lm, batch, capture.CaptureOptions(keep_probs_layers=(0,), norms=norms))
    assert (res.norms is not None) == norms
    kwargs = dict(batch, use_cache=False) if family == "gpt2" else dict(batch)
    with torch.no_grad():
        ref = plain(**kwargs).logits
        same_model = lm.model(**kwargs).logits  # the same model outside any capture block
    real = batch["attention_mask"].bool()
    assert float((res.logits[real] - ref[real]).abs().max()) <= 1e-5
    assert torch.equal(res.logits, same_model.float())  # bit-identical: capturing changes no output


def _reference_norm_inputs(model, family: str, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module path -> (input, output) over the real tokens (N, D) of the norm layers fed by hidden states:
    recomputed with F.layer_norm from the hidden states a plain forward returns and the layers' weights."""
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        kwargs = dict(batch, output_hidden_states=True)
        if family == "gpt2":
            kwargs["use_cache"] = False
        hs = model(**kwargs).hidden_states
    out = {}
    if family == "gpt2":
        for i, block in enumerate(model.transformer.h):
            ln = block.ln_1
            x = hs[i][real].double()
            with torch.no_grad():
                y = torch.nn.functional.layer_norm(x, (x.shape[-1],), ln.weight.double(), ln.bias.double(), ln.eps)
            out[f"transformer.h.{i}.ln_1"] = (x, y)
    else:
        for i in range(len(model.bert.encoder.layer)):  # each block's output LayerNorm gives hidden state i + 1
            out[f"bert.encoder.layer.{i}.output.LayerNorm"] = (None, hs[i + 1][real].double())
    return out


@pytest.mark.parametrize("family,padding", [("gpt2", "left"), ("gpt2", "none"), ("bert", "right")])
def test_norm_statistics_match_reference(family, padding, gpt2_pair, bert_pair):
    from inspector.analyses.layernorm import find_norm_layers

    lm, plain = gpt2_pair if family == "gpt2" else bert_pair
    batch = _batch(lm, padding)
    n_real = int(batch["attention_mask"].sum())
    res = capture.run(lm, batch, norms=True, attention_stats=False)
    assert res.attention is None
    assert list(res.norms) == [name for name, _ in find_norm_layers(lm.model)]  # every layer, registration order
    for name, (x, y) in _reference_norm_inputs(plain, family, batch).items():
        got = res.norms[name]
        assert got.n == n_real and got.input_token_std.shape == (n_real,)
        if x is not None:
            assert got.input_mean == pytest.approx(x.mean().item(), abs=1e-6)
            assert got.input_std == pytest.approx(x.std(correction=0).item(), rel=1e-5)
            np.testing.assert_allclose(got.input_token_mean, x.mean(-1).numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got.input_token_std, x.std(-1, correction=0).numpy(), rtol=1e-5)
            np.testing.assert_allclose(got.input_token_rms, x.pow(2).mean(-1).sqrt().numpy(), rtol=1e-5)
        assert got.output_mean == pytest.approx(y.mean().item(), abs=1e-6)
        assert got.output_std == pytest.approx(y.std(correction=0).item(), rel=1e-5)
        np.testing.assert_allclose(got.output_token_std, y.std(-1, correction=0).numpy(), rtol=1e-5)
    # the keyword form is the options form
    again = capture.run(lm, batch, capture.CaptureOptions(norms=True, attention_stats=False))
    assert list(again.norms) == list(res.norms)
    assert all(again.norms[n].input_std == res.norms[n].input_std for n in res.norms)
    with pytest.raises(TypeError):
        capture.run(lm, batch, no_such_option=True)


# --------------------------------------------------------------------------- no collector outlives its block


def _no_hooks(model) -> bool:
    return all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules())


def test_collector_removed_after_block(gpt2_pair):
    lm, _ = gpt2_pair
    batch = _batch(lm, "right")
    assert not capture.is_capturing()
    with capture.capture(lm) as col:
        assert capture.is_capturing()
        with torch.no_grad():
            lm.model(**batch, use_cache=False)
    assert not capture.is_capturing()
    before = col.attention_stats()
    with torch.no_grad():
        lm.model(**batch, use_cache=False)  # a forward after the block is not observed
    after = col.attention_stats()
    np.testing.assert_array_equal(before.count, after.count)
    np.testing.assert_array_equal(before.std, after.std)
    assert _no_hooks(lm.model)


def test_collector_removed_when_forward_raises():
    model, tok = tiny_gpt2_model(seed=3)
    lm = wrap(model, tok)
    batch = _batch(lm, "left")

    def boom(*args, **kwargs):
        raise RuntimeError("mid-forward failure")

    model.transformer.h[1].mlp.forward = boom  # layer 0's attention runs, then layer 1 raises
    with pytest.raises(RuntimeError, match="mid-forward"):
        with capture.capture(lm) as col:
            with torch.no_grad():
                lm.model(**batch, use_cache=False)
    assert not capture.is_capturing()
    assert set(col.acc) == {0, 1}  # layer 1's attention ran before its MLP raised
    with pytest.raises(RuntimeError, match="mid-forward"):
        capture.run(lm, batch)
    assert not capture.is_capturing()
    assert _no_hooks(lm.model)
    with pytest.raises(RuntimeError, match="mid-forward"):
        capture.run(lm, batch, norms=True)
    assert _no_hooks(lm.model) and capture._active_norms.get() is None
    got = []  # lm.lock, held while the norm hooks exist, was released
    t = threading.Thread(target=lambda: got.append(lm.lock.acquire(timeout=2) and (lm.lock.release() or True)))
    t.start()
    t.join()
    assert got == [True]
    # The same thread keeps working once the module is repaired.
    del model.transformer.h[1].mlp.forward
    assert capture.run(lm, batch).attention is not None
    assert not capture.is_capturing()


def test_bad_input_raises_and_leaves_no_collector(gpt2_pair):
    lm, _ = gpt2_pair
    bad = {"input_ids": torch.tensor([[lm.vocab_size + 5, 1, 2]])}
    with pytest.raises(IndexError):
        capture.run(lm, bad)
    assert not capture.is_capturing()


def test_collector_is_invisible_to_other_threads(gpt2_pair):
    lm, _ = gpt2_pair
    seen = []
    with capture.capture(lm):
        t = threading.Thread(target=lambda: seen.append(capture.is_capturing()))
        t.start()
        t.join()
    assert seen == [False]


# --------------------------------------------------------------------------- thread safety


def _snapshot(res: capture.CaptureResult):
    a = res.attention
    norms = () if res.norms is None else tuple(
        np.array([v.n, v.input_mean, v.input_std, v.output_mean, v.output_std]) for v in res.norms.values()) + tuple(
        np.concatenate([v.input_token_mean, v.input_token_std, v.input_token_rms, v.output_token_std])
        for v in res.norms.values())
    return (a.count, a.mean, a.std, a.min, a.max, a.entropy, a.entropy_fraction, a.max_prob,
            res.kept[0].probs, res.logits.numpy()) + norms


@pytest.mark.parametrize("family,n_threads,norms", [("gpt2", 4, False), ("bert", 3, False), ("gpt2", 3, True)])
def test_threads_on_one_shared_model_get_their_own_results(family, n_threads, norms, gpt2_pair, bert_pair):
    lm, _ = gpt2_pair if family == "gpt2" else bert_pair
    options = capture.CaptureOptions(keep_probs_layers=(0,), norms=norms)
    batches = [encode_batch(lm, [TEXTS[i]] + ([TEXTS[(i + 1) % 4]] if i % 2 else [])) for i in range(n_threads)]
    alone = [_snapshot(capture.run(lm, b, options)) for b in batches]
    iterations = 12
    barrier = threading.Barrier(n_threads)
    mismatches, errors = [], []

    def worker(i):
        try:
            for it in range(iterations):
                barrier.wait()
                got = _snapshot(capture.run(lm, batches[i], options))
                if not all(np.array_equal(x, y, equal_nan=True) for x, y in zip(got, alone[i])):
                    mismatches.append((i, it))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert mismatches == []
    assert not capture.is_capturing()
    assert _no_hooks(lm.model)


def test_norm_hooks_record_only_their_own_context(gpt2_pair):
    """A plain forward by another thread while this block's norm hooks are attached is not recorded; one
    capture running inside another thread's block records only its own forward."""
    lm, _ = gpt2_pair
    one, two = _batch(lm, "none"), _batch(lm, "right")
    alone = capture.run(lm, two, norms=True).norms
    options = capture.CaptureOptions(attention_stats=False, logits=False, norms=True)
    with capture.capture(lm, options, one["attention_mask"]) as col:
        t = threading.Thread(target=lambda: lm.model(**one, use_cache=False))
        t.start()
        t.join()
        assert col.norms.data == {}
        got = []
        t = threading.Thread(target=lambda: got.append(capture.run(lm, two, norms=True).norms))
        t.start()  # waits for lm.lock (held by this block), then records its own forward only
        with torch.no_grad():
            lm.model(**one, use_cache=False)
    t.join()
    assert set(col.norms.data) == set(alone) and all(v.n == int(one["attention_mask"].sum())
                                                     for v in col.norms.data.values())
    assert [v.input_std for v in got[0].values()] == [v.input_std for v in alone.values()]
    assert _no_hooks(lm.model)


# --------------------------------------------------------------------------- bf16


def test_bf16_path_runs_on_cpu(gpt2_pair):
    lm32, _ = gpt2_pair
    model, tok = tiny_gpt2_model(seed=1, init_range=0.3)
    model.load_state_dict(lm32.model.state_dict())
    lm16 = wrap(model.to(torch.bfloat16), tok)
    assert lm16.dtype == torch.bfloat16
    batch = _batch(lm16, "left")
    res = capture.run(lm16, batch, capture.CaptureOptions(keep_probs_layers=(1,)))
    ref = capture.run(lm32, batch).attention
    a = res.attention
    for name in ("std", "mean", "max", "entropy", "max_prob"):
        assert np.all(np.isfinite(getattr(a, name))), name
    np.testing.assert_array_equal(a.count, ref.count)
    np.testing.assert_allclose(a.std, ref.std, rtol=0.1)
    np.testing.assert_allclose(a.entropy, ref.entropy, rtol=0.1, atol=0.05)
    assert res.logits.dtype == torch.float32
    assert res.kept[1].probs.dtype == np.float32
    real = batch["attention_mask"].bool().numpy()
    np.testing.assert_allclose(res.kept[1].probs.sum(-1)[np.broadcast_to(real[:, None], res.kept[1].probs.shape[:3])],
                               1.0, atol=1e-3)


# --------------------------------------------------------------------------- the reduction itself, stressed


def _direct_reference(q, k, valid, scale):
    """float64 numpy: per-head statistics over the valid (query, key) pairs."""
    x = np.einsum("bhqd,bhkd->bhqk", q.double().numpy(), k.double().numpy())
    return {n: np.array(v) for n, v in _head_stats(x, np.broadcast_to(valid.numpy(), x.shape), scale).items()}


@pytest.mark.parametrize("T, budget", [
    (11, None),  # whole sequences per chunk
    (11, 64),  # row chunks of a few queries
    (11, 5),  # one query row at a time
    (300, None),  # causal row blocks that leave out the keys after their last row
])
@pytest.mark.parametrize("masking", ["causal", "padded"])
def test_reduction_is_exact_for_offset_scores_and_any_chunking(T, budget, masking, monkeypatch):
    """Scores with a mean ten times their spread (cancellation-prone) and chunking down to one query row."""
    if budget is not None:
        monkeypatch.setattr(capture, "_chunk_elements", lambda device: budget)
    g = torch.Generator().manual_seed(0)
    B, H, d = 3, 2, 16
    q = torch.randn(B, H, T, d, generator=g) * 0.5 + 2.0
    k = torch.randn(B, H, T, d, generator=g) * 0.5 + 2.0
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
    if masking == "causal":
        mask, valid = None, causal
    else:
        lengths = torch.tensor([T, T * 2 // 3, T // 3])
        real = torch.arange(T)[None, :] < lengths[:, None]
        mask = (causal & real[:, None, None, :]).expand(B, 1, T, T)  # what the model passes: bool, True = attend
        valid = mask & real[:, None, :, None]
    collector = capture._Collector(1, H, capture.CaptureOptions(), token_mask=None if masking == "causal" else real)
    module = type("Attn", (), {"layer_idx": 0, "is_causal": True})()
    scale = 1 / math.sqrt(d)
    collector.observe(module, q, k, mask, scale, True)  # both maskings are causal
    got = collector.attention_stats()
    ref = _direct_reference(q, k, valid, scale)
    assert ref["mean"].min() > 10 * ref["std"].max(), "the case must be cancellation-prone"
    np.testing.assert_array_equal(got.count[0], ref["count"])
    for name in ("mean", "std", "min", "max", "entropy", "max_prob", "entropy_fraction"):
        np.testing.assert_allclose(getattr(got, name)[0], ref[name], rtol=2e-5, atol=1e-6, err_msg=name)
