"""The claims table's row, its verdicts and the thresholds the verdicts apply.

`ClaimRow` is stored in JSON reports as "inspector.analyses.foundations.ClaimRow" (the report names
each result's type by module and qualified name): it is defined here, re-exported by
`inspector.analyses.foundations`, and keeps that module as its `__module__` so stored reports and
the golden report still name (and load back) the same type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
NOT_APPLICABLE = "not applicable"

SIGMA_BAND = (0.5, 2.0)
MAJORITY = 0.5
SPEARMAN_ALPHA = 0.05
SINUSOIDAL_MIN = 0.9
GRAD_TOL = 1e-6
IDENTITY_TOL = 1e-9
ORACLE_REL_TOL = 1e-4
MLM_ALPHA = 1e-3
MLM_MIN_CHOSEN = 20
MLM_SPLIT_CHARS = 20_000  # text masked for the 80/10/10 claim: ~3 000 chosen tokens, whatever the process' text limit


@dataclass
class ClaimRow:
    """One claim of the seed articles measured on the loaded model."""

    key: str  # stable identifier, e.g. "gamma_band"
    seed: str  # "000" .. "004"
    claim: str  # the claim as the article states it
    measured: str  # the figures in words
    figures: dict[str, float]  # named measured values (per layer / per norm layer where relevant)
    verdict: str  # "holds" | "does not hold" | "not applicable"
    threshold: str  # the rule the verdict applies
    note: str = ""


# The name reports store and load (see the module docstring).
ClaimRow.__module__ = "inspector.analyses.foundations"


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.2e}"
    return f"{x:.{digits}g}"


def _na(key, seed, claim, threshold, why) -> ClaimRow:
    return ClaimRow(key=key, seed=seed, claim=claim, measured="—", figures={}, verdict=NOT_APPLICABLE,
                    threshold=threshold, note=why)


def _verdict(ok: bool) -> str:
    return HOLDS if ok else DOES_NOT_HOLD


def _kind_phrase(lm: LoadedModel) -> str:
    label = lm.kind.label
    return f"this model is {'an' if label[0] in 'aeiou' else 'a'} {label}"


def verdict_counts(verdicts) -> dict[str, int]:
    """verdict -> how many claims got it, in order of first appearance."""
    out: dict[str, int] = {}
    for v in verdicts:
        out[str(v)] = out.get(str(v), 0) + 1
    return out
