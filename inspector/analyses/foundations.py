"""The seed articles' experiments, made runnable, and their claims measured on a loaded model.

The work lives in four modules; every name is importable from here, as before:

- `foundations_experiments`: the experiments that need no model — seed 003 (scaling in attention:
  `random_qk_scaling`, `sigma_vs_dim`, `softmax_scaling`, `softmax_temperature`), seed 001 (`loss_race`:
  one parameter, real `torch.optim.SGD`, L1 vs L2 vs Huber), seed 004 (`gaussian_kl`, `discrete_kl`).
- `foundations_identities`: seed 000's cross-entropy identities on one prediction of a model (`loss_identities`).
- `foundations_verdicts`: the claims table's row (`ClaimRow`), its verdicts and thresholds.
- `foundations_claims`: `claims_on_model(lm, text, corpus_text)`, one `ClaimRow` per claim of SEEDS.md
  that a loaded model can test, with the measured figures, the threshold and a computed verdict.

`FoundationsAnalysis` is the report's "foundations" section on the contract (`inspector.analysis`):
its one part, "claims", is the list of claim rows.
Everything returns plain dataclasses holding numpy arrays (`_common.to_dict` serialises them).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..analysis import Analysis, Metric, Note, Table, Unavailable, setting, unavailable_note
from ..errors import InputError
from .foundations_claims import claims_on_model
from .foundations_experiments import (DEFAULT_DIMS, LOSSES, TEMPERATURE_CURVE, DiscreteKL, GaussianKL, LossRace,
                                      LossTrajectory, RandomQKScaling, SigmaVsDim, SoftmaxScaling, TemperatureResult,
                                      discrete_kl, gaussian_kl, loss_race, random_qk_scaling, sigma_vs_dim,
                                      softmax_scaling, softmax_temperature)
from .foundations_identities import LossIdentities, loss_identities
from .foundations_verdicts import (DOES_NOT_HOLD, GRAD_TOL, HOLDS, IDENTITY_TOL, MAJORITY, MLM_ALPHA, MLM_MIN_CHOSEN,
                                   MLM_SPLIT_CHARS, NOT_APPLICABLE, ORACLE_REL_TOL, SIGMA_BAND, SINUSOIDAL_MIN,
                                   SPEARMAN_ALPHA, ClaimRow, verdict_counts)

if TYPE_CHECKING:  # pragma: no cover
    from ..inputs import Encoded
    from ..models import LoadedModel

__all__ = [
    "DEFAULT_DIMS", "LOSSES", "TEMPERATURE_CURVE", "DiscreteKL", "GaussianKL", "LossRace", "LossTrajectory",
    "RandomQKScaling", "SigmaVsDim", "SoftmaxScaling", "TemperatureResult", "discrete_kl", "gaussian_kl", "loss_race",
    "random_qk_scaling", "sigma_vs_dim", "softmax_scaling", "softmax_temperature", "LossIdentities", "loss_identities",
    "DOES_NOT_HOLD", "GRAD_TOL", "HOLDS", "IDENTITY_TOL", "MAJORITY", "MLM_ALPHA", "MLM_MIN_CHOSEN", "MLM_SPLIT_CHARS",
    "NOT_APPLICABLE", "ORACLE_REL_TOL", "SIGMA_BAND", "SINUSOIDAL_MIN", "SPEARMAN_ALPHA", "ClaimRow",
    "claims_on_model", "verdict_counts", "FoundationsResult", "FoundationsAnalysis",
]

CORPUS_CHOICES = ("bundled", "text", None)


# --------------------------------------------------------------------------- the claims table's rows and columns


def claim_rows(claims) -> list[dict]:
    """{field: value} per claim (ClaimRow, or a dict where a stored report's type was not resolved)."""
    items = claims if isinstance(claims, (list, tuple)) else [] if claims is None else [claims]
    rows = []
    for item in items:
        if dataclasses.is_dataclass(item):
            rows.append({f.name: getattr(item, f.name) for f in dataclasses.fields(item)})
        elif isinstance(item, dict):
            rows.append(dict(item))
    return rows


_COLUMN_ORDER = ("seed", "key", "id", "claim", "source", "expected", "measured", "threshold", "verdict", "status",
                 "holds", "detail", "evidence", "note")
_HIDDEN = frozenset({"seed", "key", "id"})  # internal identifiers stay in the JSON; the table says the claim
_COLUMN_NAMES = {"claim": "claim", "measured": "measured on this model", "threshold": "rule for the verdict",
                 "verdict": "verdict", "note": "note", "source": "source", "expected": "expected"}


def claim_columns(rows: list[dict]) -> list[str]:
    """The scalar fields shown as columns, known ones first in a readable order (figures stay in the JSON)."""
    def scalar(v) -> bool:
        return v is None or isinstance(v, (str, int, float, bool, np.generic))

    present = [k for k in rows[0] if all(scalar(r.get(k)) for r in rows)] if rows else []
    ordered = [c for c in _COLUMN_ORDER if c in present]
    return [c for c in ordered + [c for c in present if c not in ordered] if c not in _HIDDEN]


def column_name(key: str) -> str:
    """The displayed heading of a claims column ('threshold' -> 'rule for the verdict')."""
    return _COLUMN_NAMES.get(key, key.replace("_", " "))


# --------------------------------------------------------------------------- the analysis


@dataclass(frozen=True)
class FoundationsResult:
    """The report section's one part: the claim rows measured on the model (a list of `ClaimRow`)."""

    claims: list | Unavailable | None = None


def corpus_text(corpus: str | None) -> str | None:
    """The text token frequencies and co-occurrences are measured on: the bundled corpus, or None (the text)."""
    if corpus not in CORPUS_CHOICES:
        raise InputError(f"foundations_corpus is {corpus!r}.", "Choose 'bundled' or 'text'.")
    if corpus == "bundled":
        from . import embeddings

        path = embeddings.DEFAULT_CORPUS
        if path.is_file():
            return path.read_text(encoding="utf-8", errors="replace")
    return None


class FoundationsAnalysis(Analysis):
    name = "foundations"
    title = "Claims checked on this model"
    description = ("Claims about transformers (attention scaling, LayerNorm γ and β, embeddings, the masked-LM "
                   "recipe, cross-entropy identities) measured on the loaded model, each with its rule and a "
                   "computed verdict.")
    own_page = "foundations"
    report_parts = True
    result_type = FoundationsResult

    @dataclass(frozen=True)
    class Settings:
        corpus: str | None = setting(
            "bundled", "Token frequencies, co-occurrences and the masked-LM split measured on the bundled corpus, "
            "or on the text itself ('text' or None).", choices=CORPUS_CHOICES, key="foundations_corpus")

    def run(self, lm: LoadedModel, encoded: Encoded, settings: FoundationsAnalysis.Settings) -> FoundationsResult:
        return FoundationsResult(claims=claims_on_model(lm, encoded.text, corpus_text(settings.corpus)))

    def view(self, result: FoundationsResult) -> list:
        claims = result.claims
        if isinstance(claims, Unavailable):
            return [unavailable_note(claims)]
        rows = claim_rows(claims)
        if not rows:
            return [Note("No claim was measured.", level="info")]
        counts = verdict_counts(r.get("verdict") for r in rows)
        cols = claim_columns(rows)
        summary_line = ", ".join(f"{n} {v}" for v, n in counts.items())
        return [
            Note(f"{len(rows)} claims about transformers measured on this model and text: {summary_line}."),
            Metric("claims", len(rows)), *(Metric(verdict, n) for verdict, n in counts.items()),
            Table("", tuple(column_name(c) for c in cols), tuple(tuple(r.get(c) for c in cols) for r in rows),
                  verdict_column=column_name("verdict")),
        ]
