"""Embeddings: the token table's geometry (norms, clusters, neighbours, norm vs frequency), positions,
and the text's vectors."""
import streamlit as st

from inspector import gguf
from inspector.analyses import decoder_signals, embeddings
from pages import _common, _render

ctx = _common.page_context()
lm = ctx.lm
_common.page_header(
    "Embeddings",
    "Claims checked here: frequent tokens get larger norms ⚠, embeddings form semantic clusters, and BERT's positions "
    "are sinusoidal ⚠ (they are learned). Measured on the loaded model and the bundled corpus.")

if note := gguf.quantisation_note(lm.provenance, "embedding views (norms, cosines, neighbours, map)"):
    st.info(note)
tab_table, tab_map, tab_nn, tab_pos, tab_text = st.tabs(
    ["Token table", "Map & clusters", "Neighbours", "Positions & segments", "Your text"])

with tab_table, _common.guard("the token-table statistics"):
    table = _common.run(_common.token_table, lm, spinner="Measuring the token-embedding table…")
    norms, aniso, nf = table["norms"], table["anisotropy"], table["norm_frequency"]
    c = st.columns(4)
    c[0].metric("Token rows", f"{norms.norms.size:,}")
    c[1].metric("Mean ‖e‖", f"{norms.mean:.4g}", help=f"std {norms.std:.3g}, min {norms.min:.3g}, max {norms.max:.3g}")
    c[2].metric("Anisotropy: mean cosine of random pairs", f"{aniso.mean_cosine:.4f}",
                help="0 = directions spread evenly; near 1 = all vectors point one way.")
    c[3].metric("Spearman ρ(norm, frequency)", f"{nf.rho_seen:.3f}",
                help=f"over {nf.n_seen:,} tokens seen in the corpus ({nf.n_corpus_tokens:,} corpus tokens); "
                     f"p = {nf.p_seen:.2g}. The claim 'frequent tokens get larger norms' predicts ρ > 0.")
    _common.chart("histogram_figure", norms.hist_edges, norms.hist_counts, "‖e‖", mean=norms.mean,
                  title="Norm of every token embedding (log y)", st_key="emb_norm_hist")
    _common.chart("norm_frequency_chart", nf, st_key="emb_norm_freq")
    c1, c2 = st.columns(2)
    c1.markdown("**Largest norms**")
    c1.dataframe([{"token": t, "id": int(i), "norm": float(norms.norms[i])}
                  for t, i in zip(norms.largest_tokens, norms.largest_ids)], hide_index=True, key="emb_largest")
    c2.markdown("**Smallest norms**")
    c2.dataframe([{"token": t, "id": int(i), "norm": float(norms.norms[i])}
                  for t, i in zip(norms.smallest_tokens, norms.smallest_ids)], hide_index=True, key="emb_smallest")

with tab_map, _common.guard("the token map"):
    c1, c2, c3 = st.columns(3)
    n_tokens = c1.select_slider("Most frequent tokens", [250, 500, 1000, 2000], value=1000, key="emb_n",
                                persist_state="session")
    n_clusters = c2.slider("Clusters (k-means on cosine)", 2, 30, 12, key="emb_k", persist_state="session")
    method = c3.radio("Projection", ["pca", "tsne"], format_func={"pca": "PCA", "tsne": "t-SNE (slower)"}.get,
                      horizontal=True, key="emb_method", persist_state="session")
    proj, clusters = _common.run(_common.token_map, lm, n_tokens, n_clusters, method,
                                   spinner="Projecting and clustering the most frequent tokens…")
    _common.chart("embedding_scatter", proj, clusters.clusters.labels,
                  clusters.exemplars, st_key="emb_scatter")
    cr = clusters.clusters
    st.caption(f"{cr.algorithm}, seed {cr.seed}: silhouette {_common.format_float(cr.silhouette, 3)} "
               f"(−1 … 1; higher = better separated), inertia {cr.inertia:.4g}.")
    st.dataframe([{"cluster": i, "size": int(size), "tokens nearest the centre": " · ".join(ex)}
                  for i, (size, ex) in enumerate(zip(cr.sizes, clusters.exemplars))], hide_index=True,
                 key="emb_clusters")

    out = _common.run(embeddings.output_embeddings, lm, spinner="Comparing the output matrix with the input table…")
    st.caption(("Output head tied to this table (the same matrix)." if out.tied else
                f"Untied output head: mean cos(input row, output row) = {out.mean_row_cosine:.3f}, mean ‖output row‖ "
                f"{out.mean_output_norm:.4g} vs ‖input row‖ {out.mean_input_norm:.4g}, "
                f"Spearman ρ of the norms {out.norm_spearman:.3f}."))

with tab_nn, _common.guard("the nearest neighbours"):
    enc = _common.encoded(lm, ctx.text, ctx.text_pair)
    options = _common.text_token_options(enc)
    picked = st.multiselect("Tokens from your text", list(options), default=list(options)[:3],
                            format_func=options.get, key="emb_nn_pick")
    extra = st.text_input("More tokens or ids (comma-separated)", key="emb_nn_extra", placeholder="the, 42")
    k = st.slider("Neighbours", 1, 30, 10, key="emb_nn_k", persist_state="session")
    queries = tuple(picked) + _common.parse_token_list(extra)
    if not queries:
        st.info("Pick or type at least one token.")
    else:
        nn = _common.run(embeddings.nearest_neighbours, lm, list(queries), k, spinner="Searching nearest neighbours…")
        st.dataframe([{"query": q, **{f"#{j + 1}": f"{t} ({c:.2f})" for j, (t, c) in enumerate(zip(toks, cos))}}
                      for q, toks, cos in zip(nn.query_tokens, nn.tokens, nn.cosine)], hide_index=True,
                     key="emb_nn_table")
        st.caption("Cosine similarity in brackets; the query itself is excluded.")

with tab_pos, _common.guard("the position and segment tables"):
    tables = _common.run(_common.position_tables, lm, spinner="Reading the position and segment tables…")
    pos = tables["positions"]
    if isinstance(pos, str):
        st.info(pos)
        if lm.fam.positions == "rotary":  # what there is instead of a table: q·k against query–key distance
            sig = _render.run_registered("decoder_signals", lm, ctx.text, ctx.text_pair, {})
            _render.render_blocks(decoder_signals.distance_blocks(sig), key_prefix="emb_rope")
    else:
        c = st.columns(3)
        c[0].metric("Positions × dims", f"{pos.n_positions} × {pos.dim}")
        c[1].metric("Learned table", "yes" if pos.learned else "no (fixed)")
        c[2].metric("Similarity to a sinusoidal table", f"{pos.sinusoidal_similarity:.3f}",
                    help="Pearson r of the position × position cosine matrices (learned vs sinusoidal); "
                         f"~1 = same geometry, ~0 = unrelated. Best per-dimension |r|: {pos.best_dim_correlation:.3f}.")
        _common.chart("position_cosine_heatmap", pos, st_key="emb_pos_cos")
        _common.chart("position_norms_chart", pos, st_key="emb_pos_norms")
    seg = tables["segments"]
    if isinstance(seg, str):
        st.caption(seg)
    else:
        st.markdown("**Segment (token-type) embeddings**")
        c = st.columns(3)
        c[0].metric("Segment types", seg.n_types)
        c[1].metric("cos(segment A, segment B)", _common.format_float(seg.cosine_0_1, 4))
        c[2].metric("‖segment‖ vs mean ‖token‖",
                    " / ".join(f"{v:.3g}" for v in seg.norms) + f" vs {seg.mean_token_norm:.3g}")

with tab_text, _common.guard("the contextual embeddings"):
    exclude = st.toggle("Leave special tokens out of the means", value=True, key="emb_ctx_special",
                        persist_state="session")
    ce = _common.run_on_text(embeddings.contextual_embeddings, lm, ctx.text, ctx.text_pair, exclude_special=exclude,
                             spinner="Following the text's tokens through the layers…")
    _common.truncation_note(_common.encoded(lm, ctx.text, ctx.text_pair))
    _common.chart("contextual_layers_chart", ce, st_key="emb_ctx_layers")
    layer = st.slider("Layer", 0, len(ce.mean_pairwise_cosine) - 1, len(ce.mean_pairwise_cosine) - 1,
                      key="emb_ctx_layer")
    _common.chart("token_cosine_heatmap", ce, layer, st_key="emb_ctx_heat")
    _common.show_fidelity(ctx)

_render.report_view(ctx, "embeddings")
