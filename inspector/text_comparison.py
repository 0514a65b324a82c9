"""Two texts side by side (a minimal pair, LIT-style): token alignment and the differences B − A.

The two texts are tokenised separately; `align_tokens` matches the tokens the texts share
(difflib's longest matching blocks over token ids), so a per-token figure of B can be set against
the same token of A. After the first change the shared tokens have a different left context:
their difference is the effect of the edit on the rest of the text, which is what a minimal pair
is for (e.g. the loss of "are" after "The keys to the cabinet" vs "The key to the cabinet").

`difference_blocks` does the same generically for any declared view (`inspector.analysis`):
metrics with the same label become one A / B / B − A table, heatmaps of the same shape a signed
B − A heatmap, line charts with the same x values B − A lines, coloured token strips the aligned
per-token difference on B's tokens.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

from . import analysis as contract


@dataclass(frozen=True)
class TokenAlignment:
    """Which token of B is the same token as which token of A (equal blocks of difflib's opcodes)."""

    tokens_a: tuple[str, ...]
    tokens_b: tuple[str, ...]
    matched: tuple[tuple[int, int], ...]  # (index in A, index in B), increasing in both
    changes: tuple[tuple[str, int, int, int, int], ...]  # difflib opcodes that are not 'equal'

    def a_of_b(self) -> dict[int, int]:
        """{index in B: index of the same token in A} for the matched tokens."""
        return {j: i for i, j in self.matched}

    def describe_changes(self) -> list[str]:
        """One line per edit, e.g. "replace 'keys' → 'key'" (tokens quoted with repr: never interpreted)."""
        out = []
        for tag, i1, i2, j1, j2 in self.changes:
            a = "".join(self.tokens_a[i1:i2])
            b = "".join(self.tokens_b[j1:j2])
            out.append({"replace": f"replace {a!r} → {b!r}", "delete": f"delete {a!r}",
                        "insert": f"insert {b!r}"}[tag])
        return out


def align_tokens(tokens_a: Sequence[str], tokens_b: Sequence[str], ids_a: Sequence[Hashable] | None = None,
                 ids_b: Sequence[Hashable] | None = None) -> TokenAlignment:
    """Align two token sequences on their ids (or on the strings when no ids are given)."""
    keys_a = list(ids_a) if ids_a is not None else list(tokens_a)
    keys_b = list(ids_b) if ids_b is not None else list(tokens_b)
    if len(keys_a) != len(tokens_a) or len(keys_b) != len(tokens_b):
        raise ValueError("ids and tokens differ in length")
    sm = difflib.SequenceMatcher(a=keys_a, b=keys_b, autojunk=False)
    matched, changes = [], []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            matched.extend(zip(range(i1, i2), range(j1, j2)))
        else:
            changes.append((tag, i1, i2, j1, j2))
    return TokenAlignment(tuple(map(str, tokens_a)), tuple(map(str, tokens_b)), tuple(matched), tuple(changes))


@dataclass(frozen=True)
class PerTokenDifference:
    """A per-token figure on both texts and its difference B − A on the tokens they share.

    `values_a` / `values_b` hold one value per token of A / B (None where the figure is not defined,
    e.g. the first token of a causal LM); `delta_b[j]` = values_b[j] − values_a[i] where token j of B
    is matched to token i of A and both are scored, else None.
    """

    measure: str
    alignment: TokenAlignment
    values_a: tuple[float | None, ...]
    values_b: tuple[float | None, ...]
    delta_b: tuple[float | None, ...]
    total_a: float  # Σ over the scored tokens of A
    total_b: float
    n_scored_a: int
    n_scored_b: int

    @property
    def mean_a(self) -> float:
        return self.total_a / self.n_scored_a if self.n_scored_a else float("nan")

    @property
    def mean_b(self) -> float:
        return self.total_b / self.n_scored_b if self.n_scored_b else float("nan")

    def largest_changes(self, n: int = 10) -> list[tuple[int, int, str, float, float, float]]:
        """(index in A, index in B, token, value A, value B, B − A) of the matched tokens, largest |B − A| first."""
        a_of_b = self.alignment.a_of_b()
        rows = [(a_of_b[j], j, self.alignment.tokens_b[j], float(self.values_a[a_of_b[j]]), float(self.values_b[j]),
                 float(d)) for j, d in enumerate(self.delta_b) if d is not None]
        rows.sort(key=lambda r: (-abs(r[5]), r[1]))
        return rows[:n]


def per_token_difference(tokens_a: Sequence[str], values_a: Sequence[float | None], tokens_b: Sequence[str],
                         values_b: Sequence[float | None], *, ids_a=None, ids_b=None,
                         measure: str = "") -> PerTokenDifference:
    """Align the texts' tokens and subtract the figure of A from that of B on every shared, scored token."""
    if len(values_a) != len(tokens_a) or len(values_b) != len(tokens_b):
        raise ValueError("one value per token is needed (None where a token is not scored)")
    al = align_tokens(tokens_a, tokens_b, ids_a, ids_b)
    va = tuple(None if v is None else float(v) for v in values_a)
    vb = tuple(None if v is None else float(v) for v in values_b)
    delta: list[float | None] = [None] * len(vb)
    for i, j in al.matched:
        if va[i] is not None and vb[j] is not None:
            delta[j] = vb[j] - va[i]
    scored_a = [v for v in va if v is not None]
    scored_b = [v for v in vb if v is not None]
    return PerTokenDifference(measure, al, va, vb, tuple(delta), float(sum(scored_a)), float(sum(scored_b)),
                              len(scored_a), len(scored_b))


def per_token_values(n_tokens: int, positions, values) -> list[float | None]:
    """One value per token from (positions, values) of the scored ones, None elsewhere."""
    out: list[float | None] = [None] * n_tokens
    for p, v in zip(positions, values):
        out[int(p)] = float(v)
    return out


@dataclass(frozen=True)
class GridDifference:
    """A per layer × head figure on both texts and B − A, with the cells that moved most."""

    measure: str
    a: np.ndarray  # (layers, heads)
    b: np.ndarray
    delta: np.ndarray  # b − a

    def largest_changes(self, n: int = 8) -> list[tuple[int, int, float, float, float]]:
        """(layer, head, A, B, B − A), largest |B − A| first (NaN cells left out)."""
        cells = [(la, h, float(self.a[la, h]), float(self.b[la, h]), float(self.delta[la, h]))
                 for la in range(self.delta.shape[0]) for h in range(self.delta.shape[1])
                 if np.isfinite(self.delta[la, h])]
        cells.sort(key=lambda c: (-abs(c[4]), c[0], c[1]))
        return cells[:n]


def grid_difference(a, b, measure: str = "") -> GridDifference:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the two grids differ in shape: {a.shape} vs {b.shape}")
    return GridDifference(measure, a, b, b - a)


# --------------------------------------------------------------------------- declared views


def _number(v) -> float | None:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def difference_blocks(blocks_a: Sequence[contract.Block], blocks_b: Sequence[contract.Block]) -> list[contract.Block]:
    """The declared view of B − A: what two views of the same analysis on two texts have in common, subtracted."""
    out: list[contract.Block] = []
    metrics_b = {m.label: m for m in blocks_b if isinstance(m, contract.Metric)}
    rows = []
    for m in blocks_a:
        if isinstance(m, contract.Metric) and m.label in metrics_b:
            va, vb = _number(m.value), _number(metrics_b[m.label].value)
            if va is not None and vb is not None:
                rows.append((m.label, va, vb, vb - va))
            else:
                rows.append((m.label, m.formatted(), metrics_b[m.label].formatted(), "—"))
    if rows:
        out.append(contract.Table("Headline figures", ("figure", "A", "B", "B − A"), tuple(rows)))
    charts_b = {c.title: c for c in blocks_b if isinstance(c, contract.Chart)}
    skipped = []
    for c in blocks_a:
        if not isinstance(c, contract.Chart):
            continue
        other = charts_b.get(c.title)
        diff = _chart_difference(c, other) if other is not None else None
        if diff is None:
            skipped.append(c.title)
        else:
            out.append(diff)
    strips_b = [s for s in blocks_b if isinstance(s, contract.ColouredTokens)]
    for s_a, s_b in zip([s for s in blocks_a if isinstance(s, contract.ColouredTokens)], strips_b):
        d = per_token_difference(s_a.tokens, s_a.values, s_b.tokens, s_b.values, measure=s_a.value_name)
        out.append(contract.Note(f"{s_a.value_name}, B − A on the tokens the two texts share (blank: a token of B "
                                 "that A does not have, or not scored)."))
        out.append(contract.ColouredTokens(s_b.tokens, d.delta_b, f"Δ {s_a.value_name}", signed=True,
                                           special=s_b.special))
    if skipped:
        out.append(contract.Note("Not comparable cell by cell (different shapes or axes on the two texts, e.g. "
                                 "per-token charts of texts of different lengths): " + "; ".join(skipped) + "."))
    return out


def _chart_difference(a: contract.Chart, b: contract.Chart) -> contract.Chart | None:
    if a.kind != b.kind:
        return None
    if a.kind == "heatmap":
        za, zb = np.asarray(a.z, dtype=float), np.asarray(b.z, dtype=float)
        if za.shape != zb.shape or not za.size or a.row_labels != b.row_labels or a.col_labels != b.col_labels:
            return None
        d = zb - za
        return contract.Chart("heatmap", f"B − A: {a.title}", a.x_title, a.y_title, z=tuple(map(tuple, d.tolist())),
                              row_labels=a.row_labels, col_labels=a.col_labels,
                              colorbar_title=f"Δ {a.colorbar_title}".strip(), signed=True)
    series_b = {name: (xs, ys) for name, xs, ys in b.series}
    series = []
    for name, xs, ys in a.series:
        if name not in series_b or tuple(series_b[name][0]) != tuple(xs):
            continue
        series.append((f"B − A: {name}" if name else "B − A",
                       tuple(xs), tuple(float(y2) - float(y1) for y1, y2 in zip(ys, series_b[name][1]))))
    if not series:
        return None
    return contract.Chart(a.kind, f"B − A: {a.title}", a.x_title, f"Δ {a.y_title}".strip(), series=tuple(series))
