"""`--engine ray` with two local CPU workers gives the local engine's statistics (CI: one small slice)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector import bundled, corpus, models

ray = pytest.importorskip("ray")

SETTINGS = corpus.CorpusSettings(window=48, stride=24, batch_size=2)


def test_two_ray_workers_equal_local_engine(tmp_path, monkeypatch):
    from inspector import corpus_ray

    monkeypatch.setattr(corpus_ray, "BATCHES_PER_SHARD", 2)  # several shards per worker on a small slice
    path = tmp_path / "slice.txt"
    path.write_text((bundled.CORPUS_DIR / "valid.txt").read_text(encoding="utf-8")[:2000], encoding="utf-8")
    lm = models.load("bundled:gpt2-mini", device="cpu")
    # Workers run torch on 1 thread; float32 GEMMs round differently with another thread split (one
    # token's NLL moved by 1 ulp at 2 threads), so the local reference uses 1 thread too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = corpus.run_local(lm, path, SETTINGS)
    finally:
        torch.set_num_threads(threads)
    try:
        remote = corpus_ray.run_ray("bundled:gpt2-mini", path, SETTINGS, workers=2, device="cpu", lm=lm)
    finally:
        ray.shutdown()
    a, b = remote.to_arrays(), local.to_arrays()
    assert a.keys() == b.keys()
    exact = {"n_tokens", "windows", "loss_hist", "id_count", "attn_count", "attn_rows", "attn_frac_rows",
             "attn_hist_entropy_fraction", "attn_hist_max_prob", "attn_d_head", "attn_scaling", "norm_names",
             "attn_min", "attn_max"}
    for key in a:
        if key == "position":
            continue
        if key in exact or a[key].dtype.kind in "iUb":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert remote.attention.stats().std.shape == (4, 4)
