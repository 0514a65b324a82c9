"""Drill-down shared by the Attention and All-heads pages: the chosen (layer, head) and the inspected token,
picked by a click on a figure or by their widgets, and the token inspector (top-k predictions, loss,
attention row, attribution, logit lens of one token).

The choices live in plain session-state keys (see below). It sits above pages/_common.py and calls the
runner, the figure cache and `guard` as `_common.<name>`; `_common` re-exports every name defined here.
"""
from __future__ import annotations

import streamlit as st

from inspector import models
from pages import _common


# --------------------------------------------------------------------------- the chosen head and token
# One (layer, head) and one token position are shared by the Attention and All-heads pages: a click on a
# layer × head cell (or a thumbnail) picks the head, a click on a pattern cell picks its query token.
# A new model or text starts again on the most peaked head (lowest entropy fraction).

K_LAYER, K_HEAD, K_TOKEN = "attn_layer", "attn_head", "inspect_token"  # widget keys
# The choices themselves live in plain keys: Streamlit drops a widget's state on a run that does not draw
# it (any other page), so the widgets are re-seeded from these on every run and write back on change.
K_HEAD_CHOICE, K_TOKEN_CHOICE = "_head_choice", "_token_choice"


def _new_pick(st_key: str, points: list[dict]) -> list | None:
    """customdata of the clicked point when the selection changed since the last run, else None."""
    picked = next((p.get("customdata") for p in points if p.get("customdata") is not None), None)
    if picked is None or isinstance(picked, str):  # a bar chart: the point's x is the token position
        picked = next(([p["x"]] for p in points if isinstance(p.get("x"), (int, float))), None)
    if isinstance(picked, dict):  # the browser sends an array as {"0": .., "1": ..}
        picked = [picked[k] for k in sorted(picked, key=int)]
    last = st.session_state.get(f"_last_pick_{st_key}")
    if picked is None:
        st.session_state.pop(f"_last_pick_{st_key}", None)
        return None
    picked = [int(v) for v in picked]
    if picked == last:
        return None
    st.session_state[f"_last_pick_{st_key}"] = picked
    return picked


def default_head(ctx: _common.PageContext, entropy_fraction) -> tuple[int, int]:
    """The chosen (layer, head); for a new model or text the most peaked head (lowest entropy fraction),
    not layer 0 head 0, which is often uniform and looks blank."""
    from inspector.analyses.heads import most_peaked_head

    marker = (_common.model_key(ctx.lm), ctx.text, ctx.text_pair or "")
    if st.session_state.get("_head_default_for") != marker or K_HEAD_CHOICE not in st.session_state:
        st.session_state["_head_default_for"] = marker
        st.session_state[K_HEAD_CHOICE] = most_peaked_head(entropy_fraction)
        st.session_state.pop(K_TOKEN_CHOICE, None)
    return selected_head()


def selected_head() -> tuple[int, int]:
    layer, head = st.session_state.get(K_HEAD_CHOICE, (0, 0))
    return int(layer), int(head)


def apply_head_pick(st_key: str, points: list[dict]) -> bool:
    """A clicked layer × head cell becomes the chosen head (the caller reruns to redraw)."""
    picked = _new_pick(st_key, points)
    if picked is None:
        return False
    st.session_state[K_HEAD_CHOICE] = (int(picked[0]), int(picked[1]))
    return True


def apply_token_pick(st_key: str, points: list[dict]) -> bool:
    """A clicked pattern cell makes its query token the inspected one (the caller reruns to redraw)."""
    picked = _new_pick(st_key, points)
    if picked is None:
        return False
    st.session_state[K_TOKEN_CHOICE] = int(picked[0])
    return True


def _head_from_widgets() -> None:
    st.session_state[K_HEAD_CHOICE] = (int(st.session_state[K_LAYER]), int(st.session_state[K_HEAD]))


def _token_from_widget() -> None:
    st.session_state[K_TOKEN_CHOICE] = int(st.session_state[K_TOKEN])


def head_widgets(lm: models.LoadedModel) -> tuple[int, int]:
    """Layer and head selectors showing the shared choice (seeded from it; a change writes it back)."""
    layer, head = selected_head()
    layer, head = min(max(layer, 0), lm.n_layers - 1), min(max(head, 0), lm.n_heads - 1)
    st.session_state[K_LAYER], st.session_state[K_HEAD] = layer, head
    st.session_state[K_HEAD_CHOICE] = (layer, head)
    c1, c2 = st.columns(2)
    c1.selectbox("Layer", list(range(lm.n_layers)), key=K_LAYER, on_change=_head_from_widgets)
    c2.selectbox("Head", list(range(lm.n_heads)), key=K_HEAD, on_change=_head_from_widgets)
    return layer, head


# --------------------------------------------------------------------------- the token inspector


def token_widget(enc, causal: bool) -> int | None:
    """The inspected token: a click on the pattern, or this picker (a select box, not a 100-step slider)."""
    options = _common.token_positions(enc)
    if causal:
        options.pop(0, None)
    if not options:
        return None
    chosen = st.session_state.get(K_TOKEN_CHOICE)
    if chosen not in options:
        chosen = _common.default_token(enc, causal)
    st.session_state[K_TOKEN_CHOICE] = st.session_state[K_TOKEN] = chosen
    st.selectbox("Token to inspect (or click a cell of the pattern: its query token)", list(options),
                 format_func=options.get, key=K_TOKEN, on_change=_token_from_widget)
    return int(chosen)


def logit_lens_of(lm: models.LoadedModel, encoded):
    """The logit lens (inspector.analyses.logit_lens) with its default settings, for the token inspector."""
    from inspector.analyses.logit_lens import LogitLens

    return LogitLens().run(lm, encoded, LogitLens.Settings())


def token_inspector(ctx: _common.PageContext, layer: int, head: int, position: int) -> None:
    """One token up close: top-k predictions, loss, attention row in the chosen head, attribution, logit lens."""
    from inspector import plots
    from inspector.analyses import attribution, heads
    from inspector.tokens import visible

    lm = ctx.lm
    ins = _common.run_on_text(heads.inspect_token, lm, ctx.text, ctx.text_pair, int(position), int(layer), int(head),
                              10, spinner="Inspecting the token…")
    enc = _common.encoded(lm, ctx.text, ctx.text_pair)
    st.markdown(f"#### Token {ins.position}: `{visible(ins.token).replace('`', 'ˋ')}`")
    st.caption(f"Predicted {ins.method}.")
    c = st.columns(4)
    c[0].metric("P(token)", f"{ins.prob:.4f}")
    c[1].metric("Loss (nats)", f"{ins.loss:.3f}")
    c[2].metric("Rank", ins.rank, help="1 = the model's first choice")
    c[3].metric("Attention row", f"layer {ins.layer}, head {ins.head}")
    left, right = st.columns(2)
    left.markdown("**Top predictions**")
    left.dataframe([{"token": visible(t), "probability": float(p)}
                    for t, p in zip(ins.top_tokens, ins.top_probs)], hide_index=True, key="insp_top")
    with right:
        _common.chart("token_row_chart", tuple(enc.tokens), tuple(float(v) for v in ins.attention_row),
                      title=f"Where token {ins.position} looks: attention row in layer {ins.layer}, head {ins.head}",
                      y_title="attention probability", selected=ins.position, st_key="insp_row")
    with _common.guard("the attribution of this token"):
        target = "next_token" if lm.is_causal else "masked_token"
        res = _common.run(attribution.attribute, lm, ctx.text, method="input_x_gradient", target=target,
                          position=int(position), text_pair=ctx.text_pair, spinner="Attributing the prediction…")
        st.markdown(f"**Which tokens push this prediction** (gradient × input): {res.target}")
        st.html(plots.colored_tokens_html(res.tokens, res.scores, signed=res.scores_signed,
                                          value_name="attribution", skip=[bool(s) for s in res.special]))
    with _common.guard("the logit lens of this token"):
        lens = _common.run_on_text(logit_lens_of, lm, ctx.text, ctx.text_pair,
                                   spinner="Reading every layer (logit lens)…")
        read_at = position - 1 if lens.mode == "causal" else position
        where = [j for j, p in enumerate(lens.positions) if int(p) == read_at]
        if not where:
            st.caption("Logit lens: this position is not one of the masked positions the lens reads "
                       "(see the Layer by layer page).")
        else:
            j = where[0]
            st.markdown("**Prediction per layer** (logit lens: each layer's residual stream read through the final "
                        "norm and unembedding)")
            st.dataframe([{"layer": name, "top prediction": visible(lens.top_tokens[r][j][0]),
                           "its probability": float(lens.top_probs[r, j, 0]),
                           "P(this token)": float(lens.target_prob[r, j]), "rank of this token": int(lens.target_rank[r, j])}
                          for r, name in enumerate(lens.layer_names)], hide_index=True, key="insp_lens")
