"""Compare: two models or two checkpoints on the sidebar's text — predictions, loss per word, parameter drift, σ(QKᵀ)."""
import streamlit as st

from inspector import perplexity, plots
from inspector.analyses import compare, loss
from pages import _common

ctx = _common.page_context()
lm_side = ctx.lm
_common.page_header(
    "Compare",
    "The sidebar's model against a second one; two checkpoints of one model show what training changed, from the "
    "earlier (A) to the later (B). Each comparison is made only where it means something; the others say why not.")

options = _common.comparison_specs()
default_b = _common.default_model_b(lm_side.spec, options)
choices = options + [_common.OTHER_MODEL]
if st.session_state.get("cmp_model") not in choices or st.session_state.get("_cmp_for") != lm_side.spec:
    st.session_state["cmp_model"] = default_b or _common.OTHER_MODEL  # a new sidebar model: a comparable B again
    st.session_state["_cmp_for"] = lm_side.spec
c1, c2, c3 = st.columns([2, 1, 1])
choice = c1.selectbox("Compare with", choices, key="cmp_model",
                      format_func=lambda o: "Other: hub id, id@revision or local folder…" if o == _common.OTHER_MODEL
                      else o)
other = (c1.text_input("Second model: hub id, id@revision or local folder", key="cmp_custom").strip()
         if choice == _common.OTHER_MODEL else choice)
swap = c2.toggle("Swap direction", key="cmp_swap",
                 help="By default two checkpoints of one model go from the earlier (A) to the later (B).")
masking = c3.radio("Masked LMs: positions compared", [compare.MASKING_EACH, compare.MASKING_SEEDED],
                   key="cmp_masking", persist_state="session",
                   format_func={compare.MASKING_EACH: "every token, masked in turn",
                                compare.MASKING_SEEDED: "seeded 15 %"}.get)
if not other:
    st.info("Type the second model to compare with.")
    st.stop()
spec_a, spec_b = _common.ordered_pair(lm_side.spec, other, swap)
st.markdown(f"**A** = {_common.md_literal(spec_a)} → **B** = {_common.md_literal(spec_b)}, on the sidebar's text.")

with _common.guard(f"loading the model '{other}'"):
    lm_other = _common.load_model(other, ctx.inputs.device, ctx.inputs.dtype)
    lm_a, lm_b = (lm_side, lm_other) if spec_a == lm_side.spec else (lm_other, lm_side)
    rep = _common.run(compare.compare_models, lm_a, lm_b, ctx.text, masking=masking, seed=0,
                      spinner="Comparing the two models on the text…")
    div, d = rep.divergence, rep.drift

    # Key figures first, each with its full name: perplexity as the Token loss page defines it (and the
    # divergence's own, every token scored), divergence, parameter change, bits per byte.
    rows = []
    if lm_a.is_causal and lm_b.is_causal:
        base = [_common.run(loss.causal_token_loss, x, ctx.text, top_k=5, spinner="Scoring every token…")
                for x in (lm_a, lm_b)]
        rows.append((perplexity.label(base[0]), perplexity.value(base[0].perplexity),
                     perplexity.value(base[1].perplexity)))
    if div is not None:
        rows.append((perplexity.label(div), perplexity.value(div.perplexity_a), perplexity.value(div.perplexity_b)))
        rows.append(("Mean KL per token, nats (column A: KL(A‖B); column B: KL(B‖A))", f"{div.mean_kl_ab_nats:.4f}",
                     f"{div.mean_kl_ba_nats:.4f}"))
    if rep.words is not None:
        rows.append(("Bits per byte of the whole text", f"{rep.words.bits_per_byte_total_a:.4f}",
                     f"{rep.words.bits_per_byte_total_b:.4f}"))
    if d is not None:
        rows.append(("Parameters changed ‖ΔΘ‖/‖Θ_A‖ (cosine Θ_A, Θ_B)", "—",
                     f"{d.total_rel_change:.4g} ({d.total_cosine:.4f})"))
    if rows:
        st.table([{"figure": r[0], f"A: {spec_a}": r[1], f"B: {spec_b}": r[2]} for r in rows])

    with st.expander("What was compared, and what could not be", expanded=not rep.comparable):
        st.markdown("\n".join(f"- {line}" for line in rep.comparable) or
                    "Nothing could be compared: the reasons are listed under each part below.")
        for note in rep.notes:
            st.caption(_common.md_literal(note))

    st.subheader("Predictions")
    if div is None:
        st.info(f"Per-token divergence: {_common.md_literal(rep.divergence_unavailable_reason)}.")
    else:
        c = st.columns(5)
        c[0].metric("Perplexity A", perplexity.value(div.perplexity_a), help=perplexity.describe(div, "a"))
        c[1].metric("Perplexity B", perplexity.value(div.perplexity_b), help=perplexity.describe(div, "b"))
        c[2].metric("Mean KL(A‖B), nats", f"{div.mean_kl_ab_nats:.4f}")
        c[3].metric("Mean KL(B‖A), nats", f"{div.mean_kl_ba_nats:.4f}", help="KL is not symmetric.")
        c[4].metric("max |H(A,B) − H(A) − KL(A‖B)|", f"{div.identity_max_abs_residual:.2g}",
                    help="Cross-entropy = entropy + KL, checked at every position (0 up to rounding).")
        st.caption(f"A: {perplexity.text(div, 'a')}; B: {perplexity.value(div.perplexity_b)}.")
        js = _common.per_token(len(div.tokens), div.positions, div.js_nats)
        st.html(plots.colored_tokens_html(div.tokens, js, value_name="Jensen–Shannon", unit="nats"))
        _common.chart("divergence_chart", div, st_key="cmp_div")
        st.markdown("**Where they disagree most**")
        st.dataframe([{"position": x.position, "token": x.token, "Jensen–Shannon (nats)": x.js_nats,
                       "loss A (nats)": x.loss_a_nats, "loss B (nats)": x.loss_b_nats,
                       "A predicts": _common.top_predictions(x.top_tokens_a, x.top_probs_a),
                       "B predicts": _common.top_predictions(x.top_tokens_b, x.top_probs_b)}
                      for x in div.disagreements], hide_index=True, key="cmp_disagree")

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
    if d is None:
        st.info(f"Parameter drift: {_common.md_literal(rep.drift_unavailable_reason)}.")
    else:
        c = st.columns(3)
        c[0].metric("Relative change ‖ΔΘ‖/‖Θ_A‖", f"{d.total_rel_change:.4g}")
        c[1].metric("Cosine(Θ_A, Θ_B)", f"{d.total_cosine:.4f}")
        c[2].metric("Tensors changed", f"{d.n_changed} / {len(d.names)}")
        _common.chart("layer_drift_chart", d, st_key="cmp_drift")
        st.dataframe([{"parameter": n, "layer": int(layer), "component": comp, "elements": int(k),
                       "relative change": float(r), "cosine A vs B": float(cs), "largest |Δ|": float(mx)}
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
        st.dataframe([{"token": t, "token id": int(i), "cosine A vs B": float(cs)} for t, i, cs in
                      zip(emb.most_drifted_tokens, emb.most_drifted_ids, emb.most_drifted_cosine)],
                     hide_index=True, key="cmp_emb_table")

    st.subheader("Attention scale")
    if rep.attention is None:
        st.info(f"σ(QKᵀ): {_common.md_literal(rep.attention_unavailable_reason)}.")
    else:
        _common.chart("attention_comparison_heatmaps", rep.attention, st_key="cmp_attn")
        _common.show_fidelity(ctx)
