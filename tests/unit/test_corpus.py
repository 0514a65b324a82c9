"""Corpus job on the bundled gpt2-mini and a small slice of the bundled validation corpus.

σ(QKᵀ) is checked against plain torch (every window's valid q·k concatenated), perplexity against the
library's sliding-window `score_corpus` (exact equality), and an interrupted + resumed job against an
uninterrupted one.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inspector import bundled, corpus, models
from inspector.analyses.loss import score_corpus
from inspector.analyses.scoring import windows

SETTINGS = corpus.CorpusSettings(window=48, stride=24, batch_size=3, checkpoint_every=2)


@pytest.fixture(scope="module")
def lm():
    return models.load("bundled:gpt2-mini", device="cpu")


@pytest.fixture(scope="module")
def slice_path(tmp_path_factory):
    text = (bundled.CORPUS_DIR / "valid.txt").read_text(encoding="utf-8")[:1500]
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def state(lm, slice_path):
    return corpus.run_local(lm, slice_path, SETTINGS)


def _independent_qk(lm, ids, window, stride):
    """Every window's valid (causal) q·k per layer × head, from eager GPT-2 maths on the model's own weights."""
    values = {}
    model = lm.model
    cfg = model.config
    H, d = cfg.n_head, cfg.n_embd // cfg.n_head
    for b, e, _ in windows(len(ids), window, stride):
        x = torch.tensor(ids[b:e])[None]
        with torch.no_grad():
            out = model(x, output_hidden_states=True, use_cache=False)
        for layer, block in enumerate(model.transformer.h):
            h = block.ln_1(out.hidden_states[layer])  # (1, T, D): the input of this block's attention
            q, k, _ = block.attn.c_attn(h).split(cfg.n_embd, dim=2)
            q = q.view(1, -1, H, d).transpose(1, 2).double()
            k = k.view(1, -1, H, d).transpose(1, 2).double()
            s = q @ k.transpose(-1, -2)  # (1, H, T, T)
            T = s.shape[-1]
            keep = torch.tril(torch.ones(T, T, dtype=torch.bool))
            for head in range(H):
                values.setdefault((layer, head), []).append(s[0, head][keep])
    return {key: torch.cat(v).numpy() for key, v in values.items()}


def test_sigma_qk_equals_all_windows_concatenated(lm, slice_path, state):
    ids = lm.tokenizer(slice_path.read_text(encoding="utf-8"))["input_ids"]
    ref = _independent_qk(lm, ids, SETTINGS.window, SETTINGS.stride)
    st = state.attention.stats()
    for (layer, head), v in ref.items():
        assert st.count[layer, head] == v.size
        np.testing.assert_allclose(st.std[layer, head], v.std(), rtol=1e-4)
        np.testing.assert_allclose(st.mean[layer, head], v.mean(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(st.max[layer, head], v.max(), rtol=1e-4)
        np.testing.assert_allclose(st.std_scaled[layer, head], v.std() / math.sqrt(lm.model.config.n_embd // 4),
                                   rtol=1e-4)
    # row histograms count every query row once per head
    np.testing.assert_array_equal(state.attention.hist_max_prob.sum(axis=-1), state.attention.rows)


def test_perplexity_equals_library_sliding_window_exactly(lm, slice_path, state):
    text = slice_path.read_text(encoding="utf-8")
    ref = score_corpus(lm, text, window=SETTINGS.window, stride=SETTINGS.stride, batch_size=SETTINGS.batch_size)
    assert state.n_tokens == ref.n_tokens
    assert state.nll_sum == ref.nll_sum
    assert math.exp(state.nll_sum / state.n_tokens) == ref.perplexity
    assert corpus.summarise(state)["perplexity"] == ref.perplexity
    assert state.loss_hist.sum() == ref.n_tokens == state.id_count.sum()
    np.testing.assert_allclose(state.id_nll.sum(), ref.nll_sum, rtol=1e-12)


def test_norm_input_scale_matches_plain_torch(lm, slice_path, state):
    ids = lm.tokenizer(slice_path.read_text(encoding="utf-8"))["input_ids"]
    rms = []
    for b, e, _ in windows(len(ids), SETTINGS.window, SETTINGS.stride):
        with torch.no_grad():
            h = lm.model(torch.tensor(ids[b:e])[None], output_hidden_states=True, use_cache=False).hidden_states[0]
        rms.append(h.double().pow(2).mean(-1).sqrt().reshape(-1))
    rms = torch.cat(rms).numpy()
    n, s1, _, mx = state.norms[next(name for name in state.norms if name.endswith("h.0.ln_1"))]
    assert n == rms.size
    np.testing.assert_allclose(s1 / n, rms.mean(), rtol=1e-6)
    np.testing.assert_allclose(mx, rms.max(), rtol=1e-6)


def test_interrupted_and_resumed_equals_uninterrupted(lm, slice_path, state, tmp_path):
    partial = tmp_path / "partial.npz"
    with pytest.raises(KeyboardInterrupt):
        corpus.run_local(lm, slice_path, SETTINGS, partial, stop_after_windows=5)
    assert partial.exists()
    resumed = corpus.run_local(lm, slice_path, SETTINGS, partial)
    a, b = resumed.to_arrays(), state.to_arrays()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_jsonl_and_bad_inputs(lm, tmp_path):
    from inspector.errors import InputError

    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "The module defines a class."}) + "\n"
                    + json.dumps({"text": "Return the value of the key."}) + "\n")
    st = corpus.run_local(lm, path, SETTINGS)
    n = sum(len(lm.tokenizer(t)["input_ids"]) - 1 for t in ("The module defines a class.",
                                                            "Return the value of the key."))
    assert st.n_tokens == n
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(InputError, match="no string field 'text'"):
        list(corpus.iter_documents(bad))
    with pytest.raises(InputError, match="No corpus file"):
        list(corpus.iter_documents(tmp_path / "missing.txt"))


def test_attention_moments_merge_equals_one_pass(lm):
    """Moments of two forward passes merged == the collector's statistics of one pass over both batches."""
    from inspector import capture

    ids = torch.tensor(lm.tokenizer("The module defines a class. " * 8)["input_ids"][:32])
    a, b = ids[None, :16], ids[None, 16:]
    parts = []
    for x in (a, b):
        with torch.no_grad(), capture.capture(lm, capture.CaptureOptions(row_histogram_bins=5)) as c:
            lm.model(x, use_cache=False)
        parts.append(capture.moments(c))
    with torch.no_grad(), capture.capture(lm, capture.CaptureOptions()) as c:
        lm.model(torch.cat([a, b]), use_cache=False)
    one = c.attention_stats()
    merged = parts[0].merge(parts[1]).stats()
    for name in ("count", "mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob", "sink_mass"):
        np.testing.assert_allclose(getattr(merged, name), getattr(one, name), rtol=1e-9, atol=1e-12, err_msg=name)
    m = parts[0].merge(parts[1])
    np.testing.assert_array_equal(m.hist_max_prob.sum(-1), m.rows)
    back = capture.AttentionMoments.from_arrays(m.to_arrays("x_"), "x_")
    np.testing.assert_array_equal(back.m2, m.m2)


def test_saved_dataset_folder_without_datasets_is_a_clear_message(tmp_path, monkeypatch):
    import sys

    from inspector.errors import InputError

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(InputError, match="needs the `datasets` package"):
        list(corpus.iter_documents(tmp_path))


def test_job_folder_resumes_and_refuses_another_job(slice_path, tmp_path, state):
    from inspector.errors import InputError

    out = tmp_path / "job"
    with pytest.raises(KeyboardInterrupt):
        corpus.run_job(["bundled:gpt2-mini"], slice_path, out, SETTINGS, stream=None, stop_after_windows=4)
    with pytest.raises(InputError, match="another job"):
        corpus.run_job(["bundled:gpt2-mini"], slice_path, out, corpus.CorpusSettings(window=32), stream=None)
    corpus.run_job(["bundled:gpt2-mini"], slice_path, out, SETTINGS, stream=None)  # resumes
    (r,) = corpus.load_results(out)
    assert r.summary["nll_sum"] == state.nll_sum and r.summary["windows"] == state.windows
    assert not (out / "00" / "partial.npz").exists()
