"""Compare: two models or two checkpoints on the sidebar's text — predictions, loss per word, parameter drift, σ(QKᵀ)."""
import streamlit as st

from inspector import plots
from inspector.analyses import compare
from pages import _common

ctx = _common.page_context()
lm_a = ctx.lm
_common.page_header(
    "Compare",
    "Model A is the sidebar's model; pick model B here (another checkpoint of the same model shows what training "
    "changed). Each comparison is made only where it means something; the others say why not.")

options = _common.comparison_specs()
default_b = _common.default_model_b(lm_a.spec, options)
choices = options + [_common.OTHER_MODEL]
if st.session_state.get("cmp_model") not in choices:
    st.session_state["cmp_model"] = default_b or _common.OTHER_MODEL
c1, c2 = st.columns([2, 1])
choice = c1.selectbox("Model B", choices, key="cmp_model",
                      format_func=lambda o: "Other: hub id, id@revision or local folder…" if o == _common.OTHER_MODEL
                      else o)
spec_b = (c1.text_input("Model B: hub id, id@revision or local folder", key="cmp_custom").strip()
          if choice == _common.OTHER_MODEL else choice)
masking = c2.radio("Masked LMs: positions compared", [compare.MASKING_EACH, compare.MASKING_SEEDED], horizontal=True,
                   key="cmp_masking", persist_state="session",
                   format_func={compare.MASKING_EACH: "every token, masked in turn",
                                compare.MASKING_SEEDED: "seeded 15 %"}.get)
st.caption(f"A = **{_common.md_literal(lm_a.spec)}**, B = **{_common.md_literal(spec_b or '—')}**, on the sidebar's text.")
if not spec_b:
    st.info("Type the model B to compare with.")
    st.stop()

with _common.guard(f"loading model B '{spec_b}'"):
    lm_b = _common.load_model(spec_b, ctx.inputs.device, ctx.inputs.dtype)
    rep = _common.run(compare.compare_models, lm_a, lm_b, ctx.text, masking=masking, seed=0,
                      spinner="Comparing the two models on the text…")

    st.subheader("What was compared")
    st.markdown("\n".join(f"- {line}" for line in rep.comparable) or "Nothing could be compared.")
    for note in rep.notes:
        st.caption(_common.md_literal(note))

    st.subheader("Predictions")
    div = rep.divergence
    if div is None:
        st.info(f"Per-token divergence: {_common.md_literal(rep.divergence_unavailable_reason)}.")
    else:
        c = st.columns(5)
        c[0].metric("Perplexity A", f"{div.perplexity_a:.4g}")
        c[1].metric("Perplexity B", f"{div.perplexity_b:.4g}")
        c[2].metric("Mean KL(A‖B), nats", f"{div.mean_kl_ab_nats:.4f}")
        c[3].metric("Mean KL(B‖A), nats", f"{div.mean_kl_ba_nats:.4f}", help="KL is not symmetric (seed 004).")
        c[4].metric("max |H(A,B) − H(A) − KL(A‖B)|", f"{div.identity_max_abs_residual:.2g}",
                    help="Seed 004's identity, checked at every position (0 up to rounding).")
        js = _common.per_token(len(div.tokens), div.positions, div.js_nats)
        st.html(plots.colored_tokens_html(div.tokens, js, value_name="Jensen–Shannon", unit="nats"))
        _common.chart("divergence_chart", div, st_key="cmp_div")
        st.markdown("**Where they disagree most**")
        st.dataframe([{"position": d.position, "token": d.token, "JS (nats)": d.js_nats, "loss A": d.loss_a_nats,
                       "loss B": d.loss_b_nats, "A predicts": _common.top_predictions(d.top_tokens_a, d.top_probs_a),
                       "B predicts": _common.top_predictions(d.top_tokens_b, d.top_probs_b)}
                      for d in div.disagreements], hide_index=True, key="cmp_disagree")

    st.subheader("Loss per word")
    words = rep.words
    if words is None:
        st.info(f"Loss per word: {_common.md_literal(rep.words_unavailable_reason)}.")
    else:
        c = st.columns(2)
        c[0].metric("Bits per byte A", f"{words.bits_per_byte_total_a:.4f}")
        c[1].metric("Bits per byte B", f"{words.bits_per_byte_total_b:.4f}")
        st.html(plots.colored_tokens_html([w + " " for w in words.words], words.nll_diff_nats, signed=True,
                                          value_name="loss B − loss A", unit="nats",
                                          skip=[not ok for ok in words.comparable]))
        st.caption("Red: B finds the word harder than A; blue: easier. Tokens are aligned on character offsets.")

    st.subheader("Parameters")
    if rep.drift is None:
        st.info(f"Parameter drift: {_common.md_literal(rep.drift_unavailable_reason)}.")
    else:
        d = rep.drift
        c = st.columns(3)
        c[0].metric("Relative change ‖ΔΘ‖/‖Θ_A‖", f"{d.total_rel_change:.4g}")
        c[1].metric("Cosine(Θ_A, Θ_B)", f"{d.total_cosine:.4f}")
        c[2].metric("Tensors changed", f"{d.n_changed} / {len(d.names)}")
        _common.chart("layer_drift_chart", d, st_key="cmp_drift")
        st.dataframe([{"parameter": n, "layer": int(layer), "component": comp, "numel": int(k),
                       "relative change": float(r), "cosine": float(cs), "max |Δ|": float(mx)}
                      for n, layer, comp, k, r, cs, mx in zip(d.names, d.layer, d.component, d.numel, d.rel_change,
                                                              d.cosine, d.max_abs_delta)],
                     hide_index=True, key="cmp_drift_table")
    emb = rep.embedding_drift
    if emb is None:
        st.info(f"Embedding drift: {_common.md_literal(rep.embedding_drift_unavailable_reason)}.")
    else:
        c = st.columns(2)
        c[0].metric("Mean cosine of token rows A vs B", f"{emb.mean_cosine:.4f}")
        c[1].metric("Spearman ρ(drift, frequency in the text)", _common.format_float(emb.rho_seen, 3),
                    help=f"over {emb.n_seen} tokens of the text; p = {_common.format_float(emb.p_seen, 2)}")
        st.dataframe([{"token": t, "id": int(i), "cosine A vs B": float(cs)} for t, i, cs in
                      zip(emb.most_drifted_tokens, emb.most_drifted_ids, emb.most_drifted_cosine)],
                     hide_index=True, key="cmp_emb_table")

    st.subheader("Attention scale")
    if rep.attention is None:
        st.info(f"σ(QKᵀ): {_common.md_literal(rep.attention_unavailable_reason)}.")
    else:
        _common.chart("attention_comparison_heatmaps", rep.attention, st_key="cmp_attn")
        _common.show_fidelity(ctx)
