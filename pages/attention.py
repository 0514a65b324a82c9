"""Attention: how large QKᵀ really is per layer and head, how peaked the softmax gets, and one head's pattern."""
import streamlit as st

from inspector.analyses import attention, decoder_signals
from pages import _common, _render

ctx = _common.page_context()
_common.page_header(
    "Attention",
    "Seed 003: with unit-variance q and k, σ(q·k) ≈ √d_head, and dividing by √d_head brings the logits back "
    "to ≈ 1 so the softmax does not saturate. Measured here on the sidebar's text.")

lm = ctx.lm
with _common.guard("the attention statistics"):
    rep = _common.run_on_text(attention.attention_logit_report, lm, ctx.text, ctx.text_pair,
                             spinner="Measuring QKᵀ in every layer and head…")
    _common.truncation_note(_common.encoded(lm, ctx.text, ctx.text_pair))
    c = st.columns(4)
    c[0].metric("d_head", rep.d_head)
    c[1].metric("√d_head (seed's σ prediction)", f"{rep.sqrt_d_head:.3f}")
    c[2].metric("Tokens", int(rep.n_tokens[0]))
    c[3].metric(f"Fidelity: max |Δ {rep.fidelity_quantity}|", f"{rep.fidelity_max_abs_diff:.3g}",
                help="Largest difference between the instrumented forward and a plain forward of the same "
                     "model on this text. 0 means measuring did not change the model's output.")

    st.subheader("σ(QKᵀ) per layer × head, against √d_head")
    _common.chart("attention_sigma_heatmaps", rep, st_key="attn_sigma")
    st.caption("Left: the raw q·k; blue is below √d_head, red above. Right: after the model's 1/√d_head scaling "
               "(what the softmax sees); blue is below 1, red above.")

    quantity = st.selectbox(
        "Other statistic per layer × head", list(_common.ATTENTION_QUANTITIES),
        format_func=_common.ATTENTION_QUANTITIES.get, key="attn_quantity", persist_state="session")
    _common.chart("attention_heatmap", rep, quantity, st_key="attn_other")

    with st.expander("Table: every layer and head (sortable)"):
        st.dataframe(_common.attention_rows(rep), hide_index=True, key="attn_table")

st.subheader("Attention sinks")
with _common.guard("the attention sinks"):
    sig = _render.run_registered("decoder_signals", lm, ctx.text, ctx.text_pair, {})
    _render.render_blocks(decoder_signals.sink_blocks(sig), key_prefix="attn_sinks")

st.subheader("Attention pattern of one head")
with _common.guard("the attention pattern"):
    c1, c2 = st.columns(2)
    layer = c1.slider("Layer", 0, lm.n_layers - 1, 0, key="attn_layer", persist_state="session")
    head = c2.slider("Head", 0, lm.n_heads - 1, 0, key="attn_head", persist_state="session")
    pattern = _common.run_on_text(attention.attention_pattern, lm, ctx.text, ctx.text_pair, layer, head,
                                  spinner="Computing the attention pattern…")
    _common.chart("attention_pattern_heatmap", pattern,
                  st_key="attn_pattern")

st.subheader("The scaling as a softmax temperature")
st.caption("The same captured logits of the chosen layer put through the softmax at other temperatures, and "
           "without the 1/√d_head scaling (crosses): saturation shows as entropy → 0 and max probability → 1.")
with _common.guard("the scaling what-if"):
    what_if = _common.run_on_text(attention.scaling_what_if, lm, ctx.text, ctx.text_pair, layer, _common.TEMPERATURES,
                                  spinner="Re-running the softmax at other temperatures…")
    _common.chart("scaling_what_if_chart", what_if, st_key="attn_whatif")
