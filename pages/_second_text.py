"""Text B beside text A (the sidebar's "Second text (B) side by side"): what a page draws for it.

Each function reads the page's result on A, runs the same analysis on B through the cached runner
and draws B and the difference B − A from `inspector.text_comparison`. Nothing is computed here.
"""
from __future__ import annotations

import math

import streamlit as st

from inspector import analysis as contract
from inspector import plots
from inspector import text_comparison as tc
from inspector.analyses import attention, loss
from inspector.escaping import md_literal
from pages import _common, _render


def text_b(ctx: _common.PageContext) -> str | None:
    """Text B when the user asked for one and typed it; None otherwise (with a hint when it is still blank)."""
    if ctx.text_b is None:
        return None
    if not ctx.text_b.strip():
        st.info("Type text B in the sidebar to see it beside this text, with the difference B − A.")
        return None
    return ctx.text_b


def _edits_caption(al: tc.TokenAlignment) -> None:
    edits = al.describe_changes()
    if not edits:
        st.caption("A and B have the same tokens.")
        return
    shown = "; ".join(edits[:6]) + (f"; … ({len(edits) - 6} more)" if len(edits) > 6 else "")
    st.caption(md_literal(f"From A to B: {shown}. {len(al.matched)} tokens shared; after the first edit a shared "
                          "token's difference is the edit's effect on it."))
    if len(al.matched) < 0.5 * min(len(al.tokens_a), len(al.tokens_b)):
        st.info("A and B share few tokens: a token-by-token difference means most for two texts that differ by a "
                "small edit (a minimal pair). Each text's own figures are exact either way.")


def _metric_pair(col, label: str, a: float, b: float, fmt: str, *, lower_is_better: bool = True) -> None:
    delta = b - a
    col.metric(f"{label}: B", format(b, fmt), delta=f"{delta:+{fmt}} vs A ({format(a, fmt)})",
               delta_color="inverse" if lower_is_better else "normal")


def token_loss(ctx: _common.PageContext, rep_a, unit: str) -> None:  # rep_a: the page's causal report
    """Causal: per-token cross-entropy of A and B. Masked LM: the pseudo-log-likelihood of each (deterministic,
    every token scored, unlike the seeded 15 % masking, which would score different positions on the two texts)."""
    b = text_b(ctx)
    if b is None:
        return
    lm = ctx.lm
    st.subheader("Text B beside A")
    scale = 1.0 if unit == "nats" else 1.0 / math.log(2)
    with _common.guard("the loss of text B"):
        if lm.is_causal:
            rep_b = _common.run(loss.causal_token_loss, lm, b, top_k=5, spinner="Scoring every token of text B…")
            va = tc.per_token_values(len(rep_a.tokens), rep_a.positions, rep_a.ce_nats * scale)
            vb = tc.per_token_values(len(rep_b.tokens), rep_b.positions, rep_b.ce_nats * scale)
            ppl_a, ppl_b, name = rep_a.perplexity, rep_b.perplexity, "Perplexity"
        else:
            rep_a = _common.run(loss.pseudo_log_likelihood, lm, ctx.text, spinner="Pseudo-log-likelihood of text A…")
            rep_b = _common.run(loss.pseudo_log_likelihood, lm, b, spinner="Pseudo-log-likelihood of text B…")
            va = [-float(v) * scale for v in rep_a.log_prob]
            vb = [-float(v) * scale for v in rep_b.log_prob]
            ppl_a, ppl_b, name = rep_a.pseudo_perplexity, rep_b.pseudo_perplexity, "Pseudo-perplexity"
        measure = f"cross-entropy ({unit})" if lm.is_causal else f"−log P(token | all others) ({unit})"
        d = tc.per_token_difference(rep_a.tokens, va, rep_b.tokens, vb, ids_a=list(rep_a.token_ids),
                                    ids_b=list(rep_b.token_ids), measure=measure)
        _edits_caption(d.alignment)
        c = st.columns(3)
        _metric_pair(c[0], name, ppl_a, ppl_b, ".4g")
        _metric_pair(c[1], f"Total {measure}", d.total_a, d.total_b, ".4f")
        _metric_pair(c[2], f"Mean {measure}", d.mean_a, d.mean_b, ".4f")
        st.caption(f"{name} of A over {d.n_scored_a} tokens, of B over {d.n_scored_b} tokens "
                   f"({'causal, same windows as above' if lm.is_causal else 'every token masked in turn'}). "
                   "For a minimal pair the totals (the log-probability of each whole text) are the usual comparison.")
        st.markdown("**Text B**")
        st.html(plots.colored_tokens_html(rep_b.tokens, vb, value_name=measure))
        st.markdown("**B − A on the tokens the two texts share** (red: B costs more, blue: less; blank: not shared)")
        st.html(plots.colored_tokens_html(rep_b.tokens, list(d.delta_b), signed=True, value_name=f"Δ {measure}"))
        rows = d.largest_changes(12)
        if rows:
            st.dataframe([{"token": tok, "position in A": i, "position in B": j, f"A ({unit})": va_, f"B ({unit})": vb_,
                           "B − A": dv} for i, j, tok, va_, vb_, dv in rows], hide_index=True, key="pair_loss_table")


_GRIDS = (("std_scaled", "σ(QKᵀ/√d_head)"), ("entropy_fraction", "entropy / log(n keys)"),
          ("max_prob", "mean max attention probability"))


def _grid_chart(title: str, z, *, signed: bool = False) -> contract.Chart:
    rows, cols = len(z), len(z[0]) if len(z) else 0
    return contract.Chart("heatmap", title, "head", "layer", z=tuple(map(tuple, z.tolist())),
                          row_labels=tuple(f"L{i}" for i in range(rows)), col_labels=tuple(f"h{j}" for j in range(cols)),
                          colorbar_title="B − A" if signed else "", signed=signed)


def attention_grids(ctx: _common.PageContext, rep_a) -> None:
    """Per layer × head statistics of B, and B − A, with the heads that moved most."""
    b = text_b(ctx)
    if b is None:
        return
    st.subheader("Text B beside A: per layer × head")
    with _common.guard("the attention statistics of text B"):
        rep_b = _common.run_on_text(attention.attention_logit_report, ctx.lm, b, ctx.text_pair,
                                    spinner="Measuring QKᵀ on text B…")
        st.caption(f"A: {int(rep_a.n_tokens[0])} tokens, B: {int(rep_b.n_tokens[0])} tokens.")
        field = st.selectbox("Statistic", [f for f, _ in _GRIDS], format_func=dict(_GRIDS).get, key="pair_grid",
                             persist_state="session")
        label = dict(_GRIDS)[field]
        g = tc.grid_difference(getattr(rep_a, field), getattr(rep_b, field), label)
        left, right = st.columns(2)
        _common.chart("chart_figure", _grid_chart(f"B: {label}", g.b), st_key="pair_grid_b", container=left)
        _common.chart("chart_figure", _grid_chart(f"B − A: {label}", g.delta, signed=True), st_key="pair_grid_delta",
                      container=right)
        st.dataframe([{"layer": la, "head": h, "A": a, "B": bv, "B − A": dv} for la, h, a, bv, dv in g.largest_changes()],
                     hide_index=True, key="pair_grid_table")


def contract_view(ctx: _common.PageContext, name: str, settings: dict, blocks_a) -> bool:
    """Tabs A | B | B − A for an analysis on the contract; False when there is no text B (the caller draws A)."""
    b = text_b(ctx)
    if b is None:
        return False
    a = contract.get(name)
    blocks_b = None
    with _common.guard(f"{a.title} on text B"):
        blocks_b = a.view(_render.run_registered(name, ctx.lm, b, ctx.text_pair, settings))
    if blocks_b is None:  # the message is shown; A is still drawn by the caller
        return False
    tab_a, tab_b, tab_d = st.tabs(["Text A", "Text B", "B − A"])
    with tab_a:
        _render.render_blocks(blocks_a, key_prefix=f"{name}_a")
    with tab_b:
        _render.render_blocks(blocks_b, key_prefix=f"{name}_b")
    with tab_d:
        _render.render_blocks(tc.difference_blocks(blocks_a, blocks_b), key_prefix=f"{name}_d")
    return True
