"""The fused kernels compiled and run on a CUDA GPU, against the torch path on the CPU.

Skipped without a GPU (CI has none). On one, `bench/gpu_session.sh` runs this file first: the same
shapes as the interpreter tests (test_fused_stats.py), but through Triton's compiler, the GPU's tiles
(`fused_stats._tiles`) and tensor-core dots, then `capture.run` on a tiny GPT-2 with the kernels on
and off.
"""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("triton")
from inspector import capture, fused_stats  # noqa: E402

# Run by hand under TRITON_INTERPRET=1 without a GPU, the file checks itself on CPU tensors (CPU tiles).
if not (torch.cuda.is_available() or fused_stats._interpreting()):
    pytest.skip("no CUDA GPU", allow_module_level=True)

from conftest import tiny_gpt2_model  # noqa: E402
from test_fused_stats import (CASES, MERGE_CASES, NAMES, TEXTS, _first_key, _mask, _padding,  # noqa: E402
                              _torch_rows, case_inputs)

from inspector.inputs import encode_batch  # noqa: E402
from inspector.models import wrap  # noqa: E402

CUDA = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def fused_on(monkeypatch):
    monkeypatch.setenv(fused_stats.ENV, "on")


@pytest.mark.parametrize("B, H, Hkv, Tq, Tk, d, causal, padding, window, dtype", CASES)
def test_row_figures_on_cuda_match_torch_path(B, H, Hkv, Tq, Tk, d, causal, padding, window, dtype):
    q, k, key_valid, query_valid = case_inputs(B, H, Hkv, Tq, Tk, d, padding, dtype)
    scale = 1 / math.sqrt(d)
    got = fused_stats.fused_row_figures(q.to(CUDA), k.to(CUDA), scale=scale, causal=causal,
                                        key_valid=None if key_valid is None else key_valid.to(CUDA),
                                        query_valid=None if query_valid is None else query_valid.to(CUDA),
                                        sliding_window=window)
    ref = _torch_rows(q, k, _mask(B, Tq, Tk, causal, key_valid, query_valid, window), scale, _first_key(key_valid, B))
    np.testing.assert_array_equal(got[0].cpu().numpy(), ref[0].numpy())
    rtol = 1e-3 if dtype == torch.bfloat16 else 2e-5 if dtype == torch.float32 else 1e-4
    for i, name in enumerate(NAMES[1:], start=1):
        a, t = got[i].double().cpu().numpy(), ref[i].double().numpy()
        atol = rtol * max(float(np.abs(t[np.isfinite(t)]).max(initial=0.0)), 1e-6)
        np.testing.assert_allclose(a, t, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("B, H, Hkv, T, d, causal, padding, window", MERGE_CASES)
def test_partials_and_merge_on_cuda_equal_torch_merge(B, H, Hkv, T, d, causal, padding, window):
    g = torch.Generator().manual_seed(5 + T)
    kv = _padding(B, T, padding)
    acc_t, acc_f = capture._Accumulator(H), capture._Accumulator(H, CUDA)
    valid = _mask(B, T, T, causal, kv, kv, window)
    for step in range(2):
        q = torch.randn(B, H, T, d, generator=g) * 0.5 + (2.0 if step else 0.0)
        k = torch.randn(B, Hkv, T, d, generator=g) * 0.5 + 2.0
        capture._Collector._merge_rows(acc_t, 0.25, *_torch_rows(q, k, valid, 0.25, _first_key(kv, B)))
        kv8, qv8, first = fused_stats._mask_parts(kv, kv, CUDA)
        parts = fused_stats.fused_head_partials(q.to(CUDA), k.to(CUDA), scale=0.25, causal=causal, key_valid=kv8,
                                                query_valid=qv8, first_key=first, sliding_window=window)
        fused_stats.merge_partials_fused(acc_f, 0.25, parts)
    np.testing.assert_array_equal(acc_f.n.cpu().numpy(), acc_t.n.numpy())
    for name in ("mean", "m2", "min", "max", "ent_sum", "frac_sum", "maxp_sum", "sink_sum"):
        np.testing.assert_allclose(getattr(acc_f, name).cpu().numpy(), getattr(acc_t, name).numpy(), rtol=1e-5,
                                   atol=1e-8, err_msg=name)


@pytest.mark.parametrize("padding", ["none", "left"])
def test_capture_run_on_cuda_fused_equals_torch_path(padding, monkeypatch):
    model, tok = tiny_gpt2_model(seed=1, init_range=0.3)
    lm = wrap(model.to(CUDA), tok)
    batch = encode_batch(lm, TEXTS[:1]) if padding == "none" else encode_batch(lm, TEXTS, padding_side="left")
    calls = []
    real = fused_stats.fused_head_partials
    monkeypatch.setattr(fused_stats, "fused_head_partials", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    monkeypatch.setenv(fused_stats.ENV, "off")
    off = capture.run(lm, batch)
    monkeypatch.setenv(fused_stats.ENV, "on")
    on = capture.run(lm, batch)
    assert len(calls) == lm.n_layers
    np.testing.assert_array_equal(on.attention.count, off.attention.count)
    for name in ("mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob", "sink_mass"):
        np.testing.assert_allclose(getattr(on.attention, name), getattr(off.attention, name), rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    assert torch.equal(on.logits, off.logits)  # the kernels only read q and k


def test_row_histograms_on_cuda_equal_torch_path(monkeypatch):
    """The corpus job's row histograms through the compiled atomics (left padding, 10 bins)."""
    model, tok = tiny_gpt2_model(seed=2, init_range=0.4)
    lm = wrap(model.to(CUDA), tok)
    batch = {k: v.to(CUDA) for k, v in encode_batch(lm, TEXTS, padding_side="left").items()}
    options = capture.CaptureOptions(logits=False, row_histogram_bins=10)

    def moments():
        with torch.no_grad(), capture.capture(lm, options, batch["attention_mask"]) as col:
            lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return capture.moments(col)

    monkeypatch.setenv(fused_stats.ENV, "off")
    off = moments()
    monkeypatch.setenv(fused_stats.ENV, "on")
    on = moments()
    for name in ("hist_entropy_fraction", "hist_max_prob"):
        np.testing.assert_array_equal(getattr(on, name), getattr(off, name), err_msg=name)
    np.testing.assert_allclose(on.ent_sum, off.ent_sum, rtol=1e-5)
