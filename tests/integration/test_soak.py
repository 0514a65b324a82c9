"""Long-running service: memory stays flat over many analyses; concurrency holds run after run.

Marked `slow` (not in the default CI run): `.venv/bin/python -m pytest -m slow tests/integration/test_soak.py`.
"""
from __future__ import annotations

import gc
import resource

import numpy as np
import pytest
import torch

from inspector import capture, inputs

pytestmark = pytest.mark.slow


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_analysis(lm, text):
    from inspector.analyses import attention, loss

    enc = inputs.encode(lm, text)
    res = capture.run(lm, enc.batch(), capture.CaptureOptions(keep_probs_layers=(0,)))
    out = [res.attention.std.sum()]
    if lm.is_causal:
        out.append(loss.causal_token_loss(lm, text).perplexity)
    out.append(attention.attention_pattern(lm, enc, 0, 0))
    return out


def test_200_analyses_keep_memory_flat(tiny_gpt2):
    rng = np.random.default_rng(0)
    words = "the a model token attention key query layer norm gain bias vector space word text".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(5, 50)))) for _ in range(220)]
    for t in texts[:20]:  # warm-up: allocator pools, lazy imports
        _one_analysis(tiny_gpt2, t)
    gc.collect()
    base = _rss_mb()
    for t in texts[20:]:
        _one_analysis(tiny_gpt2, t)
    gc.collect()
    grown = _rss_mb() / base - 1
    assert grown < 0.05, f"RSS grew {grown:.1%} over 200 analyses ({base:.0f} MB at start)"
    assert not capture.is_capturing()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny_gpt2.model.modules())
    if torch.cuda.is_available():
        assert torch.cuda.memory_allocated() < 1e9


@pytest.mark.parametrize("round_", range(5))
def test_concurrency_repeatedly(round_, tiny_gpt2, tiny_bert):
    from concurrency_check import assert_concurrent_equals_serial

    assert_concurrent_equals_serial(tiny_gpt2, rounds=2)
    assert_concurrent_equals_serial(tiny_bert, rounds=2)
