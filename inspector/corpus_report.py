"""Corpus results in reports: declared blocks (analysis.Metric / Table / Chart) -> HTML, Markdown, JSON.

`python -m inspector report --corpus DIR --out corpus.html` (or .md / .json) writes the figures of a
corpus job folder: per checkpoint the perplexity and the per-layer means of each attention statistic
(a table per statistic × checkpoint), trajectories against training step, the last checkpoint's
per layer × head σ(QKᵀ) heatmap, its loss by token frequency and its norm-input scales.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from .analysis import Chart, Metric, Note, Table
from .corpus import SERIES_STATISTICS, load_results, series_table
from .corpus_plots import LABELS, steps_of


def corpus_blocks(results) -> list:
    last = results[-1]
    steps = steps_of(results)
    blocks: list = [Metric("checkpoints", len(results)), Metric("tokens scored per checkpoint",
                                                                int(last.summary["tokens_scored"])),
                    Metric(f"perplexity ({last.spec})", float(last.summary["perplexity"]), digits=6),
                    Note(f"Corpus {last.meta['corpus']} (sha256 {last.meta['corpus_sha256'][:16]}…), window "
                         f"{last.meta.get('window')}, stride {last.meta.get('stride')}.")]
    blocks.append(Table("Perplexity per checkpoint", ("checkpoint", "step", "perplexity", "mean NLL (nats)"),
                        tuple((r.spec, r.step, round(r.summary["perplexity"], 4), round(r.summary["mean_nll"], 6))
                              for r in results)))
    if len(results) > 1:
        blocks.append(Chart("line", "Perplexity vs training step", "step", "perplexity",
                            series=(("perplexity", tuple(steps), tuple(r.summary["perplexity"] for r in results)),)))
    att = [r.attention for r in results]
    if all(a is not None for a in att):
        L = att[-1].std.shape[0]
        for name in SERIES_STATISTICS:
            rows = tuple((r.spec, r.step, *(round(float(getattr(a, name)[i].mean()), 6) for i in range(L)))
                         for r, a in zip(results, att))
            blocks.append(Table(f"{LABELS[name]}: mean over heads, per layer × checkpoint",
                                ("checkpoint", "step", *(f"layer {i}" for i in range(L))), rows))
        if len(results) > 1:
            blocks.append(Chart("line", "σ(QKᵀ) scaled vs training step (mean over heads)", "step", "σ scaled",
                                series=tuple((f"layer {i}", tuple(steps),
                                              tuple(float(a.std_scaled[i].mean()) for a in att)) for i in range(L))))
            blocks.append(Chart("line", "Sink mass vs training step (mean over heads)", "step", "sink mass",
                                series=tuple((f"layer {i}", tuple(steps),
                                              tuple(float(a.sink_mass[i].mean()) for a in att)) for i in range(L))))
        a = att[-1]
        blocks.append(Chart("heatmap", f"σ(QKᵀ) scaled per layer × head — {last.spec}", "head", "layer",
                            z=tuple(tuple(float(v) for v in row) for row in a.std_scaled),
                            row_labels=tuple(f"layer {i}" for i in range(L)),
                            col_labels=tuple(f"head {h}" for h in range(a.std.shape[1])), colorbar_title="σ"))
    b = last.summary["frequency_buckets"]
    blocks.append(Table(f"Loss by token frequency in the corpus — {last.spec}",
                        ("occurrences of the type", "types", "tokens", "mean NLL (nats)"),
                        tuple((x["occurrences"], x["types"], x["tokens"], x["mean_nll"]) for x in b),
                        note=last.summary["frequent_definition"]))
    blocks.append(Table(f"Norm-input RMS — {last.spec}", ("norm layer", "vectors", "mean", "std", "max"),
                        tuple((n["name"], n["vectors"], round(n["input_rms_mean"], 5), round(n["input_rms_std"], 5),
                               round(n["input_rms_max"], 5)) for n in last.summary["norm_inputs"])))
    return blocks


def write_corpus_report(folder: str | Path, out: str | Path, fmt: str) -> Path:
    results = load_results(folder)
    out = Path(out)
    if fmt == "json":
        data = {"kind": "corpus", "models": [{"meta": r.meta, "summary": r.summary} for r in results],
                "series": series_table(results)}
        out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return out
    blocks = corpus_blocks(results)
    if fmt in ("md", "markdown"):
        from .report_markdown import blocks_markdown
        out.write_text("# Corpus statistics\n\n" + blocks_markdown(blocks) + "\n", encoding="utf-8")
        return out
    from .report_html import _CSP, _CSS, blocks_html
    out.write_text(f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                   f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
                   f"<title>Corpus statistics</title><style>{_CSS}</style></head><body><main>"
                   f"<h1>Corpus statistics</h1><p>{html.escape(str(Path(folder)))}</p>{blocks_html(blocks)}"
                   f"</main></body></html>\n", encoding="utf-8")
    return out
