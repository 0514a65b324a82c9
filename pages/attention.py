"""Attention: how large QKᵀ really is per layer and head, how peaked the softmax gets, one head and one token up close."""
import streamlit as st

from inspector.analyses import attention, decoder_signals
from pages import _common, _render, _second_text

ctx = _common.page_context()
_common.page_header(
    "Attention",
    "With unit-variance q and k, σ(q·k) ≈ √d_head, and dividing by √d_head brings the logits back to ≈ 1 so the "
    "softmax does not saturate. Measured here on the sidebar's text. Click a layer × head cell to open that head.")

lm = ctx.lm
with _common.guard("the attention statistics") as first:
    rep = _common.run_on_text(attention.attention_logit_report, lm, ctx.text, ctx.text_pair,
                             spinner="Measuring QKᵀ in every layer and head…")
    enc = _common.encoded(lm, ctx.text, ctx.text_pair)
    _common.truncation_note(enc)
    selected = _common.default_head(ctx, rep.entropy_fraction)
    c = st.columns(4)
    c[0].metric("d_head", rep.d_head)
    c[1].metric("√d_head (predicted σ of q·k)", f"{rep.sqrt_d_head:.3f}")
    c[2].metric("Tokens", int(rep.n_tokens[0]))
    c[3].metric(f"Fidelity: max |Δ {rep.fidelity_quantity}|", f"{rep.fidelity_max_abs_diff:.3g}",
                help="Largest difference between the instrumented forward and a plain forward of the same "
                     "model on this text. 0 means measuring did not change the model's output.")

    st.subheader("σ(QKᵀ) per layer × head, against √d_head")
    points = _common.pickable_chart("attention_sigma_heatmaps", rep, selected=selected, st_key="attn_sigma")
    st.caption("Left: the raw q·k; blue is below √d_head, red above. Right: after the model's 1/√d_head scaling "
               "(what the softmax sees); blue is below 1, red above. The outlined cell is the head shown below.")
    if _common.apply_head_pick("attn_sigma", points):
        st.rerun()

    quantity = st.selectbox(
        "Other statistic per layer × head", list(_common.ATTENTION_QUANTITIES),
        format_func=_common.ATTENTION_QUANTITIES.get, key="attn_quantity", persist_state="session")
    points = _common.pickable_chart("attention_heatmap", rep, quantity, selected=selected, st_key="attn_other")
    if _common.apply_head_pick("attn_other", points):
        st.rerun()

    with st.expander("Table: every layer and head (sortable)"):
        st.dataframe(_common.attention_rows(rep), hide_index=True, key="attn_table")

    _second_text.attention_grids(ctx, rep)

if first.failed:  # e.g. an empty text: the message above says what to do; nothing below can be drawn
    st.stop()

st.subheader("Attention sinks")
with _common.guard("the attention sinks"):
    sig = _render.run_registered("decoder_signals", lm, ctx.text, ctx.text_pair, {})
    _render.render_blocks(decoder_signals.sink_blocks(sig), key_prefix="attn_sinks")

st.subheader("One head: its attention pattern")
with _common.guard("the attention pattern"):
    layer, head = _common.head_widgets(lm)
    st.markdown(_common.head_stats_line(rep, layer, head))
    pattern = _common.run_on_text(attention.attention_pattern, lm, ctx.text, ctx.text_pair, layer, head,
                                  spinner="Computing the attention pattern…")
    token = st.session_state.get(_common.K_TOKEN_CHOICE)
    points = _common.pickable_chart("attention_pattern_heatmap", pattern, selected_token=token, st_key="attn_pattern")
    if _common.apply_token_pick("attn_pattern", points):
        st.rerun()

st.subheader("One token: token inspector")
with _common.guard("the token inspector"):
    position = _common.token_widget(enc, lm.is_causal)
    if position is None:
        st.info("The text has no token to inspect: use a longer text.")
    elif not (lm.is_causal or lm.has_mlm_head):
        st.info(f"{lm.architecture} has no language-model head, so it predicts no tokens to inspect.")
    else:
        _common.token_inspector(ctx, layer, head, position)

st.subheader("The scaling as a softmax temperature")
st.caption("The same captured logits of the chosen layer put through the softmax at other temperatures, and "
           "without the 1/√d_head scaling (crosses): saturation shows as entropy → 0 and max probability → 1.")
with _common.guard("the scaling what-if"):
    what_if = _common.run_on_text(attention.scaling_what_if, lm, ctx.text, ctx.text_pair, layer, _common.TEMPERATURES,
                                  spinner="Re-running the softmax at other temperatures…")
    _common.chart("scaling_what_if_chart", what_if, st_key="attn_whatif")

_render.report_view(ctx, "attention")
