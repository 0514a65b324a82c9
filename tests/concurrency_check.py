"""Shared by the unit concurrency test and its repeated soak variant."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from inspector import capture, inputs, service

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention compares queries with keys.",
    "def f(x): return x * 2",
    "Tiếng Việt có dấu.",
    "Emoji 🙂 and CJK 漢字.",
    "Layer normalisation rescales each vector with a learned gain and bias, then shifts it.",
    "numbers like 3.14159 and 2026",
    "A model reads tokens and predicts the next one, again and again and again.",
]


def analyse(lm, text):
    enc = inputs.encode(lm, text)
    with service.device_slot(lm.device):
        res = capture.run(lm, enc.batch())
    return res.attention.std.copy(), res.attention.entropy.copy(), res.logits.numpy().copy()


def assert_concurrent_equals_serial(lm, rounds: int = 3) -> None:
    serial = [analyse(lm, t) for t in TEXTS]
    for _ in range(rounds):
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = [f.result(timeout=60) for f in [pool.submit(analyse, lm, t) for t in TEXTS]]
        for s, g in zip(serial, got):
            for a, b in zip(s, g):
                np.testing.assert_array_equal(a, b)
    assert not capture.is_capturing()
