"""Token loss: how surprised the model is by every token (causal CE / BERT masked-LM loss), perplexity, NSP."""
import streamlit as st

from inspector import plots
from inspector.analyses import loss
from pages import _common, _render, _second_text

ctx = _common.page_context()
lm = ctx.lm
_common.page_header(
    "Token loss",
    "A language model's loss is L = −Σ log P(x_t | context) and its perplexity exp(mean cross-entropy); BERT's "
    "masked-LM loss is the mean cross-entropy over 15 % chosen positions (80 % [MASK], 10 % random, 10 % kept).")
if _common.encoder_only_note(lm, "Token loss"):
    st.stop()

unit = st.segmented_control("Units", ["nats", "bits"], default="nats", key="loss_unit", persist_state="session") or "nats"

if lm.is_causal:
    with _common.guard("the per-token loss"):
        rep = _common.run(loss.causal_token_loss, lm, ctx.text, top_k=5, spinner="Scoring every token of the text…")
        ce = rep.ce_nats if unit == "nats" else rep.ce_bits
        c = st.columns(4)
        _common.perplexity_metric(c[0], lm, rep)
        c[1].metric(f"Mean cross-entropy ({unit}/token)",
                    f"{rep.mean_ce_nats if unit == 'nats' else rep.mean_ce_bits:.4f}")
        c[2].metric("Scored tokens", rep.n_scored, help="Every token but the first, which has no left context.")
        c[3].metric("Forward windows", rep.n_windows,
                    help=f"window {rep.window} tokens, stride {rep.stride}: long texts are scored with a sliding "
                         "window, never truncated.")
        values = _common.per_token(len(rep.tokens), rep.positions, ce)
        st.subheader("Loss per token")
        st.html(plots.colored_tokens_html(rep.tokens, values, value_name="cross-entropy", unit=unit))
        _common.chart("token_bar_chart", rep.tokens, values,
                      title=f"−log P(token | left context) per token ({unit})", y_title=unit,
                      reference=rep.mean_ce_nats if unit == "nats" else rep.mean_ce_bits, reference_label="mean",
                      st_key="loss_bars")
        st.dataframe([{"position": int(p), "token": rep.tokens[int(p)], f"CE ({unit})": float(v),
                       "P(token)": float(pr), "rank": int(r), f"entropy ({unit})": float(e),
                       "context": int(cl), "model's top predictions": _common.top_predictions(tt, tp)}
                      for p, v, pr, r, e, cl, tt, tp in zip(
                          rep.positions, ce, rep.prob, rep.rank,
                          rep.entropy_nats if unit == "nats" else rep.entropy_bits,
                          rep.context_len, rep.top_tokens, rep.top_probs)],
                     hide_index=True, key="loss_table")
        _second_text.token_loss(ctx, rep, unit)
else:
    with _common.guard("the masked-LM loss"):
        seed = st.number_input("Masking seed", 0, 10_000, 0, key="mlm_seed", persist_state="session")
        rep = _common.run(loss.masked_lm_loss, lm, ctx.text, seed=int(seed), top_k=5,
                          spinner="Masking 15 % of the tokens and scoring them…")
        ce = rep.ce_nats if unit == "nats" else rep.ce_bits
        c = st.columns(4)
        c[0].metric("MLM loss (nats)", f"{rep.loss:.4f}", help="mean cross-entropy over the chosen positions")
        _common.perplexity_metric(c[1], lm, rep)
        c[2].metric("Accuracy", f"{rep.accuracy:.1%}", help="chosen positions where the original token ranks first")
        c[3].metric("Chosen / content tokens", f"{rep.n_chosen} / {rep.n_candidates}",
                    help=f"{rep.n_mask} → [MASK], {rep.n_random} → random token, {rep.n_unchanged} kept")
        values = _common.per_token(len(rep.tokens), rep.positions, ce)
        st.subheader("Loss at the chosen positions")
        st.html(plots.colored_tokens_html(rep.tokens, values, value_name="cross-entropy", unit=unit))
        _common.chart("token_bar_chart", rep.tokens, values,
                      title=f"−log P(original | corrupted text) ({unit})", y_title=unit, st_key="mlm_bars")
        kinds = {0: "[MASK]", 1: "random token", 2: "unchanged"}
        st.dataframe([{"position": int(p), "original": rep.tokens[int(p)], "model saw": rt,
                       "replacement": kinds.get(int(k), "?"), f"CE ({unit})": float(v), "P(original)": float(pr),
                       "rank": int(r), "model's top predictions": _common.top_predictions(tt, tp)}
                      for p, rt, k, v, pr, r, tt, tp in zip(rep.positions, rep.replacement_tokens,
                                                            rep.replacement_kind, ce, rep.prob, rep.rank,
                                                            rep.top_tokens, rep.top_probs)],
                     hide_index=True, key="mlm_table")
        _second_text.token_loss(ctx, None, unit)
    with st.expander("Pseudo-log-likelihood (mask every token in turn)"):
        if st.toggle("Compute it", key="pll_on"):
            with _common.guard("the pseudo-log-likelihood"):
                pll = _common.run(loss.pseudo_log_likelihood, lm, ctx.text,
                                  spinner="Masking each token in turn (pseudo-log-likelihood)…")
                _common.perplexity_metric(st, lm, pll, short="Pseudo-perplexity", warn=False)
                st.caption(f"PLL = {pll.pll:.3f} nats")
                st.html(plots.colored_tokens_html(pll.tokens, [-v for v in pll.log_prob], value_name="−log P"))
    if lm.has_nsp_head:
        st.subheader("Next-sentence prediction")
        if not ctx.text_pair:
            st.info("Type a second sentence in the sidebar to ask the NSP head whether it follows the text.")
        else:
            with _common.guard("next-sentence prediction"):
                nsp = _common.run(loss.next_sentence, lm, ctx.text, ctx.text_pair, spinner="Asking the next-sentence head…")
                c = st.columns(3)
                c[0].metric("Prediction", nsp.prediction)
                c[1].metric("P(IsNext)", f"{nsp.p_is_next:.4f}")
                c[2].metric("NSP loss if B follows A (nats)", f"{nsp.loss_if_next:.4f}")
                if nsp.truncated:
                    st.warning(f"The sentence pair is longer than the model's context: it was cut to "
                               f"{len(nsp.tokens)} tokens (the longer sentence first); only that part is scored.")

st.subheader("Where the gradient goes")
st.caption("∂L/∂logits by autograd against the closed form P − onehot at one position, and which embedding "
           "rows the gradient reaches.")
with _common.guard("the gradient check"):
    enc = _common.encoded(lm, ctx.text, ctx.text_pair)
    _common.truncation_note(enc)
    options = _common.gradient_positions(enc, lm.is_causal)
    if not options:
        st.info("The text is too short for the gradient view: use a longer text.")
    else:
        positions = list(options)
        pos = st.select_slider("Position", positions, value=positions[len(positions) // 2],
                               format_func=options.get, key="grad_pos",
                               help="Causal LM: predict the token after this position. Masked LM: mask this "
                                    "position (special tokens such as [CLS] and [SEP] are not offered).")
        g = _common.run_on_text(loss.logit_gradient_check, lm, ctx.text, ctx.text_pair, int(pos),
                                spinner="Differentiating the loss…")
        c = st.columns(4)
        c[0].metric("Target token", _common.md_literal(repr(g.target_token)))
        c[1].metric("P(target)", f"{g.prob_target:.4f}", help=f"loss {g.loss:.4f} nats")
        c[2].metric("max |autograd − (P − onehot)|", f"{g.logit_grad_max_abs_diff:.2g}")
        c[3].metric("cos(−∂L/∂w_target, h)", f"{g.target_row_cos_h:.4f}",
                    help="+1: a gradient-descent step pulls the target's output row toward h.")
        st.dataframe([{"token": t, "∂L/∂z": float(v)} for t, v in zip(g.top_tokens, g.top_logit_grads)],
                     hide_index=True, key="grad_table")

_render.report_view(ctx, "loss")
