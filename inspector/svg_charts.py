"""Small dependency-free SVG charts for the HTML report: bar, histogram (log y), heatmap, line.

Why not Plotly here: a report must be one self-contained file that opens offline, with no
JavaScript and no network. Each function returns an inline `<svg>` element as a string
(HTML5 needs no xmlns for inline SVG, so no URL appears at all). Every piece of text that
reaches the SVG (titles, labels, token strings) is escaped here; hover text uses SVG
`<title>` elements, which browsers show as tooltips without scripts.
"""
from __future__ import annotations

import html
import math
from typing import Sequence

import numpy as np

__all__ = ["bar_chart", "histogram", "histogram_from_values", "heatmap", "line_chart", "fmt_number", "color_at",
           "escape", "PALETTE", "chart_svg"]

# Colour-blind-friendly qualitative palette (Okabe–Ito); plots.py (the app's Plotly figures) uses it too.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'

# Viridis, 9 stops; interpolated linearly in RGB.
_VIRIDIS = ((68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
            (31, 158, 137), (53, 183, 121), (109, 205, 89), (253, 231, 37))
# Blue – white – red for signed quantities centred on zero.
_DIVERGING = ((33, 102, 172), (103, 169, 207), (209, 229, 240), (247, 247, 247),
              (253, 219, 199), (239, 138, 98), (178, 24, 43))
_SCALES = {"viridis": _VIRIDIS, "diverging": _DIVERGING}


def _e(s: object) -> str:
    """Escape any text for SVG text content or a quoted attribute.

    Besides &, <, >, quotes: C0 control characters are dropped (invalid in XML/HTML) and the
    ':' of '://' becomes a character reference, so user text that contains a web address can
    never put a URL-looking string into the report (it still reads the same on screen).
    """
    text = "".join(ch for ch in str(s) if ch >= " " or ch in "\t\n\r")
    return html.escape(text, quote=True).replace("://", "&#58;//")


escape = _e  # the report escapes its own HTML the same way


def fmt_number(v: float, digits: int = 3) -> str:
    """Short readable number: 3 significant digits, scientific only for very large/small values."""
    if v is None:
        return "–"
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.{max(digits - 1, 0)}e}"
    if a >= 10 ** digits and float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.{digits}g}"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else round(t, 12))
        t += step
    return ticks


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a)]


def color_at(t: float, scale: str = "viridis") -> str:
    """Colour at position t in [0, 1] of a named scale, as #rrggbb (grey for NaN)."""
    if t is None or not math.isfinite(t):
        return "#cccccc"
    stops = _SCALES.get(scale, _VIRIDIS)
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    c = [round(a + (b - a) * f) for a, b in zip(stops[i], stops[i + 1])]
    return "#%02x%02x%02x" % tuple(c)


def _text_color_on(bg: str) -> str:
    r, g, b = (int(bg[i:i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def _open(width: int, height: int, title: str) -> list[str]:
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{_e(title)}" {_FONT} font-size="11">',
             f"<title>{_e(title)}</title>",
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    if title:
        parts.append(f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="13" '
                     f'font-weight="600">{_e(title)}</text>')
    return parts


def _axes(parts: list[str], x0, y0, x1, y1, x_label: str, y_label: str, width: int, height: int) -> None:
    parts.append(f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#333"/>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>')
    if x_label:
        parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{height - 4}" text-anchor="middle">{_e(x_label)}</text>')
    if y_label:
        cy = (y0 + y1) / 2
        parts.append(f'<text x="12" y="{cy:.1f}" text-anchor="middle" '
                     f'transform="rotate(-90 12 {cy:.1f})">{_e(y_label)}</text>')


def _y_axis_linear(parts, lo, hi, x0, y0, y1, x1) -> callable:
    span = (hi - lo) or 1.0

    def ypos(v: float) -> float:
        return y1 - (v - lo) / span * (y1 - y0)

    for t in _nice_ticks(lo, hi):
        y = ypos(t)
        parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 3.5:.1f}" text-anchor="end">{_e(fmt_number(t))}</text>')
    return ypos


def _empty(width: int, height: int, title: str, why: str = "no data") -> str:
    parts = _open(width, height, title)
    parts.append(f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" fill="#777">'
                 f'{_e(why)}</text></svg>')
    return "".join(parts)


# --------------------------------------------------------------------------- bar chart


def bar_width(n: int) -> int:
    """Width of a bar chart with one bar per token or word: readable for a few, bounded for many."""
    return int(max(440, min(1100, 120 + 14 * n)))


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str = "", x_label: str = "",
              y_label: str = "", width: int = 560, height: int = 280, color: str = PALETTE[0],
              reference: float | None = None, reference_label: str = "") -> str:
    """Vertical bars, one per label. NaN values are left out; `reference` draws a dashed line."""
    vals = np.asarray(values, dtype=float).ravel()
    if vals.size == 0 or not np.isfinite(vals).any():
        return _empty(width, height, title)
    x0, y0, x1, y1 = 56, 28, width - 12, height - 44
    fin = _finite(vals)
    lo, hi = min(0.0, float(fin.min())), max(0.0, float(fin.max()))
    if reference is not None and math.isfinite(reference):
        lo, hi = min(lo, reference), max(hi, reference)
    ticks = _nice_ticks(lo, hi)
    if ticks:
        lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    parts = _open(width, height, title)
    ypos = _y_axis_linear(parts, lo, hi, x0, y0, y1, x1)
    n = len(vals)
    slot = (x1 - x0) / n
    bw = max(1.0, slot * 0.8)
    label_px = 6.2 * min(12, max((len(str(lab)) for lab in labels), default=1)) + 8
    every = max(1, math.ceil(n / max(1.0, (x1 - x0) / label_px)))
    for i, (lab, v) in enumerate(zip(labels, vals)):
        cx = x0 + slot * (i + 0.5)
        if math.isfinite(v):
            top, bot = sorted((ypos(v), ypos(0.0)))
            parts.append(f'<rect x="{cx - bw / 2:.1f}" y="{top:.1f}" width="{bw:.1f}" '
                         f'height="{max(bot - top, 0.5):.1f}" fill="{color}">'
                         f'<title>{_e(lab)}: {_e(fmt_number(v))}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{cx:.1f}" y="{y1 + 14}" text-anchor="middle">{_e(_short(lab))}</text>')
    if reference is not None and math.isfinite(reference):
        y = ypos(reference)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#D55E00" '
                     f'stroke-dasharray="5 3"/>')
        if reference_label:
            parts.append(f'<text x="{x1 - 2}" y="{y - 4:.1f}" text-anchor="end" fill="#D55E00">'
                         f'{_e(reference_label)}</text>')
    _axes(parts, x0, y0, x1, y1, x_label, y_label, width, height)
    parts.append("</svg>")
    return "".join(parts)


def _short(label: object, n: int = 12) -> str:
    s = str(label)
    return s if len(s) <= n else s[: n - 1] + "…"


# --------------------------------------------------------------------------- histogram


def histogram_from_values(values, bins: int = 40, *, log_y: bool = False, **kw) -> str:
    """Histogram of raw values (NaN/inf dropped)."""
    fin = _finite(values)
    if fin.size == 0:
        return _empty(kw.get("width", 560), kw.get("height", 280), kw.get("title", ""))
    counts, edges = np.histogram(fin, bins=bins)
    return histogram(counts, edges, log_y=log_y, **kw)


def histogram(counts: Sequence[float], edges: Sequence[float], *, log_y: bool = False, title: str = "",
              x_label: str = "", y_label: str = "count", width: int = 560, height: int = 280,
              color: str = PALETTE[0], markers: dict[str, float] | None = None) -> str:
    """Pre-binned histogram (`len(edges) == len(counts) + 1`). With `log_y`, empty bins are blank
    and the axis runs over whole decades. `markers` draws labelled vertical lines (e.g. a mean)."""
    counts = np.asarray(counts, dtype=float).ravel()
    edges = np.asarray(edges, dtype=float).ravel()
    if counts.size == 0 or edges.size != counts.size + 1 or not np.isfinite(edges).all():
        return _empty(width, height, title)
    x0, y0, x1, y1 = 56, 28, width - 12, height - 44
    parts = _open(width, height, title)
    positive = counts[counts > 0]
    if log_y:
        if positive.size == 0:
            return _empty(width, height, title, "all bins empty")
        # The floor sits a bit below the smallest count so that a bin of 1 still shows a bar.
        dlo = math.log10(positive.min()) - 0.3
        dhi = max(math.ceil(math.log10(positive.max())), math.ceil(dlo) + 1)

        def ypos(v: float) -> float:
            return y1 - (math.log10(v) - dlo) / (dhi - dlo) * (y1 - y0)

        base = y1
        step = max(1, math.ceil((dhi - dlo) / 6))
        for d in range(math.ceil(dlo), dhi + 1, step):
            y = ypos(10.0 ** d)
            parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            parts.append(f'<text x="{x0 - 6}" y="{y + 3.5:.1f}" text-anchor="end">{_e(fmt_number(10.0 ** d))}'
                         f'</text>')
    else:
        hi = float(counts.max()) if counts.size else 1.0
        ticks = _nice_ticks(0.0, hi or 1.0)
        ypos = _y_axis_linear(parts, 0.0, max(ticks[-1] if ticks else hi, hi) or 1.0, x0, y0, y1, x1)
        base = ypos(0.0)
    elo, ehi = float(edges[0]), float(edges[-1])
    if markers:
        fin_m = [v for v in markers.values() if v is not None and math.isfinite(v)]
        elo, ehi = min([elo, *fin_m]), max([ehi, *fin_m])
    espan = (ehi - elo) or 1.0

    def xpos(v: float) -> float:
        return x0 + (v - elo) / espan * (x1 - x0)

    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if c <= 0:
            continue
        top = ypos(c)
        xa, xb = xpos(a), xpos(b)
        parts.append(f'<rect x="{xa:.2f}" y="{top:.1f}" width="{max(xb - xa - 0.5, 0.5):.2f}" '
                     f'height="{max(base - top, 0.5):.1f}" fill="{color}">'
                     f'<title>[{_e(fmt_number(a))}, {_e(fmt_number(b))}): {_e(fmt_number(c))}</title></rect>')
    for t in _nice_ticks(elo, ehi, 6):
        x = xpos(t)
        parts.append(f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y1 + 4}" stroke="#333"/>')
        parts.append(f'<text x="{x:.1f}" y="{y1 + 15}" text-anchor="middle">{_e(fmt_number(t))}</text>')
    for i, (name, v) in enumerate((markers or {}).items()):
        if v is None or not math.isfinite(v):
            continue
        x = xpos(v)
        col = PALETTE[(i + 1) % len(PALETTE)]
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="{col}" '
                     f'stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x + 3:.1f}" y="{y0 + 10 + 12 * i}" fill="{col}">{_e(name)}</text>')
    _axes(parts, x0, y0, x1, y1, x_label, y_label + (" (log scale)" if log_y and y_label else ""), width, height)
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- heatmap


def heatmap(matrix, *, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
            title: str = "", x_label: str = "", y_label: str = "", scale: str = "viridis",
            vmin: float | None = None, vmax: float | None = None, annotate: bool | None = None,
            cell: int | None = None, max_width: int = 760, colorbar_label: str = "") -> str:
    """Matrix as coloured cells with row/column labels and a colour bar.

    `scale` is "viridis" (sequential) or "diverging" (centred on zero unless vmin/vmax are
    given). NaN cells are grey. Values are printed in the cells when they are large enough
    (`annotate=None`) or when asked.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.size == 0:
        return _empty(400, 120, title)
    R, C = m.shape
    row_labels = [str(r) for r in (row_labels if row_labels is not None else range(R))]
    col_labels = [str(c) for c in (col_labels if col_labels is not None else range(C))]
    fin = _finite(m)
    lo = float(fin.min()) if vmin is None and fin.size else (vmin if vmin is not None else 0.0)
    hi = float(fin.max()) if vmax is None and fin.size else (vmax if vmax is not None else 1.0)
    if scale == "diverging" and vmin is None and vmax is None:
        a = max(abs(lo), abs(hi)) or 1.0
        lo, hi = -a, a
    span = (hi - lo) or 1.0
    label_w = min(120, 8 + 6.5 * max((len(_short(r, 16)) for r in row_labels), default=1))
    col_label_h = min(90, 10 + 5.5 * max((len(_short(c, 14)) for c in col_labels), default=1))
    if cell is None:
        cell = int(max(2, min(44, (max_width - label_w - 110) / max(C, 1))))
    every = max(1, math.ceil(11 / cell))  # label every k-th row/column when cells are small
    tooltips = R * C <= 1600  # a hover title per cell costs ~100 bytes: skip them on big matrices
    if annotate is None:
        annotate = cell >= 34
    x0 = 24 + label_w
    y0 = 26 + col_label_h
    width = int(x0 + C * cell + 100)
    height = int(y0 + R * cell + 30)
    parts = _open(width, height, title)
    rotate = max(len(c) for c in col_labels) > 2 or cell < 20
    for j, lab in enumerate(col_labels):
        if j % every:
            continue
        cx = x0 + (j + 0.5) * cell
        if rotate:
            parts.append(f'<text x="{cx + 3:.1f}" y="{y0 - 4}" text-anchor="start" '
                         f'transform="rotate(-60 {cx + 3:.1f} {y0 - 4})">{_e(_short(lab, 14))}</text>')
        else:
            parts.append(f'<text x="{cx:.1f}" y="{y0 - 5}" text-anchor="middle">{_e(lab)}</text>')
    for i, lab in enumerate(row_labels):
        cy = y0 + (i + 0.5) * cell
        if i % every == 0:
            parts.append(f'<text x="{x0 - 5}" y="{cy + 3.5:.1f}" text-anchor="end">{_e(_short(lab, 16))}</text>')
        for j in range(C):
            v = m[i, j]
            col = color_at((v - lo) / span if math.isfinite(v) else float("nan"), scale)
            if tooltips:
                parts.append(f'<rect x="{x0 + j * cell}" y="{y0 + i * cell}" width="{cell}" height="{cell}" '
                             f'fill="{col}"><title>{_e(_short(row_labels[i], 16))} × '
                             f'{_e(_short(col_labels[j], 16))}: {_e(fmt_number(v))}</title></rect>')
            else:
                parts.append(f'<rect x="{x0 + j * cell}" y="{y0 + i * cell}" width="{cell}" height="{cell}" '
                             f'fill="{col}"/>')
            if annotate and math.isfinite(v):
                parts.append(f'<text x="{x0 + (j + 0.5) * cell:.1f}" y="{y0 + (i + 0.5) * cell + 3.5:.1f}" '
                             f'text-anchor="middle" font-size="9" fill="{_text_color_on(col)}">'
                             f'{_e(fmt_number(v, 2))}</text>')
    if x_label:
        parts.append(f'<text x="{x0 + C * cell / 2:.1f}" y="{height - 6}" text-anchor="middle">{_e(x_label)}</text>')
    if y_label:
        cy = y0 + R * cell / 2
        parts.append(f'<text x="12" y="{cy:.1f}" text-anchor="middle" '
                     f'transform="rotate(-90 12 {cy:.1f})">{_e(y_label)}</text>')
    # Colour bar: 20 steps, top = high.
    bx, bh = x0 + C * cell + 18, max(R * cell, 60)
    steps = 20
    for k in range(steps):
        t = 1 - (k + 0.5) / steps
        parts.append(f'<rect x="{bx}" y="{y0 + k * bh / steps:.1f}" width="12" height="{bh / steps + 0.5:.1f}" '
                     f'fill="{color_at(t, scale)}"/>')
    parts.append(f'<text x="{bx + 16}" y="{y0 + 8}">{_e(fmt_number(hi))}</text>')
    parts.append(f'<text x="{bx + 16}" y="{y0 + bh:.1f}">{_e(fmt_number(lo))}</text>')
    if colorbar_label:
        parts.append(f'<text x="{bx + 16}" y="{y0 + bh / 2 + 3:.1f}" fill="#555">{_e(_short(colorbar_label, 10))}'
                     f'</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- line chart


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str = "",
               x_label: str = "", y_label: str = "", width: int = 560, height: int = 280, log_y: bool = False,
               markers: bool = True, reference: float | None = None, reference_label: str = "") -> str:
    """One polyline per named series {name: (x, y)}; NaN points break the line. Legend on top."""
    clean = {}
    for name, (xs, ys) in series.items():
        x = np.asarray(xs, dtype=float).ravel()
        y = np.asarray(ys, dtype=float).ravel()
        if log_y:
            y = np.where(y > 0, y, np.nan)
        clean[name] = (x, y)
    allx = _finite(np.concatenate([x for x, _ in clean.values()])) if clean else np.array([])
    ally = _finite(np.concatenate([y for _, y in clean.values()])) if clean else np.array([])
    if allx.size == 0 or ally.size == 0:
        return _empty(width, height, title)
    longest = max((len(_short(n, 28)) for n in clean), default=1)
    per_row = max(1, min(4, int((width - 80) // (6.5 * longest + 24))))
    legend_rows = math.ceil(len(clean) / per_row) if len(clean) > 1 else 0
    x0, y0, x1, y1 = 56, 28 + 14 * legend_rows, width - 12, height - 44
    parts = _open(width, height, title)
    ylo, yhi = float(ally.min()), float(ally.max())
    if reference is not None and math.isfinite(reference) and not (log_y and reference <= 0):
        ylo, yhi = min(ylo, reference), max(yhi, reference)
    if log_y:
        dlo, dhi = math.floor(math.log10(ylo)), math.ceil(math.log10(yhi))
        dhi = max(dhi, dlo + 1)

        def ypos(v: float) -> float:
            return y1 - (math.log10(v) - dlo) / (dhi - dlo) * (y1 - y0)

        for d in range(dlo, dhi + 1, max(1, math.ceil((dhi - dlo) / 6))):
            y = ypos(10.0 ** d)
            parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            parts.append(f'<text x="{x0 - 6}" y="{y + 3.5:.1f}" text-anchor="end">'
                         f'{_e(fmt_number(10.0 ** d))}</text>')
    else:
        if yhi == ylo:
            ylo, yhi = ylo - 1, yhi + 1
        ticks = _nice_ticks(ylo, yhi)
        if ticks:
            ylo, yhi = min(ylo, ticks[0]), max(yhi, ticks[-1])
        ypos = _y_axis_linear(parts, ylo, yhi, x0, y0, y1, x1)
    xlo, xhi = float(allx.min()), float(allx.max())
    xspan = (xhi - xlo) or 1.0
    integer_x = bool(np.all(allx == np.round(allx)))  # layers, positions: no ticks at 0.5

    def xpos(v: float) -> float:
        return x0 + (v - xlo) / xspan * (x1 - x0)

    for t in _nice_ticks(xlo, xhi, 6):
        if integer_x and t != round(t):
            continue
        x = xpos(t)
        parts.append(f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y1 + 4}" stroke="#333"/>')
        parts.append(f'<text x="{x:.1f}" y="{y1 + 15}" text-anchor="middle">{_e(fmt_number(t))}</text>')
    if reference is not None and math.isfinite(reference) and not (log_y and reference <= 0):
        y = ypos(reference)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#777" stroke-dasharray="5 3"/>')
        if reference_label:
            parts.append(f'<text x="{x1 - 2}" y="{y - 4:.1f}" text-anchor="end" fill="#555">'
                         f'{_e(reference_label)}</text>')
    for k, (name, (x, y)) in enumerate(clean.items()):
        col = PALETTE[k % len(PALETTE)]
        segment: list[str] = []
        segments: list[list[str]] = []
        for xv, yv in zip(x, y):
            if math.isfinite(xv) and math.isfinite(yv):
                segment.append(f"{xpos(xv):.1f},{ypos(yv):.1f}")
            elif segment:
                segments.append(segment)
                segment = []
        if segment:
            segments.append(segment)
        for seg in segments:
            if len(seg) > 1:
                parts.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{col}" stroke-width="1.8"/>')
        if markers and len(x) <= 80:
            for xv, yv in zip(x, y):
                if math.isfinite(xv) and math.isfinite(yv):
                    parts.append(f'<circle cx="{xpos(xv):.1f}" cy="{ypos(yv):.1f}" r="2.6" fill="{col}">'
                                 f'<title>{_e(name)}: x={_e(fmt_number(xv))}, y={_e(fmt_number(yv))}</title>'
                                 f'</circle>')
        if legend_rows:
            lx = x0 + (k % per_row) * ((x1 - x0) / per_row)
            ly = 30 + 14 * (k // per_row)
            parts.append(f'<rect x="{lx:.1f}" y="{ly - 8}" width="10" height="10" fill="{col}"/>')
            parts.append(f'<text x="{lx + 14:.1f}" y="{ly + 1}">{_e(_short(name, 28))}</text>')
    _axes(parts, x0, y0, x1, y1, x_label, y_label + (" (log scale)" if log_y and y_label else ""), width, height)
    parts.append("</svg>")
    return "".join(parts)


def chart_svg(chart) -> str:
    """SVG of a declared `inspector.analysis.Chart` (the app draws the same chart with Plotly)."""
    width = chart.width or 560
    if chart.kind == "heatmap":
        if not chart.z:
            return _empty(560, 280, chart.title)
        return heatmap(np.asarray(chart.z, dtype=float), row_labels=list(chart.row_labels) or None,
                       col_labels=list(chart.col_labels) or None, title=chart.title, x_label=chart.x_title,
                       y_label=chart.y_title, vmin=chart.zmin, vmax=chart.zmax, colorbar_label=chart.colorbar_title,
                       scale="diverging" if chart.signed else "viridis")
    if chart.kind == "histogram":
        name, edges, counts = chart.series[0] if chart.series else ("", (0.0, 1.0), ())
        return histogram(counts, edges, log_y=chart.log_y, title=chart.title, x_label=chart.x_title,
                         y_label=chart.y_title or "count", width=width, markers=dict(chart.markers) or None)
    if chart.kind == "bar":
        name, xs, ys = chart.series[0] if chart.series else ("", (), ())
        return bar_chart([str(x) for x in xs], ys, title=chart.title, x_label=chart.x_title, y_label=chart.y_title,
                         width=width, reference=chart.reference, reference_label=chart.reference_label)
    return line_chart({name: (xs, ys) for name, xs, ys in chart.series}, title=chart.title, x_label=chart.x_title,
                      y_label=chart.y_title, log_y=chart.log_y, width=width, markers=chart.points,
                      reference=chart.reference, reference_label=chart.reference_label)
