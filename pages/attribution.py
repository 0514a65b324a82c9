"""Attribution: which input tokens drive one prediction (Captum: Integrated Gradients, gradient × input, saliency)."""
import streamlit as st

from inspector import plots
from inspector.analyses import attribution
from pages import _common, _render

ctx = _common.page_context()
lm = ctx.lm
_common.page_header(
    "Attribution",
    "Which tokens of the text push one prediction up or down. Integrated Gradients satisfies completeness: the "
    "scores add up to f(input) − f(baseline), up to the convergence delta shown below.")
if _common.encoder_only_note(lm, "Attribution of a prediction"):
    st.stop()

with _common.guard("the attribution settings") as settings_guard:
    enc = _common.encoded(lm, ctx.text, ctx.text_pair)
    _common.truncation_note(enc)
    c1, c2, c3 = st.columns(3)
    method = c1.selectbox("Method", list(attribution.METHODS), format_func=attribution.METHOD_LABELS.get,
                          key="attr_method", persist_state="session")
    if lm.is_causal:
        target = c2.selectbox("Explain", ["next_token", "sequence_loss"], key="attr_target",
                              format_func={"next_token": "probability of one token",
                                           "sequence_loss": "loss of the whole text"}.get)
    else:
        target = "masked_token"
        c2.selectbox("Explain", ["masked_token"], format_func=lambda _: "a masked token", key="attr_target_mlm")
    baseline = c3.selectbox("Baseline (Integrated Gradients)", list(attribution.BASELINES), key="attr_baseline",
                            disabled=method != "integrated_gradients", persist_state="session")
    position, target_token = None, None
    if target != "sequence_loss":
        options = _common.attribution_positions(enc, lm.is_causal)
        picked = st.session_state.pop("_attr_pick", None)  # a click on a bar of the chart below
        if picked in options:
            st.session_state["attr_position"] = picked
        elif st.session_state.get("attr_position") not in options:  # default: a real word inside the text
            st.session_state["attr_position"] = _common.default_token(enc, lm.is_causal) or list(options)[-1]
        position = st.selectbox("Token to explain (or click its bar in the chart below)", list(options),
                                format_func=options.get, key="attr_position")
        target_token = st.text_input("Other target token (optional)", key="attr_target_token",
                                     placeholder="leave empty for the actual token; e.g. ' the'").strip() or None
    steps = st.slider("Integration steps", 8, 256, 32, step=8, key="attr_steps", persist_state="session",
                      disabled=method != "integrated_gradients",
                      help="More steps: smaller convergence delta, slower (one forward + backward per step).")
if settings_guard.failed:  # e.g. a blank text: the message is shown, nothing else can run
    st.stop()

with _common.guard("the attribution"):
    label = attribution.METHOD_LABELS[method]
    with st.spinner(f"Running {label}" + (f" with {steps} steps" if method == "integrated_gradients" else "") + "…"):
        res = _common.run(attribution.attribute, lm, ctx.text, method=method, target=target, position=position,
                          target_token=target_token, baseline=baseline, steps=int(steps), text_pair=ctx.text_pair)
    st.markdown(f"**Explained:** {_common.md_literal(res.target)} — *{_common.md_literal(res.units)}*")
    c = st.columns(4)
    c[0].metric("f(input)", f"{res.f_input:.4f}")
    if res.f_baseline is not None:
        c[1].metric("f(baseline)", f"{res.f_baseline:.4f}", help=res.baseline_description)
        c[2].metric("Convergence delta", f"{res.delta:.2g}",
                    help="Σ scores − (f(input) − f(baseline)); more steps make it smaller.")
        rel = res.relative_delta
        c[3].metric("Delta relative to f(input) − f(baseline)", "—" if rel is None else f"{rel:.2%}")
    for note in ([res.message] if res.message else []) + list(res.notes):
        st.caption(_common.md_literal(note))
    skip = [bool(s) for s in res.special]
    st.html(plots.colored_tokens_html(res.tokens, res.scores, signed=res.scores_signed, value_name="attribution",
                                      skip=skip))
    points = _common.pickable_chart("attribution_bar_chart", res, st_key="attr_bars")
    clicked = _common._new_pick("attr_bars", points)
    if clicked is not None and target != "sequence_loss":
        st.session_state["_attr_pick"] = int(clicked[0])
        st.rerun()
    st.dataframe([{"position": t.index, "token": t.token, "score": t.score} for t in res.top], hide_index=True,
                 key="attr_top")

_render.report_view(ctx, "attribution")
