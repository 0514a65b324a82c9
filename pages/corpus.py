"""Corpus: statistics of a model (or a checkpoint series) over a whole corpus, from `python -m inspector corpus`."""
import os
import tempfile
from pathlib import Path

import streamlit as st

from inspector import bundled, corpus, corpus_plots
from inspector.service import device_slot
from pages import _common

_common.page_header(
    "Corpus",
    "Per layer × head attention figures, loss and norm-input scale merged over every window of a corpus, "
    "and how they move over a checkpoint series. Load a result of `python -m inspector corpus`, or run a "
    "small job here on the bundled corpus.")

SMALL_JOB_CHARS = 4000
source = st.radio("Result", ["Load a result folder", "Run a small job on the bundled corpus"], horizontal=True,
                  key="corpus_source")
if source == "Load a result folder":
    folder = st.text_input("Result folder (the --out of a corpus job)", value=os.environ.get("INSPECTOR_CORPUS_RESULT", ""),
                           key="corpus_folder")
else:
    names = [m for m in bundled.list_bundled() if m.name == "gpt2-mini" and m.available]
    checkpoints = names[0].checkpoints if names else []
    picked = st.multiselect("Checkpoints of bundled:gpt2-mini", checkpoints, default=checkpoints, key="corpus_ckpts")
    st.caption(f"Corpus: the first {SMALL_JOB_CHARS:,} characters of data/corpus/valid.txt, 128-token windows.")
    folder = st.session_state.get("corpus_job_folder", "")
    if st.button("Run", key="corpus_run", disabled=not picked):
        out = Path(tempfile.mkdtemp(prefix="inspector-corpus-"))
        data = out / "valid-slice.txt"
        data.write_text((bundled.CORPUS_DIR / "valid.txt").read_text(encoding="utf-8")[:SMALL_JOB_CHARS],
                        encoding="utf-8")
        bar = st.progress(0.0, text="Starting…")

        def on_progress(done, total, rate, eta):
            bar.progress(min(done / max(total, 1), 1.0), text=f"{done}/{total} windows, {rate:,.0f} tokens/s")

        with _common.guard("the corpus job"), device_slot("cpu"):
            for i, ckpt in enumerate(picked):
                bar.progress(0.0, text=f"{ckpt} ({i + 1}/{len(picked)})")
                corpus.run_job([f"bundled:gpt2-mini@{ckpt}"], data, out / ckpt,
                               corpus.CorpusSettings(window=128, stride=64), stream=None, callback=on_progress)
            for i, ckpt in enumerate(picked):  # one series folder: one sub-folder per checkpoint, in order
                (out / ckpt / "00").rename(out / f"{i:02d}")
            corpus.write_series(out)
            st.session_state["corpus_job_folder"] = folder = str(out)

if not folder:
    st.info("Give a result folder, or run a small job.")
    st.stop()

try:
    results = corpus.load_results(folder)
except Exception as exc:  # noqa: BLE001 - a bad folder is a message, never a traceback
    st.error(_common.error_message(exc, "reading the corpus result"))
    st.stop()

labels = [r.spec for r in results]
choice = st.selectbox("Checkpoint", labels, index=len(labels) - 1, key="corpus_pick")
result = results[labels.index(choice)]
s = result.summary
c = st.columns(4)
c[0].metric("Perplexity", f"{s['perplexity']:.2f}")
c[1].metric("Tokens scored", _common.format_count(s["tokens_scored"]))
c[2].metric("Windows", _common.format_count(s["windows"]))
fr = s["frequent_vs_rare"]
nll = lambda c: "–" if c["mean_nll"] is None else f"{c['mean_nll']:.2f}"  # noqa: E731
c[3].metric("Loss frequent / rare types (nats)", f"{nll(fr['frequent'])} / {nll(fr['rare'])}",
            help=s["frequent_definition"])

st.subheader("Per layer × head")
stat = st.selectbox("Statistic", list(corpus_plots.LABELS), format_func=corpus_plots.LABELS.get, key="corpus_stat")
att = result.attention
layer, head = st.session_state.get("corpus_cell", (0, 0))
if att is not None:
    values = getattr(att, stat)
    event = st.plotly_chart(corpus_plots.head_heatmap(values, f"{corpus_plots.LABELS[stat]} — {choice}"),
                            key="corpus_heatmap", on_select="rerun", selection_mode="points")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if points:
        layer = int(str(points[0]["y"]).split()[-1])
        head = int(str(points[0]["x"]).split()[-1])
        st.session_state["corpus_cell"] = (layer, head)
    layer = min(layer, values.shape[0] - 1)
    head = min(head, values.shape[1] - 1)
    st.caption(f"Selected: layer {layer}, head {head} (click a cell to pick another).")
    m = result.state.attention
    if m.hist_max_prob is not None:
        bins = m.hist_max_prob.shape[-1]
        edges = [i / bins for i in range(bins + 1)]
        h1, h2 = st.columns(2)
        h1.plotly_chart(corpus_plots.histogram(m.hist_entropy_fraction[layer, head], edges,
                                               f"Entropy / log(keys), layer {layer} head {head}", "fraction"),
                        key="corpus_hist_entropy")
        h2.plotly_chart(corpus_plots.histogram(m.hist_max_prob[layer, head], edges,
                                               f"Largest probability, layer {layer} head {head}", "probability"),
                        key="corpus_hist_maxp")

st.subheader("Loss")
st.plotly_chart(corpus_plots.loss_histogram(result), key="corpus_loss_hist")
st.dataframe(s["frequency_buckets"], hide_index=True, key="corpus_buckets")
st.subheader("Norm inputs (RMS of each norm layer's input vectors)")
st.dataframe(s["norm_inputs"], hide_index=True, key="corpus_norms")

if len(results) > 1:
    st.subheader("Over the checkpoint series")
    steps = corpus_plots.steps_of(results)
    series = [float(getattr(r.attention, stat)[layer, head]) for r in results]
    st.plotly_chart(corpus_plots.trajectory(steps, series, f"{corpus_plots.LABELS[stat]}, layer {layer} head {head}",
                                            corpus_plots.LABELS[stat]), key="corpus_trajectory")
    st.plotly_chart(corpus_plots.trajectory(steps, [r.summary["perplexity"] for r in results], "Perplexity",
                                            "perplexity"), key="corpus_ppl_trajectory")
