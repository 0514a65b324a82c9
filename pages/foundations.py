"""Foundations: textbook claims about transformers checked on the loaded model, and their toy experiments made runnable."""
import streamlit as st

from inspector.analyses import foundations
from pages import _common, _render

ctx = _common.page_context()
lm = ctx.lm
_common.page_header(
    "Foundations",
    "Each textbook claim about transformers that a model can test, measured on the loaded model with a stated rule "
    "and a verdict; below, the toy experiments behind the claims to play with.")

st.subheader("The claims, on this model")
with _common.guard("the claims on the model"):
    use_corpus = st.toggle("Use the bundled corpus for frequency and co-occurrence claims", value=True,
                           key="fd_corpus", persist_state="session",
                           help="Off: only the sidebar's text is counted (fewer tokens, weaker statistics).")
    rows = _common.run(_common.claims, lm, ctx.text, use_corpus, spinner="Checking every claim on the loaded model…")
    counts = foundations.verdict_counts(r.verdict for r in rows)
    c = st.columns(3)
    c[0].metric("Hold", counts.get("holds", 0))
    c[1].metric("Do not hold", counts.get("does not hold", 0))
    c[2].metric("Not applicable to this model", counts.get("not applicable", 0))
    st.table(_common.claims_rows(rows))  # a static table: long claims wrap inside the page's width
    _common.show_fidelity(ctx)

tab3, tab1, tab4, tab0 = st.tabs(["Scaling in attention: σ(q·k) ≈ √d", "L1 vs L2 vs Huber loss",
                                  "KL divergence is asymmetric", "Cross-entropy on this model"])

with tab3, _common.guard("the scaling experiments"):
    c1, c2, c3 = st.columns(3)
    n = c1.slider("n (rows of Q and K)", 5, 200, 50, key="fd_n", persist_state="session")
    d = c2.slider("d (head size)", 2, 256, 50, key="fd_d", persist_state="session")
    seed = c3.number_input("Seed", 0, 10_000, 0, key="fd_seed", persist_state="session")
    r = _common.run(foundations.random_qk_scaling, n=n, d=d, seed=int(seed))
    c = st.columns(4)
    c[0].metric("σ(Q), σ(K)", f"{r.sigma_q:.3f}, {r.sigma_k:.3f}")
    c[1].metric("σ(QKᵀ)", f"{r.sigma_qk:.3f}", help=f"the claim: σ(q·k) ≈ √d = {r.sqrt_d:.3f}")
    c[2].metric("σ(QKᵀ) / √d", f"{r.ratio:.3f}")
    c[3].metric("σ(QKᵀ / √d)", f"{r.sigma_qk_scaled:.3f}")
    _common.chart("sigma_vs_dim_chart", _common.run(foundations.sigma_vs_dim, n=n, seed=int(seed)),
                  st_key="fd_sigma_dim")
    _common.chart("softmax_scaling_chart", _common.run(foundations.softmax_scaling, n=n, d=d, seed=int(seed)),
                  st_key="fd_softmax")
    temp = st.select_slider("Softmax temperature T (on the unscaled row above)",
                            options=_common.TEMPERATURE_OPTIONS, value=1.0, key="fd_temp", persist_state="session")
    tr = _common.run(foundations.softmax_temperature, temperature=float(temp), n=n, d=d, seed=int(seed))
    _common.chart("temperature_chart", tr, st_key="fd_temperature")
    st.caption(f"At T = {tr.temperature:g}: entropy {tr.entropy:.3f} of at most {tr.max_entropy:.3f} nats, "
               f"max probability {tr.max_prob:.3f}. Dividing by √d is the same as T = √d.")

with tab1, _common.guard("the loss race"):
    c1, c2, c3, c4 = st.columns(4)
    start = c1.number_input("Start", value=2.0, step=0.5, key="fd_start", persist_state="session")
    target = c2.number_input("Target", value=5.0, step=0.5, key="fd_target", persist_state="session")
    lr = c3.select_slider("Learning rate", options=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0], value=0.05,
                          key="fd_lr", persist_state="session")
    steps = c4.slider("Steps", 10, 500, 100, step=10, key="fd_steps", persist_state="session")
    race = _common.run(foundations.loss_race, start=float(start), target=float(target), lr=float(lr),
                                  steps=int(steps))
    _common.chart("loss_race_chart", race, st_key="fd_race")
    st.dataframe([{"loss": run.loss, "loss at start": race.initial_losses[run.loss],
                   "first crossing (step)": run.first_cross_step, "sign flips after it": run.sign_changes_after_cross,
                   "|error| never grows": run.error_monotone, "final error": run.final_error}
                  for run in race.runs], hide_index=True, key="fd_race_table")

with tab4, _common.guard("the KL experiments"):
    c1, c2, c3, c4 = st.columns(4)
    mu_p = c1.number_input("μ_P", value=0.0, step=0.5, key="fd_mup", persist_state="session")
    sigma_p = c2.number_input("σ_P", value=1.0, min_value=0.05, step=0.25, key="fd_sp", persist_state="session")
    mu_q = c3.number_input("μ_Q", value=1.0, step=0.5, key="fd_muq", persist_state="session")
    sigma_q = c4.number_input("σ_Q", value=2.0, min_value=0.05, step=0.25, key="fd_sq", persist_state="session")
    g = _common.run(foundations.gaussian_kl, mu_p=float(mu_p), sigma_p=float(sigma_p), mu_q=float(mu_q),
                               sigma_q=float(sigma_q))
    c = st.columns(3)
    c[0].metric("KL(P‖Q), closed form", f"{g.kl_pq:.4f}")
    c[1].metric("KL(P‖Q), Monte Carlo", f"{g.kl_pq_mc:.4f}", help=f"± {g.kl_pq_mc_stderr:.4f} (1 s.e.), "
                                                                    f"{g.n_samples:,} samples")
    c[2].metric("KL(Q‖P)", f"{g.kl_qp:.4f}", help="Not equal to KL(P‖Q): KL is not symmetric.")
    _common.chart("gaussian_kl_chart", g, st_key="fd_gauss")
    p_raw = st.text_input("Discrete p", "0.36, 0.48, 0.16", key="fd_p", persist_state="session")
    q_raw = st.text_input("Discrete q", "0.3333, 0.3333, 0.3334", key="fd_q", persist_state="session")
    dk = _common.run(foundations.discrete_kl, p=_common.parse_numbers(p_raw), q=_common.parse_numbers(q_raw))
    c = st.columns(4)
    c[0].metric("KL(p‖q)", _common.format_float(dk.kl_pq))
    c[1].metric("KL(q‖p)", _common.format_float(dk.kl_qp))
    c[2].metric("Jensen–Shannon", _common.format_float(dk.js))
    c[3].metric("|H(p,q) − H(p) − KL|", _common.format_float(dk.identity_gap, 3))
    if not dk.support_ok:
        st.warning("q is 0 where p is not: KL(p‖q) is infinite (shown as —).")
    _common.chart("discrete_kl_chart", dk, st_key="fd_discrete")

with tab0, _common.guard("the cross-entropy identities"):
    if _common.encoder_only_note(lm, "The cross-entropy check"):
        pass
    else:
        li = _common.run(foundations.loss_identities, lm, ctx.text, spinner="Differentiating one prediction of the model…")
        target = _common.md_literal(repr(li.target_token))
        st.markdown(f"One {li.objective} prediction of **{target}** at position {li.position} "
                    f"(P = {li.prob_target:.4f}, loss {li.loss:.4f} nats).")
        c = st.columns(4)
        c[0].metric("max |∂L/∂z − (P − onehot)|", f"{li.grad_max_abs_diff:.2g}")
        c[1].metric("Σ ∂L/∂z", f"{li.grad_sum:.2g}", help="0: adding a constant to every logit changes nothing.")
        c[2].metric("Smallest Hessian eigenvalue", f"{li.hessian_min_eig:.2g}",
                    help=f"on {li.hessian_k} logits; ≥ 0 means convex in the logits")
        c[3].metric("|H(p,q) − H(p) − KL(p‖q)|", f"{li.ce_identity_gap:.2g}")
        st.dataframe([{"token": t, "autograd ∂L/∂z": float(gv), "P − onehot": float(pv)}
                      for t, gv, pv in zip(li.top_tokens, li.grad_top, li.p_minus_onehot_top)],
                     hide_index=True, key="fd_grad_table")

_render.report_view(ctx, "foundations")
