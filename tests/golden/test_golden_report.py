"""The report of the default model and text is unchanged, number by number (see golden_report.py)."""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_report as G  # noqa: E402

# float32 figures move between machines and library builds (other BLAS kernels, other summation order): on
# the 2-core CI machines seen, ~1e-7 relative typically, up to ~5e-5 relative, and ~1e-6 absolute where a
# figure is a cancellation (cosines near 0, IG's convergence delta, Σ ∂L/∂z ≈ 0). A refactoring that changes
# what is computed moves figures far more than that.
RTOL = 1e-4
ATOL = 1e-5
# Numbers printed inside sentences (claims' "measured" text): integers exactly; decimals to their 3 significant
# digits, and float32 noise-level values (e.g. "max |Δ| = 2.38e-07" on one machine, "1.49e-08" on another) are
# zero for the comparison, as with ATOL for the figures themselves.
TEXT_RTOL = 1e-2
TEXT_ATOL = ATOL
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _same_sentence(golden: str, current: str) -> bool:
    """Equal text around the numbers, and each number within TEXT_RTOL / TEXT_ATOL."""
    if _NUMBER.split(golden) != _NUMBER.split(current):
        return False
    for g, c in zip(_NUMBER.findall(golden), _NUMBER.findall(current)):
        if not any(ch in g + c for ch in ".eE"):  # counts, positions, sizes: exactly
            if int(g) != int(c):
                return False
        elif not math.isclose(float(g), float(c), rel_tol=TEXT_RTOL, abs_tol=TEXT_ATOL):
            return False
    return True
# Where the current report may hold more than the golden one: new sections, their settings, new summary figures.
OPEN_DICTS = {("sections",), ("settings",), ("summary",)}


def differences(golden, current, path=(), out=None, limit=40) -> list[str]:
    """Every place where `current` differs from `golden` (numbers within RTOL/ATOL), up to `limit`."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    where = "/".join(map(str, path)) or "<root>"
    if isinstance(golden, dict):
        if not isinstance(current, dict):
            out.append(f"{where}: expected an object, got {type(current).__name__}")
            return out
        missing = sorted(set(golden) - set(current))
        extra = sorted(set(current) - set(golden)) if path not in OPEN_DICTS else []
        if missing or extra:
            out.append(f"{where}: missing keys {missing}, unexpected keys {extra}")
        for k in golden:
            if k in current:
                differences(golden[k], current[k], path + (k,), out, limit)
    elif isinstance(golden, list):
        if not isinstance(current, list) or len(current) != len(golden):
            n = len(current) if isinstance(current, list) else type(current).__name__
            out.append(f"{where}: expected a list of {len(golden)}, got {n}")
            return out
        for i, (g, c) in enumerate(zip(golden, current)):
            differences(g, c, path + (i,), out, limit)
    elif isinstance(golden, str):
        if not isinstance(current, str) or not _same_sentence(golden, current):
            out.append(f"{where}: expected {golden!r}, got {current!r}")
    elif isinstance(golden, bool) or golden is None:
        if golden != current or type(golden) is not type(current):
            out.append(f"{where}: expected {golden!r}, got {current!r}")
    elif isinstance(golden, (int, float)):
        ok = isinstance(current, (int, float)) and not isinstance(current, bool)
        if ok and math.isinf(golden):
            ok = current == golden
        elif ok:
            ok = math.isclose(golden, current, rel_tol=RTOL, abs_tol=ATOL)
        if not ok:
            out.append(f"{where}: expected {golden!r}, got {current!r}")
    else:  # pragma: no cover - JSON has no other types
        out.append(f"{where}: unexpected type {type(golden).__name__}")
    return out


@pytest.fixture(scope="module")
def current():
    if not (G.REPO / "data" / "models" / "gpt2-mini").is_dir():
        pytest.fail("bundled:gpt2-mini is not built: run `python -m inspector.bundled` (or make install) first")
    return G.normalise(G.build_json())


def test_golden_report_unchanged(current):
    diffs = differences(G.load_golden(), current)
    assert not diffs, "the report's figures changed:\n" + "\n".join(diffs)


def test_comparison_catches_a_changed_figure():
    golden = {"sections": {"a": {"x": [1.0, 2.0]}}, "summary": {}}
    assert differences(golden, {"sections": {"a": {"x": [1.0, 2.0 * (1 + 1e-3)]}}, "summary": {}})
    assert differences(golden, {"sections": {"a": {"x": [1.0]}}, "summary": {}})
    assert differences(golden, {"sections": {"a": {"x": [1.0, 2.0], "y": 1}}, "summary": {}})
    assert not differences(golden, {"sections": {"a": {"x": [1.0, 2.0 * (1 + 1e-6)]}, "new": {}},
                                    "summary": {"more": 1}})


def test_sentences_compare_their_words_exactly_and_their_numbers_closely():
    g = "max |Δ| = 5.20e-18 over 8000 logits (position 103); eigenvalues in [1.40e-17, 0.262]"
    assert _same_sentence(g, "max |Δ| = 1.11e-16 over 8000 logits (position 103); eigenvalues in [4.90e-18, 0.263]")
    assert not _same_sentence(g, "max |Δ| = 5.20e-18 over 8000 logits (position 104); eigenvalues in [1.40e-17, 0.262]")
    assert not _same_sentence(g, "max |Δ| = 5.20e-18 over 8000 logits (position 103); eigenvalues in [1.40e-17, 0.31]")
    assert not _same_sentence(g, "max |Δ| = 5.20e-18 of 8000 logits (position 103); eigenvalues in [1.40e-17, 0.262]")
    assert differences({"s": "verdict: holds"}, {"s": "verdict: fails"})
