"""LayerNorm: the learned gain γ and bias β of every normalisation layer, and what the layers do to a text."""
import streamlit as st

from inspector import gguf, plots
from inspector.analyses import decoder_signals, layernorm
from pages import _common, _render

ctx = _common.page_context()
_common.page_header(
    "LayerNorm",
    "The claim: GPT-2's γ lie mostly between 0.2 and 0.4 and its β near 0. Here are the real values, "
    "layer by layer.")

with _common.guard("the LayerNorm statistics"):
    rep = _common.run(layernorm.layernorm_stats, ctx.lm, 60, spinner="Reading the norm layers' γ and β…")
    lo, hi = rep.gamma_band
    g, b = rep.pooled_gamma, rep.pooled_beta
    c = st.columns(4)
    c[0].metric("Norm layers", len(rep.layers))
    c[1].metric("γ mean (all layers)", f"{g.mean:.3f}", help=f"median {g.quantiles[3]:.3f}, std {g.std:.3f}")
    c[2].metric(f"γ in [{lo:g}, {hi:g}]", f"{g.frac_in_band:.1%}", help="Share of all γ values inside the claimed band.")
    c[3].metric(f"|β| < {rep.beta_tol:g}", f"{b.frac_near_zero:.1%}" if b else "no β (RMSNorm)",
                help="Share of all β values near zero (the claim: β ≈ 0).")

    if any(layer.gamma_offset for layer in rep.layers):
        st.caption("This model's norms scale by (1 + weight) (Gemma): every γ here is that effective scale.")
    names = ["All layers (pooled)"] + rep.names
    choice = st.selectbox("Histogram of", names, key="ln_layer", persist_state="session")
    if choice == names[0]:
        gs, bs, label = rep.pooled_gamma, rep.pooled_beta, "all norm layers"
    else:
        layer = rep.layer(choice)
        gs, bs, label = layer.gamma_stats, layer.beta_stats, choice
    note = gguf.quantisation_note(ctx.lm.provenance, "γ values")
    if note:
        st.info(note)
    col1, col2 = st.columns(2)
    _common.chart("param_histogram", gs, "γ", title=f"γ — {label} ({gs.n:,} values)",
                  band=rep.gamma_band, st_key="ln_gamma_hist", container=col1)
    if bs is not None:
        _common.chart("param_histogram", bs, "β", title=f"β — {label} ({bs.n:,} values)",
                      color=plots.PALETTE[1], st_key="ln_beta_hist", container=col2)
    else:
        col2.info("No β: " + ("RMSNorm scales by a gain γ only (no centring, no bias)." if any(
            layer.kind == "rmsnorm" for layer in rep.layers) else "this layer has no bias."))

    st.subheader("Every norm layer")
    st.dataframe(rep.table(), hide_index=True, key="ln_table", column_config=_common.readable_columns(
        rep.table(), percent=("gamma_frac_in_band", "beta_frac_near_zero")))
    t1, t2 = st.tabs(["Ranges per layer", "Histograms per layer"])
    with t1:
        _common.chart("norm_layer_ranges", rep, "gamma", st_key="ln_ranges_g")
        if rep.pooled_beta is not None:
            _common.chart("norm_layer_ranges", rep, "beta", st_key="ln_ranges_b")
    with t2:
        _common.chart("norm_histogram_heatmap", rep, "gamma", st_key="ln_heat_g")
        if rep.pooled_beta is not None:
            _common.chart("norm_histogram_heatmap", rep, "beta", st_key="ln_heat_b")

st.subheader("Outlier γ and massive activations")
with _common.guard("the γ outliers and massive activations"):
    sig = _render.run_registered("decoder_signals", ctx.lm, ctx.text, ctx.text_pair, {})
    _render.render_blocks(decoder_signals.gamma_outlier_blocks(sig) + decoder_signals.massive_blocks(sig),
                          key_prefix="ln_signals")

st.subheader("On your text")
st.caption("What each norm layer does to the activations of the sidebar's text: the spread going in and coming out.")
with _common.guard("the norm layers' activations"):
    acts = _common.run_on_text(layernorm.layernorm_activations, ctx.lm, ctx.text, ctx.text_pair,
                               spinner="Running the text through the norm layers…")
    _common.truncation_note(_common.encoded(ctx.lm, ctx.text, ctx.text_pair))
    _common.chart("norm_activation_chart", acts, st_key="ln_acts")
    st.dataframe([{"layer": a.name, "role": a.role, "tokens": a.n_tokens, "input mean": a.input_mean,
                   "input std": a.input_std, "output mean": a.output_mean, "output std": a.output_std}
                  for a in acts], hide_index=True, key="ln_acts_table")
    _common.show_fidelity(ctx)

_render.report_view(ctx, "layernorm")
