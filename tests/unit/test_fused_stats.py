"""The fused Triton kernels for QKᵀ statistics, run on CPU tensors by Triton's interpreter.

The per-row figures are checked against the torch path (`_Collector._row_reductions`, the reference
on CPU) and against an independent float64 numpy computation; the per-tile partials and their float64
merge against `_merge_rows` of the torch path's rows; then through the real dispatch in `capture.run`
(INSPECTOR_FUSED_STATS=on) on tiny GPT-2, BERT and a sliding-window Mistral.

Triton decides interpreter or compiler when it is first imported, and in a normal test session it
is imported early (transformers' masking utilities import it). So, unless the session itself was
started with TRITON_INTERPRET=1, this module runs itself once in a subprocess that sets it from the
start (`test_kernels_under_triton_interpreter`), and its other tests run there.
"""
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from conftest import tiny_bert_model, tiny_gpt2_model

from inspector import capture, fused_stats
from inspector.errors import InspectorError
from inspector.inputs import encode_batch
from inspector.models import wrap

NAMES = ("n", "lo", "hi", "s1", "s2", "l", "ey", "e0")
INTERPRETING = fused_stats._interpreting()


def test_kernels_under_triton_interpreter():
    """Run this file's kernel tests in a fresh interpreter with TRITON_INTERPRET=1 (see module doc)."""
    if INTERPRETING:
        pytest.skip("this session runs under Triton's interpreter: the tests below run here directly")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          check=False, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-3000:]


@pytest.fixture(autouse=True)
def interpreter(request, monkeypatch):
    if request.function.__name__ != "test_kernels_under_triton_interpreter":
        if not INTERPRETING:
            pytest.skip("runs in the TRITON_INTERPRET=1 subprocess of test_kernels_under_triton_interpreter")
        monkeypatch.setenv(fused_stats.ENV, "on")


def _mask(B, Tq, Tk, causal, key_valid, query_valid, window):
    """(B, 1, Tq, Tk) bool built directly from the description (the test's own construction)."""
    qpos = torch.arange(Tq)[:, None] + (Tk - Tq)
    kpos = torch.arange(Tk)[None, :]
    band = torch.ones(Tq, Tk, dtype=torch.bool)
    if causal:
        band &= kpos <= qpos
    if window is not None:
        band &= kpos > qpos - window
    v = band[None].expand(B, Tq, Tk).clone()
    if key_valid is not None:
        v &= key_valid[:, None, :]
    if query_valid is not None:
        v &= query_valid[:, :, None]
    return v[:, None]


def _first_key(key_valid, B):
    """The first real key of each item (the sink's key), as the capture's torch path finds it."""
    return key_valid.to(torch.uint8).argmax(dim=1) if key_valid is not None else torch.zeros(B, dtype=torch.long)


def _torch_rows(q, k, valid, scale, first):
    H = q.shape[1]
    k = k.repeat_interleave(H // k.shape[1], dim=1)
    x = q.float() @ k.float().transpose(-1, -2)
    return capture._Collector._row_reductions(x, valid, scale, False, False, [], first)[:8]


def _numpy_rows(q, k, valid, scale, first):
    """float64, row by row, straight from the definitions (e0: at key first[b], 0 where it is not attended)."""
    qn, kn = q.double().numpy(), k.double().numpy()
    B, H, Tq, _ = qn.shape
    kn = np.repeat(kn, H // kn.shape[1], axis=1)
    v = np.broadcast_to(valid.numpy(), (B, H, Tq, kn.shape[2]))
    out = np.zeros((8, B, H, Tq))
    out[1], out[2] = np.inf, -np.inf
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                keys = np.nonzero(v[b, h, i])[0]
                if not len(keys):
                    continue
                z = scale * (kn[b, h, keys] @ qn[b, h, i])
                y = z - z.max()
                e = np.exp(y)
                e0 = e[list(keys).index(first[b])] if first[b] in keys else 0.0
                out[:, b, h, i] = [len(keys), z.min(), z.max(), y.sum(), (y ** 2).sum(), e.sum(), (e * y).sum(), e0]
    return out


def _padding(B, T, kind):
    """(B, T) bool: right or left padding of different lengths, item 0 always full."""
    if kind == "none":
        return None
    lengths = torch.tensor([T] + [max(1, T - 3 * (i + 1)) for i in range(B - 1)])
    idx = torch.arange(T)[None]
    return idx < lengths[:, None] if kind == "right" else idx >= (T - lengths)[:, None]


CASES = [  # B, H, H_kv, Tq, Tk, d, causal, padding, window, dtype
    (1, 2, 2, 1, 1, 16, True, "none", None, torch.float32),  # one token
    (2, 6, 2, 7, 7, 16, False, "right", None, torch.float32),  # bidirectional, GQA 6/2
    (3, 6, 2, 33, 33, 32, True, "left", None, torch.float32),  # causal, left padding, GQA
    (1, 2, 1, 65, 65, 16, True, "none", 20, torch.float32),  # sliding window, tiles skipped both sides
    (2, 2, 2, 5, 33, 24, True, "right", None, torch.float32),  # fewer queries than keys (offset), d not 2^k
    (2, 6, 2, 33, 33, 64, True, "right", None, torch.bfloat16),  # bf16 inputs
    (1, 2, 2, 17, 17, 32, False, "left", None, torch.float16),  # fp16 inputs
    # no padding, longer than two tiles (16 × 16 here): the full-tile path (no mask arithmetic) runs too
    (2, 4, 2, 50, 50, 32, True, "none", None, torch.float32),  # causal
    (1, 2, 2, 40, 40, 16, False, "none", None, torch.float32),  # bidirectional: every tile full but the last
    (1, 2, 2, 80, 80, 16, True, "none", 40, torch.float32),  # window 40: full tiles between the two edges
    (2, 6, 3, 48, 48, 64, True, "none", None, torch.bfloat16),  # bf16, GQA, Tq a multiple of the tile
    # tile edges one key away from the causal / window edge (an off-by-one there attends one key too many)
    (1, 2, 2, 18, 32, 16, True, "none", None, torch.float32),  # offset 14: key tile 0 ends past row 0
    (1, 2, 1, 64, 64, 16, True, "none", 31, torch.float32),  # window 31: key 16 is outside row 47's window
    (2, 2, 2, 48, 48, 16, False, "keys", None, torch.float32),  # padded keys inside a whole tile, no query mask
]


def case_inputs(B, H, Hkv, Tq, Tk, d, padding, dtype):
    """q, k, key validity, query validity of one CASES row ("keys": padded keys, every query valid)."""
    g = torch.Generator().manual_seed(Tq * 7 + d)
    q = (torch.randn(B, H, Tq, d, generator=g) * 1.5).to(dtype)
    k = (torch.randn(B, Hkv, Tk, d, generator=g) * 1.5).to(dtype)
    key_valid = _padding(B, Tk, "right" if padding == "keys" else padding)
    query_valid = key_valid[:, Tk - Tq:] if key_valid is not None and padding != "keys" else None
    return q, k, key_valid, query_valid


@pytest.mark.parametrize("B, H, Hkv, Tq, Tk, d, causal, padding, window, dtype", CASES)
def test_kernel_matches_torch_path_and_float64(B, H, Hkv, Tq, Tk, d, causal, padding, window, dtype):
    q, k, key_valid, query_valid = case_inputs(B, H, Hkv, Tq, Tk, d, padding, dtype)
    scale = 1 / math.sqrt(d)
    valid = _mask(B, Tq, Tk, causal, key_valid, query_valid, window)
    got = fused_stats.fused_row_figures(q, k, scale=scale, causal=causal, key_valid=key_valid,
                                        query_valid=query_valid, sliding_window=window)
    first = _first_key(key_valid, B)
    ref_t = _torch_rows(q, k, valid, scale, first)
    ref_n = _numpy_rows(q, k, valid, scale, first.tolist())
    assert got[0].shape == (B, H, Tq) and all(x.dtype == torch.float32 for x in got)
    np.testing.assert_array_equal(got[0].numpy(), ref_t[0].numpy())
    np.testing.assert_array_equal(got[0].numpy(), ref_n[0])
    rtol = 1e-3 if dtype == torch.bfloat16 else 2e-5
    for i, name in enumerate(NAMES[1:], start=1):
        a, t, r = got[i].double().numpy(), ref_t[i].double().numpy(), ref_n[i]
        atol = rtol * max(float(np.abs(r[np.isfinite(r)]).max(initial=0.0)), 1e-6)
        np.testing.assert_allclose(a, t, rtol=rtol, atol=atol, err_msg=f"{name} vs torch path")
        np.testing.assert_allclose(a, r, rtol=max(rtol, 2e-5), atol=atol, err_msg=f"{name} vs float64")


def test_fully_masked_rows_and_items_give_empty_rows():
    """A padded query row and a batch item whose keys are all masked: n = 0 and the torch path's empty values."""
    g = torch.Generator().manual_seed(3)
    B, H, T, d = 2, 2, 9, 16
    q, k = torch.randn(B, H, T, d, generator=g), torch.randn(B, H, T, d, generator=g)
    key_valid = torch.ones(B, T, dtype=torch.bool)
    key_valid[1] = False
    query_valid = torch.ones(B, T, dtype=torch.bool)
    query_valid[0, 4] = False
    got = fused_stats.fused_row_figures(q, k, scale=0.25, causal=False, key_valid=key_valid, query_valid=query_valid)
    ref = _torch_rows(q, k, _mask(B, T, T, False, key_valid, query_valid, None), 0.25, _first_key(key_valid, B))
    for name, a, t in zip(NAMES, got, ref):
        np.testing.assert_allclose(a.numpy(), t.numpy(), rtol=2e-5, atol=1e-5, err_msg=name)
    assert got[0][1].eq(0).all() and got[0][0, :, 4].eq(0).all() and got[0][0, :, 3].eq(T).all()
    assert torch.isinf(got[1][1]).all() and got[7][1].eq(0).all() and got[5][1].eq(0).all()


MERGE_CASES = [  # B, H, H_kv, T, d, causal, padding, window
    (3, 3, 3, 21, 16, True, "left", None),  # padding: every tile masked, empty rows
    (2, 4, 2, 50, 16, True, "none", None),  # full tiles, GQA, a partial last query tile
    (1, 2, 2, 37, 16, False, "right", None),  # bidirectional
    (1, 2, 1, 80, 16, True, "none", 24),  # sliding window: the sink figure is 0 on rows past the window
]


@pytest.mark.parametrize("B, H, Hkv, T, d, causal, padding, window", MERGE_CASES)
def test_partials_and_merge_equal_torch_merge(B, H, Hkv, T, d, causal, padding, window):
    """Per-tile partials + the float64 per-head merge kernel vs `_merge_rows` of the torch path's rows,
    twice into the same accumulator (Chan merge across calls), the second with an offset-heavy head
    (mean ≫ spread)."""
    g = torch.Generator().manual_seed(5 + T)
    kv = _padding(B, T, padding)
    acc_t, acc_f = capture._Accumulator(H), capture._Accumulator(H)
    valid = _mask(B, T, T, causal, kv, kv, window)
    for step in range(2):
        q = torch.randn(B, H, T, d, generator=g) * 0.5 + (2.0 if step else 0.0)
        k = torch.randn(B, Hkv, T, d, generator=g) * 0.5 + 2.0
        capture._Collector._merge_rows(acc_t, 0.25, *_torch_rows(q, k, valid, 0.25, _first_key(kv, B)))
        kv8, qv8, first = fused_stats._mask_parts(kv, kv, q.device)
        partials = fused_stats.fused_head_partials(q, k, scale=0.25, causal=causal, key_valid=kv8, query_valid=qv8,
                                                   first_key=first, sliding_window=window)
        assert partials.shape == (fused_stats.N_PARTIALS, B, H, -(-T // 16))
        fused_stats.merge_partials_fused(acc_f, 0.25, partials)
    np.testing.assert_array_equal(acc_f.n.numpy(), acc_t.n.numpy())
    np.testing.assert_array_equal(acc_f.rows.numpy(), acc_t.rows.numpy())
    np.testing.assert_array_equal(acc_f.frac_rows.numpy(), acc_t.frac_rows.numpy())
    for name in ("mean", "m2", "min", "max", "ent_sum", "frac_sum", "maxp_sum", "sink_sum"):
        np.testing.assert_allclose(getattr(acc_f, name).numpy(), getattr(acc_t, name).numpy(), rtol=2e-6,
                                   atol=1e-9, err_msg=name)
    if window is not None:
        assert 0 < acc_t.sink_sum.min() and acc_t.sink_sum.max() < acc_t.rows.min()  # rows past the window add 0


def test_describe_mask_recovers_structure_or_refuses():
    B, T = 3, 12
    kv = _padding(B, T, "left")
    for causal, window in ((True, None), (False, None), (True, 5)):
        valid = _mask(B, T, T, causal, kv, kv, window)
        described = fused_stats.describe_mask(valid, causal=True)
        assert described is not None
        c, key_valid, query_valid, w = described
        np.testing.assert_array_equal(_mask(B, T, T, c, key_valid, query_valid, w).numpy(), valid.numpy())
    odd = _mask(B, T, T, True, kv, kv, None).clone()
    odd[0, 0, 7, 2] = False  # one hole inside a row: no (causal, key, query, window) description fits
    assert fused_stats.describe_mask(odd, causal=True) is None
    assert fused_stats.describe_mask(odd.expand(B, 2, T, T), causal=True) is None  # per-head masks


def test_mode_switch(monkeypatch):
    q = torch.zeros(1, 2, 3, 16)
    monkeypatch.setenv(fused_stats.ENV, "off")
    assert not fused_stats.can_use(q, q)
    monkeypatch.setenv(fused_stats.ENV, "auto")
    assert not fused_stats.can_use(q, q)  # auto: CUDA tensors only
    monkeypatch.setenv(fused_stats.ENV, "on")
    assert fused_stats.can_use(q, q)
    assert not fused_stats.can_use(q, torch.zeros(1, 2, 3, 8))  # shapes the kernel does not take
    monkeypatch.setattr(fused_stats, "_interpreting", lambda: False)  # a process started without it
    with pytest.raises(InspectorError, match="interpreter") as err:
        fused_stats.can_use(q, q)
    assert "TRITON_INTERPRET=1" in err.value.hint
    monkeypatch.setenv(fused_stats.ENV, "sometimes")
    with pytest.raises(InspectorError, match="auto, on or off"):
        fused_stats.can_use(q, q)


# --------------------------------------------------------------------------- through capture.run


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    real = fused_stats.fused_head_partials

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(fused_stats, "fused_head_partials", spy)
    return calls


def _stats_equal(a: capture.AttentionLogitStats, b: capture.AttentionLogitStats):
    np.testing.assert_array_equal(a.count, b.count)
    for name in ("mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob", "sink_mass"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-6, err_msg=name)


TEXTS = ["The quick brown fox jumps over the lazy dog.", "Attention compares queries with keys.", "Embeddings."]


@pytest.mark.parametrize("family, padding", [("gpt2", "none"), ("gpt2", "left"), ("gpt2", "right"),
                                             ("bert", "right")])
def test_capture_run_fused_equals_torch_path_and_keeps_logits(family, padding, monkeypatch, kernel_calls):
    if family == "gpt2":
        model, tok = tiny_gpt2_model(seed=1, init_range=0.3)
        plain, _ = tiny_gpt2_model(seed=1, init_range=0.3)
    else:
        model, tok = tiny_bert_model(seed=1, init_range=0.3, cls_name="BertForMaskedLM")
        plain, _ = tiny_bert_model(seed=1, init_range=0.3, cls_name="BertForMaskedLM")
    lm = wrap(model, tok)
    batch = encode_batch(lm, TEXTS[:1]) if padding == "none" else encode_batch(lm, TEXTS, padding_side=padding)
    monkeypatch.setenv(fused_stats.ENV, "off")
    off = capture.run(lm, batch)
    assert not kernel_calls
    monkeypatch.setenv(fused_stats.ENV, "on")
    on = capture.run(lm, batch)
    assert len(kernel_calls) == lm.n_layers  # the fused path really ran, once per layer
    _stats_equal(on.attention, off.attention)
    kwargs = {k: v for k, v in batch.items() if v is not None}
    with torch.no_grad():
        ref = plain(**kwargs, **({"use_cache": False} if family == "gpt2" else {})).logits.float()
    assert torch.equal(on.logits, ref)  # the kernel only reads q and k

    kept = capture.run(lm, batch, capture.CaptureOptions(keep_probs_layers=(1,)))
    assert len(kernel_calls) == 2 * lm.n_layers - 1  # a layer whose probabilities are kept takes the torch path
    _stats_equal(kept.attention, off.attention)


def test_auto_mode_falls_back_when_the_kernel_fails(monkeypatch):
    """auto: a kernel that fails (e.g. does not compile on some GPU) switches to the torch path with a
    warning, and the statistics are still right; on: the error surfaces."""
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this GPU")

    model, tok = tiny_gpt2_model(seed=1, init_range=0.3)
    lm = wrap(model, tok)
    batch = encode_batch(lm, TEXTS, padding_side="left")
    monkeypatch.setenv(fused_stats.ENV, "off")
    ref = capture.run(lm, batch)
    monkeypatch.setenv(fused_stats.ENV, "on")
    monkeypatch.setattr(fused_stats, "fused_head_partials", broken)
    monkeypatch.setattr(fused_stats, "can_use", lambda q, k: True)  # as if on CUDA
    monkeypatch.setattr(fused_stats, "_failed", None)
    with pytest.raises(RuntimeError, match="no kernel"):
        capture.run(lm, batch)
    monkeypatch.setenv(fused_stats.ENV, "auto")
    with pytest.warns(UserWarning, match="torch path"):
        got = capture.run(lm, batch)
    assert fused_stats._failed is not None
    _stats_equal(got.attention, ref.attention)
    np.testing.assert_array_equal(got.logits.numpy(), ref.logits.numpy())


def test_sliding_window_model_uses_fused_path(monkeypatch, kernel_calls):
    """A tiny Mistral (sliding window 4 < 12 tokens, GQA 4/2): the model's own mask is recognised."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
                        max_position_embeddings=64, attn_implementation="sdpa")
    model = MistralForCausalLM(cfg).eval()
    lm = types.SimpleNamespace(model=model, n_layers=2, n_heads=4)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding

    def stats():
        with torch.no_grad(), capture.capture(lm, capture.CaptureOptions(), mask) as col:
            model(input_ids=ids, attention_mask=mask)
        return col.attention_stats()

    monkeypatch.setenv(fused_stats.ENV, "off")
    off = stats()
    monkeypatch.setenv(fused_stats.ENV, "on")
    on = stats()
    assert len(kernel_calls) == 2 and all(c["sliding_window"] == 4 for c in kernel_calls)
    _stats_equal(on, off)


@pytest.mark.parametrize("padding", ["none", "left"])
def test_row_histograms_come_from_the_fused_path(padding, monkeypatch, kernel_calls):
    """The corpus job's row histograms (entropy fraction, largest probability; 10 bins): counted by the
    fused kernels' atomics, equal to the torch path's counts, and the moments still equal."""
    model, tok = tiny_gpt2_model(seed=2, init_range=0.4)
    lm = wrap(model, tok)
    batch = encode_batch(lm, TEXTS[:1]) if padding == "none" else encode_batch(lm, TEXTS, padding_side="left")
    options = capture.CaptureOptions(logits=False, row_histogram_bins=10)

    def moments():
        with torch.no_grad(), capture.capture(lm, options, batch["attention_mask"]) as col:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return capture.moments(col)

    monkeypatch.setenv(fused_stats.ENV, "off")
    off = moments()
    assert not kernel_calls
    monkeypatch.setenv(fused_stats.ENV, "on")
    on = moments()
    assert len(kernel_calls) == lm.n_layers and all(c["hist"] is not None for c in kernel_calls)
    rows = int(batch["attention_mask"].sum()) * lm.n_heads
    for name in ("hist_entropy_fraction", "hist_max_prob"):
        a, b = getattr(on, name), getattr(off, name)
        assert a.shape == (lm.n_layers, lm.n_heads, 10) and a.sum() > 0
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert on.hist_max_prob[0].sum() == rows  # every real row counted once per head
    np.testing.assert_array_equal(on.count, off.count)
    for name in ("mean", "m2", "ent_sum", "maxp_sum", "sink_sum"):
        np.testing.assert_allclose(getattr(on, name), getattr(off, name), rtol=1e-5, atol=1e-9, err_msg=name)
