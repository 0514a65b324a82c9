"""All heads: every layer × head attention pattern at once (one raster image), the chosen token's row marked."""
import streamlit as st

from inspector.analyses import attention, heads
from pages import _common

ctx = _common.page_context()
lm = ctx.lm
_common.page_header(
    "All heads",
    "Every head's attention pattern on the sidebar's text as small thumbnails (rows = queries, columns = keys; "
    "each scaled to its own maximum). The token you pick is marked in every head. Click a thumbnail to open "
    "that head.")

with _common.guard("the all-heads grid") as first:
    enc = _common.encoded(lm, ctx.text, ctx.text_pair)
    _common.truncation_note(enc)
    grid = _common.run_on_text(heads.head_grid, lm, ctx.text, ctx.text_pair, 48,
                               spinner="Drawing every head's attention pattern…")
    selected = _common.default_head(ctx, grid.entropy_fraction)
    position = _common.token_widget(enc, causal=False)
    highlight = None if position is None or position >= grid.n_tokens else int(position)
    points = _common.pickable_chart("head_grid_figure", grid, highlight_token=highlight, selected=selected,
                                    st_key="grid_pick")
    peak = heads.most_peaked_head(grid.entropy_fraction)
    st.caption(f"{grid.n_layers} layers × {grid.n_heads} heads, {grid.n_tokens} tokens drawn at "
               f"{grid.cell} × {grid.cell} pixels per head (block means of the probabilities). Orange row: the "
               "picked token as a query. Most peaked head (lowest entropy / log n): layer "
               f"{peak[0]}, head {peak[1]}.")
    if _common.apply_head_pick("grid_pick", points):
        st.rerun()

if first.failed:
    st.stop()

st.subheader("The chosen head")
with _common.guard("the chosen head"):
    rep = _common.run_on_text(attention.attention_logit_report, lm, ctx.text, ctx.text_pair,
                             spinner="Measuring QKᵀ in every layer and head…")
    layer, head = _common.head_widgets(lm)
    st.markdown(_common.head_stats_line(rep, layer, head))
    pattern = _common.run_on_text(attention.attention_pattern, lm, ctx.text, ctx.text_pair, layer, head,
                                  spinner="Computing the attention pattern…")
    points = _common.pickable_chart("attention_pattern_heatmap", pattern, selected_token=position,
                                    st_key="grid_pattern")
    if _common.apply_token_pick("grid_pattern", points):
        st.rerun()
    if position is not None and (lm.is_causal or lm.has_mlm_head) and not (lm.is_causal and position == 0):
        _common.token_inspector(ctx, layer, head, position)
