"""Streamlit renderer of the analyses written on the contract (`inspector.analysis`).

`settings_widgets(analysis)` draws one widget per settings field (default, range and help from the
dataclass), `run_registered(...)` runs an analysis through the one cached runner, and
`render_blocks(blocks)` draws a declared view: metrics in a row, tables as dataframes, charts
with `plots.chart_figure`, coloured tokens, notes. Nothing here is specific to one analysis.
"""
from __future__ import annotations

import dataclasses

import streamlit as st

from inspector import analysis as contract
from inspector import plots
from inspector.escaping import md_literal
from inspector.models import LoadedModel
from pages import _common


def settings_widgets(a: contract.Analysis, *, key_prefix: str = "") -> dict:
    """{field: value} chosen with one widget per field of `a.Settings`."""
    values = {}
    fields = dataclasses.fields(a.Settings)
    cols = st.columns(max(1, len(fields)))
    for col, f in zip(cols, fields):
        meta, key = f.metadata, f"{key_prefix}{a.name}_{f.name}"
        label, help_ = f.name.replace("_", " "), meta.get("help") or None
        if meta.get("choices"):
            opts = list(meta["choices"])
            values[f.name] = col.selectbox(label, opts, index=opts.index(f.default), key=key, help=help_)
        elif isinstance(f.default, bool):
            values[f.name] = col.toggle(label, value=f.default, key=key, help=help_)
        elif isinstance(f.default, int):
            values[f.name] = int(col.number_input(label, value=f.default, step=1, key=key, help=help_,
                                                  min_value=None if meta.get("min") is None else int(meta["min"]),
                                                  max_value=None if meta.get("max") is None else int(meta["max"])))
        elif isinstance(f.default, float):
            values[f.name] = float(col.number_input(label, value=f.default, key=key, help=help_,
                                                    min_value=meta.get("min"), max_value=meta.get("max")))
        else:
            values[f.name] = col.text_input(label, value=str(f.default), key=key, help=help_)
    return values


def _run_encoded(name: str, lm: LoadedModel, text: str, text_pair: str | None, settings: dict):
    from inspector.inputs import encode

    enc = encode(lm, text, text_pair)
    return _common._on_device(lm, contract.run_analysis, name, lm, enc, settings)


def run_registered(name: str, lm: LoadedModel, text: str, text_pair: str | None, settings: dict):
    """The analysis' result, cached on (analysis, model, text, settings) by `_common.run`."""
    return _common.run(_run_encoded, name, lm, text, text_pair, dict(settings),
                       spinner=f"Running {contract.get(name).title}…")


def _metric_row(metrics: list) -> None:
    for i in range(0, len(metrics), 5):  # at most five to a row: labels stay readable
        row = metrics[i:i + 5]
        for col, m in zip(st.columns(len(row)), row):
            value = md_literal(m.value) if isinstance(m.value, str) else m.formatted()  # a token, a name: literal
            col.metric(m.label, value, help=md_literal(m.help) if m.help else None)


def render_blocks(blocks, *, key_prefix: str) -> None:
    """Draw a declared view in order; consecutive metrics share a row (as they share a table in reports)."""
    n_chart = n_table = 0
    metrics: list = []
    for b in list(blocks) + [None]:
        if isinstance(b, contract.Metric):
            metrics.append(b)
            continue
        if metrics:
            _metric_row(metrics)
            metrics = []
        if isinstance(b, contract.Heading):
            st.subheader(md_literal(b.text))
        elif isinstance(b, contract.Note):
            {"info": st.info, "warning": st.warning}.get(b.level, st.caption)(md_literal(b.text))
        elif isinstance(b, contract.Chart):
            _common.chart("chart_figure", b, st_key=f"{key_prefix}_chart{n_chart}")
            n_chart += 1
        elif isinstance(b, contract.Table):
            if b.title:
                st.markdown(f"**{md_literal(b.title)}**")
            st.dataframe([dict(zip(b.columns, row)) for row in b.rows], hide_index=True,
                         key=f"{key_prefix}_table{n_table}")
            if b.note:
                st.caption(md_literal(b.note))
            n_table += 1
        elif isinstance(b, contract.ColouredTokens):
            if b.caption:
                st.caption(md_literal(b.caption))
            st.html(plots.colored_tokens_html(list(b.tokens), list(b.values), signed=b.signed,
                                              value_name=b.value_name, skip=list(b.special) or None))


def report_view(ctx, name: str) -> None:
    """The page's section as the report draws it (the analysis' declared view), behind a toggle: it runs the
    whole section with the report's default settings, which can take seconds."""
    a = contract.get(name)
    st.divider()
    if not st.toggle("Show this section as the report draws it", key=f"report_view_{name}",
                     help="The same declared tables and charts as the HTML / Markdown report and the CLI "
                          "(default settings), computed on the sidebar's text."):
        return
    ok, reason = a.available(ctx.lm)
    if not ok:
        st.info(md_literal(reason))
        return
    with _common.guard(f"the report view of {a.title}"):
        result = run_registered(name, ctx.lm, ctx.text, ctx.text_pair, {})
        render_blocks(a.view(result), key_prefix=f"report_view_{name}")
