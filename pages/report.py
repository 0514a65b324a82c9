"""Report: every analysis of the loaded model on the sidebar's text, as one HTML / JSON / Markdown file."""
import streamlit as st

from inspector import report
from pages import _common

ctx = _common.page_context()
lm = ctx.lm
_common.page_header(
    "Report",
    "One file with every analysis of the loaded model on the sidebar's text: HTML (self-contained, opens offline), "
    "JSON (all numbers, reloadable) or Markdown (summary tables).")

with _common.guard("the report settings"):
    titles = report.SECTION_TITLES
    sections = st.multiselect("Sections", list(report.SECTIONS), default=list(report.SECTIONS),
                              format_func=lambda s: titles.get(s, s), key="report_sections", persist_state="session")
    c1, c2, c3 = st.columns(3)
    steps = c1.slider("Attribution steps", 8, 128, int(report.DEFAULT_SETTINGS["attribution_steps"]), step=8,
                      key="report_steps", persist_state="session")
    clusters = c2.slider("Token clusters (0 = skip, saves seconds)", 0, 20,
                         int(report.DEFAULT_SETTINGS["embeddings_clusters"]), key="report_clusters",
                         persist_state="session")
    fmt = c3.radio("Format", ["html", "json", "md"], horizontal=True, key="report_format", persist_state="session",
                   format_func={"html": "HTML", "json": "JSON", "md": "Markdown"}.get)
    settings = {"attribution_steps": int(steps), "embeddings_clusters": int(clusters)}
    none = "— no second model —"
    options = [none] + [o for o in _common.comparison_specs() if o != lm.spec]
    if st.session_state.get("report_model_b") not in options:  # default: the Compare page's choice, if any
        picked = _common.chosen_model_b()
        st.session_state["report_model_b"] = picked if picked in options else none
    other = st.selectbox("Compare with (adds a Compare section, as `python -m inspector compare` does)", options,
                         key="report_model_b")
    pair = None if other == none else _common.ordered_pair(lm.spec, other, bool(st.session_state.get("cmp_swap")))
    if pair is not None:
        st.caption(f"Compare section: A = `{pair[0]}` → B = `{pair[1]}`.")
    request = _common.report_request(ctx, sections, settings) + (pair,)

    if st.button("Build the report", type="primary", key="report_build", disabled=not sections and pair is None):
        bar = st.progress(0.0, text="Starting…")

        def progress(label: str, fraction: float) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0),
                         text="Done." if label == "done" else f"Computing {titles.get(label, label)}…")

        compare_with = None
        if pair is not None:
            loaded = {lm.spec: lm}
            for spec in pair:
                if spec not in loaded:
                    loaded[spec] = _common.load_model(spec, ctx.inputs.device, ctx.inputs.dtype)
            compare_with = (loaded[pair[0]], loaded[pair[1]])
        built = _common.build_report(lm, ctx.text, ctx.text_pair, sections, settings, progress,
                                     compare_with=compare_with, masking=st.session_state.get("cmp_masking"))
        st.session_state["report_output"] = (request, built)

    stored = st.session_state.get("report_output")
    if stored is None or stored[0] != request:
        st.info("Choose the sections and press **Build the report**. It runs every chosen analysis once "
                "(a few seconds to a minute, depending on the model and the text).")
    else:
        built = stored[1]
        st.success(f"Report built in {built['seconds']:.1f} s for {_common.md_literal(built['title'])}.")
        st.dataframe(built["sections"], hide_index=True, key="report_sections_table")
        ext = {"html": "html", "json": "json", "md": "md"}[fmt]
        mime = {"html": "text/html", "json": "application/json", "md": "text/markdown"}[fmt]
        st.download_button(f"Download the {ext.upper()} report", built[fmt], file_name=f"{built['file_stem']}.{ext}",
                           mime=mime, key="report_download", type="primary", on_click="ignore")
        if fmt == "md":
            with st.expander("Preview (Markdown source)"):
                st.code(built["md"][:20_000], language="markdown")
