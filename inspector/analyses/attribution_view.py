"""The declared view of the attribution section: what was attributed, the scores per token, the top tokens.

Blocks only (inspector.analysis): the app, the HTML / Markdown reports and the CLI render them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..analysis import Chart, ColouredTokens, Metric, Note, Table, Unavailable, unavailable_note
from ..svg_charts import bar_width
from ..tokens import visible

if TYPE_CHECKING:  # pragma: no cover
    from .attribution import AttributionResult, AttributionSection




def result_blocks(a: AttributionResult) -> list:
    blocks: list = [Metric("method", a.method), Metric("target", a.target), Metric("units", a.units),
                    Metric("f(input)", float(a.f_input))]
    if a.f_baseline is not None:
        blocks += [Metric("f(baseline)", float(a.f_baseline)),
                   Metric("baseline", a.baseline_description or a.baseline),
                   Metric("convergence delta", None if a.delta is None else float(a.delta),
                          help="Σ scores − (f(input) − f(baseline)): 0 for exact integration."),
                   Metric("|delta| / |f(input) − f(baseline)|", a.relative_delta),
                   Metric("steps", a.steps)]
    if a.message:
        blocks.append(Note(a.message, level="warning"))
    blocks += [Note(note) for note in a.notes]
    scores = np.asarray(a.scores, dtype=float)
    blocks.append(Chart("bar", "attribution per input token", y_title="score", width=bar_width(len(scores)),
                        series=(("score", tuple(visible(t) for t in a.tokens), tuple(float(s) for s in scores)),)))
    blocks.append(ColouredTokens(
        tokens=tuple(a.tokens), values=tuple(float(s) for s in scores), value_name="score" if a.scores_signed
        else "gradient norm", signed=bool(a.scores_signed), special=tuple(bool(s) for s in a.special),
        caption=("Tokens coloured by score (red raises the target, blue lowers it):" if a.scores_signed
                 else "Tokens coloured by gradient norm:")))
    blocks.append(Table("", ("rank", "position", "token", "score"),
                        tuple((k + 1, int(t.index), visible(t.token), float(t.score)) for k, t in enumerate(a.top)),
                        note="Largest |score| first; special tokens (and the masked position) left out."))
    return blocks


def attribution_blocks(section: AttributionSection) -> list:
    a = section.attribution
    if isinstance(a, Unavailable):
        return [unavailable_note(a)]
    return result_blocks(a) if a is not None else []
