"""Embedding analyses checked against dense / direct computations on small matrices and tiny models."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_gpt2_model
from inspector.analyses import embeddings as M
from inspector.analyses._common import from_dict, results_equal, to_dict
from inspector.errors import InputError, NotAvailableError
from inspector.models import wrap

TEXT = "The quick brown fox jumps over the lazy dog. The dog sleeps."
CORPUS = ("Attention compares queries with keys. The model reads tokens and predicts the next one. "
          "Embeddings place tokens in a space where similar words lie close together. ") * 5


def _dense_neighbours(E: np.ndarray, q: np.ndarray, k: int):
    U = E / np.linalg.norm(E, axis=1, keepdims=True)
    S = U[q] @ U.T  # (Q, V) dense: fine for a small matrix
    S[np.arange(q.size), q] = -np.inf  # the query is not its own neighbour
    ids = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(S, ids, axis=1)


# --------------------------------------------------------------------------- neighbours


@pytest.mark.parametrize("block", [4096, 37, 1])
def test_neighbours_equal_dense(block):
    rng = np.random.default_rng(0)
    E = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.choice(300, size=25, replace=False)
    ids, sims = M.neighbours_of_matrix(E, q, 7, block=block)
    d_ids, d_sims = _dense_neighbours(E.astype(np.float64), q, 7)
    np.testing.assert_array_equal(ids, d_ids)
    np.testing.assert_allclose(sims, d_sims, atol=1e-5)
    assert not (ids == q[:, None]).any()
    assert ids.shape == sims.shape == (25, 7)


def test_neighbours_query_chunks_and_torch_input():
    rng = np.random.default_rng(1)
    E = torch.from_numpy(rng.normal(size=(200, 8)).astype(np.float32))
    q = np.arange(200)
    a = M.neighbours_of_matrix(E, q, 5, block=64, query_chunk=17)
    b = M.neighbours_of_matrix(E.numpy(), q, 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_nearest_neighbours_on_model(tiny_gpt2):
    E = tiny_gpt2.model.get_input_embeddings().weight.detach().double().numpy()
    tid = tiny_gpt2.tokenizer.get_vocab()["Ġthe"]
    by_str = M.nearest_neighbours(tiny_gpt2, " the", k=5)
    by_raw = M.nearest_neighbours(tiny_gpt2, "Ġthe", k=5)
    by_id = M.nearest_neighbours(tiny_gpt2, tid, k=5)
    d_ids, d_sims = _dense_neighbours(E, np.array([tid]), 5)
    for r in (by_str, by_raw, by_id):
        assert r.query_ids.tolist() == [tid] and r.query_tokens == [" the"]
        np.testing.assert_array_equal(r.ids, d_ids)
        np.testing.assert_allclose(r.cosine, d_sims, atol=1e-5)
        assert len(r.tokens[0]) == 5
    many = M.nearest_neighbours(tiny_gpt2, [tid, 5, " is"], k=3)
    assert many.ids.shape == (3, 3)
    mat = M.nearest_neighbours(torch.from_numpy(E), [tid], k=5)
    np.testing.assert_array_equal(mat.ids, d_ids)


def test_neighbour_input_errors(tiny_gpt2, tiny_bert):
    V = tiny_gpt2.model.get_input_embeddings().weight.shape[0]
    with pytest.raises(InputError, match="not a single token"):
        M.nearest_neighbours(tiny_gpt2, " quick brown fox", k=3)
    with pytest.raises(InputError, match="not in this vocabulary"):
        M.nearest_neighbours(tiny_bert, "🙂", k=3)  # WordPiece maps it to [UNK]
    with pytest.raises(InputError, match="out of range"):
        M.nearest_neighbours(tiny_gpt2, V + 5, k=3)
    with pytest.raises(InputError, match="empty"):
        M.nearest_neighbours(tiny_gpt2, "", k=3)
    for k in (0, -1, V, V + 10):
        with pytest.raises(InputError, match="k must be"):
            M.nearest_neighbours(tiny_gpt2, " the", k=k)
    assert M.nearest_neighbours(tiny_gpt2, " the", k=V - 1).ids.shape == (1, V - 1)
    with pytest.raises(InputError):
        M.neighbours_of_matrix(np.zeros((10, 4)), [3], 10)
    with pytest.raises(InputError):
        M.neighbours_of_matrix(np.zeros((10, 4)), [10], 2)


# --------------------------------------------------------------------------- norms / frequency


def test_token_norms_equal_torch(tiny_gpt2):
    W = tiny_gpt2.model.get_input_embeddings().weight.detach()
    r = M.token_norms(tiny_gpt2, top=5, bins=12)
    expected = torch.linalg.norm(W.double(), dim=1).numpy()
    np.testing.assert_allclose(r.norms, expected, rtol=1e-6)
    assert r.largest_ids[0] == expected.argmax() and r.smallest_ids[0] == expected.argmin()
    assert r.hist_counts.sum() == W.shape[0] and len(r.largest_tokens) == 5


def test_token_counts_and_spearman(tiny_gpt2):
    from scipy.stats import rankdata

    counts = M.token_counts(tiny_gpt2, CORPUS, chunk_chars=1000)
    direct = Counter(tiny_gpt2.tokenizer(CORPUS, add_special_tokens=False)["input_ids"])
    # chunks are cut at spaces; byte-level BPE never merges across a space, so counts are identical
    assert {i: int(c) for i, c in enumerate(counts) if c} == dict(direct)
    r = M.norm_frequency_correlation(tiny_gpt2, counts=counts)
    norms = np.linalg.norm(tiny_gpt2.model.get_input_embeddings().weight.detach().double().numpy(), axis=1)
    seen = counts > 0
    expected = np.corrcoef(rankdata(norms[seen]), rankdata(counts[seen]))[0, 1]
    assert r.rho_seen == pytest.approx(expected, abs=1e-9)
    assert r.n_seen == seen.sum() and r.bin_counts.sum() == seen.sum()
    with pytest.raises(InputError):
        M.token_counts(tiny_gpt2, "   ")


def test_select_frequent_tokens(tiny_gpt2):
    counts = np.zeros(tiny_gpt2.vocab_size, dtype=np.int64)
    counts[[5, 9, 40, 7]] = [10, 30, 20, 1]
    ids, how = M.select_tokens(tiny_gpt2, n_tokens=3, counts=counts)
    assert how == "frequent" and ids.tolist() == [5, 9, 40]
    ids, how = M.select_tokens(tiny_gpt2, token_ids=[" the", 5, 5])
    assert how == "ids" and ids.tolist() == sorted({5, tiny_gpt2.tokenizer.get_vocab()["Ġthe"]})


# --------------------------------------------------------------------------- clusters / projection / anisotropy


def test_kmeans_stable_and_silhouette():
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 12))
    E = np.repeat(centres, 30, axis=0) + 0.1 * rng.normal(size=(120, 12))
    a = M.cluster_matrix(E, 4, seed=7)
    b = M.cluster_matrix(E, 4, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert list(a.sizes) == sorted(a.sizes, reverse=True) and a.sizes.sum() == 120
    # well separated: each generating group is one cluster
    assert all(len(set(a.labels[i * 30:(i + 1) * 30])) == 1 for i in range(4))
    U = E / np.linalg.norm(E, axis=1, keepdims=True)
    assert a.silhouette == pytest.approx(silhouette_score(U, a.labels), abs=1e-6)
    mb = M.cluster_matrix(E, 4, seed=7, minibatch=True)
    np.testing.assert_array_equal(mb.labels, M.cluster_matrix(E, 4, seed=7, minibatch=True).labels)
    with pytest.raises(InputError):
        M.cluster_matrix(E, 1)
    with pytest.raises(InputError):
        M.cluster_matrix(E, 120)


def test_cluster_and_project_tokens(tiny_gpt2):
    tc = M.cluster_tokens(tiny_gpt2, 4, n_tokens=60, text=CORPUS, seed=0)
    assert tc.selection == "frequent" and tc.ids.size == len(tc.tokens) == tc.clusters.labels.size <= 60
    assert len(tc.exemplars) == 4
    p = M.project_tokens(tiny_gpt2, n_tokens=None)
    assert p.coords.shape == (tiny_gpt2.vocab_size, 2)
    assert p.explained_variance_ratio[0] >= p.explained_variance_ratio[1] > 0
    with pytest.raises(InputError, match="Unknown projection"):
        M.project_tokens(tiny_gpt2, method="umap", n_tokens=None)


def test_anisotropy():
    rng = np.random.default_rng(0)
    iso = rng.normal(size=(2000, 512)).astype(np.float32)
    a = M.anisotropy_of_matrix(iso, n_pairs=20000, seed=1)
    assert abs(a.mean_cosine) < 0.01 and a.mean_vector_ratio < 0.1
    shifted = M.anisotropy_of_matrix(iso + 3.0, n_pairs=20000, seed=1)
    assert shifted.mean_cosine > 0.8
    assert M.anisotropy_of_matrix(iso, n_pairs=500, seed=4) == M.anisotropy_of_matrix(iso, n_pairs=500, seed=4)


# --------------------------------------------------------------------------- positions / segments


def _sinusoid_concat(P: int, D: int) -> torch.Tensor:
    """Sinusoidal table written independently, in the concatenated [sin | cos] layout."""
    pos = torch.arange(P, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(D // 2, dtype=torch.float64) * 2 / D)
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=1)


def test_sinusoidal_positions_score_one_random_low():
    model, tok = tiny_gpt2_model(seed=4)
    lm = wrap(model, tok)
    random_score = M.position_embeddings(lm).sinusoidal_similarity
    with torch.no_grad():
        model.transformer.wpe.weight.copy_(_sinusoid_concat(*model.transformer.wpe.weight.shape))
    sin = M.position_embeddings(lm)
    assert sin.sinusoidal_similarity == pytest.approx(1.0, abs=1e-6)
    assert abs(random_score) < 0.2
    assert sin.learned and sin.cos_matrix.shape == (64, 64) and sin.adjacent_cosine.shape == (63,)


def test_segments(tiny_bert, tiny_gpt2):
    seg = M.segment_embeddings(tiny_bert)
    W = tiny_bert.model.bert.embeddings.token_type_embeddings.weight.detach()
    assert seg.cosine_0_1 == pytest.approx(F.cosine_similarity(W[0], W[1], dim=0).item(), abs=1e-6)
    np.testing.assert_allclose(seg.norms, W.norm(dim=1).numpy(), rtol=1e-6)
    with pytest.raises(NotAvailableError):
        M.segment_embeddings(tiny_gpt2)


# --------------------------------------------------------------------------- contextual


@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_bert"])
def test_contextual_cosines_equal_plain_forward(which, request):
    from inspector.inputs import encode

    lm = request.getfixturevalue(which)
    enc = encode(lm, TEXT)
    r = M.contextual_embeddings(lm, enc)
    with torch.no_grad():
        hs = lm.model(**enc.batch(), output_hidden_states=True).hidden_states
    H = torch.stack([h[0] for h in hs])  # (L+1, T, D)
    L1, T, _ = H.shape
    assert r.token_cosine.shape == (L1, T, T) and L1 == lm.n_layers + 1
    for layer in range(L1):
        expected = F.cosine_similarity(H[layer][:, None, :], H[layer][None, :, :], dim=-1)
        np.testing.assert_allclose(r.token_cosine[layer], expected.numpy(), atol=1e-5)
        off = ~torch.eye(T, dtype=torch.bool)
        assert r.mean_pairwise_cosine[layer] == pytest.approx(expected[off].mean().item(), abs=1e-5)
    for layer in range(L1 - 1):
        np.testing.assert_allclose(r.self_sim_next[layer], F.cosine_similarity(H[layer], H[layer + 1], dim=-1),
                                   atol=1e-5)
    np.testing.assert_allclose(r.self_sim_final[0], F.cosine_similarity(H[0], H[-1], dim=-1), atol=1e-5)
    np.testing.assert_allclose(r.self_sim_final[-1], 1.0, atol=1e-5)
    lean = M.contextual_embeddings(lm, enc, keep_token_cosine=False)
    assert lean.token_cosine is None
    np.testing.assert_allclose(lean.mean_pairwise_cosine, r.mean_pairwise_cosine)


def test_contextual_exclude_special(tiny_bert):
    r = M.contextual_embeddings(tiny_bert, TEXT, exclude_special=True)
    assert r.special[0] and r.special[-1] and not r.included[0]
    inc = np.flatnonzero(r.included)
    sub = r.token_cosine[1][np.ix_(inc, inc)]
    assert r.mean_pairwise_cosine[1] == pytest.approx(sub[~np.eye(inc.size, dtype=bool)].mean(), abs=1e-6)


# --------------------------------------------------------------------------- serialisation


def test_results_round_trip_json(tiny_gpt2, tiny_bert):
    results = [
        M.token_norms(tiny_gpt2),
        M.nearest_neighbours(tiny_gpt2, [" the", 5], k=4),
        M.cluster_tokens(tiny_gpt2, 3, n_tokens=40, text=CORPUS),
        M.project_tokens(tiny_gpt2, n_tokens=30, text=CORPUS),
        M.token_anisotropy(tiny_gpt2, n_pairs=100),
        M.norm_frequency_correlation(tiny_gpt2, CORPUS),
        M.position_embeddings(tiny_bert),
        M.segment_embeddings(tiny_bert),
        M.contextual_embeddings(tiny_bert, TEXT),
        M.contextual_embeddings(tiny_gpt2, TEXT, keep_token_cosine=False),
    ]
    for r in results:
        back = from_dict(type(r), json.loads(json.dumps(to_dict(r))))
        assert results_equal(r, back, rtol=1e-6), type(r).__name__


# --------------------------------------------------------------------------- the split and the report section


def test_split_keeps_every_public_name_and_the_type_names(tiny_gpt2):
    import pickle

    from inspector import report as R

    for name in M.__all__:
        assert hasattr(M, name), name
    for cls in (M.TokenNorms, M.Neighbours, M.ClusterResult, M.TokenClusters, M.Projection, M.Anisotropy,
                M.NormFrequency, M.PositionEmbeddings, M.OutputEmbeddings, M.SegmentEmbeddings,
                M.ContextualEmbeddings):
        assert cls.__module__ == "inspector.analyses.embeddings" and getattr(M, cls.__qualname__) is cls
    norms = M.token_norms(tiny_gpt2)
    assert R._type_name(norms) == "inspector.analyses.embeddings.TokenNorms"
    assert results_equal(pickle.loads(pickle.dumps(norms)), norms)  # streamlit's cache pickles results
    assert M.DEFAULT_CORPUS.name == "train.txt" and M.DEFAULT_CORPUS.parent.name == "corpus"


def _html_section(html: str, name: str) -> str:
    import re

    return re.search(rf'<section id="sec-{name}">.*?</section>', html, re.S).group(0)


def test_section_report_shows_the_figures(tiny_gpt2):
    """The Embeddings section built by the report: its view and HTML carry figures computed here with torch."""
    from inspector import analysis
    from inspector import report as R
    from inspector.inputs import encode
    from inspector.tokens import visible

    rep = R.build_report(tiny_gpt2, TEXT, sections=("embeddings",), strict=True,
                         settings={"embeddings_corpus": "text", "embeddings_clusters": 3})
    sec = rep.section("embeddings")
    assert sec.available and set(sec.results) == {"token_norms", "anisotropy", "norm_frequency", "positions",
                                                  "segments", "output_embeddings", "contextual", "neighbours",
                                                  "clusters"}
    blocks = R.contract_view("embeddings", sec)
    headings = [b.text for b in blocks if isinstance(b, analysis.Heading)]
    assert headings == ["Token-embedding norms", "Anisotropy", "Norm against frequency", "Position embeddings",
                        "Segment embeddings", "Output embeddings (unembedding)", "Contextual embeddings of this text",
                        "Nearest neighbours of tokens in this text", "Clusters of frequent tokens"]
    metrics = {b.label: b.value for b in blocks if isinstance(b, analysis.Metric)}
    charts = {b.title: b for b in blocks if isinstance(b, analysis.Chart)}
    tables = [b for b in blocks if isinstance(b, analysis.Table)]
    html = _html_section(R.to_html(rep), "embeddings")
    md = R.to_markdown(rep)

    # token norms: torch's row norms of the embedding weight
    E = tiny_gpt2.model.get_input_embeddings().weight.detach().double()
    norms = E.norm(dim=1)
    assert metrics["mean ‖e‖"] == pytest.approx(norms.mean().item(), rel=1e-6)
    assert metrics["max ‖e‖"] == pytest.approx(norms.max().item(), rel=1e-6)
    for h in headings:
        assert f"<h3>{h}</h3>" in html
    assert f"<tr><td>mean ‖e‖</td><td>{R._fmt(norms.mean().item())}</td></tr>" in html
    assert f"| mean ‖e‖ | {R._fmt(norms.mean().item())} |" in md
    hist = charts["token-embedding norms"]
    assert hist.kind == "histogram" and hist.log_y and sum(hist.series[0][2]) == E.shape[0]
    assert hist.markers[0][0] == "mean" and hist.markers[0][1] == pytest.approx(norms.mean().item(), rel=1e-6)
    top = M.token_strings(tiny_gpt2, [int(norms.argmax())])[0]
    assert tables[0].columns == ("largest norm", "smallest norm") and tables[0].rows[0][0] == visible(top)
    assert len(tables[0].rows) == 10

    # anisotropy: the same seeded pairs, cosines in numpy
    rng = np.random.default_rng(0)
    i = rng.integers(0, E.shape[0], size=20_000)
    j = (i + rng.integers(1, E.shape[0], size=20_000)) % E.shape[0]
    U = (E / norms[:, None]).numpy()
    assert metrics["mean cosine of random token pairs"] == pytest.approx((U[i] * U[j]).sum(1).mean(), abs=1e-6)
    assert metrics["pairs"] == 20_000

    # positions: cosine of the wpe rows, subsampled to 40 of the 64 positions
    W = tiny_gpt2.model.transformer.wpe.weight.detach().double().numpy()
    Wu = W / np.linalg.norm(W, axis=1, keepdims=True)
    heat = charts["position × position cosine"]
    keep = np.unique(np.linspace(0, 63, 40).round().astype(int))
    assert heat.signed and heat.zmin == -1.0 and heat.zmax == 1.0 and len(heat.z) == len(keep) == 40
    assert heat.row_labels == tuple(str(k) for k in keep)
    np.testing.assert_allclose(np.array(heat.z), (Wu @ Wu.T)[np.ix_(keep, keep)], atol=1e-6)
    assert metrics["positions × dim"] == "64 × 32" and metrics["learned"] is True
    np.testing.assert_allclose(charts["position-embedding norm"].series[0][2], np.linalg.norm(W, axis=1), rtol=1e-6)

    # segments do not apply to GPT-2; the tied output matrix is the input table
    seg = blocks[headings_index(blocks, "Segment embeddings") + 1]
    assert isinstance(seg, analysis.Note) and seg.level == "warning" and "segment" in seg.text
    assert metrics["tied to the input table"] is True and metrics["mean cos(input row, output row)"] == \
        pytest.approx(1.0, abs=1e-6)

    # contextual: a plain forward's hidden states
    enc = encode(tiny_gpt2, TEXT)
    with torch.no_grad():
        hs = tiny_gpt2.model(**enc.batch(), output_hidden_states=True).hidden_states
    H = torch.stack([h[0] for h in hs]).double()
    Hu = H / H.norm(dim=-1, keepdim=True)
    C = (Hu @ Hu.transpose(1, 2)).numpy()  # (L + 1, T, T)
    T = C.shape[1]
    off = ~np.eye(T, dtype=bool)
    by_layer = charts["contextual embeddings by layer"]
    np.testing.assert_allclose(by_layer.series[0][2], [C[layer][off].mean() for layer in range(len(C))], atol=1e-5)
    tok_heat = charts["token × token cosine, last layer"]
    assert tok_heat.signed and (tok_heat.zmin, tok_heat.zmax) == (-1.0, 1.0)
    assert tok_heat.row_labels == tuple(visible(t) for t in enc.tokens)
    np.testing.assert_allclose(np.array(tok_heat.z), C[-1], atol=1e-5)

    # neighbours of the longest content tokens (dense cosines here)
    seen, cand = set(), []
    for pos, (tid, tok) in enumerate(zip(enc.input_ids[0].tolist(), enc.tokens)):
        if tid not in seen and any(ch.isalnum() for ch in tok):
            seen.add(tid)
            cand.append((-len(tok.strip()), pos, tid))
    queries = [tid for _, _, tid in sorted(cand)[:5]]
    nb = next(t for t in tables if t.columns == ("token", "8 nearest by cosine"))
    d_ids, d_cos = _dense_neighbours(E.numpy(), np.array(queries), 8)
    first = ", ".join(f"{visible(t)} ({c:.2f})" for t, c in zip(M.token_strings(tiny_gpt2, d_ids[0]), d_cos[0]))
    assert nb.rows[0] == (visible(M.token_strings(tiny_gpt2, [queries[0]])[0]), first)
    assert len(nb.rows) == 5

    # clusters of every distinct token of the text (the text is the corpus here)
    cl = next(t for t in tables if t.columns == ("cluster", "size", "tokens nearest the centre"))
    n_distinct = len(set(tiny_gpt2.tokenizer(TEXT, add_special_tokens=False)["input_ids"]))
    assert [r[0] for r in cl.rows] == [0, 1, 2] and sum(r[1] for r in cl.rows) == n_distinct
    assert metrics["algorithm"] == "kmeans"
    assert "<th>tokens nearest the centre</th>" in html and "### Clusters of frequent tokens" in md


def headings_index(blocks, text: str) -> int:
    from inspector import analysis

    return next(i for i, b in enumerate(blocks) if isinstance(b, analysis.Heading) and b.text == text)


def test_section_json_round_trip_keeps_types_and_view(tiny_bert):
    """BERT: segments and a masked-LM head; the JSON report loads back into the same types and the same HTML."""
    from inspector import report as R

    rep = R.build_report(tiny_bert, TEXT, sections=("embeddings",), strict=True, text_pair="Keys are compared.",
                         settings={"embeddings_corpus": "text", "embeddings_clusters": 2})
    s = R.to_json(rep)
    doc = json.loads(s)
    stored = doc["sections"]["embeddings"]["results"]
    expected = {"token_norms": "TokenNorms", "anisotropy": "Anisotropy", "norm_frequency": "NormFrequency",
                "positions": "PositionEmbeddings", "segments": "SegmentEmbeddings",
                "output_embeddings": "OutputEmbeddings", "contextual": "ContextualEmbeddings",
                "neighbours": "Neighbours", "clusters": "TokenClusters"}
    assert {k: v["type"] for k, v in stored.items()} == {k: f"inspector.analyses.embeddings.{v}"
                                                          for k, v in expected.items()}
    back = R.report_from_json(s)
    parts = back.section("embeddings").results
    for name, cls in expected.items():
        assert type(parts[name]) is getattr(M, cls), name
    assert R.reports_equal(rep, back)
    assert _html_section(R.to_html(back), "embeddings") == _html_section(R.to_html(rep), "embeddings")

    W = tiny_bert.model.bert.embeddings.token_type_embeddings.weight.detach()
    cos01 = F.cosine_similarity(W[0], W[1], dim=0).item()
    metrics = {b.label: b.value for b in R.contract_view("embeddings", back.section("embeddings"))
               if hasattr(b, "label")}
    assert metrics["segment types"] == 2 and metrics["cosine(segment 0, segment 1)"] == pytest.approx(cos01, abs=1e-6)
    assert metrics["segment norms"] == ", ".join(f"{v:.4g}" for v in W.norm(dim=1).tolist())
    assert f"<tr><td>cosine(segment 0, segment 1)</td><td>{R._fmt(parts['segments'].cosine_0_1)}</td></tr>" in \
        R.to_html(back)


def test_section_settings_and_long_texts():
    """Settings keep their report names and ranges; a text over 64 tokens gets no token × token heat map."""
    from inspector import analysis
    from inspector import report as R
    from inspector.inputs import encode

    lm = wrap(*tiny_gpt2_model(n_positions=128))
    a = analysis.get("embeddings")
    assert a.own_page == "embeddings" and a.report_parts and a.result_type is M.EmbeddingsResult
    assert {analysis.settings_key(a, f): f.default for f in analysis.settings_fields(a)} == {
        k: R.DEFAULT_SETTINGS[k] for k in ("embeddings_corpus", "embeddings_cosine_max_tokens",
                                           "embeddings_neighbours", "embeddings_k", "embeddings_clusters")}
    with pytest.raises(InputError):
        R.build_report(lm, TEXT, sections=("embeddings",), settings={"embeddings_corpus": "web"})
    with pytest.raises(InputError):
        analysis.run_analysis("embeddings", lm, encode(lm, TEXT), {"k": 0})

    long_text = " ".join([TEXT] * 6)
    enc = encode(lm, long_text)
    assert 64 < enc.n_tokens <= 128
    res = analysis.run_analysis("embeddings", lm, enc, {"corpus": None, "neighbours": 0, "cosine_max_tokens": 200})
    assert res.norm_frequency is None and res.neighbours is None and res.clusters is None
    assert res.contextual.token_cosine is not None and res.contextual.token_cosine.shape[1] == enc.n_tokens
    blocks = a.view(res)
    titles = [b.title for b in blocks if isinstance(b, analysis.Chart)]
    assert "token × token cosine, last layer" not in titles and "contextual embeddings by layer" in titles
    assert any(isinstance(b, analysis.Note) and f"this one has {enc.n_tokens}" in b.text for b in blocks)
    assert "Norm against frequency" not in [b.text for b in blocks if isinstance(b, analysis.Heading)]
    lean = analysis.run_analysis("embeddings", lm, enc, {"corpus": None, "cosine_max_tokens": 10})
    assert lean.contextual.token_cosine is None and lean.neighbours is not None


def test_a_corpus_is_counted_once_per_tokenizer(tiny_gpt2, tiny_bert, monkeypatch):
    """The report's Embeddings and Foundations sections both correlate norms with the bundled corpus'
    frequencies: the second count comes from the first (same text, same tokenizer), equal to a plain count."""
    from inspector import report as R
    from inspector.analyses import embeddings_vocab

    corpus = "alpha beta gamma alpha beta alpha " * 50 + "a fresh text for this test only"
    calls = []
    real = embeddings_vocab._count_tokens
    monkeypatch.setattr(embeddings_vocab, "_count_tokens", lambda *a: (calls.append(a[1][:5]), real(*a))[1])
    first = M.token_counts(tiny_gpt2, corpus)
    first[0] += 1000  # the caller's copy: the kept counts are not changed by it
    again = M.token_counts(tiny_gpt2, corpus)
    ids = tiny_gpt2.tokenizer(corpus, add_special_tokens=False)["input_ids"]
    expected = np.zeros_like(again)
    for i, n in Counter(ids).items():
        expected[i] = n
    np.testing.assert_array_equal(again, expected)
    assert len(calls) == 1
    M.token_counts(tiny_bert, corpus)  # another tokenizer counts for itself
    M.token_counts(tiny_gpt2, corpus + ".")  # another text too
    assert len(calls) == 3

    path = M.DEFAULT_CORPUS
    if not path.is_file():
        pytest.skip("the bundled corpus is not installed")
    calls.clear()
    R.build_report(tiny_gpt2, TEXT, sections=("embeddings", "foundations"), strict=True,
                   settings={"embeddings_corpus": "bundled", "foundations_corpus": "bundled",
                             "embeddings_clusters": 0})
    corpus_head = path.read_text(encoding="utf-8", errors="replace")[:5]
    assert calls.count(corpus_head) == 1, calls
